"""``raiwatch replay`` end to end: the contract's command line, outputs, and the injected spike."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import orjson
import pytest

from raiwatch.core import contracts
from raiwatch.dev import synth
from tests.harness import cli, incidents_jsonl, query


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    path = tmp_path_factory.mktemp("replay") / "events.jsonl"
    return path, synth.write(
        path, synth.default_scenario(30_000, seed=11, garbage_fraction=0.01, rate_per_s=15)
    )


@pytest.fixture(scope="module")
def replayed(scenario, tmp_path_factory) -> Path:
    events, _ = scenario
    out = tmp_path_factory.mktemp("out") / "run"
    p = cli("replay", str(events), "--out", str(out), "--quiet")
    assert p.returncode == 0, p.stderr
    return out


def _model_incidents(rows: list[dict]) -> list[dict]:
    """Model-wide safety incidents: the regression test pages first; the absolute rule, held back
    while it fires, must not page again."""
    return [r for r in rows if r["rule"] in ("SafetyViolationRateHigh", "SafetyRegressionCritical")]


def test_spike_opens_one_critical_incident_with_runbook(scenario, replayed):
    _, truth = scenario
    spike = truth["anomalies"][0]
    rows = incidents_jsonl(replayed / "incidents.jsonl")
    check = contracts.validator("incident.v1")
    for r in rows:
        check.validate(r)
        assert r["signal"].startswith("safety.") and r["labels"]["model_id"] == "helpdesk-assistant"
    (inc,) = _model_incidents(rows)
    assert inc["severity"] == "critical" and inc["labels"]["category"] == spike["category"]
    assert inc["rule"] == "SafetyRegressionCritical" and inc["runbook_url"].endswith("safety-regression.md")
    opened = datetime.fromisoformat(inc["opened_at"])
    start, end = datetime.fromisoformat(spike["start"]), datetime.fromisoformat(spike["end"])
    # the CUSUM needs no `for`: a tenfold spike at ~540 events a window crosses in a window or two
    assert start <= opened <= start + timedelta(minutes=3), (opened, start)
    assert inc["status"] == "resolved" and datetime.fromisoformat(inc["resolved_at"]) > end
    assert "self_harm" in inc["summary"] and "%" in inc["summary"]


def test_rejected_lines_are_all_reported(scenario, replayed):
    _, truth = scenario
    rejected = [orjson.loads(x) for x in (replayed / "rejected.jsonl").read_bytes().splitlines()]
    assert len(rejected) == truth["malformed"] > 0
    for r in rejected:
        assert r["reason"] and r["source"].startswith("events.jsonl:") and r["raw"]


def test_clickhouse_holds_every_valid_event_and_the_signals(scenario, replayed):
    _, truth = scenario
    (row,) = query(
        replayed, "SELECT count() AS n, uniqExact(event_id) AS u FROM raiwatch.telemetry_events FINAL"
    )
    assert row == {"n": truth["valid"], "u": truth["valid"]}
    (rej,) = query(replayed, "SELECT count() AS n FROM raiwatch.rejected_events")
    assert rej["n"] == truth["malformed"]
    sig = query(
        replayed,
        "SELECT max(value) AS peak, median(n) AS med_n FROM raiwatch.signals FINAL "
        "WHERE signal = 'safety.violation_rate' AND model_id = 'helpdesk-assistant' "
        "AND dims = map('category', 'self_harm')",
    )
    # 15 events/s, 60% of them the assistant's: about 540 per 60 s window
    assert 0.09 < sig[0]["peak"] < 0.16 and 450 < sig[0]["med_n"] < 650


def test_replay_is_deterministic(scenario, replayed, tmp_path):
    events, _ = scenario
    p = cli("replay", str(events), "--out", str(tmp_path / "again"), "--quiet")
    assert p.returncode == 0, p.stderr
    assert incidents_jsonl(tmp_path / "again" / "incidents.jsonl") == incidents_jsonl(
        replayed / "incidents.jsonl"
    )


def test_replay_refuses_a_folder_it_did_not_make(scenario, tmp_path):
    events, _ = scenario
    (tmp_path / "precious.txt").write_text("keep me")
    p = cli("replay", str(events), "--out", str(tmp_path), "--quiet")
    assert p.returncode == 2 and "not made by raiwatch replay" in p.stderr
    assert (tmp_path / "precious.txt").exists()


def test_replay_with_bad_rules_refuses_to_start(scenario, tmp_path):
    events, _ = scenario
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "bad.yaml").write_text(
        "groups:\n  - name: x\n    rules:\n      - alert: A\n        signal: safety.violation_rate\n"
        "        fire_when: value >> 3\n"
    )
    p = cli("replay", str(events), "--rules", str(rules), "--out", str(tmp_path / "o"), "--quiet")
    assert p.returncode == 2 and "bad.yaml:" in p.stderr
