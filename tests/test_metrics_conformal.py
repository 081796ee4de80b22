"""Split-conformal APS / RAPS (mlreassess.metrics.conformal): the quantile and parameter picks by hand,
the splits, and nominal coverage on held-out synthetic softmax outputs (within sampling error)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mlreassess.metrics import conformal, ranking, sets


def test_quantile_is_the_finite_sample_rank():
    scores = np.array([0.5, 0.1, 0.4, 0.3, 0.2, 0.9, 0.8, 0.7, 0.6])  # n = 9
    # alpha .1: ceil(10 * .9) = 9th smallest = .9; alpha .2: ceil(8) = 8th = .8; alpha .35: ceil(6.5) = 7th = .7
    assert conformal.quantile(scores, 0.1) == 0.9
    assert conformal.quantile(scores, 0.2) == 0.8
    assert conformal.quantile(scores, 0.35) == 0.7
    assert conformal.quantile(scores[:5], 0.1) == math.inf  # ceil(6 * .9) = 6 > 5: every set is everything
    assert conformal.quantile(np.zeros(0), 0.1) == math.inf


def test_hashed_uniform_and_splits_are_seeded_and_independent_of_order():
    ids = np.array([f"img{i:04d}" for i in range(101)], dtype=object)
    u = conformal.hashed_uniform(ids, 0, "u")
    assert np.all((u >= 0) & (u < 1)) and len(np.unique(u)) == len(u)
    np.testing.assert_array_equal(conformal.hashed_uniform(ids[::-1], 0, "u"), u[::-1])  # order-free
    np.testing.assert_array_equal(conformal.hashed_uniform(ids[:10], 0, "u"), u[:10])  # subset-free
    assert not np.array_equal(conformal.hashed_uniform(ids, 1, "u"), u)
    cal = conformal.half_split(ids, 0)
    assert cal.sum() == 50 and not np.array_equal(cal, conformal.half_split(ids, 1))
    tune = conformal.tune_split(ids, 0, cal)
    assert tune.sum() == math.ceil(0.33 * 50) and not (tune & ~cal).any()


def test_pick_kreg_and_lambda_follow_their_code():
    # 0-based true-label ranks [0, 0, 1, 3, 9-and-beyond (K = 9)]: 'higher' 0.9-quantile of
    # [0, 0, 1, 3, 9] is 9 -> kreg 10; alpha .5: 'higher' median 1 -> kreg 2
    pos = np.array([0, 0, 1, 3, -1])
    assert conformal.pick_kreg(pos, 0.1, 9) == 10
    assert conformal.pick_kreg(pos, 0.5, 9) == 2


def synthetic(rng, n: int, c: int = 20, temperature: float = 1.0):
    """Softmax outputs and labels drawn from a tempered copy of them (a miscalibrated model)."""
    logits = rng.normal(size=(n, c)) * 2.0
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    truth = np.exp(logits / temperature)
    truth /= truth.sum(axis=1, keepdims=True)
    label = np.array([rng.choice(c, p=row) for row in truth])
    order = np.argsort(-p, axis=1, kind="stable")
    return ranking.Ranked(order, np.take_along_axis(p, order, axis=1), c, n_classes=c), label


def coverage(r: ranking.Ranked, label: np.ndarray, u: np.ndarray, qhat: float, kreg: int, lam: float) -> np.ndarray:
    built = sets.conformal_sets(r, sets.cumulative(r), u, qhat, kreg, lam)
    pos = np.argmax(r.idx == label[:, None], axis=1)
    return pos < built.size


@pytest.mark.parametrize("method", ["aps", "raps-fixed", "raps-auto"])
def test_conformal_sets_reach_nominal_coverage_on_held_out_data(method: str):
    # 30 independent calibration / test draws of 600 / 600 samples from a miscalibrated model
    # (labels drawn at temperature 2): marginal coverage must be 1 - alpha (up to 1 / (n_cal + 1)).
    # Per draw, coverage has variance ~ a(1-a)/(n_cal + 2) + a(1-a)/n_test = 3.0e-4; the mean of 30
    # draws has sd 0.0032: 4 sd = 0.013.
    rng = np.random.default_rng(7)
    alpha, trials, n = 0.1, 30, 600
    means = []
    for _ in range(trials):
        r, label = synthetic(rng, 2 * n, temperature=2.0)
        u = rng.random(2 * n)
        cal, test = np.arange(n), np.arange(n, 2 * n)
        tune = np.zeros(n, dtype=bool)
        tune[: n // 3] = method == "raps-auto"
        kreg, lam = {"aps": (1, 0.0), "raps-fixed": (2, 0.05), "raps-auto": (None, None)}[method]
        lpos = np.argmax(r.idx[cal] == label[cal, None], axis=1)
        calib = conformal.calibrate(r.rows(cal), sets.cumulative(r.rows(cal)), lpos, u[cal], alpha, tune, kreg, lam)
        assert calib.aps_exact and calib.raps_exact and calib.beyond_k == 0
        q, k, lm = (calib.aps_qhat, 1, 0.0) if method == "aps" else (calib.raps_qhat, calib.kreg, calib.lam)
        means.append(coverage(r.rows(test), label[test], u[test], q, k, lm).mean())
    assert abs(np.mean(means) - (1 - alpha)) < 0.013, np.mean(means)


def test_calibration_from_the_top_k_is_conservative_and_says_so():
    # labels past the stored top-3 get their largest possible score: Q-hat can only rise, so the
    # sets (computed from the full ranking) still cover >= 1 - alpha; `exact` is False
    rng = np.random.default_rng(3)
    r, label = synthetic(rng, 3000, temperature=3.0)
    u = rng.random(3000)
    cal, test = np.arange(1500), np.arange(1500, 3000)
    full_pos = np.argmax(r.idx[cal] == label[cal, None], axis=1)
    top = ranking.Ranked(r.idx[cal, :3], r.prob[cal, :3], 3, n_classes=r.n_classes)
    top_pos = np.where(full_pos < 3, full_pos, -1)
    no_tune = np.zeros(1500, dtype=bool)
    exact = conformal.calibrate(r.rows(cal), sets.cumulative(r.rows(cal)), full_pos, u[cal], 0.1, no_tune, 1, 0.0)
    bound = conformal.calibrate(top, sets.cumulative(top), top_pos, u[cal], 0.1, no_tune, 1, 0.0)
    assert bound.beyond_k == int((full_pos >= 3).sum()) > 0
    assert bound.aps_qhat >= exact.aps_qhat and exact.aps_exact and not bound.aps_exact
    covered = coverage(r.rows(test), label[test], u[test], bound.aps_qhat, 1, 0.0).mean()
    assert covered >= 0.9 - 4 * math.sqrt(0.09 / 1500)
