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
