"""Evidence for threshold rules: one-sided confidence bounds that stay honest over a week of looks.

A rule such as "the four-fifths ratio is below 0.8" asks about a threshold. A point estimate
that crosses it is no evidence (noise around a compliant 0.85 crosses 0.8 sooner or later), and a
test of "no difference at all" answers another question (at large samples every real
disparity, however small, is "significant"). Each function here gives one-sided confidence
bounds of an effect, ``lower`` and ``upper``, each wrong with probability at most ``alpha``: a
rule that fires on ``ratio.upper < 0.8`` has tested "ratio >= 0.8" at level ``alpha``, and the
same bound serves any threshold a specialist writes, since a confidence bound is a test of every
value at once.

**Repeated looks.** A monitor re-tests every series every window, for weeks. ``look_alpha``
splits a false-alarm budget (expected false crossings per week) over the series and the looks of
a week: by the union bound, a series whose true effect stays on the compliant side of the
threshold crosses it, in expectation, at most ``per_week / series`` times a week, whatever the
dependence between the overlapping windows of a sliding test. That is exactly a budget of false
pages per week (a page needs a crossing); it costs power against a test made once, which is the
price of looking every minute.

Each bound is an asymptotic one from a maintained implementation: Wilson's score interval for one
rate, the log-adjusted (Katz, with half a count added) interval for a ratio of two rates,
Newcombe's hybrid score interval for their difference (statsmodels), and for divergences whose
scaled estimate is close to a noncentral chi-square (the population stability index, a mean
embedding shift) the inversion of that distribution in its noncentrality (scipy). The tests
measure their coverage by simulation at the threshold.

Wilson, E. B. (1927). Probable inference, the law of succession, and statistical inference.
Katz, D. et al. (1978). Obtaining confidence intervals for the risk ratio in cohort studies.
Newcombe, R. G. (1998). Interval estimation for the difference between independent proportions.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import special
from statsmodels.stats.proportion import confint_proportions_2indep, proportion_confint

F64 = NDArray[np.float64]
WEEK_S = 7 * 86400


class Bounds(NamedTuple):
    """One-sided bounds per series (NaN where nothing was measured)."""

    lower: F64
    upper: F64


def look_alpha(per_week: float, series: int, window_s: float) -> float:
    """The error allowed to one bound of one series at one look, so that ``series`` series
    looked at every ``window_s`` cross falsely at most ``per_week`` times a week in expectation.

    >>> f"{look_alpha(0.075, series=10, window_s=60):.2e}"  # 0.3 of a quarter of 1 page a week, 10 series
    '7.44e-07'
    """
    looks = WEEK_S / window_s
    return float(per_week) / (max(int(series), 1) * looks)


def rate_bounds(k: ArrayLike, n: ArrayLike, alpha: ArrayLike) -> Bounds:
    """Bounds of a rate ``k / n`` (Wilson score), each side wrong with probability ``alpha`` (one
    for all, or one per rate).

    >>> b = rate_bounds([12, 30], [200, 200], alpha=1e-6)
    >>> [round(float(x), 4) for x in b.lower], [round(float(x), 4) for x in b.upper]
    ([0.0168, 0.0663], [0.1925, 0.3047])
    >>> bool(rate_bounds([30], [200], alpha=0.025).lower[0] > 0.1)  # 15% in 200: above 10% at 97.5%
    True
    """
    k_arr, n_arr = _as_f64(k, n)
    a = np.broadcast_to(np.asarray(alpha, dtype=np.float64), n_arr.shape)
    lo, hi = _nan_like(n_arr), _nan_like(n_arr)
    ok = n_arr > 0
    if ok.any():
        lo[ok], hi[ok] = proportion_confint(k_arr[ok], n_arr[ok], alpha=2 * a[ok], method="wilson")
    return Bounds(lo, hi)


def ratio_bounds(k1: ArrayLike, n1: ArrayLike, k0: ArrayLike, n0: ArrayLike, alpha: float) -> Bounds:
    """Bounds of the ratio of two rates ``(k1 / n1) / (k0 / n0)`` (log-adjusted).

    >>> b = ratio_bounds([300], [1000], [400], [1000], alpha=0.005)  # 0.30 against 0.40: 0.75
    >>> round(float(b.lower[0]), 3), round(float(b.upper[0]), 3)
    (0.64, 0.88)
    """
    return _two(k1, n1, k0, n0, alpha, "ratio", "log-adjusted")


def diff_bounds(k1: ArrayLike, n1: ArrayLike, k0: ArrayLike, n0: ArrayLike, alpha: float) -> Bounds:
    """Bounds of the difference of two rates ``k1 / n1 - k0 / n0`` (Newcombe's hybrid score).

    >>> b = diff_bounds([300], [1000], [400], [1000], alpha=0.005)
    >>> round(float(b.lower[0]), 3), round(float(b.upper[0]), 3)
    (-0.154, -0.045)
    """
    return _two(k1, n1, k0, n0, alpha, "diff", "newcomb")


def divergence_bounds(d: ArrayLike, n_eff: ArrayLike, df: ArrayLike, alpha: float) -> Bounds:
    """Bounds of a divergence ``D`` whose estimate, times the effective sample ``n_eff``, is close
    to a noncentral chi-square with ``df`` degrees of freedom and noncentrality ``n_eff * D``: the
    population stability index of two binned samples (``n_eff = n m / (n + m)``, ``df`` = bins
    used minus one) to first order, and a squared mean shift in standard deviations.

    >>> b = divergence_bounds([0.05, 0.2, 0.3], n_eff=[1500, 1500, 300], df=19, alpha=1e-7)
    >>> [round(float(x), 3) for x in b.lower]  # 0.2 at n_eff 1500 is not yet above 0.1 with confidence
    [0.001, 0.088, 0.023]
    """
    d_arr = np.asarray(d, dtype=np.float64)
    n_arr, df_arr = np.broadcast_arrays(np.asarray(n_eff, dtype=np.float64), np.asarray(df, dtype=np.float64))
    d_arr, n_arr, df_arr = np.broadcast_arrays(d_arr, n_arr, df_arr)
    lo, hi = _nan_like(d_arr), _nan_like(d_arr)
    ok = (n_arr > 0) & (df_arr > 0) & np.isfinite(d_arr)
    if ok.any():
        x, dof, ne = np.maximum(d_arr[ok], 0.0) * n_arr[ok], df_arr[ok], n_arr[ok]
        # the noncentrality at which x is the (1 - alpha) quantile; none (0) when x is below it at 0
        signif = special.chndtr(x, dof, 0.0) > 1 - alpha
        lam_lo = np.where(signif, special.chndtrinc(x, dof, np.full_like(x, 1 - alpha)), 0.0)
        lam_hi = np.where(
            special.chndtr(x, dof, 0.0) > alpha, special.chndtrinc(x, dof, np.full_like(x, alpha)), 0.0
        )
        lo[ok], hi[ok] = np.maximum(lam_lo, 0.0) / ne, np.maximum(lam_hi, 0.0) / ne
    return Bounds(lo, hi)


def _two(k1, n1, k0, n0, alpha: float, compare: str, method: str) -> Bounds:
    k1a, n1a = _as_f64(k1, n1)
    k0a, n0a = _as_f64(k0, n0)
    k1a, n1a, k0a, n0a = np.broadcast_arrays(k1a, n1a, k0a, n0a)
    lo, hi = _nan_like(n1a), _nan_like(n1a)
    ok = (n1a > 0) & (n0a > 0)
    if ok.any():
        with np.errstate(divide="ignore", invalid="ignore"):
            lo[ok], hi[ok] = confint_proportions_2indep(
                k1a[ok], n1a[ok], k0a[ok], n0a[ok], method=method, compare=compare, alpha=2 * alpha
            )
    return Bounds(lo, hi)


def _as_f64(k: ArrayLike, n: ArrayLike) -> tuple[F64, F64]:
    k_arr, n_arr = np.broadcast_arrays(np.asarray(k, dtype=np.float64), np.asarray(n, dtype=np.float64))
    return np.array(k_arr), np.array(n_arr)


def _nan_like(a: np.ndarray) -> F64:
    return np.full(np.shape(a), np.nan)
