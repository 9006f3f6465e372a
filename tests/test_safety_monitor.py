"""Safety monitor: windowed counts, Wilson intervals, zero-rate rows, caps and baselines."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson

from monitors.safety import SafetyConfig, SafetyMonitor
from monitors.windows import WindowClock
from raiwatch.core.codec import telemetry_codec
from raiwatch.core.columns import EventColumns

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def _events(
    n: int, violations: list[str], start: datetime = T0, tenant: str = "acme", scores: dict | None = None
):
    lines = [
        orjson.dumps(
            {
                "schema_version": 1,
                "event_id": f"e{start.timestamp()}-{i}",
                "timestamp": (start + timedelta(seconds=i * 0.1)).isoformat(),
                "model": {"id": "bot", "version": "v1"},
                "tenant_id": tenant,
                "safety": {
                    "scores": {"toxicity": 0.1, "pii": 0.0} if scores is None else scores,
                    "violations": violations if i % 10 == 0 else [],
                    "action": "blocked" if violations and i % 10 == 0 else "allowed",
                },
            }
        )
        for i in range(n)
    ]
    return telemetry_codec.decode_batch(lines).events


def _run(mon: SafetyMonitor, events) -> list:
    starts = [int(e.timestamp.timestamp()) // 60 * 60 for e in events]
    mon.observe(EventColumns(events, starts))
    return [s for start in sorted(set(starts)) for s in mon.close(start)]


def _one(signals, name: str, **dims: str):
    (s,) = [s for s in signals if s.signal == name and s.dims == dims]
    return s


def test_rates_intervals_and_zero_rows():
    mon = SafetyMonitor(60)
    out = _run(mon, _events(500, ["self_harm"]))  # 50 s of events, one window
    sh = _one(out, "safety.violation_rate", category="self_harm")
    assert (sh.n, round(sh.value, 3)) == (500, 0.1)
    assert sh.lower < 0.1 < sh.upper and round(sh.lower, 4) == 0.0767
    assert sh.ts == T0 + timedelta(seconds=60) and sh.window == 60 and sh.model_version == "v1"
    tox = _one(out, "safety.violation_rate", category="toxicity")  # seen only in scores: a zero row
    assert tox.value == 0.0 and tox.n == 500 and tox.upper > 0
    assert _one(out, "safety.action_rate", action="blocked").value == 0.1
    assert _one(out, "safety.any_violation_rate").value == 0.1
    tenant = _one(out, "safety.violation_rate", category="self_harm", tenant_id="acme")
    assert tenant.value == 0.1 and tenant.n == 500


def test_events_without_safety_data_count_nowhere():
    mon = SafetyMonitor(60)
    events = telemetry_codec.decode_batch(
        [
            orjson.dumps(
                {"schema_version": 1, "event_id": "x", "timestamp": T0.isoformat(), "model": {"id": "emb"}}
            )
        ]
    ).events
    assert _run(mon, events) == []


def test_baseline_is_previous_windows_pooled():
    mon = SafetyMonitor(60, SafetyConfig(baseline_windows=2))
    first = _one(_run(mon, _events(100, [])), "safety.any_violation_rate")
    assert first.baseline is None
    _run(mon, _events(100, ["hate"], start=T0 + timedelta(minutes=1)))  # 10%
    third = _one(_run(mon, _events(100, [], start=T0 + timedelta(minutes=2))), "safety.any_violation_rate")
    assert third.baseline == 10 / 200


def test_category_and_tenant_caps_bound_state():
    mon = SafetyMonitor(60, SafetyConfig(max_categories=3, max_tenants=2))
    evs = []
    for i, cat in enumerate(["a", "b", "c", "d"]):
        evs += _events(10, [cat], start=T0 + timedelta(seconds=i), tenant=f"t{i}", scores={})
    out = _run(mon, evs)
    cats = sorted(s.dims["category"] for s in out if s.signal == "safety.violation_rate" and len(s.dims) == 1)
    assert cats == ["a", "b", "other"]
    tenants = {s.dims["tenant_id"] for s in out if "tenant_id" in s.dims}
    assert tenants == {"t0", "other"}
    other = _one(out, "safety.violation_rate", category="other")
    assert other.value <= 1.0 and other.n == 40


def test_window_clock_with_monitor_closes_in_order():
    clock = WindowClock(60, 30)
    mon = SafetyMonitor(60)
    events = _events(3000, ["pii"])  # 300 s of event time
    starts = [clock.assign(0, e.timestamp.timestamp()) for e in events]
    mon.observe(EventColumns(events, starts))
    closed = clock.advance()
    assert closed == [int(T0.timestamp()) + 60 * i for i in range(4)]  # the 5th window is still open
    assert clock.close_all() == [int(T0.timestamp()) + 240]
