"""Never blind: poison messages, a broker outage, an idle start, wild clocks, kill -9, a crash in any
stage of a window, a ClickHouse outage, a dead pipeline, SIGTERM.

Each case runs a real worker process on the real broker and compares what it stored — every
signal (value, interval, n, baseline) and every incident — with a ``raiwatch replay`` of the same
events, which no fault touched.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import os
import random
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from kafka import KafkaProducer

from raiwatch.dev import synth
from raiwatch.dev.localkafka import free_port
from streams.producer import produce
from tests.harness import (
    ROOT,
    ClickHouseServer,
    cli,
    incident_keys,
    incidents_jsonl,
    lag,
    poll,
    produce_paced,
    query,
    read_topic,
    rss_mb,
    scrape,
    signal_rows,
    start_worker,
    stop_worker,
    store_incidents,
    wait_drained,
    write_config,
)

pytestmark = pytest.mark.kafka


def _scenario(path: Path, events: int, rate: float, seed: int) -> dict:
    sc = synth.default_scenario(events, seed=seed, rate_per_s=rate, start=synth.recent_start(events, rate))
    return synth.write(path, sc)


def _replay(events: Path, out: Path, *args: str) -> tuple[list[tuple], list[tuple]]:
    p = cli("replay", str(events), "--out", str(out), "--quiet", *args)
    assert p.returncode == 0, p.stderr
    return signal_rows(out), incident_keys(incidents_jsonl(out / "incidents.jsonl"))


def _setup(
    tmp_path: Path, bootstrap: str, extra: str = "", **windows: float
) -> tuple[Path, Path, str, str, Path]:
    run = uuid.uuid4().hex[:8]
    topic, group = f"nb-{run}", f"raiwatch-{run}"
    cfg = write_config(tmp_path / "raiwatch.yaml", bootstrap, topic, group, extra, **windows)
    return cfg, tmp_path / "data", topic, group, tmp_path / "worker.log"


def _progress_events(log: Path) -> int:
    """Events the worker process started last has taken so far (by its progress lines)."""
    text = log.read_text(errors="replace").rpartition("worker ready")[2]
    counts = re.findall(r"progress events=(\d+)", text)
    return int(counts[-1]) if counts else 0


# -- poison messages ------------------------------------------------------------------------------


def _poison(template: dict) -> dict[str, tuple[bytes, str]]:
    """Inputs that once stopped or fooled the worker, each with the reason it must be rejected for."""

    def ev(eid: str, **changes: object) -> dict:
        return {**template, "event_id": eid, **changes}

    def raw(obj: dict) -> bytes:
        return orjson.dumps(obj)

    deep_obj = raw(ev("p-deep-object"))[:-1] + b',"x":' + b'{"a":' * 10_000 + b"1" + b"}" * 10_000 + b"}"
    deep_arr = raw(ev("p-deep-array"))[:-1] + b',"x":' + b"[" * 10_000 + b"1" + b"]" * 10_000 + b"}"
    return {
        "deep_object": (deep_obj, "nested 10001 levels deep"),
        "deep_array": (deep_arr, "nested 10001 levels deep"),
        "bad_utf8": (raw(ev("p-utf8"))[:-1] + b',"note":"caf\xe9"}', "not UTF-8"),
        "lone_surrogate": (raw(ev("p-surrogate"))[:-1] + b',"note":"x\\ud800"}', "lone UTF-16 surrogate"),
        "year_9999": (raw(ev("p-9999", timestamp="9999-12-31T23:59:59Z")), "outside 1971-2200"),
        "year_0001": (raw(ev("p-0001", timestamp="0001-01-01T00:00:00Z")), "outside 1971-2200"),
        "year_2100": (raw(ev("p-2100", timestamp="2100-01-01T00:00:00Z")), "ahead of this worker's clock"),
        "nan": (raw(ev("p-nan"))[:-1] + b',"response":{"latency_ms":NaN}}', "NaN and Infinity"),
        "null_model": (raw(ev("p-null", model=None)), "got `null` - at `$.model`"),
        "html": (b"<html>502 Bad Gateway</html>", "not JSON"),
    }


@pytest.fixture(scope="module")
def poisoned(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A clean scenario with poison, redeliveries and one moved-timestamp duplicate spliced in."""
    work = tmp_path_factory.mktemp("poison")
    clean = work / "clean.jsonl"
    truth = _scenario(clean, 12_000, 20, seed=21)
    lines = clean.read_bytes().splitlines()
    template = orjson.loads(lines[100])
    poison = _poison(template)
    dup_same = lines[500]  # a producer retry: the same bytes twice
    moved = orjson.loads(lines[700])
    moved["timestamp"] = (datetime.fromisoformat(moved["timestamp"]) + timedelta(seconds=1)).isoformat()
    out = list(lines)
    for k, (bad, _) in enumerate(poison.values()):
        out.insert(1000 + 900 * k, bad)
    out.insert(6000, dup_same)
    out.insert(7000, orjson.dumps(moved))  # same event_id, another timestamp
    path = work / "events.jsonl"
    path.write_bytes(b"\n".join(out) + b"\n")
    signals, incidents = _replay(path, work / "replay")
    return {"path": path, "truth": truth, "poison": poison, "signals": signals, "incidents": incidents}


def test_poison_messages_never_stop_the_worker_and_each_lands_in_the_dlq(kafka_bootstrap, poisoned, tmp_path):
    cfg, data, topic, group, log = _setup(tmp_path, kafka_bootstrap)
    port = free_port()
    worker = start_worker(cfg, data, log, "--metrics-port", str(port))
    big = orjson.dumps({"schema_version": 1, "event_id": "p-big", "model": {"id": "helpdesk-assistant"}})
    big = big[:-1] + b',"blob":"' + b"x" * 2_000_000 + b'"}'  # 2 MB, about 6 KB gzipped on the wire
    try:
        with poisoned["path"].open("rb") as f:
            produce(f, kafka_bootstrap, topic)
        p = KafkaProducer(
            bootstrap_servers=kafka_bootstrap, compression_type="gzip", max_request_size=4_000_000
        )
        p.send(topic, key=b"helpdesk-assistant", value=big)
        p.send(topic, key=b"helpdesk-assistant", value=None)  # a tombstone: no value at all
        p.flush()
        p.close()
        wait_drained(kafka_bootstrap, group, topic, worker, log)
        assert worker.poll() is None
        metrics = scrape(port)
    finally:
        stop_worker(worker)
    truth, poison = poisoned["truth"], poisoned["poison"]
    valid = truth["valid"]
    assert metrics["raiwatch_events_total"] == valid
    assert metrics["raiwatch_duplicate_events_total"] == 2
    assert metrics["raiwatch_rejected_events_total"] == len(poison) + 2
    assert metrics["raiwatch_late_events_total"] == 0

    (row,) = query(data, "SELECT count() AS n, uniqExact(event_id) AS u FROM raiwatch.telemetry_events FINAL")
    assert row == {"n": valid, "u": valid}
    assert signal_rows(data) == poisoned["signals"]  # values, intervals, n and baselines: all equal
    assert incident_keys(store_incidents(data)) == poisoned["incidents"]

    dlq = {rec.offset: rec for rec in read_topic(kafka_bootstrap, f"{topic}.dlq", len(poison) + 2)}
    assert len(dlq) == len(poison) + 2
    reasons = [dict(r.headers)["reason"].decode() for r in dlq.values()]
    for name, (bad, why) in poison.items():
        hits = [r for r in dlq.values() if r.value == bad]
        assert len(hits) == 1, name
        assert why in dict(hits[0].headers)["reason"].decode(), (name, reasons)
    (cut,) = [r for r in dlq.values() if dict(r.headers).get("truncated")]
    h = dict(cut.headers)
    assert int(h["size"]) == len(big) and h["sha256"].decode() == hashlib.sha256(big).hexdigest()
    assert b"over the 1048576-byte limit" in h["reason"] and len(cut.value) == 524_288
    assert big.startswith(cut.value)
    sha = h["sha256"].decode()
    (kept,) = query(data, f"SELECT length(raw) AS n FROM raiwatch.rejected_events WHERE sha256 = '{sha}'")
    assert kept["n"] == len(big)  # the whole bytes, where a person can fetch them
    assert any(not r.value and dict(r.headers)["reason"] == b"empty message" for r in dlq.values())


# -- a broker outage ----------------------------------------------------------------------------


def _outage(kafka_broker, worker, log: Path, seconds: float) -> None:
    """Stop the broker for ``seconds``, checking the worker survives it, then start it again."""
    kafka_broker.stop()
    end = time.monotonic() + seconds
    poll(lambda: worker.poll() is not None or time.monotonic() > end, seconds + 10, "the outage to pass")
    assert worker.poll() is None, log.read_text()[-3000:]
    kafka_broker.start()


def test_a_broker_outage_while_draining_a_backlog_changes_no_signal(kafka_broker, tmp_path):
    """The probe that once made 151,463 of 199,010 events late: the broker stops mid-backlog."""
    bootstrap = kafka_broker.bootstrap
    events = tmp_path / "events.jsonl"
    _scenario(events, 150_000, 40, seed=31)
    signals, incidents = _replay(events, tmp_path / "replay")
    cfg, data, topic, group, log = _setup(tmp_path, bootstrap)
    with events.open("rb") as f:
        produce(f, bootstrap, topic)
    port = free_port()
    worker = start_worker(cfg, data, log, "--metrics-port", str(port))
    try:
        poll(lambda: _progress_events(log) >= 30_000, 120, "the worker to take 30,000 events")
        _outage(kafka_broker, worker, log, 20)
        wait_drained(bootstrap, group, topic, worker, log, timeout=300)
        metrics = scrape(port)
    finally:
        stop_worker(worker)
    assert metrics["raiwatch_late_events_total"] == 0 and metrics["raiwatch_events_total"] >= 150_000
    assert "no fetch answer from Kafka" in log.read_text()  # it said so
    assert signal_rows(data) == signals
    assert incident_keys(store_incidents(data)) == incidents


def test_a_broker_outage_under_live_traffic_changes_no_signal(kafka_broker, tmp_path):
    """Producers and worker both lose the broker for 20 s; events dated as they are produced.

    With the broker's own stop and start the outage lasts about 28 s, and the producer needs a few
    more to resend; with 60 s of allowed lateness no event is really late, so none may be counted
    late (with the default 30 s, the first events of the outage really are late, and are)."""
    bootstrap = kafka_broker.bootstrap
    events, rate = tmp_path / "events.jsonl", 300
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=5)
    synth.write(events, synth.default_scenario(9000, seed=33, rate_per_s=rate, start=start))
    signals, incidents = _replay(events, tmp_path / "replay", "--config", str(_windows_10s(tmp_path)))
    cfg, data, topic, group, log = _setup(tmp_path, bootstrap, size_s=10, allowed_lateness_s=60)
    port = free_port()
    worker = start_worker(cfg, data, log, "--metrics-port", str(port))
    try:
        poll(lambda: "worker ready" in log.read_text(), 120, "the worker to start")
        producer = produce_paced(events, bootstrap, topic, per_s=rate, start_at=start)
        poll(lambda: _progress_events(log) >= 3000, 120, "the worker to take 3,000 events")
        _outage(kafka_broker, worker, log, 20)
        producer.join(300)
        wait_drained(bootstrap, group, topic, worker, log, timeout=300)
        metrics = scrape(port)
    finally:
        stop_worker(worker)
    assert metrics["raiwatch_late_events_total"] == 0 and metrics["raiwatch_events_total"] == 9000
    assert signal_rows(data) == signals
    assert incident_keys(store_incidents(data)) == incidents


# -- an idle start, wild clocks, a dead broker -----------------------------------------------------


def _wild_live(path: Path, start: datetime, events: int, rate: float) -> int:
    """Live traffic from ``start``, dated as sent: each model first sends three events stamped 240 s
    ahead, and a tenth of the rest come from a clock 60 s fast. Returns how many events."""
    synth.write(path, synth.default_scenario(events, seed=97, rate_per_s=rate, start=start))
    rng = random.Random(97)
    lines, wild, models = [], [], set()
    for line in path.read_bytes().splitlines():
        ev = orjson.loads(line)
        if ev["model"]["id"] not in models:
            models.add(ev["model"]["id"])
            for k in range(3):
                ts = (start + timedelta(seconds=240)).isoformat()
                wild.append(orjson.dumps({**ev, "event_id": f"wild-{ev['event_id']}-{k}", "timestamp": ts}))
        if rng.random() < 0.1:
            ev["timestamp"] = (datetime.fromisoformat(ev["timestamp"]) + timedelta(seconds=60)).isoformat()
        lines.append(orjson.dumps(ev))
    path.write_bytes(b"\n".join(wild + lines) + b"\n")
    return len(wild) + len(lines)


def _readyz(port: int) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_an_idle_worker_counts_a_backlog_as_a_replay_wild_clocks_make_nothing_late_kafka_loss_shows(
    kafka_broker, tmp_path
):
    """One worker through three probes of issue 21 in turn. It waits for traffic (idle, ready), then
    a 12-minute backlog arrives: counted as a replay counts it (it once counted all of it late).
    Then live traffic where each model first sends three events 240 s ahead and a tenth of the
    rest comes from a clock 60 s fast: no event is late (once: all, for minutes). Then the broker
    is killed: /readyz says so within two seconds (it once took five), and never said so before."""
    bootstrap = kafka_broker.bootstrap
    backlog = tmp_path / "backlog.jsonl"
    valid = _scenario(backlog, 7200, 10, seed=95)["valid"]
    signals, incidents = _replay(backlog, tmp_path / "replay")
    cfg, data, topic, group, log = _setup(tmp_path, bootstrap)
    port = free_port()
    worker = start_worker(cfg, data, log, "--metrics-port", str(port))
    try:
        poll(lambda: "all partitions idle" in log.read_text(), 120, "the worker to wait, idle")
        assert _readyz(port)[0] == 200
        with backlog.open("rb") as f:
            produce(f, bootstrap, topic)
        wait_drained(bootstrap, group, topic, worker, log)
        assert scrape(port)["raiwatch_late_events_total"] == 0
        assert signal_rows(data) == signals  # read through the running worker
        assert incident_keys(store_incidents(data)) == incidents

        live = tmp_path / "live.jsonl"
        start = datetime.now(UTC) + timedelta(seconds=1)
        sent = _wild_live(live, start, 1000, rate=50)
        produce_paced(live, bootstrap, topic, per_s=50, start_at=start).join(120)
        poll(lambda: scrape(port)["raiwatch_events_total"] == valid + sent, 60, "the live events")
        assert scrape(port)["raiwatch_late_events_total"] == 0

        assert _readyz(port)[0] == 200 and "no fetch answer" not in log.read_text()  # never flapped
        kafka_broker.kill()
        killed = time.monotonic()
        poll(lambda: _readyz(port)[0] == 503, 10, "/readyz to drop", interval=0.05)
        took = time.monotonic() - killed
        assert took < 2.5, took
        assert "Kafka does not answer" in _readyz(port)[1]
    finally:
        stop_worker(worker)


def _windows_10s(tmp_path: Path) -> Path:
    path = tmp_path / "windows.yaml"
    path.write_text("windows:\n  size_s: 10\n  allowed_lateness_s: 60\n")
    return path


# -- kill -9 ------------------------------------------------------------------------------------


def test_kill_9_twice_then_restart_equals_an_uninterrupted_replay(kafka_bootstrap, tmp_path):
    events = tmp_path / "events.jsonl"
    _scenario(events, 24_000, 15, seed=5)
    signals, incidents = _replay(events, tmp_path / "replay")
    cfg, data, topic, group, log = _setup(tmp_path, kafka_bootstrap)
    producer = produce_paced(events, kafka_bootstrap, topic, per_s=1500)
    worker = start_worker(cfg, data, log)
    try:
        for started in (1, 2):  # each time with windows open and writes in flight
            poll(lambda started=started: log.read_text().count("worker ready") == started, 120, "a start")
            poll(lambda: _progress_events(log) >= 4000, 120, "the worker to take 4,000 events")
            os.kill(worker.pid, signal.SIGKILL)
            worker.wait(30)
            worker = start_worker(cfg, data, log)
        producer.join(300)
        wait_drained(kafka_bootstrap, group, topic, worker, log)
    finally:
        stop_worker(worker)
    assert log.read_text().count("worker ready") == 3
    (row,) = query(data, "SELECT count() AS n, uniqExact(event_id) AS u FROM raiwatch.telemetry_events FINAL")
    assert row["n"] == row["u"] == 24_000
    assert signal_rows(data) == signals  # baselines included: monitor state came back from its checkpoint
    assert incident_keys(store_incidents(data)) == incidents


# -- a crash in any stage of a window ---------------------------------------------------------------


def test_a_crash_in_each_stage_of_a_window_then_a_restart_equals_an_uninterrupted_run(
    kafka_bootstrap, tmp_path
):
    """Ten minutes of traffic arrive in parts cut at whole minutes. Each part lets the worker close
    the windows before it (written, committed), then the next one makes it die handling its first
    window, each time in another stage (``tests/faults.py`` makes one part raise: observe, close,
    rules, write, checkpoint), and the worker is started again. Each commits only what it had
    written, so at the end the signals and incidents equal the replay's (once, a crash while
    closing brought back 607 of 1,074 signals, and the critical safety incident never opened)."""
    events = tmp_path / "events.jsonl"
    start = datetime.fromisoformat(_scenario(events, 6000, 10, seed=93)["start"])
    signals, incidents = _replay(events, tmp_path / "replay")
    assert "SafetyRegressionCritical" in {i[2] for i in incidents}
    lines = events.read_bytes().splitlines()
    minute = [
        (datetime.fromisoformat(orjson.loads(x)["timestamp"]) - start).total_seconds() // 60 for x in lines
    ]
    stages = ["observe", "close", "rules", "write", "checkpoint"]
    cuts = [4, 5, 6, 7, 8]  # the minute each stage's fault hits: the first part is the 4 minutes before
    bounds = [0, *cuts, math.inf]
    parts = [
        [x for x, m in zip(lines, minute, strict=True) if lo <= m < hi]
        for lo, hi in itertools.pairwise(bounds)
    ]
    cfg, data, topic, group, log = _setup(tmp_path, kafka_bootstrap)
    produce(parts[0], kafka_bootstrap, topic)
    for stage, at, part in zip(stages, cuts, parts[1:], strict=True):
        seen = log.stat().st_size if log.exists() else 0
        with log.open("ab") as out:
            faulty = subprocess.Popen(
                [sys.executable, "-m", "tests.faults", stage, str(start.timestamp() + 60 * at),
                 "--config", str(cfg), "--data-dir", str(data), "--metrics-port", "0"],
                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        try:
            wait_drained(kafka_bootstrap, group, topic, faulty, log)  # it recounts what the last one lost
            produce(part, kafka_bootstrap, topic)
            poll(
                lambda faulty=faulty: faulty.poll() is not None,
                120,
                f"the fault in {stage} to stop the worker",
            )
        finally:
            stop_worker(faulty)
        text = log.read_bytes()[seen:].decode()
        assert faulty.returncode == 1 and f"injected fault: {stage}" in text, text[-3000:]
        assert lag(kafka_bootstrap, group, topic) == len(part)  # nothing of its first window committed
    worker = start_worker(cfg, data, log)
    try:
        wait_drained(kafka_bootstrap, group, topic, worker, log)
        assert signal_rows(data) == signals
        assert incident_keys(store_incidents(data)) == incidents
    finally:
        stop_worker(worker)


# -- a ClickHouse outage ------------------------------------------------------------------------


def test_a_clickhouse_outage_pauses_input_then_catches_up(kafka_bootstrap, tmp_path):
    events = tmp_path / "events.jsonl"
    _scenario(events, 24_000, 15, seed=41)
    signals, incidents = _replay(events, tmp_path / "replay")
    server = ClickHouseServer(tmp_path / "clickhouse", free_port(), tmp_path / "clickhouse.log")
    server.start()
    extra = f"clickhouse:\n  dsn: '{server.dsn}'\n  timeout_s: 3.0\n  connect_timeout_s: 1.0\n"
    cfg, data, topic, group, log = _setup(tmp_path, kafka_bootstrap, extra)
    port = free_port()
    worker = start_worker(cfg, data, log, "--metrics-port", str(port))
    try:
        producer = produce_paced(events, kafka_bootstrap, topic, per_s=1000)
        poll(lambda: _progress_events(log) >= 3000, 120, "the worker to take 3,000 events")
        server.kill()
        down_at = time.monotonic()
        poll(lambda: scrape(port).get("raiwatch_input_paused") == 1, 30, "input to pause")
        assert _ready(port) == (503, True)
        rss = [rss_mb(worker.pid)]
        taken = scrape(port)["raiwatch_events_total"]
        while time.monotonic() - down_at < 60:  # the outage lasts a minute; sample the worker meanwhile
            time.sleep(1)  # sampling during a fixed-length outage, not waiting for a result
            assert worker.poll() is None, log.read_text()[-3000:]
            rss.append(rss_mb(worker.pid))
        assert scrape(port)["raiwatch_events_total"] <= taken + 2 * 5000  # at most the batches in hand
        assert max(rss) - rss[0] < 150, rss  # bounded: not buffering the topic
        server.start()
        producer.join(300)
        wait_drained(kafka_bootstrap, group, topic, worker, log, timeout=300)
        assert _ready(port)[0] == 200
        metrics = scrape(port)
        stop_worker(worker)
        rows = server.signal_rows()
        (n,) = server.client().query("SELECT count() FROM raiwatch.telemetry_events FINAL").result_rows[0]
    finally:
        stop_worker(worker)
        server.stop()
    assert "ClickHouse is unavailable" in log.read_text()
    assert metrics["raiwatch_late_events_total"] == 0 and n == 24_000
    assert rows == signals
    assert incident_keys(store_incidents(data)) == incidents


def _ready(port: int) -> tuple[int, bool]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as r:
            return r.status, False
    except urllib.error.HTTPError as e:
        return e.code, b"not ready" in e.read()


# -- a dead pipeline, SIGTERM --------------------------------------------------------------------


def test_a_pipeline_that_cannot_write_exits_nonzero_without_committing(kafka_bootstrap, tmp_path):
    events = tmp_path / "events.jsonl"
    _scenario(events, 6000, 20, seed=51)
    server = ClickHouseServer(tmp_path / "clickhouse", free_port(), tmp_path / "clickhouse.log")
    server.start()
    cfg, data, topic, group, log = _setup(tmp_path, kafka_bootstrap, f"clickhouse:\n  dsn: '{server.dsn}'\n")
    worker = start_worker(cfg, data, log)
    try:
        poll(lambda: "worker ready" in log.read_text(), 120, "the worker to start")
        server.client().command("DROP TABLE raiwatch.signals")  # every signal write is now refused
        with events.open("rb") as f:
            produce(f, kafka_bootstrap, topic)
        poll(lambda: worker.poll() is not None, 120, "the worker to exit")
        assert worker.returncode == 1
        text = log.read_text()
        assert "the worker stopped on an error" in text and "UNKNOWN_TABLE" in text
    finally:
        stop_worker(worker)
        server.stop()
    assert lag(kafka_bootstrap, group, topic) in (None, 6000)  # nothing committed past what was not written


def _sigterm(worker: subprocess.Popen, timeout: float) -> float:
    """SIGTERM to ``worker``; the seconds until it exited (``TimeoutExpired`` past ``timeout``)."""
    t0 = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    worker.wait(timeout)
    return time.monotonic() - t0


def test_sigterm_stops_the_worker_within_seconds_even_while_clickhouse_is_down(kafka_bootstrap, tmp_path):
    events = tmp_path / "events.jsonl"
    _scenario(events, 6000, 20, seed=61)
    server = ClickHouseServer(tmp_path / "clickhouse", free_port(), tmp_path / "clickhouse.log")
    server.start()
    extra = f"clickhouse:\n  dsn: '{server.dsn}'\n  timeout_s: 3.0\n  connect_timeout_s: 1.0\n"
    cfg, data, topic, _, log = _setup(tmp_path, kafka_bootstrap, extra)
    worker = start_worker(cfg, data, log)
    try:
        poll(lambda: "worker ready" in log.read_text(), 120, "the worker to start")
        server.kill()
        with events.open("rb") as f:
            produce(f, kafka_bootstrap, topic)
        poll(lambda: "ClickHouse is unavailable" in log.read_text(), 60, "the worker to meet the outage")
        took = _sigterm(worker, 30)
    finally:
        stop_worker(worker)
        server.stop()
    assert worker.returncode == 0 and took < 10, (worker.returncode, took, log.read_text()[-2000:])


def test_sigterm_stops_the_worker_within_seconds_even_while_kafka_is_down(kafka_broker, tmp_path):
    """aiokafka's commit waits for a group coordinator without end: the last commit is bounded
    (``KAFKA_WAIT_S``), so a worker whose broker is gone still stops when told (the killed demo's)."""
    bootstrap = kafka_broker.bootstrap
    events = tmp_path / "events.jsonl"
    _scenario(events, 3000, 20, seed=73)
    cfg, data, topic, _, log = _setup(tmp_path, bootstrap)
    # no commit before the stop's: that one has offsets to commit, and no broker to take them
    cfg.write_text(
        cfg.read_text().replace("  session_timeout_s:", "  commit_interval_s: 3600\n  session_timeout_s:")
    )
    worker = start_worker(cfg, data, log)
    try:
        with events.open("rb") as f:
            produce(f, bootstrap, topic)
        poll(lambda: _progress_events(log) > 0, 120, "the worker to take events")
        kafka_broker.stop()
        took = _sigterm(worker, 60)
    finally:
        stop_worker(worker)
    assert worker.returncode == 0 and took < 25, (worker.returncode, took, log.read_text()[-2000:])
    assert "stopped without committing offsets: Kafka did not take them" in log.read_text()


def test_sigterm_on_a_healthy_worker_commits_and_exits_zero(kafka_bootstrap, tmp_path):
    events = tmp_path / "events.jsonl"
    truth = _scenario(events, 3000, 20, seed=71)
    cfg, data, topic, group, log = _setup(tmp_path, kafka_bootstrap)
    worker = start_worker(cfg, data, log)
    try:
        with events.open("rb") as f:
            produce(f, kafka_bootstrap, topic)
        wait_drained(kafka_bootstrap, group, topic, worker, log)
        t0 = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
        assert worker.returncode == 0 and time.monotonic() - t0 < 10
    finally:
        stop_worker(worker)
    assert "worker stopped" in log.read_text() and truth["valid"] == 3000


def test_a_row_clickhouse_refuses_goes_to_the_dlq_and_the_rest_is_stored(kafka_bootstrap, tmp_path):
    events = tmp_path / "events.jsonl"
    truth = _scenario(events, 4000, 20, seed=81)
    server = ClickHouseServer(tmp_path / "clickhouse", free_port(), tmp_path / "clickhouse.log")
    server.start()
    cfg, data, topic, group, log = _setup(tmp_path, kafka_bootstrap, f"clickhouse:\n  dsn: '{server.dsn}'\n")
    worker = start_worker(cfg, data, log)
    lines = events.read_bytes().splitlines()
    for i in (100, 2000, 3500):  # valid events a ClickHouse-side rule will refuse to store
        ev = orjson.loads(lines[i])
        ev["model"]["id"] = "refused-model"
        lines[i] = orjson.dumps(ev)
    try:
        poll(lambda: "worker ready" in log.read_text(), 120, "the worker to start")
        server.client().command(
            "ALTER TABLE raiwatch.telemetry_events "
            "ADD CONSTRAINT no_refused CHECK model_id != 'refused-model'"
        )
        produce(lines, kafka_bootstrap, topic)
        wait_drained(kafka_bootstrap, group, topic, worker, log)
        assert worker.poll() is None
        (n,) = server.client().query("SELECT count() FROM raiwatch.telemetry_events FINAL").result_rows[0]
    finally:
        stop_worker(worker)
        server.stop()
    assert n == truth["valid"] - 3
    dlq = read_topic(kafka_bootstrap, f"{topic}.dlq", 3)
    assert len(dlq) == 3
    assert all(b"refused by ClickHouse" in dict(r.headers)["reason"] for r in dlq)
    assert sorted(orjson.loads(r.value)["event_id"] for r in dlq) == sorted(
        orjson.loads(lines[i])["event_id"] for i in (100, 2000, 3500)
    )
