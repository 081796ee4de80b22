"""Prediction sets (mlreassess.metrics.sets): hand-computed cases for every statistic, ties, empty
label sets and empty sets, and the top-K bounds against the full ranking."""

from __future__ import annotations

import numpy as np
import pytest

from mlreassess.metrics import core, ranking, sets

NAN = float("nan")


def stats_of(built: sets.Sets, r: ranking.Ranked, label_lists, label) -> dict:
    labels = core.label_sets(label_lists)
    label = np.asarray(label)
    lpos = ranking.label_positions(r, core.LabelSets(label[:, None], (label >= 0).astype(np.int64)))[:, 0]
    return sets.set_stats(built, ranking.label_positions(r, labels), labels.count, lpos, label >= 0)


def check(got: dict, expected: dict) -> None:
    for stat, values in expected.items():
        np.testing.assert_allclose(got[stat], values, rtol=0, atol=1e-12, err_msg=stat)


# Full ranking of 5 classes (nothing beyond), one row per sample:
#   A: classes [3, 0, 4, 1, 2] with p [.5, .2, .2, .1, 0], labels {0, 3}, single label 3
#   B: the same scores, labels {} (an empty label set), single label 3
#   C: classes [1, 0, 2, 3, 4] with p [.5, .5, 0, 0, 0] (a tie at the top), labels {2}, single label 2
IDX = np.array([[3, 0, 4, 1, 2], [3, 0, 4, 1, 2], [1, 0, 2, 3, 4]])
PROB = np.array([[0.5, 0.2, 0.2, 0.1, 0.0], [0.5, 0.2, 0.2, 0.1, 0.0], [0.5, 0.5, 0.0, 0.0, 0.0]])
FULL = ranking.Ranked(IDX, PROB, 5, n_classes=5)
LISTS, LABEL = [[0, 3], [], [2]], [3, 3, 2]


def test_threshold_sets_include_ties_at_tau():
    # tau = .2: A {3, 0, 4} (both .2 tied at tau are in): |L∩S| 2 of |S| 3, |L| 2
    #   precision 2/3, recall 1, F1 2*2/(2+3) = .8, exact 0, coverage 1, label 3 in: 1, size 3
    # B: empty label set -> every label-set statistic NaN (size too); single label 3 is in -> 1
    # C: {1, 0}: no hit -> 0, 0, 0, 0, 0; label 2 not in -> 0; size 2
    built = sets.threshold_sets(FULL, 0.2)
    assert not built.extends.any()
    check(stats_of(built, FULL, LISTS, LABEL), {
        "precision": [2 / 3, NAN, 0], "recall": [1, NAN, 0], "f1": [0.8, NAN, 0], "exact": [0, NAN, 0],
        "coverage": [1, NAN, 0], "label_coverage": [1, 1, 0], "size": [3, NAN, 2]})


def test_an_empty_set_scores_zero():
    # tau = .6 is above every probability: S = {} -> precision 0 (scikit-learn's zero_division=0),
    # recall 0, F1 0, exact 0 (L is not empty), coverage 0, size 0
    built = sets.threshold_sets(FULL, 0.6)
    check(stats_of(built, FULL, LISTS, LABEL), {
        "precision": [0, NAN, 0], "recall": [0, NAN, 0], "f1": [0, NAN, 0], "exact": [0, NAN, 0],
        "coverage": [0, NAN, 0], "label_coverage": [0, 0, 0], "size": [0, NAN, 0]})


def test_mass_sets_stop_at_the_first_class_reaching_q():
    # q = .7: A cum [.5, .7, ...] -> {3, 0} = L: everything 1, size 2
    # C: cum [.5, 1.0] -> {1, 0}; q = .5 would stop at the first class (cum .5 >= .5)
    built = sets.mass_sets(FULL, 0.7)
    check(stats_of(built, FULL, LISTS, LABEL), {
        "precision": [1, NAN, 0], "recall": [1, NAN, 0], "f1": [1, NAN, 0], "exact": [1, NAN, 0],
        "coverage": [1, NAN, 0], "label_coverage": [1, 1, 0], "size": [2, NAN, 2]})
    assert sets.mass_sets(FULL, 0.5).size.tolist() == [1, 1, 1]


def test_conformal_sets_by_hand():
    # p [.5, .3, .2], u = .5, kreg 1, lam .1: score(r) = mass above + u p_r + lam (r - 1)+
    #   r1: 0 + .25 + 0 = .25; r2: .5 + .15 + .1 = .75; r3: .8 + .1 + .2 = 1.1
    r = ranking.Ranked(np.array([[2, 0, 1]]), np.array([[0.5, 0.3, 0.2]]), 3, n_classes=3)
    cum = sets.cumulative(r)
    u = np.array([0.5])
    np.testing.assert_allclose(sets.conformal_scores(r, cum, u, 1, 0.1), [[0.25, 0.75, 1.1]])
    assert sets.conformal_sets(r, cum, u, 0.75, 1, 0.1).size.tolist() == [2]  # score <= qhat is in
    assert sets.conformal_sets(r, cum, u, 0.2, 1, 0.1).size.tolist() == [0]  # empty sets are allowed
    assert sets.conformal_sets(r, cum, np.array([0.0]), 0.5, 1, 0.0).size.tolist() == [2]  # APS, u = 0: .0, .5


def test_a_threshold_set_past_the_stored_top_k_gets_the_optimistic_bound():
    # 10 classes, K = 2 stored: p [.3, .3] >= tau .2, mass left .4 -> up to 2 unseen classes may pass too.
    # labels {5, 7, 8}: 5 stored, 7 and 8 not. Optimistic: the 2 unseen are 7 and 8: |L∩S| 3, |S| 4
    #   precision 3/4, recall 1, F1 6/7, exact 0 (|S| 4 != 3), coverage 1; size >= 2 (lower bound)
    r = ranking.Ranked(np.array([[5, 1]]), np.array([[0.3, 0.3]]), 2, n_classes=10)
    built = sets.threshold_sets(r, 0.2)
    assert built.extends.tolist() == [True] and built.extra_hi.tolist() == [2]
    check(stats_of(built, r, [[5, 7, 8]], [7]), {
        "precision": [3 / 4], "recall": [1], "f1": [6 / 7], "exact": [0], "coverage": [1], "label_coverage": [1],
        "size": [2]})
    # tau > 1 / (K + 1): no unseen class can reach it, the top-K is enough
    exact = sets.threshold_sets(ranking.Ranked(np.array([[5, 1]]), np.array([[0.5, 0.4]]), 2, n_classes=10), 0.4)
    assert not exact.extends.any() and exact.size.tolist() == [2]


def test_a_mass_set_past_the_stored_top_k():
    # K = 2: p [.5, .2], q .9: the two hold .7, each unseen class <= .2 -> at least 1 more (size >= 3)
    # labels {0, 9}: 0 stored at rank 1, 9 unseen -> optimistic: the unseen one is 9: S = {0, 4, 9} = ...
    #   |L∩S| 2, |S| 3 -> precision 2/3, recall 1, F1 4/5, exact 0, coverage 1
    r = ranking.Ranked(np.array([[0, 4]]), np.array([[0.5, 0.2]]), 2, n_classes=10)
    built = sets.mass_sets(r, 0.9)
    assert built.extends.tolist() == [True] and built.extra_lo.tolist() == [1]
    check(stats_of(built, r, [[0, 9]], [-1]), {
        "precision": [2 / 3], "recall": [1], "f1": [0.8], "exact": [0], "coverage": [1], "label_coverage": [NAN],
        "size": [3]})


@pytest.mark.parametrize("seed", [0, 1])
def test_top_k_statistics_bound_the_full_ranking_ones(seed: int):
    rng = np.random.default_rng(seed)
    n, c, k = 500, 30, 4
    scores = np.exp(rng.normal(size=(n, c)) * 1.5)
    scores /= scores.sum(axis=1, keepdims=True)
    order = np.argsort(-scores, axis=1, kind="stable")
    prob = np.take_along_axis(scores, order, axis=1)
    full, top = ranking.Ranked(order, prob, c, n_classes=c), ranking.Ranked(order[:, :k], prob[:, :k], k, n_classes=c)
    lists = [sorted(set(rng.choice(c, size=rng.integers(1, 4), p=scores[i]).tolist())) for i in range(n)]
    label = np.array([ls[0] for ls in lists])
    u = rng.random(n)
    builders = {
        "thr": lambda r: sets.threshold_sets(r, 0.05),
        "mass": lambda r: sets.mass_sets(r, 0.8),
        "raps": lambda r: sets.conformal_sets(r, sets.cumulative(r), u, 0.9, 2, 0.02),
        "aps": lambda r: sets.conformal_sets(r, sets.cumulative(r), u, 0.8, 1, 0.0),
    }
    for name, build in builders.items():
        b_full, b_top = build(full), build(top)
        exact, bound = stats_of(b_full, full, lists, label), stats_of(b_top, top, lists, label)
        ext = b_top.extends
        assert 0 < ext.sum() < n, name
        for stat in sets.STATS:
            np.testing.assert_array_equal(bound[stat][~ext], exact[stat][~ext], err_msg=f"{name} {stat}")
            if stat == "size":
                assert np.all(bound[stat] <= exact[stat]), name
            else:
                assert np.all(bound[stat] >= exact[stat] - 1e-12), f"{name} {stat}"


def _random_case(seed: int, n: int = 400, c: int = 30, k: int = 4):
    rng = np.random.default_rng(seed)
    scores = np.exp(rng.normal(size=(n, c)) * 1.5)
    scores /= scores.sum(axis=1, keepdims=True)
    order = np.argsort(-scores, axis=1, kind="stable")
    prob = np.take_along_axis(scores, order, axis=1)
    full, top = ranking.Ranked(order, prob, c, n_classes=c), ranking.Ranked(order[:, :k], prob[:, :k], k, n_classes=c)
    lists = [sorted(set(rng.choice(c, size=rng.integers(0, 4), p=scores[i]).tolist())) for i in range(n)]
    label = np.array([ls[0] if ls else -1 for ls in lists])
    return rng, full, top, lists, label


def _facts(r: ranking.Ranked, lists, label, ext=None) -> sets.SetFacts:
    labels = core.label_sets(lists)
    lpos = ranking.label_positions(r, core.LabelSets(label[:, None], (label >= 0).astype(np.int64)))[:, 0]
    return sets.SetFacts(ranking.label_positions(r, labels), labels.count, lpos, label >= 0, r.depth, ext)


@pytest.mark.parametrize("seed", [0, 1])
def test_conformal_states_and_leading_stats_are_set_stats(seed: int):
    # the state of a set at q (its size, or D + 1 when it runs past the D ranked) and the statistics
    # of a leading set of that state equal conformal_sets + set_stats, past the top-K included
    rng, full, top, lists, label = _random_case(seed)
    u = rng.random(len(label))
    for r in (full, top):
        cum = sets.cumulative(r)
        state_scores = sets.conformal_state_scores(r, cum, u, 2, 0.02)
        for q in (0.3, 0.7, 0.95):
            built = sets.conformal_sets(r, cum, u, q, 2, 0.02)
            state = sets.conformal_state(state_scores, q)
            np.testing.assert_array_equal(state, built.size + built.extends)
            ext = stats_of(built, r, lists, label)
            got = sets.leading_stats(_facts(r, lists, label, None if r.complete else ext), state)
            check(got, ext)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_range_stats_bound_every_set_in_between(seed: int):
    # a set known to lie between the first a and the first b classes: every statistic but size is
    # at most its bound, size at least its bound, for every size in between (exhaustively)
    rng, full, _, lists, label = _random_case(seed, c=12)
    facts = _facts(full, lists, label)
    a = rng.integers(0, 13, size=len(label))
    b = np.minimum(a + rng.integers(0, 6, size=len(label)), 12)
    bound = sets.range_stats(facts, a, b)
    reached = {s: np.zeros(len(label), dtype=bool) for s in sets.STATS}
    for s in range(13):
        inside = (a <= s) & (s <= b)
        got = sets.leading_stats(facts, np.full(len(label), s))
        for stat in sets.STATS:
            ok = np.isnan(got[stat]) | ~inside
            if stat == "size":
                assert np.all(ok | (got[stat] >= bound[stat])), stat
            else:
                assert np.all(ok | (got[stat] <= bound[stat] + 1e-12)), stat
            reached[stat] |= inside & (got[stat] == bound[stat])
    for stat in sets.STATS:  # and each bound is attained by a set in the range (it is the best one)
        assert np.all(reached[stat] | np.isnan(bound[stat])), stat
    check(sets.range_stats(facts, a, a), sets.leading_stats(facts, a))
