"""One page per problem: incidents that share a cause are grouped by the engine, in event time, and
paged once per route; every incident still counts."""

from __future__ import annotations

import json
import random
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from alert_rules import RuleEngine, load_rules
from alert_rules.grouping import Problems
from monitors.registry import catalogue
from raiwatch.core.config import NotifyConfig, RouteConfig
from raiwatch.core.records import Signal
from raiwatch.delivery import Delivery, router
from storage.incidents import IncidentStore
from tests.test_alert_delivery import Receiver

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def _campaign(minute: int) -> list[Signal]:
    """One window of a jailbreak campaign on ``chat``: five prompt variants as three clusters, the
    jailbreak rate's change test alarming, and prompt length shifting slowly, from minute 3 on."""
    ts = T0 + timedelta(minutes=minute)
    on = minute >= 3
    common = dict(ts=ts, window=60, model_id="chat")
    out = [
        Signal(signal="abuse.campaign", dims={"cluster": f"c{i}", "mode": "near"}, value=14.0 if on else 0.0,
               n=900, baseline=16.0, **common)
        for i in range(3)
    ]
    out.append(Signal(signal="safety.rate_change", dims={"category": "jailbreak"}, value=1.0 if on else 0.2,
                      n=800, baseline=0.004, **common))  # fmt: skip
    out.append(Signal(signal="drift.change", dims={"feature": "request.tokens", "reference": "r"},
                      value=1.0 if minute >= 6 else 0.0, n=900, **common))  # fmt: skip
    # an unrelated model, quiet
    out.append(Signal(signal="safety.rate_change", dims={"category": "jailbreak"}, ts=ts, window=60,
                      model_id="other", value=0.1, n=800, baseline=0.004))  # fmt: skip
    return out


def _engine() -> RuleEngine:
    return RuleEngine(load_rules(None, catalogue()), "file:///rb", problems=Problems(("model_id",)))


def test_one_campaign_with_several_variants_is_one_problem_in_any_order_of_signals():
    seen = []
    for seed in range(5):  # the problem's name never depends on the order signals arrive in
        engine = _engine()
        rng = random.Random(seed)
        opened = []
        for minute in range(12):
            window = _campaign(minute)
            rng.shuffle(window)
            opened += [c.incident for c in engine.evaluate(window) if c.kind == "opened"]
        assert sorted(i.rule for i in opened) == [
            "AbuseCampaign", "AbuseCampaign", "AbuseCampaign", "FeatureSlowShift", "SafetyRegressionHigh",
        ]  # fmt: skip
        assert len({i.group_id for i in opened}) == 1, opened  # five incidents, one problem
        (leader,) = [i for i in opened if i.incident_id == i.group_id]
        assert leader.rule == "AbuseCampaign"  # the most severe of the first window (ties: by rule) leads
        seen.append(leader.incident_id)
    assert len(set(seen)) == 1


def test_a_problem_quiet_past_its_hold_is_over_and_the_next_incident_starts_another():
    engine = RuleEngine(load_rules(None, catalogue()), "file:///rb",
                        problems=Problems(("model_id",), timedelta(minutes=10)))  # fmt: skip

    def burst(start: int) -> list:
        changes = []
        for minute in range(start, start + 30):
            ts = T0 + timedelta(minutes=minute)
            value = 1.0 if minute < start + 5 else 0.0
            s = Signal(ts=ts, window=60, model_id="chat", signal="safety.rate_change",
                       dims={"category": "pii"}, value=value, n=800, baseline=0.01)  # fmt: skip
            changes += engine.evaluate([s])
        return [c.incident for c in changes if c.kind == "opened"]

    first, second = burst(0), burst(60)
    assert len(first) == len(second) == 1
    assert first[0].group_id != second[0].group_id  # quiet for 50 minutes, hold 10: two problems


def test_a_problem_is_paged_once_with_the_incidents_that_opened_with_it_then_updated(tmp_path: Path):
    """Five incidents of one problem and one of another model through the store and a webhook route:
    two pages (one per problem), the first carrying the incidents that opened within group_wait,
    then one update per group_interval; each incident is still its own incident."""
    receiver = Receiver()
    try:
        cfg = NotifyConfig(routes=[RouteConfig(name="hook", type="webhook", url=f"{receiver.url}/hook",
                                               group_wait_s=30, group_interval_s=300)])  # fmt: skip
        store = IncidentStore(f"sqlite:///{tmp_path / 'incidents.db'}")
        wall0 = time.time()  # the outbox's clock is the wall's; event time is the signals'
        clock = [wall0]
        delivery = Delivery(store, cfg, wall=lambda: clock[0])
        engine = _engine()
        routes = router(cfg)

        def step(minute: int) -> None:
            window = _campaign(minute)
            if minute == 8:  # another model's problem
                window.append(Signal(ts=T0 + timedelta(minutes=8), window=60, model_id="loan",
                                     signal="fairness.favorable_change", value=1.0, n=700, baseline=0.7,
                                     dims={"attribute": "sex", "group": "f"}))  # fmt: skip
            store.apply(engine.evaluate(window), routes)
            clock[0] = wall0 + minute * 60 + 50
            delivery.run_once()
            clock[0] += 10
            delivery.run_once()

        for minute in range(4):  # the campaign's first window opens 4 incidents
            step(minute)
        clock[0] += 30  # the first page waited group_wait for the rest of its problem
        delivery.run_once()
        pages = [json.loads(body) for _, headers, body in receiver.got]
        kinds = [headers["X-Raiwatch-Event"] for _, headers, _ in receiver.got]
        assert kinds == ["opened"]
        assert len(pages[0]["related"]) == 3  # the first page carries the 3 that opened with it
        assert {pages[0]["rule"], *(r["rule"] for r in pages[0]["related"])} == {
            "SafetyRegressionHigh", "AbuseCampaign",
        }  # fmt: skip
        for minute in range(4, 12):  # the slow shift joins at minute 6; the other model pages at 8
            step(minute)
        for _ in range(6):  # the update is due group_interval after the first page
            clock[0] += 60
            delivery.run_once()
        sent = [(headers["X-Raiwatch-Event"], json.loads(body)["rule"]) for _, headers, body in receiver.got]
        assert sorted(sent[1:]) == [("grouped", "FeatureSlowShift"), ("opened", "GroupFavourableRateDrop")]
        incidents = store.list(limit=100)
        assert len(incidents) == 6  # the count stays honest: every incident is one
        chat = [i for i in incidents if i.labels["model_id"] == "chat"]
        assert len({i.group_id for i in chat}) == 1
        assert len(store.problem(chat[0].group_id)) == 5
    finally:
        receiver.close()


def test_an_incident_that_keeps_firing_does_not_hold_its_problem_open_for_days():
    # a standing condition opens an incident that never resolves; an unrelated incident of the
    # same model two days later is a problem of its own (paged), while one that opens within the
    # hold of the first still joins it
    g = Problems(("model_id",), timedelta(minutes=30))
    first = g.join("inc-standing", {"model_id": "chat"}, T0)
    assert g.join("inc-soon", {"model_id": "chat"}, T0 + timedelta(minutes=20)) == first
    g.resolved("inc-soon", T0 + timedelta(minutes=25))
    later = g.join("inc-later", {"model_id": "chat"}, T0 + timedelta(days=2))
    assert later == "inc-later"
    assert g.join("inc-next", {"model_id": "chat"}, T0 + timedelta(days=2, minutes=25)) == "inc-later"
    # the old problem's incident resolving is no activity of the new one: 31 minutes after the
    # new problem's last opening, the next incident is a problem of its own
    g.resolved("inc-standing", T0 + timedelta(days=2, minutes=50))
    assert g.join("inc-after", {"model_id": "chat"}, T0 + timedelta(days=2, minutes=56)) == "inc-after"
