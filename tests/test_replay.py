"""``raiwatch replay`` end to end: the contract's command line, outputs, and the injected spike."""

from __future__ import annotations

import signal
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import orjson
import pytest

from raiwatch import datadir
from raiwatch.core import contracts
from raiwatch.dev import synth
from raiwatch.replay import BATCH
from storage.incidents import IncidentStore
from tests.harness import ROOT, cli, incidents_jsonl, poll, query


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
    assert [f.name for f in tmp_path.iterdir()] == ["precious.txt"]  # not even a lock file left


def test_an_earlier_replay_is_replaced_only_with_force_and_on_calls_work_stays(scenario, replayed, tmp_path):
    events, _ = scenario
    out = tmp_path / "out"
    assert cli("replay", str(events), "--out", str(out), "--quiet").returncode == 0  # an earlier replay
    rows = incidents_jsonl(out / "incidents.jsonl")
    assert rows == incidents_jsonl(replayed / "incidents.jsonl")
    (judged,) = _model_incidents(rows)
    fb = cli(
        "incidents",
        "feedback",
        judged["incident_id"],
        "true_positive",
        "--by",
        "alice",
        "--data-dir",
        str(out),
    )
    assert fb.returncode == 0, fb.stderr
    sil = cli("silences", "add", "--match", "model_id=helpdesk-assistant", "--for", "1h", "--author", "bob",
              "--comment", "red-team drill", "--data-dir", str(out))  # fmt: skip
    assert sil.returncode == 0, sil.stderr
    (out / "notes.txt").write_text("mine")
    files = {f: f.read_bytes() for f in out.rglob("*") if f.is_file() and f.name != datadir.LOCK_FILE}

    refused = cli("replay", str(events), "--out", str(out), "--quiet")
    assert refused.returncode == 2 and "holds an earlier replay's output: add --force" in refused.stderr
    assert "Traceback" not in refused.stderr and refused.stderr.count("\n") == 1
    assert {f: f.read_bytes() for f in files} == files  # nothing touched

    forced = cli("replay", str(events), "--out", str(out), "--quiet", "--force")
    assert forced.returncode == 0, forced.stderr
    assert (
        "kept from the earlier replay: 1 incident(s) on-call acknowledged, resolved or judged, 1 silence(s)"
        in (forced.stdout)
    )
    assert (out / "notes.txt").read_text() == "mine"
    assert incidents_jsonl(out / "incidents.jsonl") == rows  # the replay's own output, made again
    with IncidentStore(f"sqlite:///{out / 'incidents.db'}") as store:
        stored = {i.incident_id: i for i in store.list(limit=1000)}
        assert set(stored) == {r["incident_id"] for r in rows}  # re-created, none doubled or lost
        assert stored[judged["incident_id"]].feedback == "true_positive"
        assert [s["comment"] for s in store.silences(include_expired=True)] == ["red-team drill"]
    (copy,) = query(
        out, f"SELECT feedback FROM raiwatch.incidents FINAL WHERE incident_id = '{judged['incident_id']}'"
    )
    assert copy == {"feedback": "true_positive"}  # the analysts' copy, rebuilt, shows it too
    assert datadir.replay_mark(out).complete


def test_ctrl_c_says_how_far_it_got_and_the_store_is_refused_without_partial(scenario, tmp_path):
    events, _ = scenario
    copies = 8  # 240,000 lines, the copies after the first are duplicates: many batches to stop in
    big = tmp_path / "events.jsonl"
    big.write_bytes(events.read_bytes() * copies)
    out = tmp_path / "out"
    # Ctrl-C as in a terminal, whatever this process inherited: started in the background by a
    # shell (`make test &`), pytest ignores SIGINT, a child started from it would too, and the
    # replay ran to its end (exit 0)
    replay = subprocess.Popen(
        [sys.executable, "-m", "raiwatch.cli", "replay", str(big), "--out", str(out), "--quiet"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    try:

        def two_batches() -> bool:
            mark = datadir.replay_mark(out)
            return replay.poll() is not None or (mark is not None and mark.lines >= 2 * BATCH)

        poll(two_batches, 300, "the replay to get through two batches", interval=0.02)
        replay.send_signal(signal.SIGINT)
        _, stderr = replay.communicate(timeout=120)
    finally:
        replay.kill()
    mark = datadir.replay_mark(out)
    assert replay.returncode == 130 and mark.state == "interrupted", stderr
    assert 2 * BATCH <= mark.lines < copies * 30_000
    assert (
        stderr.startswith(f"raiwatch: replay interrupted after {mark.lines:,} lines (")
        and "incomplete" in stderr
    )
    assert stderr.count("\n") == 1 and "Traceback" not in stderr
    refused = cli("rules", "backtest", "--data-dir", str(out))
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
    assert f"holds a replay interrupted after {mark.lines:,} lines" in refused.stderr
    assert "add --partial" in refused.stderr
    partial = cli("rules", "backtest", "--data-dir", str(out), "--partial", "--json")
    assert partial.returncode == 0, partial.stderr


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


def test_a_family_turned_off_costs_the_others_nothing_and_is_named_once(scenario, replayed, tmp_path):
    events, _ = scenario
    config = tmp_path / "off.yaml"
    config.write_text("monitors:\n  abuse: {enabled: false}\n  fairness: {enabled: false}\n")
    out = tmp_path / "off"
    p = cli("replay", str(events), "--out", str(out), "--quiet", "--config", str(config))
    assert p.returncode == 0, p.stderr
    (line,) = [x for x in p.stderr.splitlines() if "turned off" in x]
    assert "abuse, fairness" in line and "AbuseCampaign" in line and "FavourableOutcomeDisparity" in line
    assert "SafetyRegressionCritical" not in line
    sql = (
        "SELECT signal, model_id, dims_key, ts, value, baseline, lower, upper, p_value, n"
        " FROM raiwatch.signals FINAL WHERE family IN ({}) ORDER BY signal, model_id, dims_key, ts"
    )
    assert query(out, sql.format("'abuse', 'fairness'")) == []
    kept = query(out, sql.format("'safety', 'drift', 'quality'"))
    assert {r["signal"].split(".")[0] for r in kept} == {"safety"}  # drift needs an hour first: 33 min
    assert kept == query(replayed, sql.format("'safety', 'drift', 'quality'"))
    assert query(replayed, sql.format("'fairness'"))  # the full run had what this one left out
