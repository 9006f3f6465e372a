"""Binomial rates with Wilson score intervals, vectorised over many windows at once."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray
from statsmodels.stats.proportion import proportion_confint


def wilson_interval(
    k: ArrayLike, n: ArrayLike, confidence: float = 0.95
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Rate ``k / n`` with its Wilson score interval, element-wise.

    Wilson's interval stays inside [0, 1] and keeps its coverage at small ``n`` and at rates
    near 0, where the normal approximation fails; a rate with ``n == 0`` is NaN throughout.

    Parameters
    ----------
    k
        Successes (e.g. violations) per window.
    n
        Trials (e.g. events with safety data) per window.
    confidence
        Two-sided coverage of the interval.

    Examples
    --------
    >>> rate, lo, hi = wilson_interval([12, 0], [200, 50])
    >>> [round(float(x), 4) for x in (rate[0], lo[0], hi[0])]
    [0.06, 0.0347, 0.1019]
    >>> round(float(hi[1]), 4)  # no violation in 50 is still compatible with a 7% rate
    0.0713

    Wilson, E. B. (1927). Probable inference, the law of succession, and statistical inference.
    """
    k_arr = np.asarray(k, dtype=np.float64)
    n_arr = np.asarray(n, dtype=np.float64)
    rate = np.full(np.broadcast(k_arr, n_arr).shape, np.nan)
    lo, hi = rate.copy(), rate.copy()
    ok = n_arr > 0
    if np.any(ok):
        kk, nn = np.broadcast_to(k_arr, rate.shape)[ok], np.broadcast_to(n_arr, rate.shape)[ok]
        rate[ok] = kk / nn
        lo[ok], hi[ok] = proportion_confint(kk, nn, alpha=1 - confidence, method="wilson")
    return rate, lo, hi


def one_sided(p_two: ArrayLike, right_direction: ArrayLike) -> NDArray[np.float64]:
    """One-sided p-values from the two-sided ones of a symmetric test, for the alternative that
    holds where ``right_direction`` is true (half the two-sided p there, one minus half elsewhere).

    >>> one_sided([0.04, 0.04], [True, False]).tolist()
    [0.02, 0.98]
    """
    p = np.asarray(p_two, dtype=np.float64) / 2
    return np.where(right_direction, p, 1 - p)
