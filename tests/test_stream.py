"""The streaming path on a real Apache Kafka broker: worker, DLQ, restart, and agreement with replay."""

from __future__ import annotations

import os
import re
import signal
import uuid
from pathlib import Path

import orjson
import pytest

from raiwatch.dev import synth
from raiwatch.dev.localkafka import free_port
from streams.producer import produce
from tests.harness import (
    cli,
    incidents_jsonl,
    poll,
    query,
    read_topic,
    scrape,
    start_worker,
    stop_worker,
    wait_drained,
    write_config,
)

pytestmark = pytest.mark.kafka
EVENTS = 24_000
# a 27-minute stream: learn drift's reference and abuse's regular accounts from its first 10
# minutes; a worker's scheduled Evidently report every 10. The claim amounts' 8-minute drift comes
# at 4.5 events/s: at the default budget (1 false alarm per model-week) its PSI's lower bound stays
# at 0.075-0.1, so the test allows 10 a week to compare stream and replay on a drift incident too
DRIFT = (
    "false_alarms_per_model_week: 10\n"
    "monitors:\n  drift:\n    reference_s: 600\n    report_every_s: 600\n  abuse:\n    warmup_s: 600\n"
)


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    path = tmp_path_factory.mktemp("stream") / "events.jsonl"
    return path, synth.write(
        path,
        synth.default_scenario(
            EVENTS,
            seed=5,
            garbage_fraction=0.01,
            rate_per_s=15,
            start=synth.recent_start(EVENTS, 15),
            drift=True,
            abuse=True,
        ),
    )


@pytest.fixture(scope="module")
def replay_incidents(scenario, tmp_path_factory) -> list[dict]:
    events, _ = scenario
    out = tmp_path_factory.mktemp("replay") / "out"
    config = out.parent / "raiwatch.yaml"
    config.write_text(DRIFT)
    p = cli("replay", str(events), "--out", str(out), "--quiet", "--config", str(config))
    assert p.returncode == 0, p.stderr
    incidents = incidents_jsonl(out / "incidents.jsonl")
    rules = {i["rule"] for i in incidents}
    assert {
        "SafetyRegressionCritical",
        "FeatureDrift",
        "AbuseCampaign",
    } <= rules  # compared on three families
    return incidents


def _setup(tmp_path: Path, bootstrap: str) -> tuple[Path, Path, str, str]:
    run = uuid.uuid4().hex[:8]
    topic, group = f"telemetry-{run}", f"raiwatch-{run}"
    cfg = write_config(tmp_path / "raiwatch.yaml", bootstrap, topic, group, extra=DRIFT)
    return cfg, tmp_path / "data", topic, group


def _store_incidents(data: Path) -> list[dict]:
    p = cli("incidents", "list", "--data-dir", str(data), "--json", "--limit", "1000")
    assert p.returncode == 0, p.stderr
    return sorted(
        (orjson.loads(x) for x in p.stdout.splitlines()), key=lambda r: (r["opened_at"], r["incident_id"])
    )


def _key(rows: list[dict]) -> list[tuple]:
    return [
        (r["incident_id"], r["dedup_key"], r["rule"], r["opened_at"], r["status"], r["resolved_at"])
        for r in rows
    ]


def _check_rows(data: Path, valid: int) -> None:
    (row,) = query(data, "SELECT count() AS n, uniqExact(event_id) AS u FROM raiwatch.telemetry_events FINAL")
    assert row == {"n": valid, "u": valid}
    dup = query(
        data,
        "SELECT count() AS n FROM (SELECT signal, model_id, dims, ts, count() c "
        "FROM raiwatch.signals FINAL GROUP BY ALL HAVING c > 1)",
    )
    assert dup == [{"n": 0}]


def test_stream_spike_dlq_and_agreement_with_replay(kafka_bootstrap, scenario, replay_incidents, tmp_path):
    events, truth = scenario
    cfg, data, topic, group = _setup(tmp_path, kafka_bootstrap)
    log = tmp_path / "worker.log"
    port = free_port()
    worker = start_worker(cfg, data, log, "--metrics-port", str(port))
    try:
        with events.open("rb") as f:
            assert produce(f, kafka_bootstrap, topic).sent == truth["events"]  # the campaign adds some
        wait_drained(kafka_bootstrap, group, topic, worker, log)
        # drained, the worker says so in a progress line (what `raiwatch demo` waits for)
        settled = lambda: re.findall(r"open_windows=(\d+)", log.read_text())[-1:] == ["0"]  # noqa: E731
        poll(settled, 30, "a progress line with no window left unsettled")
        metrics = scrape(port)
        assert metrics["raiwatch_events_total"] == truth["valid"]
        assert metrics["raiwatch_rejected_events_total"] == truth["malformed"]
        assert metrics["raiwatch_open_windows"] == 0
        # on-call rates an incident while the worker holds the store: the worker copies it to ClickHouse
        incident_id = _store_incidents(data)[0]["incident_id"]
        fb = cli("incidents", "feedback", incident_id, "false_positive", "--data-dir", str(data))
        assert fb.returncode == 0 and "the running worker updates it" in fb.stdout, fb.stdout + fb.stderr
        # Evidently reports: one per drift incident opened, and the scheduled ones, off the stream's path
        drift_ids = {i["incident_id"] for i in _store_incidents(data) if i["signal"].startswith("drift.")}
        assert drift_ids
        reports = data / "reports"
        expected = {f"{i}.html" for i in drift_ids}
        written = lambda: {p.name for p in reports.glob("*.html")}  # noqa: E731
        poll(lambda: expected <= written(), 180, "the incidents' drift reports")
        scheduled = poll(lambda: sorted(written() - expected), 60, "a scheduled drift report")
        assert all(re.fullmatch(r"[\w.-]+-\d{8}T\d{4}\.html", name) for name in scheduled)
    finally:
        stop_worker(worker)
    rows = query(data, "SELECT trigger, incident_id, drifted_columns, path FROM raiwatch.drift_reports")
    assert {r["incident_id"] for r in rows if r["trigger"] == "incident"} == drift_ids
    assert any("claim_amount" in r["drifted_columns"] for r in rows if r["trigger"] == "incident")
    assert any(r["trigger"] == "schedule" for r in rows)
    assert all(Path(r["path"]).is_file() for r in rows)
    mirrored = query(
        data, f"SELECT feedback FROM raiwatch.incidents FINAL WHERE incident_id = '{incident_id}'"
    )
    assert mirrored == [{"feedback": "false_positive"}]
    text = log.read_text()
    assert "INCIDENT OPENED [critical]" in text
    assert " ERROR " not in text and "\x1b[" not in text  # no spurious errors, no terminal colours
    assert all(" INFO raiwatch." in ln for ln in text.splitlines() if "progress events=" in ln)
    dlq = read_topic(kafka_bootstrap, f"{topic}.dlq", truth["malformed"])
    assert len(dlq) == truth["malformed"] > 0
    for rec in dlq:
        headers = dict(rec.headers)
        assert headers["reason"] and headers["source"].decode().startswith(f"{topic}/")
    _check_rows(data, truth["valid"])
    assert _key(_store_incidents(data)) == _key(replay_incidents)


def test_worker_killed_mid_stream_loses_and_duplicates_nothing(
    kafka_bootstrap, scenario, replay_incidents, tmp_path
):
    events, truth = scenario
    cfg, data, topic, group = _setup(tmp_path, kafka_bootstrap)
    log = tmp_path / "worker.log"
    with events.open("rb") as f:
        assert produce(f, kafka_bootstrap, topic).sent == truth["events"]
    worker = start_worker(cfg, data, log)
    try:
        # kill -9 once the worker has written some signals but is far from done
        poll(lambda: "progress events=" in log.read_text(), 120, "the worker's first closed window")
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(30)
        json_log = tmp_path / "worker.json.log"
        worker = start_worker(cfg, data, json_log, "--json-logs")
        wait_drained(kafka_bootstrap, group, topic, worker, json_log)
    finally:
        stop_worker(worker)
    records = [orjson.loads(line) for line in json_log.read_text().splitlines() if line.strip()]
    assert [r["message"].split(":")[0] for r in records if r["message"].startswith("worker ")] == [
        "worker ready",
        "worker stopped",
    ]  # every line is one JSON object
    progress = [r for r in records if r["message"].startswith("progress")]
    assert progress and all(
        {"events", "signals", "open_windows", "level", "ts"} <= r.keys() for r in progress
    )
    _check_rows(data, truth["valid"])
    assert _key(_store_incidents(data)) == _key(replay_incidents)
    dlq = read_topic(kafka_bootstrap, f"{topic}.dlq", truth["malformed"])
    assert len({(r.headers and dict(r.headers)["source"]) for r in dlq}) == truth["malformed"]
