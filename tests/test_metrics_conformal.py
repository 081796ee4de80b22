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
    # the first lands on the label past the top-9 (its true rank may be larger): not the exact pick
    pos = np.array([0, 0, 1, 3, -1])
    assert conformal.pick_kreg(pos, 0.1, 9) == (10, False)
    assert conformal.pick_kreg(pos, 0.5, 9) == (2, True)
    assert conformal.pick_kreg(np.array([0, 0, 1, 3, 8]), 0.1, 9) == (9, True)
    assert conformal.pick_kreg(np.zeros(0, dtype=np.int64), 0.1, 9) == (1, True)


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


def test_the_top_k_brackets_the_exact_qhat_and_the_replicates_bracket_theirs():
    rng = np.random.default_rng(5)
    r, label = synthetic(rng, 2000, temperature=3.0)
    u = rng.random(2000)
    pos = np.argmax(r.idx == label[:, None], axis=1)
    top = ranking.Ranked(r.idx[:, :3], r.prob[:, :3], 3, n_classes=r.n_classes)
    no_tune = np.zeros(2000, dtype=bool)
    exact = conformal.calibrate(r, sets.cumulative(r), pos, u, 0.1, no_tune, 2, 0.01, n_boot=400, seed=3)
    bound = conformal.calibrate(top, sets.cumulative(top), np.where(pos < 3, pos, -1), u, 0.1, no_tune, 2, 0.01,
                                n_boot=400, seed=3)
    assert exact.aps_exact and exact.aps_qlow == exact.aps_qhat
    for method in ("aps", "raps"):
        low, high, *_ = bound.family(method)
        q = exact.family(method)[1]
        assert low <= q <= high and low < high, method
        # replicate b of the exact scores lies between replicate b's low and high end (same draw)
        e, b = exact.replicates[method], bound.replicates[method]
        e_q, lo, hi = e.values[e.index, 1], b.values[b.index, 0], b.values[b.index, 1]
        assert np.all(lo <= e_q) and np.all(e_q <= hi), method
        assert np.all(np.diff(b.values, axis=0) >= 0) and len(b.index) == 400


def test_qhat_replicates_follow_a_plain_bootstrap_of_the_calibration_scores():
    # the Beta order-statistic draw against resampling the scores themselves: same distribution
    rng = np.random.default_rng(11)
    scores = rng.random(300) ** 2
    q = conformal.Qhat(conformal.quantile(scores, 0.1), conformal.quantile(scores, 0.1), True, scores, scores)
    reps = conformal.qhat_replicates(q, 0.1, 4000, seed=0)
    drawn = reps.values[reps.index, 1]
    plain = np.array([conformal.quantile(rng.choice(scores, size=300), 0.1) for _ in range(4000)])
    for level in (5, 25, 50, 75, 95):  # quantiles agree within resampling noise (sd of Q-hat ~ .017)
        assert abs(np.percentile(drawn, level) - np.percentile(plain, level)) < 0.012, level
    assert abs(drawn.std() - plain.std()) < 0.1 * plain.std()
    again = conformal.qhat_replicates(q, 0.1, 4000, seed=0)  # same (seed, n, k): the same draws
    np.testing.assert_array_equal(again.values[again.index], reps.values[reps.index])
    assert not np.array_equal(conformal.qhat_replicates(q, 0.1, 4000, seed=1).index, reps.index)
    few = conformal.qhat_replicates(conformal.Qhat(np.inf, np.inf, True, scores[:5], scores[:5]), 0.1, 7, 0)
    assert few.values.tolist() == [[np.inf, np.inf]] and few.index.tolist() == [0] * 7  # k > n: every set is everything


def _nll(prob: np.ndarray, label_pos: np.ndarray, temperature: float) -> float:
    logits = np.log(np.maximum(prob, 2.0 ** -25)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    return float(np.mean(np.log(np.exp(logits).sum(axis=1)) - logits[np.arange(len(prob)), label_pos]))


def test_fit_temperature_minimises_the_nll_and_recovers_a_known_temperature():
    # labels drawn from softmax(logits / 2) of a model reporting softmax(logits): T -> 2
    rng = np.random.default_rng(2)
    r, label = synthetic(rng, 4000, c=50, temperature=2.0)
    pos = np.argmax(r.idx == label[:, None], axis=1)
    t = conformal.fit_temperature(r.prob, pos)
    assert abs(t - 2.0) < 0.15
    grid = np.linspace(0.5, 4.0, 701)
    best = grid[np.argmin([_nll(r.prob, pos, g) for g in grid])]
    assert abs(t - best) <= 0.005 + 1e-9  # the grid's step
    assert _nll(r.prob, pos, t) <= min(_nll(r.prob, pos, t * 0.99), _nll(r.prob, pos, t * 1.01))
    hot = conformal.scaled(r, t)
    np.testing.assert_allclose(hot.prob.sum(axis=1), 1.0)
    assert np.all(np.diff(hot.prob, axis=1) <= 1e-15)  # the order stays
    assert conformal.fit_temperature(np.zeros((0, 50)), np.zeros(0, dtype=np.int64)) == 1.0


def sharp(rng, n: int, c: int = 100, boost: float = 6.0, temperature: float = 0.7):
    """A confident model (one boosted class per sample), labels from a tempered copy: most true
    labels in the top 10, as for ImageNet models (mini set: 4% past the top-10)."""
    logits = rng.normal(size=(n, c)) * 1.5
    logits[np.arange(n), rng.integers(0, c, n)] += boost
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    truth = np.exp(logits / temperature)
    truth /= truth.sum(axis=1, keepdims=True)
    label = np.array([rng.choice(c, p=row) for row in truth])
    order = np.argsort(-p, axis=1, kind="stable")
    return ranking.Ranked(order, np.take_along_axis(p, order, axis=1), c, n_classes=c), label


def test_raps_picks_from_the_top_k_say_when_they_are_the_full_rankings():
    # whenever the top-10 pick of (kreg, lambda) claims to be exact it is what the full ranking
    # picks; a weak model (many labels past the top-10) makes the claim impossible
    claimed = 0
    for seed in range(6):
        rng = np.random.default_rng(seed)
        r, label = sharp(rng, 900, boost=6.0 + 0.5 * seed)
        u = rng.random(900)
        pos = np.argmax(r.idx == label[:, None], axis=1)
        top = ranking.Ranked(r.idx[:, :10], r.prob[:, :10], 10, n_classes=r.n_classes)
        tune = np.arange(900) < 300
        exact = conformal.calibrate(r, sets.cumulative(r), pos, u, 0.1, tune)
        bound = conformal.calibrate(top, sets.cumulative(top), np.where(pos < 10, pos, -1), u, 0.1, tune)
        assert exact.raps_params_exact
        if bound.raps_params_exact:
            claimed += 1
            assert (bound.kreg, bound.lam) == (exact.kreg, exact.lam), seed
    assert claimed >= 4
    r, label = synthetic(np.random.default_rng(0), 900, temperature=3.0)  # true labels deep in the ranking
    pos = np.argmax(r.idx == label[:, None], axis=1)
    top = ranking.Ranked(r.idx[:, :3], r.prob[:, :3], 3, n_classes=r.n_classes)
    weak = conformal.calibrate(top, sets.cumulative(top), np.where(pos < 3, pos, -1), np.full(900, 0.5), 0.1,
                               np.arange(900) < 300)
    assert not weak.raps_params_exact
