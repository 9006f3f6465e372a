"""Two-sample drift tests on binned counts, vectorised over many features at once.

Every test compares a reference histogram with a current one (counts over the same bins; the
last axis is the bins, leading axes are features) and returns a ``DriftResult``: the effect size,
a p-value where the test defines one, and the current sample size ``n``. Bins empty in both
samples are ignored. Numeric features are binned on the reference's quantiles; categorical ones
on the reference's categories plus one bin for categories it never had.

- ``psi``: population stability index (symmetrised KL divergence of the binned shares), with
  half a count added to every bin so an empty bin does not make it infinite.
- ``js_distance``: Jensen-Shannon distance, base 2, in [0, 1].
- ``total_variation``: half the L1 distance of the shares, in [0, 1].
- ``chi2_homogeneity``: Pearson's chi-square test that both samples come from one multinomial.
- ``ks_binned``: the Kolmogorov-Smirnov statistic between the binned CDFs, with the
  p-value of scipy's ``ks_2samp(method="asymp")`` (conservative on binned data).
- ``wasserstein_binned``: earth mover's distance between the histograms with each bin at its
  centre, divided by the reference's standard deviation (so 0.5 means "half a standard
  deviation of mass moved"), unit-free across features.
- ``two_proportions``: difference of two rates (e.g. missing values) with the pooled z-test.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats

from detectors.evidence import Bounds, divergence_bounds

F64 = NDArray[np.float64]


class DriftResult(NamedTuple):
    """One test's outcome per feature: effect size, p-value (NaN where undefined), current n."""

    effect: F64
    p_value: F64
    n: NDArray[np.int64]


def _pair(ref: ArrayLike, cur: ArrayLike) -> tuple[F64, F64]:
    r = np.atleast_2d(np.asarray(ref, dtype=np.float64))
    c = np.atleast_2d(np.asarray(cur, dtype=np.float64))
    if r.shape != c.shape:
        raise ValueError(f"reference and current counts differ in shape: {r.shape} vs {c.shape}")
    return r, c


def _n(cur: F64) -> NDArray[np.int64]:
    return cur.sum(axis=-1).astype(np.int64)


def _shares(counts: F64) -> F64:
    total = counts.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, counts / np.where(total > 0, total, 1), np.nan)


def psi(ref: ArrayLike, cur: ArrayLike, smoothing: float = 0.5) -> DriftResult:
    """Population stability index of ``cur`` against ``ref``.

    >>> r = psi([500, 300, 200], [500, 300, 200])
    >>> float(r.effect[0]), int(r.n[0])
    (0.0, 1000)
    >>> round(float(psi([500, 300, 200], [200, 300, 500]).effect[0]), 4)  # 0.5498 unsmoothed
    0.5481
    """
    r, c = _pair(ref, cur)
    used = (r + c) > 0
    rs, cs = _shares(np.where(used, r + smoothing, 0.0)), _shares(np.where(used, c + smoothing, 0.0))
    with np.errstate(invalid="ignore", divide="ignore"):
        terms = np.where(used, (cs - rs) * np.log(np.where(used, cs / np.where(used, rs, 1), 1)), 0.0)
    return DriftResult(terms.sum(axis=-1), np.full(r.shape[:-1], np.nan), _n(c))


def js_distance(ref: ArrayLike, cur: ArrayLike) -> DriftResult:
    """Jensen-Shannon distance (base 2) between the binned shares; equals scipy's.

    >>> round(float(js_distance([1, 0], [0, 1]).effect[0]), 6)
    1.0
    """
    r, c = _pair(ref, cur)
    p, q = _shares(r), _shares(c)
    m = (p + q) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        kl_p = np.where(p > 0, p * np.log2(np.where(p > 0, p, 1) / np.where(m > 0, m, 1)), 0.0).sum(-1)
        kl_q = np.where(q > 0, q * np.log2(np.where(q > 0, q, 1) / np.where(m > 0, m, 1)), 0.0).sum(-1)
    js = np.sqrt(np.clip((kl_p + kl_q) / 2, 0.0, 1.0))
    return DriftResult(js, np.full(r.shape[:-1], np.nan), _n(c))


def total_variation(ref: ArrayLike, cur: ArrayLike) -> DriftResult:
    """Total variation distance: the largest difference in probability any set of bins can show.

    >>> float(total_variation([50, 50], [100, 0]).effect[0])
    0.5
    """
    r, c = _pair(ref, cur)
    tv = np.abs(_shares(r) - _shares(c)).sum(axis=-1) / 2
    return DriftResult(tv, np.full(r.shape[:-1], np.nan), _n(c))


def chi2_homogeneity(ref: ArrayLike, cur: ArrayLike) -> DriftResult:
    """Pearson's chi-square test of homogeneity (the statistic is the effect); equals scipy's
    ``chi2_contingency(..., correction=False)`` on the 2 x bins table of used bins.

    >>> r = chi2_homogeneity([100, 100], [100, 100])
    >>> float(r.effect[0]), float(r.p_value[0])
    (0.0, 1.0)
    """
    r, c = _pair(ref, cur)
    used = (r + c) > 0
    nr, nc = r.sum(-1, keepdims=True), c.sum(-1, keepdims=True)
    total = nr + nc
    col = r + c
    with np.errstate(invalid="ignore", divide="ignore"):
        er, ec = col * nr / total, col * nc / total
        terms = np.where(
            used, (r - er) ** 2 / np.where(er > 0, er, 1) + (c - ec) ** 2 / np.where(ec > 0, ec, 1), 0
        )
    stat = terms.sum(-1)
    dof = used.sum(-1) - 1
    ok = (dof > 0) & (nr[..., 0] > 0) & (nc[..., 0] > 0)
    p = np.where(ok, stats.chi2.sf(stat, np.maximum(dof, 1)), np.nan)
    return DriftResult(np.where(ok, stat, np.nan), p, _n(c))


def ks_binned(ref: ArrayLike, cur: ArrayLike) -> DriftResult:
    """Two-sample Kolmogorov-Smirnov on binned CDFs (asymptotic p-value); for ordered bins only.

    >>> r = ks_binned([10, 10, 10, 10], [0, 0, 20, 20])
    >>> float(r.effect[0])
    0.5
    """
    r, c = _pair(ref, cur)
    nr, nc = r.sum(-1), c.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        d = np.abs(np.cumsum(r, -1) / nr[..., None] - np.cumsum(c, -1) / nc[..., None]).max(-1)
        en = nr * nc / (nr + nc)  # the p-value of scipy's ks_2samp(method="asymp")
        p = np.where((nr > 0) & (nc > 0), stats.kstwo.sf(d, np.maximum(np.round(en), 1)), np.nan)
    return DriftResult(d, np.clip(p, 0.0, 1.0), _n(c))


def wasserstein_binned(ref: ArrayLike, cur: ArrayLike, centres: ArrayLike) -> DriftResult:
    """Earth mover's distance with each bin at ``centres``, over the reference's standard deviation.

    >>> round(float(wasserstein_binned([0, 10, 0], [0, 0, 10], [0.0, 1.0, 2.0]).effect[0]), 3)
    inf
    >>> round(float(wasserstein_binned([5, 5, 0], [0, 5, 5], [0.0, 1.0, 2.0]).effect[0]), 3)
    2.0
    """
    r, c = _pair(ref, cur)
    x = np.asarray(centres, dtype=np.float64)
    p, q = _shares(r), _shares(c)
    w1 = (np.abs(np.cumsum(p, -1) - np.cumsum(q, -1))[..., :-1] * np.diff(x)).sum(-1)
    mean = (p * x).sum(-1)
    sd = np.sqrt((p * (x - mean[..., None]) ** 2).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        effect = np.where(sd > 0, w1 / np.where(sd > 0, sd, 1), np.where(w1 > 0, np.inf, 0.0))
    return DriftResult(effect, np.full(r.shape[:-1], np.nan), _n(c))


def two_proportions(k_ref: ArrayLike, n_ref: ArrayLike, k_cur: ArrayLike, n_cur: ArrayLike) -> DriftResult:
    """Current rate minus reference rate, with the two-sided pooled two-proportion z-test.

    >>> r = two_proportions([20], [1000], [60], [1000])
    >>> round(float(r.effect[0]), 3), float(r.p_value[0]) < 1e-5
    (0.04, True)
    """
    kr, nr = np.asarray(k_ref, np.float64), np.asarray(n_ref, np.float64)
    kc, nc = np.asarray(k_cur, np.float64), np.asarray(n_cur, np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        pr, pc = kr / nr, kc / nc
        pooled = (kr + kc) / (nr + nc)
        se = np.sqrt(pooled * (1 - pooled) * (1 / nr + 1 / nc))
        z = (pc - pr) / se
    p = np.where(se > 0, 2 * stats.norm.sf(np.abs(z)), np.where(pc == pr, 1.0, 0.0))
    p = np.where((nr > 0) & (nc > 0), p, np.nan)
    return DriftResult(np.atleast_1d(pc - pr), np.atleast_1d(p), np.atleast_1d(nc.astype(np.int64)))


def mean_shift_z(ref: ArrayLike, cur: ArrayLike) -> DriftResult:
    """How far the current mean bin (bins in order) is from the reference's, in standard errors.

    Under no change this is close to standard normal for a window of independent values, whatever
    the feature's units or tails (bins are bounded), which is what lets a sequential test on it be
    calibrated. Put only ordered bins in (not the bin of values the reference did not have).

    >>> r = mean_shift_z([[25, 25, 25, 25]], [[0, 0, 50, 50]])
    >>> round(float(r.effect[0]), 2)
    8.94
    """
    r, c = _pair(ref, cur)
    mu, sd, mean, n = _bin_means(r, c)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = np.where((sd > 0) & (n > 0), (mean - mu) / (sd / np.sqrt(n)), np.nan)
    return DriftResult(z, np.full(r.shape[:-1], np.nan), _n(c))


def _bin_means(r: F64, c: F64) -> tuple[F64, F64, F64, F64]:
    """The reference's mean bin and its spread, the current mean bin and the current count."""
    idx = np.arange(r.shape[-1], dtype=np.float64)
    p, q = _shares(r), _shares(c)
    mu = (p * idx).sum(-1)
    sd = np.sqrt((p * (idx - mu[..., None]) ** 2).sum(-1))
    return mu, sd, (q * idx).sum(-1), c.sum(-1)


def recursive_shift_z(
    ref: ArrayLike, cur: ArrayLike, prior_mean: ArrayLike, prior_n: ArrayLike
) -> tuple[F64, F64, F64]:
    """The current mean bin against the mean of all that came before it (``prior_mean`` over
    ``prior_n`` values: the reference, then every earlier window), in standard errors of that
    difference, with the reference's spread: ``(z, current mean bin, current n)``.

    These are recursive residuals: without change they are independent and close to standard
    normal whatever the window sizes, unlike a window's distance from the reference alone, which
    carries the reference's own sampling error scaled by the window's size (so a daily cycle in
    volume becomes a daily cycle in its mean, which a sequential test reads as change).

    >>> z, m, n = recursive_shift_z([[25, 25, 25, 25]], [[0, 0, 50, 50]], [1.5], [100])
    >>> round(float(z[0]), 2), float(m[0]), float(n[0])
    (6.32, 2.5, 100.0)
    """
    r, c = _pair(ref, cur)
    _, sd, mean, n = _bin_means(r, c)
    m0, n0 = np.asarray(prior_mean, np.float64), np.asarray(prior_n, np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        se = sd * np.sqrt(1 / n + 1 / n0)
        z = np.where((sd > 0) & (n > 0) & (n0 > 0), (mean - m0) / se, np.nan)
    return z, mean, n


def page_hinkley_threshold(arl0: float, delta: float = 0.5) -> float:
    """The threshold of a two-sided Page-Hinkley test (river's, ``alpha=1``) on standard-normal
    inputs whose average run length without change is ``arl0`` inputs.

    Siegmund's approximation of a one-sided CUSUM's run length, ``(exp(2 d (h + 1.166)) -
    2 d (h + 1.166) - 1) / (2 d^2)``, set to ``2 * arl0`` (two sides). ``tests/test_drift_online.py``
    checks it by simulation against river's detector.

    >>> round(page_hinkley_threshold(1000), 2)
    5.75
    """
    from scipy.optimize import brentq

    def excess(h: float) -> float:
        a = 2 * delta * (h + 1.166)
        return (math.exp(a) - a - 1) / (2 * delta**2) - 2 * arl0

    return float(brentq(excess, 1e-6, 50.0 / delta))


def embedding_mean_shift(
    ref_mean: ArrayLike, ref_var: ArrayLike, ref_n: int, cur_mean: ArrayLike, cur_n: int
) -> DriftResult:
    """How far the mean embedding moved: ``|cur - ref| / sqrt(sum(ref_var))`` (1 = by the
    reference's total standard deviation), with a chi-square test on the per-dimension z-scores
    (dimensions taken as independent: a diagonal Hotelling test).

    >>> r = embedding_mean_shift([0.0, 0.0], [1.0, 1.0], 1000, [0.3, 0.4], 500)
    >>> round(float(r.effect[0]), 3), float(r.p_value[0]) < 1e-10
    (0.354, True)
    """
    mu0, var = np.asarray(ref_mean, np.float64), np.asarray(ref_var, np.float64)
    mu1 = np.asarray(cur_mean, np.float64)
    total = var.sum()
    effect = float(np.linalg.norm(mu1 - mu0) / np.sqrt(total)) if total > 0 else math.nan
    ok = (var > 0) & (ref_n > 0) & (cur_n > 0)
    stat = float((((mu1 - mu0) ** 2)[ok] / (var[ok] * (1 / max(ref_n, 1) + 1 / max(cur_n, 1)))).sum())
    p = float(stats.chi2.sf(stat, int(ok.sum()))) if ok.any() else math.nan
    return DriftResult(np.array([effect]), np.array([p]), np.array([cur_n], dtype=np.int64))


def embedding_shift_bounds(
    ref_mean: ArrayLike, ref_var: ArrayLike, ref_n: int, cur_mean: ArrayLike, cur_n: int, alpha: float
) -> Bounds:
    """One-sided bounds of ``embedding_mean_shift``'s effect, each wrong with probability ``alpha``.

    The diagonal statistic is a noncentral chi-square whose noncentrality bounds the squared
    shift in per-dimension standard deviations (``divergence_bounds``); the effect is measured in
    the total standard deviation, so the bounds scale by the smallest (lower) and largest (upper)
    dimension's share of the variance: exact for isotropic embeddings, conservative otherwise.

    >>> b = embedding_shift_bounds([0.0] * 4, [1.0] * 4, 4000, [0.2] * 4, 900, alpha=1e-7)
    >>> round(float(b.lower[0]), 3), round(float(b.upper[0]), 3)  # the effect is 0.2
    (0.101, 0.294)
    """
    mu0, var = np.asarray(ref_mean, np.float64), np.asarray(ref_var, np.float64)
    mu1 = np.asarray(cur_mean, np.float64)
    ok = var > 0
    if not ok.any() or ref_n <= 0 or cur_n <= 0:
        return Bounds(np.array([math.nan]), np.array([math.nan]))
    n_eff = 1 / (1 / ref_n + 1 / cur_n)
    d2 = float((((mu1 - mu0) ** 2)[ok] / var[ok]).sum())  # squared shift in per-dimension sds
    b = divergence_bounds([d2], n_eff, int(ok.sum()), alpha)
    total = var[ok].sum()
    lo = np.sqrt(b.lower * var[ok].min() / total)
    hi = np.sqrt(b.upper * var[ok].max() / total)
    return Bounds(lo, hi)


def mmd_rbf(x: ArrayLike, y: ArrayLike, permutations: int = 200, seed: int = 0) -> DriftResult:
    """Maximum mean discrepancy (squared, biased) between samples ``x`` (reference) and ``y``, with
    a Gaussian kernel at the median pairwise distance, and its permutation p-value (resolution
    ``1 / (permutations + 1)``). For bounded samples: the cost grows with ``(len(x) + len(y))^2``.

    >>> rng = np.random.default_rng(0)
    >>> same = mmd_rbf(rng.normal(size=(100, 4)), rng.normal(size=(100, 4)))
    >>> moved = mmd_rbf(rng.normal(size=(100, 4)), rng.normal(1.0, size=(100, 4)))
    >>> float(same.p_value[0]) > 0.05, float(moved.p_value[0]) < 0.01
    (True, True)
    """
    a, b = np.asarray(x, np.float64), np.asarray(y, np.float64)
    z = np.vstack([a, b])
    sq = (z * z).sum(1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * z @ z.T, 0.0)
    med = np.median(d2[np.triu_indices(len(z), 1)]) if len(z) > 1 else 1.0
    k = np.exp(-d2 / (med if med > 0 else 1.0))
    n, m = len(a), len(b)
    w = np.concatenate([np.full(n, 1 / n), np.full(m, -1 / m)])  # MMD^2 = w' K w
    observed = float(w @ k @ w)
    rng = np.random.default_rng(seed)
    perms = np.array([rng.permutation(w) for _ in range(permutations)])
    null = np.einsum("ij,ij->i", perms @ k, perms)
    p = (int((null >= observed - 1e-12).sum()) + 1) / (permutations + 1)
    return DriftResult(np.array([observed]), np.array([p]), np.array([len(b)], dtype=np.int64))
