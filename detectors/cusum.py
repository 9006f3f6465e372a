"""Bernoulli CUSUM on per-window counts: has a rate risen from its baseline ``p0`` to ``ratio * p0``?

Each window brings ``k`` events of interest out of ``n``; its log-likelihood ratio of "rate is
``p1 = ratio * p0``" against "rate is ``p0``" is ``k ln(p1/p0) + (n - k) ln((1-p1)/(1-p0))``, and
the statistic is ``S_t = max(0, S_{t-1} + LLR_t)`` (Page, 1954). It alarms when ``S_t >= h``.

Calibration: for a CUSUM of log-likelihood ratios the in-control average run length (windows
between false alarms when the rate stays at ``p0``) is at least ``e^h`` (Lorden, 1971), so
``h = ln(ARL0)`` guarantees the configured false-alarm rate whatever ``p0`` and ``n`` are; the
tests measure how conservative the bound is. The guarantee assumes ``p0`` is the true baseline:
callers estimate it with an upper confidence bound, so an uncertain baseline errs towards quiet.

Page, E. S. (1954). Continuous inspection schemes. Biometrika 41.
Lorden, G. (1971). Procedures for reacting to a change in distribution. Ann. Math. Statist. 42.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray
from statsmodels.stats.proportion import proportion_confint

MAX_P1 = 0.999  # p1 is capped below 1 so the increment stays finite


def llr(k: ArrayLike, n: ArrayLike, p0: ArrayLike, ratio: float) -> NDArray[np.float64]:
    """Log-likelihood ratio of ``k`` of ``n`` under ``p1 = min(ratio * p0, MAX_P1)`` against ``p0``.

    >>> [round(float(x), 4) for x in llr([0, 3, 10], [100, 100, 100], 0.01, 3.0)]
    [-2.0409, 1.3162, 9.1493]
    """
    p0a = np.clip(np.asarray(p0, dtype=np.float64), 1e-12, MAX_P1 / ratio)
    return llr_p1(k, n, p0a, np.minimum(ratio * p0a, MAX_P1))


def llr_p1(k: ArrayLike, n: ArrayLike, p0: ArrayLike, p1: ArrayLike) -> NDArray[np.float64]:
    """Log-likelihood ratio of ``k`` of ``n`` under the rate ``p1`` against ``p0`` (both in (0, 1)).

    >>> [round(float(x), 4) for x in llr_p1([8, 13], [100, 100], 0.08, 0.13)]  # a rise of 5 points
    [-1.2569, 1.45]
    """
    p0a, p1a = np.asarray(p0, dtype=np.float64), np.asarray(p1, dtype=np.float64)
    k_arr = np.asarray(k, dtype=np.float64)
    n_arr = np.asarray(n, dtype=np.float64)
    return k_arr * np.log(p1a / p0a) + (n_arr - k_arr) * np.log((1 - p1a) / (1 - p0a))


def threshold(arl0: float) -> float:
    """Decision limit ``h`` for an in-control average run length of at least ``arl0`` windows.

    >>> round(threshold(10_080 * 500), 2)  # 500 series, one false alarm a week at 60 s windows
    15.43
    """
    if arl0 <= 1:
        raise ValueError(f"arl0 must be above 1 window, got {arl0}")
    return math.log(arl0)


def step(s: ArrayLike, k: ArrayLike, n: ArrayLike, p0: ArrayLike, ratio: float) -> NDArray[np.float64]:
    """One window of the CUSUM recursion: ``max(0, s + llr)``, element-wise over many series.

    >>> s = np.zeros(1)
    >>> for k in (0, 4, 5, 6):
    ...     s = step(s, k, 200, 0.005, 3.0)
    >>> round(float(s[0]), 3)
    10.57
    """
    return np.maximum(0.0, np.asarray(s, dtype=np.float64) + llr(k, n, p0, ratio))


def run_lengths(
    p0: float, n: int, ratio: float, h: float, series: int, windows: int, seed: int = 0
) -> NDArray:
    """Windows to the first alarm of ``series`` independent CUSUMs on in-control binomial data
    (``windows`` where a series never alarmed): for calibration checks and the benchmark.

    >>> rl = run_lengths(0.01, 200, 3.0, threshold(200), series=2000, windows=5000)
    >>> bool(rl.mean() >= 200)  # the Lorden bound holds
    True
    """
    rng = np.random.default_rng(seed)
    s = np.zeros(series)
    first = np.full(series, windows)
    alive = np.ones(series, dtype=bool)
    for t in range(windows):
        k = rng.binomial(n, p0, size=series)
        s = step(s, k, n, p0, ratio)
        hit = alive & (s >= h)
        first[hit] = t + 1
        alive &= ~hit
        if not alive.any():
            break
    return first


# the columns of a tracked series' state (``track``)
S, BASE_K, BASE_N, RUN_K, RUN_N = range(5)


def track(
    state: NDArray[np.float64],
    k: ArrayLike,
    n: ArrayLike,
    ratio: float,
    h: float,
    decay: float,
    tested: ArrayLike,
    prior_k: ArrayLike = 0.0,
    prior_n: ArrayLike = 0.0,
    shift: float = 0.0,
) -> NDArray[np.float64]:
    """One window of CUSUMs that learn their own baselines, for many series at once; returns the
    baseline each was tested against (``p0``) and updates ``state`` (rows: series; columns ``S``,
    ``BASE_K``, ``BASE_N``, ``RUN_K``, ``RUN_N``) in place.

    The baseline is an exponentially weighted rate (``decay`` per window) plus a prior worth
    ``prior_n`` events (e.g. a tenant judged against its model until its own traffic says
    otherwise), taken at its one-sided 95% bound on the quiet side: the upper bound when testing
    a rise (``ratio > 1`` or ``shift > 0``), the lower one for a drop, so an uncertain baseline
    errs towards quiet. The alternative is ``p1 = ratio * p0 + shift`` (a ratio for rates that
    scale, a shift of points for shares such as an error rate). The baseline is frozen while the
    statistic is above half its limit, so a change cannot become its own baseline.
    ``RUN_K``/``RUN_N`` count the events since the statistic last left zero. A series not
    ``tested`` (too little baseline yet) keeps a zero statistic. The statistic is capped at ``h``.

    >>> st = np.zeros((2, 5))
    >>> for _ in range(50):  # a baseline of 1% on both series ...
    ...     _ = track(st, [2, 2], [200, 200], 3.0, 10.0, 0.99, [False, False])
    >>> for _ in range(3):  # ... then 6% on the second
    ...     p0 = track(st, [2, 12], [200, 200], 3.0, 10.0, 0.99, [True, True])
    >>> [round(float(x), 2) for x in st[:, S]], round(float(p0[1]), 4)
    ([0.0, 10.0], 0.012)
    """
    k_arr = np.asarray(k, dtype=np.float64)
    n_arr = np.asarray(n, dtype=np.float64)
    ok = np.asarray(tested, dtype=bool)
    base_k = state[:, BASE_K] + np.asarray(prior_k, dtype=np.float64)
    base_n = np.maximum(state[:, BASE_N] + np.asarray(prior_n, dtype=np.float64), 1.0)
    lo, hi = _wilson90(base_k, base_n)
    p0 = np.where(ok, hi if ratio > 1 or shift > 0 else lo, 0.0)
    if shift:
        p0_ = np.clip(np.where(ok, p0, 0.5), 1e-12, MAX_P1 - max(shift, 0.0))
        inc = llr_p1(k_arr, n_arr, p0_, np.clip(ratio * p0_ + shift, 1e-12, MAX_P1))
    else:
        inc = llr(k_arr, n_arr, np.where(ok, p0, 0.5), ratio)
    s_new = np.where(ok, np.maximum(0.0, state[:, S] + inc), 0.0)
    running = s_new > 0
    state[:, RUN_K] = np.where(running, state[:, RUN_K] + k_arr, 0.0)
    state[:, RUN_N] = np.where(running, state[:, RUN_N] + n_arr, 0.0)
    learn = s_new < h / 2
    state[:, BASE_K] = np.where(learn, decay * state[:, BASE_K] + k_arr, state[:, BASE_K])
    state[:, BASE_N] = np.where(learn, decay * state[:, BASE_N] + n_arr, state[:, BASE_N])
    state[:, S] = np.minimum(s_new, h)
    return p0


def _wilson90(k: NDArray[np.float64], n: NDArray[np.float64]) -> tuple[NDArray, NDArray]:
    """Two-sided 90% Wilson bounds (each side one-sided 95%)."""
    lo, hi = proportion_confint(k, n, alpha=0.10, method="wilson")
    return np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
