"""The detection scorer on a hand-made truth and incident list whose answers are known."""

from __future__ import annotations

import pytest

from raiwatch.dev import scoring

TRUTH = {
    "scenario": "hand-made",
    "start": "2026-11-02T10:00:00+00:00",
    "end": "2026-11-02T16:00:00+00:00",
    "models": [{"id": "chat"}, {"id": "loans"}],
    "anomalies": [
        {"id": "a0", "kind": "safety_spike", "family": "safety", "also": [], "model_id": "chat",
         "dims": {"tenant_id": "b", "category": "self_harm"},
         "start": "2026-11-02T10:30:00+00:00", "end": "2026-11-02T11:00:00+00:00",
         "match_until": "2026-11-02T11:15:00+00:00"},
        {"id": "a1", "kind": "feature_drift", "family": "drift", "also": [], "model_id": "loans",
         "dims": {"feature": "income"},
         "start": "2026-11-02T12:00:00+00:00", "end": "2026-11-02T12:30:00+00:00",
         "match_until": "2026-11-02T12:45:00+00:00"},
        {"id": "a2", "kind": "abuse_campaign", "family": "abuse", "also": ["safety"], "model_id": "chat",
         "dims": {}, "start": "2026-11-02T13:00:00+00:00", "end": "2026-11-02T13:20:00+00:00",
         "match_until": "2026-11-02T13:35:00+00:00"},
        {"id": "a3", "kind": "fairness_shift", "family": "fairness", "also": [], "model_id": "loans",
         "dims": {"attribute": "age_band", "group": "65+"},
         "start": "2026-11-02T14:00:00+00:00", "end": "2026-11-02T15:00:00+00:00",
         "match_until": "2026-11-02T15:15:00+00:00"},
    ],
}  # fmt: skip


def incident(iid: str, signal: str, opened: str, **labels: str) -> dict:
    return {
        "incident_id": iid,
        "rule": signal.split(".")[0].title() + "Rule",
        "signal": signal,
        "opened_at": f"2026-11-02T{opened}:00Z",
        "labels": labels,
    }


INCIDENTS = [
    # model-wide self-harm incident 3 min after onset: detects a0 (coarser scope is fine)
    incident("i1", "safety.violation_rate", "10:33", model_id="chat", category="self_harm"),
    # wrong category during a0: contradicts its scope, a false alarm
    incident("i2", "safety.violation_rate", "10:40", model_id="chat", category="toxicity"),
    # the tenant incident on a0: a second detection of the same anomaly
    incident("i6", "safety.violation_rate", "10:50", model_id="chat", category="self_harm", tenant_id="b"),
    # drift on loans 10 min after a1 ended, within its grace period: detects a1 after 40 min
    incident("i3", "drift.psi", "12:40", model_id="loans", feature="income"),
    # a safety incident during the abuse campaign: related (abuse.also), neither hit nor false alarm
    incident("i4", "safety.violation_rate", "13:05", model_id="chat", category="prompt_injection"),
    # drift on loans when nothing is injected: a false alarm
    incident("i5", "drift.psi", "15:00", model_id="loans", feature="income"),
    # fairness on the right model and time but the other model: a false alarm, a3 stays missed
    incident("i7", "fairness.parity_ratio", "14:10", model_id="chat", attribute="age_band"),
]


def test_known_answers():
    s = scoring.score(TRUTH, INCIDENTS)
    by_id = {a.id: a for a in s.anomalies}
    assert (by_id["a0"].detected, by_id["a0"].delay_s, by_id["a0"].incidents) == (True, 180.0, ["i1", "i6"])
    assert (by_id["a1"].detected, by_id["a1"].delay_s) == (True, 2400.0)
    assert not by_id["a2"].detected and by_id["a2"].delay_s is None
    assert not by_id["a3"].detected
    assert [f["incident_id"] for f in s.false_alarms] == ["i2", "i5", "i7"]
    assert s.related == ["i4"]
    assert s.model_days == pytest.approx(0.5)  # 6 h x 2 models
    assert s.false_alarms_per_model_day == pytest.approx(6.0)


def test_by_family():
    rows = {r.family: r for r in scoring.by_family([scoring.score(TRUTH, INCIDENTS)])}
    assert (rows["safety"].detected, rows["safety"].injected, rows["safety"].median_delay_s) == (1, 1, 180.0)
    assert (rows["drift"].detected, rows["drift"].max_delay_s) == (1, 2400.0)
    assert (rows["abuse"].detected, rows["abuse"].injected, rows["abuse"].recall) == (0, 1, 0.0)
    assert rows["quality"].injected == 0 and rows["quality"].recall is None


def test_an_incident_after_the_grace_period_is_a_false_alarm():
    late = [incident("late", "drift.psi", "12:46", model_id="loans", feature="income")]
    s = scoring.score(TRUTH, late)
    assert not any(a.detected for a in s.anomalies)
    assert [f["incident_id"] for f in s.false_alarms] == ["late"]


def test_no_incidents_no_detections_no_false_alarms():
    s = scoring.score(TRUTH, [])
    assert s.false_alarms == [] and not any(a.detected for a in s.anomalies)


def test_a_page_is_a_group_of_incidents_true_when_any_of_them_matches():
    grouped = [
        # one problem, three incidents, one page: the campaign, a related safety rise and a drift
        incident("p1", "abuse.campaign", "13:02", model_id="chat") | {"severity": "high"},
        incident("p2", "safety.rate_change", "13:04", model_id="chat", category="jailbreak")
        | {"severity": "critical", "group_id": "p1"},
        incident("p3", "drift.change", "13:06", model_id="chat", feature="request.tokens")
        | {"severity": "warning", "group_id": "p1"},
        # a second page on the same campaign: its own group
        incident("p4", "abuse.campaign", "13:08", model_id="chat", cluster="c2") | {"severity": "high"},
        # a false page of two incidents
        incident("f1", "drift.psi", "15:30", model_id="loans", feature="age") | {"severity": "warning"},
        incident("f2", "drift.psi", "15:31", model_id="loans", feature="debt")
        | {"severity": "high", "group_id": "f1"},
    ]
    s = scoring.score(TRUTH, grouped)
    pages = {p.id: p for p in s.pages}
    assert [p.id for p in s.pages] == ["p1", "p4", "f1"]
    assert (pages["p1"].incidents, pages["p1"].severity, pages["p1"].rule) == (
        ["p1", "p2", "p3"],
        "critical",
        "AbuseRule",
    )
    assert pages["p1"].anomalies == ["a2"] and pages["p1"].true
    assert not pages["f1"].true and pages["f1"].severity == "high" and [p.id for p in s.false_pages] == ["f1"]
    by_id = {a.id: a for a in s.anomalies}
    assert by_id["a2"].pages == ["p1", "p4"] and by_id["a2"].incidents == ["p1", "p4"]
    assert s.pages_per_problem == pytest.approx(2 / 4)  # two true pages, four anomalies
    prec = scoring.precision([s])
    assert (prec[""].pages, prec[""].true) == (3, 2) and prec["DriftRule"].value == 0.0


def test_without_group_ids_every_incident_is_its_own_page():
    s = scoring.score(TRUTH, INCIDENTS)
    assert len(s.pages) == len(INCIDENTS)
    assert sorted(p.id for p in s.false_pages) == ["i2", "i5", "i7"]
    assert {p.id for p in s.pages if p.true} == {"i1", "i6", "i3", "i4"}  # i4 is related to a2


def test_false_pages_per_model_week_by_rule_with_exact_intervals():
    clean = TRUTH | {
        "anomalies": [],
        "end": "2026-11-09T10:00:00+00:00",
        "models": [{"id": "chat"}],
    }  # 1 week
    incidents = [
        incident("c1", "drift.psi", "11:00", model_id="chat", feature="x") | {"severity": "warning"},
        incident("c2", "drift.psi", "12:00", model_id="chat", feature="y")
        | {"severity": "warning", "group_id": "c1"},
        incident("c3", "fairness.disparity", "13:00", model_id="chat") | {"severity": "high"},
    ]
    s = scoring.score(clean, incidents)
    assert s.clean and s.model_weeks == pytest.approx(1.0)
    rows = {r.rule: r for r in scoring.false_pages_by_rule([(s, incidents)])}
    assert (rows["DriftRule"].incidents, rows["DriftRule"].pages, rows["DriftRule"].models) == (
        2,
        1,
        {"chat": 1},
    )
    assert rows["FairnessRule"].per_model_week == 1.0
    assert (round(rows["FairnessRule"].low, 4), round(rows["FairnessRule"].high, 3)) == (0.0253, 5.572)


def test_the_delay_targets_per_family_include_the_label_delay_for_quality():
    truth = TRUTH | {
        "models": [{"id": "chat"}, {"id": "loans", "label_delay_s": 1800.0}],
        "anomalies": [
            *TRUTH["anomalies"],
            {"id": "a4", "kind": "label_quality_drop", "family": "quality", "also": [], "model_id": "loans",
             "dims": {}, "start": "2026-11-02T15:00:00+00:00", "end": "2026-11-02T15:30:00+00:00",
             "match_until": "2026-11-02T16:30:00+00:00"},
        ],
    }  # fmt: skip
    late = [*INCIDENTS, incident("q", "quality.accuracy", "15:44", model_id="loans")]
    rows = {r.family: r for r in scoring.by_family([scoring.score(truth, late)])}
    assert rows["quality"].median_over_target_s == 44 * 60 - (1800 + 900) and rows["quality"].meets_target
    assert rows["safety"].meets_target  # 3 min against 10
    assert rows["drift"].meets_target is False  # 40 min against 5
    assert rows["abuse"].meets_target is False  # missed


def test_a_false_alarm_during_a_benign_burst_names_it():
    truth = TRUTH | {"benign": [{"id": "b0", "model_id": "loans", "start": "2026-11-02T14:50:00+00:00",
                                 "until": "2026-11-02T15:15:00+00:00"}]}  # fmt: skip
    s = scoring.score(truth, INCIDENTS)
    assert {f["incident_id"]: f["benign"] for f in s.false_alarms} == {"i2": [], "i5": ["b0"], "i7": []}
    assert [p.benign for p in s.false_pages] == [[], [], ["b0"]]
