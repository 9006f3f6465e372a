"""Helpers for end-to-end tests: the CLI in subprocesses, workers, lag, and queries.

The embedded ClickHouse (chdb) lets one process open one data path, so every test reads a
worker's or a replay's ClickHouse through a ``raiwatch query`` subprocess after it stopped.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import orjson
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError

from streams.producer import model_key

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``raiwatch ARGS`` and return the finished process (stdout/stderr as text)."""
    return subprocess.run(
        [sys.executable, "-m", "raiwatch.cli", *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def query(data_dir: Path, sql: str) -> list[dict]:
    """Rows of ``sql`` on the ClickHouse under ``data_dir`` (the owning process must have stopped)."""
    p = cli("query", "--data-dir", str(data_dir), "--json", sql)
    assert p.returncode == 0, p.stderr
    return [orjson.loads(line) for line in p.stdout.splitlines() if line.strip()]


def write_config(
    path: Path, bootstrap: str, topic: str, group: str, extra: str = "", **windows: float
) -> Path:
    """A worker config for one test: its own topics and group; ``extra`` is more YAML (other sections)."""
    win = "".join(f"  {k}: {v}\n" for k, v in {"idle_close_s": 2, **windows}.items())
    path.write_text(
        f"kafka:\n  bootstrap_servers: '{bootstrap}'\n  telemetry_topic: {topic}\n  dlq_topic: {topic}.dlq\n"
        f"  feedback_topic: {topic}.feedback\n  group_id: {group}\n  session_timeout_s: 10\n"
        f"windows:\n{win}{extra}"
    )
    return path


def start_worker(config: Path, data_dir: Path, log: Path, *extra: str) -> subprocess.Popen:
    """``raiwatch run`` in its own session, output to ``log``; /metrics on any free port unless
    ``extra`` names one (tests run several workers at once)."""
    args = ["run", "--config", str(config), "--data-dir", str(data_dir), *extra]
    if "--metrics-port" not in extra:
        args += ["--metrics-port", "0"]
    with log.open("ab") as f:
        return subprocess.Popen(
            [sys.executable, "-m", "raiwatch.cli", *args],
            cwd=ROOT,
            stdout=f,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop_worker(proc: subprocess.Popen, timeout: float = 60) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def poll(check: Callable[[], object], timeout: float, what: str, interval: float = 0.25) -> object:
    """Call ``check`` until it returns something truthy or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def lag(bootstrap: str, group: str, topic: str) -> int | None:
    """Messages of ``topic`` not yet committed by ``group`` (None before its first commit)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        ends = consumer.end_offsets(parts)
        try:
            committed = admin.list_group_offsets({group: None}).get(group, {})
        except KafkaError:  # the group coordinator is not there yet
            return None
        if not committed:
            return None
        return sum(end - (committed[tp].offset if tp in committed else 0) for tp, end in ends.items())
    finally:
        consumer.close()
        admin.close()


def produce_paced(
    path: Path, bootstrap: str, topic: str, per_s: float, start_at: datetime | None = None
) -> threading.Thread:
    """Publish ``path`` at about ``per_s`` lines per second from one producer in a thread (a live
    producer); with ``start_at``, line ``i`` goes out at ``start_at + i / per_s``, as it happens."""
    lines = path.read_bytes().splitlines()

    def run() -> None:
        producer = KafkaProducer(  # a request lost with the broker is resent after 5 s, not 30
            bootstrap_servers=bootstrap, acks="all", linger_ms=20, request_timeout_ms=5000
        )
        chunk = max(1, int(per_s / 10))
        t0 = time.monotonic() + ((start_at - datetime.now(UTC)).total_seconds() if start_at else 0)
        for i in range(0, len(lines), chunk):
            ahead = t0 + i / per_s - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)  # pacing a producer, not waiting for a result
            for line in lines[i : i + chunk]:
                producer.send(topic, key=model_key(line), value=line)
        producer.flush()
        producer.close()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def wait_drained(
    bootstrap: str, group: str, topic: str, proc: subprocess.Popen, log: Path, timeout: float = 180
) -> None:
    """Wait until the worker has committed every message: all windows closed and written."""

    def drained() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"worker exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        return lag(bootstrap, group, topic) == 0

    poll(drained, timeout, f"group {group} to commit all of {topic}", interval=0.5)


def read_topic(bootstrap: str, topic: str, expected: int, timeout: float = 30) -> list:
    """Every record of ``topic`` from the start (polls until ``expected`` arrived or timeout)."""
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=1000,
    )
    records: list = []
    deadline = time.monotonic() + timeout
    try:
        while len(records) < expected and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                records += batch
    finally:
        consumer.close()
    return records


def scrape(port: int) -> dict[str, float]:
    """Samples of a Prometheus /metrics page on localhost: each name's value summed over its labels
    (a labelled counter reads as its total), and each labelled sample under its full name too."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        name, value = line.rsplit(" ", 1)
        base = name.split("{", 1)[0]
        out[base] = out.get(base, 0.0) + float(value)
        if "{" in name:
            out[name] = float(value)
    return out


def incidents_jsonl(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


SIGNAL_SQL = (
    "SELECT toString(ts) AS ts, window_s, signal, model_id, model_version, dims_key, value, n, lower, upper,"
    " baseline FROM raiwatch.signals FINAL ORDER BY ts, signal, model_id, model_version, dims_key"
)


def signal_rows(data_dir: Path) -> list[tuple]:
    """Every stored signal of the ClickHouse under ``data_dir`` as comparable tuples, in order."""
    return [tuple(r.values()) for r in query(data_dir, SIGNAL_SQL)]


def incident_keys(rows: list[dict]) -> list[tuple]:
    """What must agree between two runs of the same events: identity, timing and outcome."""
    return sorted(
        (r["incident_id"], r["dedup_key"], r["rule"], r["opened_at"], r["status"], r["resolved_at"])
        for r in rows
    )


def store_incidents(data_dir: Path) -> list[dict]:
    """Every incident in the incident store under ``data_dir``."""
    p = cli("incidents", "list", "--data-dir", str(data_dir), "--json", "--limit", "10000")
    assert p.returncode == 0, p.stderr
    return [orjson.loads(x) for x in p.stdout.splitlines() if x.strip()]


class ClickHouseServer:
    """A ClickHouse HTTP server in its own process: ``storage.clickhouse.httpserver`` over a chdb path.

    Stands in for a ClickHouse server (none can run here); killing and restarting it is a real outage.
    """

    def __init__(self, path: Path, port: int, log: Path):
        self.path, self.port, self.log = path, port, log
        self.proc: subprocess.Popen | None = None
        self.password = secrets.token_urlsafe(16)  # the same across restarts: workers keep their DSN

    @property
    def dsn(self) -> str:
        return f"http://default:{self.password}@127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> None:
        """Start (or restart) the server and wait for its ready line."""
        seen = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as f:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "storage.clickhouse.httpserver", "--path", str(self.path),
                 "--port", str(self.port), "--read-write", "--password-env", "RAIWATCH_TEST_CH_PASSWORD"],
                cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, start_new_session=True,
                env={**os.environ, "RAIWATCH_TEST_CH_PASSWORD": self.password},
            )  # fmt: skip

        def ready() -> bool:
            return b"serving chdb" in self.log.read_bytes()[seen:] or self._died()

        poll(ready, timeout, "the ClickHouse server")
        assert self.proc.poll() is None, self.log.read_text()[-2000:]

    def _died(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()

    def client(self):
        import clickhouse_connect

        return clickhouse_connect.get_client(dsn=self.dsn, tz_mode="aware")

    def signal_rows(self) -> list[tuple]:
        return [tuple(r) for r in self.client().query(SIGNAL_SQL).result_rows]


def alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie (dead, not yet reaped by its parent)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def rss_mb(pid: int) -> float:
    """Resident memory of a process in MB (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0
