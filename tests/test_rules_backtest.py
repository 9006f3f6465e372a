"""`raiwatch rules backtest`: rules evaluated over stored signals, scored by on-call feedback."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from alert_rules.suggest import observed_weeks
from raiwatch.core.records import Signal
from raiwatch.dev import synth
from tests.harness import cli, incidents_jsonl

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def replayed(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("backtest")
    events = base / "events.jsonl"
    synth.write(events, synth.default_scenario(24_000, seed=21, rate_per_s=15, drift=True, fairness=True))
    out = base / "out"
    p = cli("replay", str(events), "--out", str(out), "--quiet")
    assert p.returncode == 0, p.stderr
    return out


def _backtest(out: Path, *args: str) -> list[dict]:
    p = cli("rules", "backtest", "--data-dir", str(out), "--json", *args)
    assert p.returncode == 0, p.stderr
    return [json.loads(line) for line in p.stdout.splitlines()]


def _incidents(rows: list[dict]) -> set[tuple]:
    return {
        (i["rule"], tuple(sorted(i["labels"].items())), i["opened_at"], i["resolved_at"])
        for i in rows
        if i.get("kind", "incident") == "incident"
    }


def test_backtest_on_stored_signals_equals_the_live_engine(replayed: Path):
    live = _incidents(incidents_jsonl(replayed / "incidents.jsonl"))
    back = _incidents(_backtest(replayed))

    def norm(rows: set[tuple]) -> set[tuple]:  # incident.v1 writes Z; isoformat writes +00:00
        return {(r, lab, o.replace("Z", "+00:00"), c and c.replace("Z", "+00:00")) for r, lab, o, c in rows}

    # the groups' drop during the spike is the spike's (GroupFavourableRateDrop is held back by it)
    assert {r for r, *_ in live} == {"SafetyRegressionCritical", "FavourableOutcomeDisparity"}
    assert norm(back) == norm(live)


# A model-wide regression that every tenant shares, crossing in the same window as the tenants':
# stored rows put a tenant's (dims_key `{"category":..,"tenant_id":..}`) before the model-wide one.
SHARED_SPIKE = """\
name: shared-spike
seed: 5
start: 2026-11-04T06:00:00Z
duration: 22m
models:
  - {id: bot, kind: llm, rate: 8, version: "1", feature: chat, tenants: {northwind: 0.5, globex: 0.5},
     languages: {en: 1.0}, accounts: 2000, prompts: [how do I reset my password, where is my order],
     safety: {categories: {self_harm: 0.002, toxicity: 0.01}, blocking: [self_harm]}}
anomalies:
  - {kind: safety_spike, model: bot, category: self_harm, rate: 0.10, start: 14m, duration: 5m}
  - {kind: safety_spike, model: bot, category: toxicity, factor: 8, start: 14m, duration: 5m}
"""


def test_backtest_holds_back_the_tenants_a_model_wide_incident_explains_as_the_replay_did(tmp_path: Path):
    (tmp_path / "sc.yaml").write_text(SHARED_SPIKE)
    synth.write(tmp_path / "events.jsonl", synth.load_scenario(tmp_path / "sc.yaml"))
    out = tmp_path / "out"
    p = cli("replay", str(tmp_path / "events.jsonl"), "--out", str(out), "--quiet")
    assert p.returncode == 0, p.stderr
    live = _incidents(incidents_jsonl(out / "incidents.jsonl"))
    assert {(r, dict(lab)["category"]) for r, lab, *_ in live if r.startswith(("Safety", "Tenant"))} == {
        ("SafetyRegressionCritical", "self_harm"),
        ("SafetyRegression", "toxicity"),
    }  # the tenants' regressions are explained by the model's: held back
    utc = {(r, lab, o.replace("Z", "+00:00"), c and c.replace("Z", "+00:00")) for r, lab, o, c in live}
    assert _incidents(_backtest(out)) == utc


def test_a_stricter_rule_drops_the_false_positive_and_keeps_the_true_one(replayed: Path, tmp_path: Path):
    incidents = incidents_jsonl(replayed / "incidents.jsonl")
    safety = next(i for i in incidents if i["rule"] == "SafetyRegressionCritical")
    fair = next(i for i in incidents if i["rule"] == "FavourableOutcomeDisparity")
    for inc, verdict in ((safety, "true_positive"), (fair, "false_positive")):
        p = cli("incidents", "feedback", inc["incident_id"], verdict, "--data-dir", str(replayed))
        assert p.returncode == 0, p.stderr
    # the specialist's stricter fairness rule: a ratio under 0.5 instead of the four-fifths line
    stricter = tmp_path / "rules"
    stricter.mkdir()
    for f in (ROOT / "alert_rules").glob("*.yaml"):
        text = f.read_text()
        if f.name == "fairness.yaml":
            text = text.replace("fire_when: ratio.upper < 0.8", "fire_when: ratio.upper < 0.5")
        (stricter / f.name).write_text(text)
    (stricter / "runbooks").symlink_to(ROOT / "alert_rules" / "runbooks")
    rows = _backtest(replayed, str(stricter), "--compare", str(ROOT / "alert_rules"))
    score = {(r["version"], r["rule"]): r for r in rows if r["kind"] == "rule"}
    old, new = score["old", "FavourableOutcomeDisparity"], score["new", "FavourableOutcomeDisparity"]
    assert (old["incidents"], old["false_positives"], old["precision"]) == (1, 1, 0.0)
    assert (new["incidents"], new["false_positives"], new["precision"]) == (0, 0, None)  # the FP is gone
    for version in ("old", "new"):
        kept = score[version, "SafetyRegressionCritical"]
        assert (kept["incidents"], kept["true_positives"], kept["missed"]) == (1, 1, [])  # the TP stays
    table = cli("rules", "backtest", str(stricter), "--compare", str(ROOT / "alert_rules"), "--data-dir",
                str(replayed))  # fmt: skip
    assert table.returncode == 0 and "2 incidents with on-call feedback" in table.stdout
    p = cli("incidents", "stats", "--json", "--data-dir", str(replayed))
    stats = {r["rule"]: r for r in map(json.loads, p.stdout.splitlines())}
    assert stats["SafetyRegressionCritical"]["severity"] == "critical"
    assert stats["SafetyRegressionCritical"]["false_positive_share"] == 0.0
    assert stats["FavourableOutcomeDisparity"]["precision"] == 0.0
    assert "goal" in cli("incidents", "stats", "--data-dir", str(replayed)).stdout


def test_backtest_without_data_says_so(tmp_path: Path):
    p = cli("rules", "backtest", "--data-dir", str(tmp_path))
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.startswith(f"raiwatch: error: no raiwatch data under {tmp_path}")


def test_suggest_proposes_a_threshold_that_meets_the_target(replayed: Path):
    # the replay is 0.02 days long: one incident is ~390 a week, so the target is set where some meet it
    p = cli(
        "rules",
        "suggest",
        "FavourableOutcomeDisparity",
        "--target-per-week",
        "1000",
        "--data-dir",
        str(replayed),
    )
    assert p.returncode == 0, p.stderr
    (line,) = [x for x in p.stdout.splitlines() if x.startswith("suggested: fire_when: ratio.upper < ")]
    suggested = float(line.split("ratio.upper < ")[1].split()[0])
    rows = [r.split("│") for r in p.stdout.splitlines() if r.startswith("│")]
    per_week = {float(r[1].split()[0]): float(r[3]) for r in rows if r[3].strip()}  # not a wrapped line
    assert per_week[suggested] <= 1000 and per_week[0.8] <= 1000  # it meets the target
    assert all(w > 1000 for t, w in per_week.items() if t > suggested)  # and is the loosest that does
    assert "0.8 (current)" in p.stdout
    bad = cli(
        "rules", "suggest", "FavourableOutcomDisparity", "--target-per-week", "1", "--data-dir", str(replayed)
    )
    assert bad.returncode == 2 and "did you mean 'FavourableOutcomeDisparity'?" in bad.stderr


def test_incidents_per_week_count_the_weeks_with_signals_not_a_gap_between_them():
    def sig(end: datetime, window: int = 60) -> Signal:
        return Signal(ts=end, window=window, signal="safety.violation_rate", model_id="m", value=0.1, n=100)

    day = datetime(2026, 11, 2, tzinfo=UTC)
    stray = sig(datetime(2001, 2, 3, tzinfo=UTC))
    minutes = [sig(day + timedelta(minutes=k)) for k in range(1, 7 * 1440 + 1)]  # a week, windows abutting
    overlapping = [sig(day + timedelta(minutes=k), window=300) for k in range(5, 7 * 1440 + 1, 5)]
    assert observed_weeks([stray, *minutes, *overlapping]) == pytest.approx(1 + 60 / (7 * 86400))
    assert observed_weeks([]) == 0


def test_runbook_base_url_makes_links_the_paged_person_can_open(tmp_path: Path):
    events = tmp_path / "events.jsonl"
    synth.write(events, synth.default_scenario(9000, seed=33, rate_per_s=15))
    cfg = tmp_path / "c.yaml"
    cfg.write_text("runbook_base_url: https://wiki.example.com/raiwatch/runbooks/\n")
    out = tmp_path / "out"
    p = cli("replay", str(events), "--out", str(out), "--config", str(cfg), "--quiet")
    assert p.returncode == 0, p.stderr
    (inc,) = [i for i in incidents_jsonl(out / "incidents.jsonl") if i["rule"] == "SafetyRegressionCritical"]
    assert inc["runbook_url"] == "https://wiki.example.com/raiwatch/runbooks/safety-regression.md"
