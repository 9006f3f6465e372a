"""`raiwatch incidents report ID`: Evidently's drift report for a drift incident, linked from `show`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import orjson

from raiwatch.core.records import Signal
from raiwatch.dev import synth
from raiwatch.drift_reporter import DriftReporter
from tests.harness import cli


def test_evidently_report_of_a_drift_incident(tmp_path: Path):
    events = tmp_path / "events.jsonl"
    synth.write(events, synth.default_scenario(24_000, seed=5, rate_per_s=15, drift=True))
    config = tmp_path / "raiwatch.yaml"
    config.write_text("monitors:\n  drift:\n    reference_s: 600\n")
    out = tmp_path / "out"
    p = cli("replay", str(events), "--out", str(out), "--config", str(config), "--quiet")
    assert p.returncode == 0, p.stderr
    incidents = [orjson.loads(x) for x in (out / "incidents.jsonl").read_bytes().splitlines()]
    (drift,) = [i for i in incidents if i["labels"].get("feature") == "claim_amount"]
    safety = next(i for i in incidents if i["signal"].startswith("safety."))

    where = ("--data-dir", str(out), "--config", str(config))
    p = cli("incidents", "report", drift["incident_id"], *where)
    assert p.returncode == 0, p.stderr
    assert "columns drifted" in p.stdout and "Evidently: 0 of" not in p.stdout
    html = out / "reports" / f"{drift['incident_id']}.html"
    text = html.read_text()
    assert len(text) > 10_000 and "claim_amount" in text
    p = cli("incidents", "show", drift["incident_id"], *where)
    assert f"drift report: file://{html.resolve()}" in p.stdout

    p = cli("incidents", "report", safety["incident_id"], *where)
    assert p.returncode == 2 and "reports are for drift" in p.stderr and "Traceback" not in p.stderr


def _feature_signals(model: str, minutes: range, start: datetime) -> list[Signal]:
    return [
        Signal(
            ts=start + timedelta(minutes=k),
            window=60,
            signal="drift.feature",
            model_id=model,
            value=0.01,
            n=500,
            dims={"feature": "age", "reference": "1@20261102T0900"},
        )
        for k in minutes
    ]


def test_scheduled_reports_come_once_per_boundary_however_the_windows_are_batched():
    start = datetime(2026, 11, 2, 10, 3, tzinfo=UTC)
    one_by_one = [range(k, k + 1) for k in range(40)]
    for batches in ([range(0, 40)], [range(0, 7), range(7, 8), range(8, 40)], one_by_one):
        reporter = DriftReporter(
            lambda: None, "raiwatch", Path("/nonexistent"), reference_s=600, recent_s=300, every_s=600
        )
        queued: list[str] = []
        reporter._queue = lambda trigger, job, q=queued: q.append(trigger)  # record instead of running
        for minutes in batches:
            reporter(_feature_signals("m", minutes, start) + _feature_signals("n", minutes, start), [])
        # windows end 10:03..10:42: boundaries 10:10, 10:20, 10:30, 10:40 crossed by each of two models
        assert queued == ["schedule"] * 8, batches


def test_no_reporter_when_the_drift_family_is_turned_off(tmp_path: Path):
    from raiwatch.core.config import load_config
    from raiwatch.wiring import drift_reporter

    on = load_config(data_dir=str(tmp_path))
    assert drift_reporter(on) is not None
    off = msgspec.structs.replace(on, monitors={"drift": {"enabled": False}})
    assert drift_reporter(off) is None
    assert not (tmp_path / "reports").exists()  # and nothing was made
