"""The stratified, seeded bootstrap: resample matrices, matrix-product sums, percentile intervals."""

from __future__ import annotations

import numpy as np
import pytest

from mlreassess.metrics import bootstrap as bs


def test_resample_counts_keep_each_stratum_size_and_are_seeded():
    sizes = [3, 5, 1]
    w = bs.resample_counts(sizes, n_boot=50, seed=7)
    assert w.shape == (50, 9) and w.dtype == np.uint8
    for a, b in bs.stratum_bounds(sizes):
        assert (w[:, a:b].sum(axis=1) == b - a).all()  # a resample of a stratum has its size
    assert (w[:, 8] == 1).all()  # a stratum of one sample is always drawn once
    assert np.array_equal(w, bs.resample_counts(sizes, n_boot=50, seed=7))
    assert not np.array_equal(w, bs.resample_counts(sizes, n_boot=50, seed=8))


def test_stratum_sums_equal_an_explicit_loop():
    rng = np.random.default_rng(0)
    sizes = [4, 6]
    x = rng.random((10, 3)).astype(np.float32)
    w = bs.resample_counts(sizes, n_boot=20, seed=1)
    bounds = bs.stratum_bounds(sizes)
    got = bs.stratum_sums(w, x, bounds)
    for s, (a, b) in enumerate(bounds):
        for r in range(20):
            expected = sum(int(w[r, i]) * x[i].astype(np.float64) for i in range(a, b))
            np.testing.assert_allclose(got[s, r], expected, rtol=1e-5)


def test_constant_scores_give_a_zero_width_interval():
    low, high = bs.bootstrap_ci(np.full(30, 1.0))
    assert low == high == 100.0


def test_stratification_fixes_the_group_proportions():
    # stratum 0 all correct, stratum 1 all wrong: a stratified resample always has the same mix,
    # so the interval collapses to the mean (1/4 -> 25%); an unstratified one does not.
    scores = np.array([1.0] * 10 + [0.0] * 30)
    strata = np.array([0] * 10 + [1] * 30)
    assert bs.bootstrap_ci(scores, strata) == (25.0, 25.0)
    low, high = bs.bootstrap_ci(scores)
    assert low < 25.0 < high


def test_interval_width_matches_the_normal_approximation():
    # p = 0.5, n = 400: 95% half-width ~ 1.96 * sqrt(.25/400) = 4.9 points
    scores = np.array([1.0, 0.0] * 200)
    low, high = bs.bootstrap_ci(scores, n_boot=2000, seed=3)
    assert 50 - 6.5 < low < 50 - 3.5 and 50 + 3.5 < high < 50 + 6.5


def test_nan_scores_are_not_counted():
    # NaN = metric does not apply: CI of [1, NaN, 1] is that of [1, 1]
    assert bs.bootstrap_ci(np.array([1.0, np.nan, 1.0])) == (100.0, 100.0)


def test_percentile_interval_bounds():
    reps = np.arange(1, 101, dtype=float)[:, None]
    low, high = bs.percentile_interval(reps, 90.0)
    assert low[0] == pytest.approx(np.percentile(reps, 5)) and high[0] == pytest.approx(np.percentile(reps, 95))
