"""Helpers for end-to-end tests: the CLI in subprocesses, workers, lag, and queries.

The embedded ClickHouse (chdb) lets one process open one data path, so every test reads a
worker's or a replay's ClickHouse through a ``raiwatch query`` subprocess after it stopped.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import orjson
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

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


def write_config(path: Path, bootstrap: str, topic: str, group: str, **windows: float) -> Path:
    win = "".join(f"  {k}: {v}\n" for k, v in {"idle_close_s": 2, **windows}.items())
    path.write_text(
        f"kafka:\n  bootstrap_servers: '{bootstrap}'\n  telemetry_topic: {topic}\n  dlq_topic: {topic}.dlq\n"
        f"  feedback_topic: {topic}.feedback\n  group_id: {group}\n  session_timeout_s: 10\n"
        f"windows:\n{win}"
    )
    return path


def start_worker(config: Path, data_dir: Path, log: Path, *extra: str) -> subprocess.Popen:
    args = ["run", "--config", str(config), "--data-dir", str(data_dir), *extra]
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
