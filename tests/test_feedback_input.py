"""Delayed labels (feedback-event.v1) reach the monitors and the trend tables, in replay and on Kafka."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from raiwatch.dev import synth
from raiwatch.replay import ReplaySummary, _Labels
from tests.harness import (
    cli,
    query,
    read_topic,
    start_worker,
    stop_worker,
    wait_drained,
    write_config,
)


def _labels(events: Path, every: int, delay_s: float) -> list[bytes]:
    """A label for every ``every``-th event, ``delay_s`` after it."""
    out = []
    for i, line in enumerate(events.read_bytes().splitlines()):
        if i % every:
            continue
        ev = orjson.loads(line)
        ts = datetime.fromisoformat(ev["timestamp"]) + timedelta(seconds=delay_s)
        out.append(
            orjson.dumps(
                {"schema_version": 1, "event_id": ev["event_id"], "timestamp": ts.isoformat(),
                 "favorable": i % 3 == 0, "label": "fraud" if i % 2 else "ok", "source": "review"}
            )
        )  # fmt: skip
    return out


def test_replay_stores_labels_and_rejects_bad_ones_with_their_line(tmp_path: Path):
    events = tmp_path / "events.jsonl"
    synth.write(events, synth.default_scenario(3000, seed=9, rate_per_s=20))
    labels = _labels(events, every=10, delay_s=90)
    labels.insert(5, b'{"schema_version":1,"event_id":"x"}')  # no timestamp
    feedback = tmp_path / "fb.jsonl"
    feedback.write_bytes(b"\n".join(labels) + b"\n")
    out = tmp_path / "out"
    p = cli("replay", str(events), "--feedback", str(feedback), "--out", str(out), "--quiet")
    assert p.returncode == 0, p.stderr
    assert "feedback: 300 labels read, 1 rejected" in p.stdout
    (row,) = query(
        out, "SELECT count() AS n, countIf(source = 'review') AS r FROM raiwatch.feedback_events FINAL"
    )
    assert row == {"n": 300, "r": 300}
    rejected = [orjson.loads(x) for x in (out / "rejected.jsonl").read_bytes().splitlines()]
    assert [(r["source"], "timestamp" in r["reason"]) for r in rejected] == [("fb.jsonl:6", True)]


class _Recorder:
    """Stands in for the pipeline's feedback entry: records what it is fed, in order."""

    def __init__(self) -> None:
        self.fed: list[list[bytes]] = []

    def process_feedback(self, raws, sources, origin=None):
        from raiwatch.core.batch import BatchResult

        self.fed.append(list(raws))
        return BatchResult(windows=[None] * len(raws))


def test_replay_feeds_a_label_once_the_events_have_reached_its_time(tmp_path: Path):
    t0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC).timestamp()
    lines = [
        orjson.dumps({"schema_version": 1, "event_id": f"e{i}", "timestamp": f"2026-11-02T09:0{i}:00Z"})
        for i in range(5)
    ]
    path = tmp_path / "fb.jsonl"
    path.write_bytes(b"\n".join([lines[0], b"garbage", *lines[1:]]) + b"\n")
    rec = _Recorder()
    with (tmp_path / "rejected.jsonl").open("wb") as rej:
        feed = _Labels(path, rec, ReplaySummary(), rej)
        feed.feed_until(t0 + 90)  # events up to 09:01:30 seen: labels of 09:00 and 09:01 (and the bad line)
        assert rec.fed == [[lines[0], b"garbage", lines[1]]]
        feed.feed_until(t0 + 150)
        assert rec.fed[1:] == [[lines[2]]]
        feed.feed_until(float("inf"))
        assert rec.fed[2:] == [[lines[3], lines[4]]]


@pytest.mark.kafka
def test_the_worker_consumes_the_feedback_topic(kafka_bootstrap, tmp_path: Path):
    from kafka import KafkaProducer

    events = tmp_path / "events.jsonl"
    synth.write(
        events, synth.default_scenario(2000, seed=10, rate_per_s=20, start=synth.recent_start(2000, 20))
    )
    labels = _labels(events, every=20, delay_s=30)
    run = uuid.uuid4().hex[:8]
    topic, group = f"fb-{run}", f"raiwatch-{run}"
    cfg = write_config(tmp_path / "c.yaml", kafka_bootstrap, topic, group)
    log = tmp_path / "worker.log"
    worker = start_worker(cfg, tmp_path / "data", log)
    try:
        producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
        for line in events.read_bytes().splitlines():
            producer.send(topic, value=line)
        for line in [*labels, b"not json"]:
            producer.send(f"{topic}.feedback", value=line)
        producer.flush()
        producer.close()
        wait_drained(kafka_bootstrap, group, topic, worker, log)
        wait_drained(kafka_bootstrap, group, f"{topic}.feedback", worker, log)
    finally:
        stop_worker(worker)
    (row,) = query(tmp_path / "data", "SELECT count() AS n FROM raiwatch.feedback_events FINAL")
    assert row == {"n": len(labels)}
    (dead,) = read_topic(kafka_bootstrap, f"{topic}.dlq", 1)
    assert dead.value == b"not json" and dict(dead.headers)["source"].startswith(
        f"{topic}.feedback/".encode()
    )
