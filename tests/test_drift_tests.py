"""The window tests of detectors/drift.py against scipy and statsmodels on the same data."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon
from statsmodels.stats.proportion import proportions_ztest

from detectors import drift

RNG = np.random.default_rng(7)


def _counts(n: int, p: np.ndarray) -> np.ndarray:
    return RNG.multinomial(n, p)


@pytest.mark.parametrize("bins", [2, 5, 20])
def test_chi2_equals_scipy(bins: int):
    p = RNG.dirichlet(np.ones(bins))
    ref, cur = _counts(5000, p), _counts(800, RNG.dirichlet(np.ones(bins)))
    ours = drift.chi2_homogeneity(ref, cur)
    table = np.array([ref, cur])
    table = table[:, table.sum(0) > 0]
    stat, pv, _, _ = stats.chi2_contingency(table, correction=False)
    assert ours.effect[0] == pytest.approx(stat, rel=1e-9)
    assert ours.p_value[0] == pytest.approx(pv, rel=1e-6, abs=1e-300)
    assert ours.n[0] == 800


def test_vectorised_over_features_equals_one_at_a_time():
    ref = np.array([[10, 20, 30, 0], [5, 5, 5, 5]])
    cur = np.array([[12, 18, 25, 3], [1, 2, 3, 30]])
    for test in (
        drift.chi2_homogeneity,
        drift.psi,
        drift.js_distance,
        drift.total_variation,
        drift.ks_binned,
    ):
        both = test(ref, cur)
        for i in range(2):
            one = test(ref[i], cur[i])
            assert both.effect[i] == pytest.approx(one.effect[0], rel=1e-12)
            assert np.isnan(both.p_value[i]) == np.isnan(one.p_value[0])


def test_js_equals_scipy():
    ref, cur = _counts(1000, np.full(8, 1 / 8)), _counts(300, RNG.dirichlet(np.ones(8)))
    assert drift.js_distance(ref, cur).effect[0] == pytest.approx(jensenshannon(ref, cur, base=2), rel=1e-9)


def test_total_variation_and_psi_by_hand():
    p, q = np.array([0.5, 0.3, 0.2]), np.array([0.2, 0.3, 0.5])
    assert drift.total_variation(p * 1000, q * 1000).effect[0] == pytest.approx(0.3)
    exact = float(np.sum((q - p) * np.log(q / p)))
    assert drift.psi(p * 1e6, q * 1e6).effect[0] == pytest.approx(
        exact, rel=1e-4
    )  # smoothing vanishes at large n


def test_psi_of_a_new_category_is_finite_and_large():
    r = drift.psi([500, 500, 0], [350, 350, 300])
    assert np.isfinite(r.effect[0]) and r.effect[0] > 1.0


def test_ks_on_binned_values_equals_scipy():
    values = np.arange(10.0)
    a = RNG.choice(values, 4000, p=np.full(10, 0.1))
    b = RNG.choice(values, 600, p=np.linspace(1, 2, 10) / np.linspace(1, 2, 10).sum())
    ref, cur = np.bincount(a.astype(int), minlength=10), np.bincount(b.astype(int), minlength=10)
    ours = drift.ks_binned(ref, cur)
    theirs = stats.ks_2samp(a, b, method="asymp")
    assert ours.effect[0] == pytest.approx(theirs.statistic, rel=1e-9)
    assert ours.p_value[0] == pytest.approx(theirs.pvalue, rel=1e-3)


def test_wasserstein_equals_scipy_over_sd():
    centres = np.array([0.5, 1.5, 2.5, 3.5])
    ref, cur = np.array([40, 30, 20, 10]), np.array([10, 20, 30, 40])
    w = stats.wasserstein_distance(centres, centres, ref, cur)
    sd = np.sqrt(np.cov(centres, aweights=ref, bias=True))
    assert drift.wasserstein_binned(ref, cur, centres).effect[0] == pytest.approx(w / sd, rel=1e-9)


def test_two_proportions_equals_statsmodels():
    ours = drift.two_proportions([30, 5], [2000, 1000], [45, 5], [1500, 1000])
    for i, (k, n) in enumerate([((30, 45), (2000, 1500)), ((5, 5), (1000, 1000))]):
        _, p = proportions_ztest(np.array(k[::-1]), np.array(n[::-1]))
        assert ours.p_value[i] == pytest.approx(p, rel=1e-9)
    assert ours.effect[0] == pytest.approx(45 / 1500 - 30 / 2000)


def test_chi2_p_values_are_uniform_under_the_null():
    """On samples from one distribution the p-value is uniform: P(p < a) ~= a (calibration)."""
    p = RNG.dirichlet(np.ones(20))
    ref = RNG.multinomial(4000, p, size=4000)
    cur = RNG.multinomial(1500, p, size=4000)
    pv = drift.chi2_homogeneity(ref, cur).p_value
    for a in (0.01, 0.05, 0.2):
        assert abs(np.mean(pv < a) - a) < 4 * np.sqrt(a * (1 - a) / 4000)


def test_empty_current_sample_gives_no_p_value():
    r = drift.chi2_homogeneity([10, 10], [0, 0])
    assert np.isnan(r.p_value[0]) and r.n[0] == 0
