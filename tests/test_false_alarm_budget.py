"""A simulated week per family: standing compliant disparities and stationary rates, with the traps
real traffic has (groups of very different sizes, a tiny group with an extreme rate, a daily cycle
in volume), through the monitors and the shipped rules in the real engine. Each test asserts the
false pages against the model's budget, with the count's confidence interval, and that the same
data does page a rule that compares the point estimate with the threshold: the trap is real.

Windows are 10 minutes (the budget counts looks per week, so its guarantee is the same at any
window size) and several models run side by side, so a week of model-weeks takes seconds; the
events are fed as the per-window counts the monitors' ``observe`` would collect.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

import numpy as np
from scipy import stats

from alert_rules import RuleEngine, load_rules
from alert_rules.loader import RULES_DIR
from monitors.drift import DriftConfig, DriftMonitor, _Reference, build_reference
from monitors.fairness import FairnessConfig, FairnessMonitor
from monitors.registry import budgets, catalogue
from monitors.safety import SafetyMonitor
from raiwatch.core.records import Signal

WINDOW = 600
WEEK = 7 * 86400 // WINDOW
T0 = 1_800_000_000 - 1_800_000_000 % 86400  # a fixed UTC midnight (2027-01-15): no clock involved


def _volume(t: int, mean: float, rng: np.random.Generator) -> int:
    """Poisson events in window ``t`` with a daily cycle (amplitude 0.6, peak at 14:00)."""
    hour = (t * WINDOW % 86400) / 3600
    return int(rng.poisson(mean * (1 + 0.6 * math.cos(2 * math.pi * (hour - 14) / 24))))


def _pages(signals: Iterable[Signal], rules: list[str]) -> int:
    """Incidents the named shipped rules open on these signals (one engine per run, in event time)."""
    engine = RuleEngine([r for r in load_rules(RULES_DIR, catalogue()) if r.name in rules], "file:///rb")
    return sum(c.kind == "opened" for c in engine.evaluate(list(signals)))


def _point_estimate_pages(signals: Iterable[Signal], signal: str, holds: Callable[[Signal], bool]) -> int:
    """Times a point-estimate rule on ``signal`` would have opened: ``holds`` after not holding."""
    was: dict[tuple, bool] = {}
    opened = 0
    for s in signals:
        if s.signal != signal:
            continue
        key = (s.model_id, tuple(sorted(s.dims.items())))
        now = holds(s)
        opened += now and not was.get(key, False)
        was[key] = now
    return opened


def _within_budget(pages: int, per_week: float, model_weeks: float) -> None:
    """The count is compatible with a rate at most ``per_week`` per model-week (one-sided 99%), and
    the 95% interval of its rate is printed for the report."""
    lo = stats.chi2.ppf(0.025, 2 * pages) / 2 / model_weeks if pages else 0.0
    hi = stats.chi2.ppf(0.975, 2 * pages + 2) / 2 / model_weeks
    print(f"{pages} false pages in {model_weeks:g} model-weeks: {pages / model_weeks:.3f} per model-week "
          f"(95% CI {lo:.3f}-{hi:.3f}), budget {per_week:.3f}")  # fmt: skip
    assert pages <= stats.poisson.ppf(0.99, per_week * model_weeks), (pages, per_week * model_weeks)


def test_fairness_standing_compliant_disparities_stay_within_the_budget():
    """Four models, a week each: four-fifths ratios of 0.85-0.95 on groups from 3% to 35% of traffic,
    a tiny region approved a fifth as often, a daily cycle."""
    rng = np.random.default_rng(11)
    models = [f"loan-{i}" for i in range(4)]
    groups = {  # age band: (share of traffic, favourable rate relative to the best band)
        "18-24": (0.06, 0.85), "25-34": (0.35, 1.0), "35-49": (0.3, 0.95), "50-64": (0.2, 0.9),
        "65+": (0.06, 0.87), "75+": (0.03, 0.88),
    }  # fmt: skip
    regions = {"north": (0.6, 1.0), "south": (0.395, 0.97), "islands": (0.005, 0.2)}
    combos = [(a, r) for a in groups for r in regions]
    share = np.array([groups[a][0] * regions[r][0] for a, r in combos])
    rate = np.array([0.7 * groups[a][1] * regions[r][1] for a, r in combos])
    mon = FairnessMonitor(WINDOW, FairnessConfig(detect_windows=2, horizon_windows=12, min_group=200))
    signals: list[Signal] = []
    for t in range(WEEK):
        start = T0 + t * WINDOW
        by_model = mon._windows.setdefault(start, {})
        for m in models:
            c: Counter = Counter()
            cells = rng.multinomial(_volume(t, 700, rng), share)  # events per (age band, region)
            fav = rng.binomial(cells, rate)
            for (a, r), k, n in zip(combos, fav.tolist(), cells.tolist(), strict=True):
                if k:
                    c[(("age_band", a), ("region", r)), "", True, "allowed", "stop"] = k
                if n - k:
                    c[(("age_band", a), ("region", r)), "", False, "allowed", "stop"] = n - k
            by_model[m] = c
        signals += mon.close(start)
    model_weeks = len(models) * WEEK * WINDOW / (7 * 86400)
    rules = ["FavourableOutcomeDisparity", "GroupFavourableRateDrop"]
    pages = _pages(signals, rules)
    share = budgets()["fairness.disparity"] + budgets()["fairness.favorable_change"]
    _within_budget(pages, share, model_weeks)
    naive = _point_estimate_pages(
        signals, "fairness.disparity", lambda s: s.baseline is not None and s.value / s.baseline < 0.8
    )
    assert naive >= 10, naive  # the estimate of a compliant 0.85 crosses 0.8 again and again


def test_safety_rates_just_under_the_threshold_stay_within_the_budget():
    """Four models at 4-4.5% toxicity (the rule fires above 5%), 50 tenants of Zipf sizes, a daily cycle."""
    rng = np.random.default_rng(12)
    models = [f"chat-{i}" for i in range(4)]
    tenants = [f"t{i:02d}" for i in range(50)]
    weights = 1 / np.arange(1, 51) ** 1.1
    weights /= weights.sum()
    mon = SafetyMonitor(WINDOW)
    signals: list[Signal] = []
    from monitors.safety import _Window

    for t in range(WEEK):
        start = T0 + t * WINDOW
        by_model = mon._windows.setdefault(start, {})
        for i, m in enumerate(models):
            w = _Window()
            n = _volume(t, 1500, rng)
            per_tenant = rng.multinomial(n, weights)
            rate = 0.04 + 0.005 * (i % 2)
            w.n = n
            w.seen = {"toxicity", "self_harm"}
            for tn, k in zip(tenants, per_tenant.tolist(), strict=True):
                if not k:
                    continue
                w.tenant_n[tn] = k
                tox = int(rng.binomial(k, rate))
                harm = int(rng.binomial(k, 0.002))
                w.tenant_cats[tn, "toxicity"] += tox
                w.tenant_cats[tn, "self_harm"] += harm
                w.cats["toxicity"] += tox
                w.cats["self_harm"] += harm
                w.any += tox + harm
            by_model[m] = w
        signals += mon.close(start)
    model_weeks = len(models) * WEEK * WINDOW / (7 * 86400)
    rules = [
        "SafetyViolationRateHigh", "TenantSafetyViolationRateHigh", "SafetyRegression",
        "SafetyRegressionCritical", "TenantSafetyRegression", "TenantSafetyRegressionCritical",
    ]  # fmt: skip
    pages = _pages(signals, rules)
    share = budgets()["safety.violation_rate"] + budgets()["safety.rate_change"]
    _within_budget(pages, share, model_weeks)
    naive = _point_estimate_pages(signals, "safety.violation_rate", lambda s: s.n >= 100 and s.value > 0.05)
    assert naive >= 10, naive


def _reference(rng: np.random.Generator, features: int) -> _Reference:
    rows = [
        {f"x{j:02d}": float(v) for j, v in enumerate(rng.normal(size=features))}
        | {"kind": str(rng.choice(["a", "b", "c"]))}
        for _ in range(4000)
    ]
    return build_reference(rows, DriftConfig(), "ref@test", "")


def test_drift_stationary_features_stay_within_the_budget():
    """Three models with 20 numeric and one categorical feature, stationary for a week against a
    reference learned from 4,000 events (its own sampling error included), a daily cycle in volume;
    after the first day, each window is compared with the same hours of it (the daily profile)."""
    from monitors.drift import _Counts, _Model

    rng = np.random.default_rng(13)
    models = [f"tab-{i}" for i in range(3)]
    mon = DriftMonitor(WINDOW, DriftConfig(sliding_windows=2, max_events_per_window=5000))
    refs = {}
    for m in models:
        st = mon._models[m] = _Model(T0, 0)
        refs[m] = _reference(rng, 20)
        mon._use(st, refs[m])
    signals: list[Signal] = []
    for t in range(WEEK):
        start = T0 + t * WINDOW
        for m in models:
            st = mon._models[m]
            n = _volume(t, 600, rng)
            counts = _Counts(st.ref)
            for i, f in enumerate(st.ref.features):
                if f.numeric:
                    x = rng.normal(0, 1, size=n)
                    binned = np.bincount(np.searchsorted(f.cuts, x), minlength=f.width - 1)
                    counts.bins[i, : f.width - 1] += binned
                else:
                    k = rng.multinomial(n, [1 / 3] * 3)
                    idx = [f.categories.index(c) for c in ("a", "b", "c")]
                    counts.bins[i, idx] += k
            counts.n = n
            signals += mon._compare(m, st, start, counts)
    model_weeks = len(models) * WEEK * WINDOW / (7 * 86400)
    pages = _pages(signals, ["FeatureDrift", "FeatureSlowShift", "FeatureMissingRateUp"])
    b = budgets()
    _within_budget(pages, b["drift.feature"] + b["drift.change"] + b["drift.missing_rate"], model_weeks)


def _quality_week(
    rng: np.random.Generator, models: list[str], accuracy: Callable[[int], float]
) -> list[Signal]:
    """A week of label windows per model (about 300 labels a window, a daily cycle), each label
    right with probability ``accuracy(t)``, a favourable truth half the time."""
    from monitors.quality import MODEL, QualityConfig, QualityMonitor, _push

    mon = QualityMonitor(
        WINDOW, QualityConfig(detect_windows=3, horizon_windows=144, change_half_life_windows=144)
    )
    signals: list[Signal] = []
    for t in range(WEEK):
        start = T0 + t * WINDOW
        for m in models:
            n = _volume(t, 300, rng)
            pos = int(rng.binomial(n, 0.5))
            tp = int(rng.binomial(pos, accuracy(t)))
            tn = int(rng.binomial(n - pos, accuracy(t)))
            counts = {MODEL: np.array([n, n, tp + tn, pos, tp, n - pos, n - pos - tn], dtype=np.int64)}
            st = mon._model(m)
            _push(st, (start, counts, np.zeros((3, 10))))
            mon._trim(st, start)
            st.last = start
            signals += mon._signals(m, st, datetime.fromtimestamp(start + WINDOW, UTC), counts[MODEL])
    return signals


def test_quality_stationary_accuracy_stays_within_the_budget():
    """Four models right 92% of the time for a week: the sequential accuracy test looks every
    window at every label and stays within its share; a per-window test at 1% does not."""
    rng = np.random.default_rng(17)
    models = [f"clf-{i}" for i in range(4)]
    signals = _quality_week(rng, models, lambda t: 0.92)
    model_weeks = len(models) * WEEK * WINDOW / (7 * 86400)
    pages = _pages(signals, ["ModelAccuracyDrop", "ModelRecallDrop"])
    b = budgets()
    _within_budget(pages, b["quality.accuracy_change"] + b["quality.recall"], model_weeks)
    naive = _point_estimate_pages(
        signals, "quality.accuracy", lambda s: s.p_value is not None and s.p_value < 0.01
    )
    assert naive >= 10, naive  # the same data, tested window by window without the budget


def test_quality_a_drop_of_twelve_points_pages_within_a_window_of_its_labels():
    rng = np.random.default_rng(19)
    onset = WEEK // 2
    signals = _quality_week(rng, ["clf"], lambda t: 0.92 if t < onset else 0.80)
    engine = RuleEngine(
        [r for r in load_rules(RULES_DIR, catalogue()) if r.name == "ModelAccuracyDrop"], "file:///rb"
    )
    opened = [c.incident.opened_at.timestamp() for c in engine.evaluate(signals) if c.kind == "opened"]
    assert len(opened) == 1 and opened[0] <= T0 + (onset + 2) * WINDOW
