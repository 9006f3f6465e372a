"""Safety change detection: the Bernoulli CUSUM's calibration, detection, frozen baseline and restart.

The monitor's statistics are driven here with per-window counts (``SafetyMonitor._change``, the
code path ``close`` uses), so days of windows run in seconds; ``close`` itself is covered by the
restart test at the end, with real events.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from detectors.cusum import llr, run_lengths, step, threshold
from monitors.safety import SafetyConfig, SafetyMonitor, _Model
from tests.test_safety_monitor import _events, _run

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
WEEK = 7 * 24 * 60  # 60 s windows


def test_llr_against_the_binomial_likelihoods():
    from scipy.stats import binom

    k, n, p0 = 7, 300, 0.01
    expected = binom.logpmf(k, n, 3 * p0) - binom.logpmf(k, n, p0)
    assert float(llr(k, n, p0, 3.0)) == pytest.approx(expected, abs=1e-12)
    assert float(step(5.0, 0, 1000, 0.01, 3.0)) == 0.0  # never below zero


@pytest.mark.parametrize(("p0", "n"), [(0.002, 180), (0.01, 50), (0.05, 1000), (0.001, 5)])
def test_in_control_run_length_is_at_least_the_configured_one(p0: float, n: int):
    arl0 = 300.0
    rl = run_lengths(p0, n, 3.0, threshold(arl0), series=3000, windows=3000, seed=1)
    # Lorden's bound: the mean run length (censored at 3000, so an underestimate) is >= arl0
    assert rl.mean() >= arl0, (p0, n, rl.mean())


def _monitor(budget_per_week: float = 0.5, **cfg) -> SafetyMonitor:
    mon = SafetyMonitor(60, SafetyConfig(**cfg), budget={"safety.rate_change": budget_per_week})
    mon._models["m"] = _Model()
    return mon


def _step(mon: SafetyMonitor, t: int, rows: list[tuple[dict, int, int]]) -> dict[tuple, object]:
    ts = T0 + timedelta(minutes=t + 1)
    full = [("m", "safety.violation_rate", dims, k, n) for dims, k, n in rows]
    return {tuple(sorted(s.dims.items())): s for s in mon._change(ts, full, {"m": ""})}


def test_false_alarms_on_stationary_traffic_stay_under_the_configured_rate():
    """Two days of stationary traffic on 2 categories x 10 tenants, estimated baselines included."""
    rng = np.random.default_rng(7)
    per_week = 20.0  # a loose setting, so the bound is measurable in two days
    mon = _monitor(budget_per_week=per_week)
    rates = {"self_harm": 0.002, "toxicity": 0.02}
    tenants = [f"t{i}" for i in range(10)]
    sizes = rng.integers(5, 200, size=len(tenants))
    alarms, windows, firing = 0, 2 * 24 * 60, set()
    for t in range(windows):
        rows = []
        for cat, p in rates.items():
            ks = rng.binomial(sizes, p)
            rows.append(({"category": cat}, int(ks.sum()), int(sizes.sum())))
            rows += [
                ({"category": cat, "tenant_id": tn}, int(k), int(n))
                for tn, k, n in zip(tenants, ks, sizes, strict=True)
            ]
        for key, s in _step(mon, t, rows).items():
            if s.value >= 1 and key not in firing:
                alarms += 1
            (firing.add if s.value >= 1 else firing.discard)(key)
    allowed = per_week * windows / WEEK  # about 5.7
    assert alarms <= allowed, alarms


def test_a_tenfold_rise_in_one_tenant_is_caught_in_minutes_and_a_handful_of_events_is_not():
    rng = np.random.default_rng(3)
    mon = _monitor()
    big, small = 180, 4
    onset, caught, small_alarm = 600, None, False
    for t in range(onset + 60):
        p_big = 0.02 if t >= onset else 0.002
        k_big, k_small = rng.binomial(big, p_big), rng.binomial(small, 0.002)
        if t == onset + 5:
            k_small = 3  # three violations out of four events, once: a handful
        total_n = big + small + 2000
        rows = [
            ({"category": "self_harm"}, int(k_big + k_small + rng.binomial(2000, 0.002)), total_n),
            ({"category": "self_harm", "tenant_id": "big"}, int(k_big), big),
            ({"category": "self_harm", "tenant_id": "small"}, int(k_small), small),
        ]
        out = _step(mon, t, rows)
        tenant = out.get((("category", "self_harm"), ("tenant_id", "big")))
        if tenant is not None and tenant.value >= 1 and caught is None:
            caught = t
        s = out.get((("category", "self_harm"), ("tenant_id", "small")))
        small_alarm |= s is not None and s.value >= 1
        assert not (t < onset and tenant is not None and tenant.value >= 1), t
    assert caught is not None and caught - onset < 10, caught
    assert not small_alarm
    # the estimate the signal carries: the rate since the statistic left zero, around 2%
    assert tenant.lower < 0.02 < tenant.upper and tenant.baseline < 0.006


def test_the_baseline_is_frozen_while_the_series_is_anomalous():
    rng = np.random.default_rng(5)
    mon = _monitor()
    n = 1000
    for t in range(400):
        _step(mon, t, [({"category": "pii"}, int(rng.binomial(n, 0.003)), n)])
    before = _step(mon, 400, [({"category": "pii"}, 3, n)])[(("category", "pii"),)].baseline
    for t in range(401, 521):  # two hours at 5x
        s = _step(mon, t, [({"category": "pii"}, int(rng.binomial(n, 0.015)), n)])[(("category", "pii"),)]
        assert s.value >= 1 or t < 410
    assert s.baseline == pytest.approx(before, rel=0.05)  # not absorbed


def test_change_state_survives_a_restart():
    cfg = SafetyConfig(change_min_baseline=200)
    events = [
        _events(400, ["self_harm"] if minute >= 6 else [], T0 + timedelta(minutes=minute), tenant="acme")
        for minute in range(10)
    ]
    whole = SafetyMonitor(60, cfg)
    expected = [s for batch in events for s in _run(whole, batch) if s.signal == "safety.rate_change"]
    first = SafetyMonitor(60, cfg)
    got = [s for batch in events[:5] for s in _run(first, batch) if s.signal == "safety.rate_change"]
    second = SafetyMonitor(60, cfg)
    for model, state in first.snapshot_dirty().items():
        second.restore(model, state)
    got += [s for batch in events[5:] for s in _run(second, batch) if s.signal == "safety.rate_change"]
    assert got == expected and any(s.value >= 1 for s in expected)


def test_slo_burn_rates_over_long_and_short_spans():
    from monitors.safety import SLO

    slo = SLO(name="self-harm", category="self_harm", objective=0.005)
    mon = SafetyMonitor(60, SafetyConfig(slos=[slo]))
    mon._models["m"] = _Model()

    def window(t: int, k: int, n: int = 1000) -> dict[str, float]:
        rows = [
            ("m", "safety.any_violation_rate", {}, k, n),
            ("m", "safety.violation_rate", {"category": "self_harm"}, k, n),
        ]
        out = mon._slo_burn(T0 + timedelta(minutes=t + 1), rows, {"m": ""})
        return {s.dims["windows"]: s.value for s in out if s.dims["slo"] == "self-harm"}

    for t in range(120):  # two hours at 0.2%: burn 0.4 everywhere
        burns = window(t, 2)
    assert burns == pytest.approx({"1h/5m": 0.4, "6h/30m": 0.4, "1d/2h": 0.4})
    for t in range(120, 125):  # five minutes at 10%: the 5m span burns 20x, the hour does not
        burns = window(t, 100)
    assert burns["1h/5m"] == pytest.approx((55 * 2 + 5 * 100) / 60_000 / 0.005)  # the hour: ~2x
    for t in range(125, 170):
        burns = window(t, 100)
    assert burns["1h/5m"] > 14.4 > burns["6h/30m"] > 6  # the page fires on the fast pair first
    restored = SafetyMonitor(60, SafetyConfig(slos=[slo]))
    restored.restore("m", mon.snapshot_dirty().get("m") or mon._encode(mon._models["m"]))
    assert list(restored._models["m"].slo["self-harm"]) == list(mon._models["m"].slo["self-harm"])
