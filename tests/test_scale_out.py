"""Scale-out: several workers in one consumer group are as correct as one replay.

Three worker processes share a 12-partition topic, one ClickHouse server (the HTTP server over a
chdb path stands in for one: the embedded engine lets one process open a path, and a shared
server is also what production runs, so the new owner of a partition reads the checkpoints its
last owner wrote) and one PostgreSQL incident store. Workers join while events stream in, and
one is killed with SIGKILL holding open windows.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import uuid
from pathlib import Path

import msgspec
import pytest

from raiwatch.core.config import load_config
from raiwatch.dev import synth
from raiwatch.dev.localkafka import free_port
from streams.topics import ensure_topics
from tests.harness import (
    SIGNAL_SQL,
    ClickHouseServer,
    cli,
    incident_keys,
    incidents_jsonl,
    lag,
    poll,
    produce_paced,
    signal_rows,
    start_worker,
    stop_worker,
)
from tests.test_rollups import assert_rollups_exact, rollup_queries, rows_of

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]
COPIES = 3  # each of the demo's three models three times: nine models over twelve partitions
EVENTS = 24_000 * COPIES
RATE = 15.0 * COPIES
SETTINGS = (
    "monitors:\n  drift:\n    reference_s: 600\n    report_on_incident: false\n    report_every_s: 0\n"
    "  abuse:\n    warmup_s: 600\n"
)


def _scenario(path: Path) -> dict:
    """The demo's traffic and anomalies (safety spike, drift, abuse campaign, fairness shift),
    with every model copied under other ids (each copy its own traffic, without the anomalies)."""
    sc = synth.default_scenario(
        EVENTS, seed=12, rate_per_s=RATE, start=synth.recent_start(EVENTS, RATE),
        drift=True, abuse=True, fairness=True,
    )  # fmt: skip
    copies = [msgspec.structs.replace(m, id=f"{m.id}-{k}") for k in range(1, COPIES) for m in sc.models]
    return synth.write(path, msgspec.structs.replace(sc, models=[*sc.models, *copies]))


def _config(path: Path, bootstrap: str, topic: str, group: str, dsn: str, db: str) -> Path:
    path.write_text(
        f"kafka:\n  bootstrap_servers: '{bootstrap}'\n  telemetry_topic: {topic}\n  dlq_topic: {topic}.dlq\n"
        f"  feedback_topic: {topic}.feedback\n  group_id: {group}\n  session_timeout_s: 10\n"
        "  partitions: 12\n"
        f"windows:\n  idle_close_s: 2\nclickhouse:\n  dsn: '{dsn}'\nincident_db: '{db}'\n{SETTINGS}"
    )
    return path


def _taken(log: Path) -> int:
    counts = re.findall(r"progress events=(\d+)", log.read_text(errors="replace"))
    return int(counts[-1]) if counts else 0


def test_workers_joining_and_one_killed_count_every_event_once_and_equal_one_replay(
    kafka_bootstrap, pg_url, tmp_path
):
    events = tmp_path / "events.jsonl"
    truth = _scenario(events)
    settings = tmp_path / "replay.yaml"
    settings.write_text(SETTINGS)
    replay = tmp_path / "replay"
    p = cli("replay", str(events), "--out", str(replay), "--quiet", "--config", str(settings))
    assert p.returncode == 0, p.stderr
    want_signals = signal_rows(replay)
    want_incidents = incident_keys(incidents_jsonl(replay / "incidents.jsonl"))
    assert {"SafetyRegressionCritical", "FeatureDrift", "AbuseCampaign", "FavourableOutcomeDisparity"} <= {
        k[2] for k in want_incidents
    }

    server = ClickHouseServer(tmp_path / "clickhouse", free_port(), tmp_path / "clickhouse.log")
    server.start()
    run = uuid.uuid4().hex[:8]
    topic, group = f"scale-{run}", f"raiwatch-{run}"
    cfg = _config(tmp_path / "raiwatch.yaml", kafka_bootstrap, topic, group, server.dsn, pg_url)
    ensure_topics(load_config(cfg).kafka)  # twelve partitions before the first record is produced
    logs = [tmp_path / f"worker{i}.log" for i in range(3)]
    workers: list[subprocess.Popen] = []

    def alive() -> list[subprocess.Popen]:
        for w, log in zip(workers, logs, strict=False):
            if w.poll() is not None and w.returncode != -signal.SIGKILL:
                raise AssertionError(f"worker exited {w.returncode}:\n{log.read_text()[-3000:]}")
        return [w for w in workers if w.poll() is None]

    try:
        workers.append(start_worker(cfg, tmp_path / "data0", logs[0]))
        producer = produce_paced(events, kafka_bootstrap, topic, per_s=1200)
        poll(lambda: alive() and _taken(logs[0]) >= 8_000, 180, "the first worker to take 8,000 events")
        for i in (1, 2):  # two more join the group mid-stream: partitions move with open windows
            workers.append(start_worker(cfg, tmp_path / f"data{i}", logs[i]))
        busy = poll(
            lambda: alive() and [i for i in (1, 2) if _taken(logs[i]) >= 1_000],
            180,
            "a joined worker to take 1,000 events",
        )
        victim = busy[0]
        os.kill(workers[victim].pid, signal.SIGKILL)  # with windows open and writes in flight
        workers[victim].wait(30)
        producer.join(300)
        assert not producer.is_alive()
        poll(lambda: alive() and lag(kafka_bootstrap, group, topic) == 0, 300, "the group to commit all")
        assert len(alive()) == 2
    finally:
        for w in workers:
            stop_worker(w)
    moved = [log.read_text() for log in logs]
    assert "partitions revoked" in moved[0]  # the first worker gave partitions away mid-stream
    assert all("partitions assigned" in text for text in moved)
    assert sum(text.count("worker ready") for text in moved) == 3

    ch = server.client()
    try:
        n, unique = ch.query(
            "SELECT count(), uniqExact(event_id) FROM raiwatch.telemetry_events FINAL"
        ).result_rows[0]
        assert n == unique == truth["valid"]
        # every window of every model and series emitted with complete counts: each stored copy
        # (before merging, by any worker) equals the single replay's row
        copies = ch.query(SIGNAL_SQL.replace(" FINAL", "")).result_rows
        assert {tuple(r) for r in copies} == set(want_signals)
        assert [tuple(r) for r in ch.query(SIGNAL_SQL).result_rows] == want_signals
        listed = cli("incidents", "list", "--json", "--limit", "10000", "--config", str(cfg))
        assert listed.returncode == 0, listed.stderr
        got = incident_keys([msgspec.json.decode(x) for x in listed.stdout.splitlines() if x.strip()])
        assert got == want_incidents  # one store, three workers, the same incidents as one replay
        # the rollups each worker advanced for the models it held, restarts and moves included,
        # equal the deduplicated tables they summarise, at every level
        rolled = rows_of(ch, rollup_queries())
        assert_rollups_exact(rolled)
        assert sum(r["events"] for r in rolled["events_rolled_1d"]) == truth["valid"]
    finally:
        ch.close()
        server.stop()
