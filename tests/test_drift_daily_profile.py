"""The drift monitor's daily profile: a mix that follows the day is not drift, a step still is.

A model whose language mix swings between night and day (PSI 0.3 between the two, as a consumer chat
whose Asian traffic triples at night), and whose score dips at night, learns its reference in its
first hour, at night. Without the
profile, FeatureDrift pages every day when the day's mix comes; with it, the first day is learned
hour by hour and later windows are compared with the same hours of it. A sudden shift on the
profile's day, and one after it, is still paged as the sliding span fills, and is not learned: the same
shift at the same time of day on day 3 pages again. Windows' counts are fed as ``close`` collects
them; the shipped FeatureDrift rule decides in the real rule engine.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from alert_rules import RuleEngine, load_rules
from alert_rules.loader import RULES_DIR
from monitors.drift import DriftConfig, DriftMonitor, _Counts, _Model, build_reference
from monitors.registry import catalogue
from raiwatch.core.records import Signal

WINDOW = 300
T0 = 1_800_000_000 - 1_800_000_000 % 86400  # a fixed UTC midnight: no clock involved
LANGS = ["en", "es", "de", "ja", "ko", "hi"]
DAY_MIX = np.array([0.5, 0.15, 0.1, 0.1, 0.08, 0.07])
NIGHT_MIX = np.array([0.3, 0.1, 0.08, 0.2, 0.17, 0.15])
STEP = np.array([0.3, 0.1, 0.05, 0.05, 0.05, 0.45])  # a new market's launch: Hindi jumps


def _mix(t: float) -> np.ndarray:
    """The language shares at event time ``t`` (s since T0): night peaks at 02:00 UTC."""
    night = (1 + math.cos(2 * math.pi * ((t % 86400) / 3600 - 2) / 24)) / 2
    return night * NIGHT_MIX + (1 - night) * DAY_MIX


def _score_mean(t: float, ramp: tuple[float, float] | None) -> float:
    """The mean score at ``t``: 0.03 lower at night (younger applicants), plus 0.06 over ``ramp``."""
    night = (1 + math.cos(2 * math.pi * ((t % 86400) / 3600 - 2) / 24)) / 2
    extra = 0.0
    if ramp is not None and t >= ramp[0] * 3600:
        extra = 0.06 * min(1.0, (t - ramp[0] * 3600) / ((ramp[1] - ramp[0]) * 3600))
    return 0.6 - 0.03 * night + extra


def _run(
    profile: bool, steps: list[tuple[float, float]], days: int = 3, ramp: tuple[float, float] | None = None
) -> tuple[list[Signal], DriftMonitor]:
    """``days`` of 5-minute windows (400 events on average, a daily cycle in volume, mix and score);
    ``steps``: (start, end) in hours since T0 during which 70% of the traffic has the STEP mix;
    ``ramp``: (start, end) hours over which the score rises by 0.06 and stays."""
    rng = np.random.default_rng(7)
    rows = []
    for _ in range(4000):
        t = rng.uniform(0, 3600)
        rows.append(
            {
                "request.language": str(rng.choice(LANGS, p=_mix(t))),
                "score": rng.normal(_score_mean(t, None), 0.15),
            }
        )
    mon = DriftMonitor(WINDOW, DriftConfig(daily_profile=profile, max_events_per_window=5000))
    st = mon._models["chat"] = _Model(T0, 0)
    mon._use(st, build_reference(rows, mon.cfg, "ref@night", ""))
    f, g = st.ref.features  # request.language, score
    idx = [f.categories.index(c) for c in LANGS]
    signals: list[Signal] = []
    for w in range(3600 // WINDOW, days * 86400 // WINDOW):  # after the reference's hour
        t = w * WINDOW
        n = int(rng.poisson(400 * (1 + 0.5 * math.cos(2 * math.pi * ((t % 86400) / 3600 - 15) / 24))))
        mix = _mix(t)
        if any(a * 3600 <= t < b * 3600 for a, b in steps):
            mix = 0.3 * mix + 0.7 * STEP
        counts = _Counts(st.ref)
        counts.bins[0, idx] += rng.multinomial(n, mix)
        x = rng.normal(_score_mean(t, ramp), 0.15, size=n)
        counts.bins[1, : g.width - 1] += np.bincount(np.searchsorted(g.cuts, x), minlength=g.width - 1)
        counts.n = n
        signals += mon._compare("chat", st, T0 + t, counts)
    return signals, mon


def _opened(signals: list[Signal], rule: str = "FeatureDrift") -> list[float]:
    """When a shipped rule opens incidents on these signals (hours since T0)."""
    engine = RuleEngine([r for r in load_rules(RULES_DIR, catalogue()) if r.name == rule], "file:///rb")
    return [
        (c.incident.opened_at.timestamp() - T0) / 3600 for c in engine.evaluate(signals) if c.kind == "opened"
    ]


@pytest.fixture(scope="module")
def cycle() -> dict[bool, list[Signal]]:
    return {profile: _run(profile, [])[0] for profile in (False, True)}


def test_without_the_profile_the_daily_cycle_pages(cycle):
    """The trap is real: against the night hour it was learned in, the day's mix is drift."""
    assert len(_opened(cycle[False])) >= 3  # once a day at least


def test_with_the_profile_the_daily_cycle_pages_nowhere(cycle):
    assert _opened(cycle[True]) == []
    psi = [s for s in cycle[True] if s.signal == "drift.feature"]
    assert len(psi) > 800 and max(s.evidence_lower or 0.0 for s in psi) < 0.1


def test_a_step_pages_on_the_profiles_day_after_it_and_is_not_learned():
    steps = [(6, 8), (38, 39), (54, 55)]  # day 1 06:00; day 2 14:00; day 3 06:00 (day 1's hour again)
    signals, mon = _run(True, steps)
    opened = _opened(signals)
    for a, _ in steps:
        assert any(a <= o <= a + 0.5 for o in opened), (a, opened)  # as the 25-minute span fills
    assert len(opened) == len(steps)  # and nothing else
    st = mon._models["chat"]
    hours = [(T0 + 6 * 3600 - st.profile_from) // 3600 + k for k in (0, 1)]
    f = st.ref.features[0]
    hindi = f.categories.index("hi")
    for h in hours:  # the step's two hours learned only the windows before it, or none
        w = st.profile[h]
        assert w is None or w[0][0, hindi] / w[2] < 0.12


def test_a_score_that_follows_the_day_is_no_slow_shift_once_the_profile_has_it(cycle):
    """Page-Hinkley reads each window against the profile's hours after the first day: the daily
    dip of the score stops paging FeatureSlowShift; a slow rise on day 3 still pages."""
    assert len([h for h in _opened(cycle[False], "FeatureSlowShift") if h >= 25]) >= 2  # the trap is real
    assert [h for h in _opened(cycle[True], "FeatureSlowShift") if h >= 25] == []
    signals, _ = _run(True, [], ramp=(50, 53))
    slow = _opened(signals, "FeatureSlowShift") + _opened(signals, "FeatureDrift")
    assert any(50 <= h <= 56 for h in slow), slow
