"""Ranking metrics (mlreassess.metrics.ranking) against scikit-learn, by hand, and their top-K bounds."""

from __future__ import annotations

import numpy as np
import pytest

from mlreassess.metrics import core, ranking

sklearn_metrics = pytest.importorskip("sklearn.metrics")


def ranked_from_scores(scores: np.ndarray, depth: int | None = None) -> ranking.Ranked:
    """Scores (n, C) -> Ranked of the first `depth` classes (ties by class index, as evaluate does)."""
    order = np.argsort(-scores, axis=1, kind="stable")
    d = depth or scores.shape[1]
    return ranking.Ranked(order[:, :d], np.take_along_axis(scores, order, axis=1)[:, :d], d, n_classes=scores.shape[1])


def random_multilabel(seed: int, n: int = 300, c: int = 15, ties: bool = False):
    rng = np.random.default_rng(seed)
    scores = rng.random((n, c))
    if ties:  # a quarter of the scores on a coarse grid: many exact ties within and across samples
        scores = np.where(rng.random((n, c)) < 0.5, np.round(scores * 4) / 4, scores)
    scores = scores / scores.sum(axis=1, keepdims=True)
    y = rng.random((n, c)) < 0.2
    y[np.arange(n), rng.integers(0, c, n)] = True  # no empty label set (scikit-learn scores those 1)
    return scores, y, core.label_sets([np.flatnonzero(row).tolist() for row in y])


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ranking_metrics_equal_scikit_learn(seed: int, ties: bool):
    scores, y, labels = random_multilabel(seed, ties=ties)
    r = ranked_from_scores(scores)
    lrap, cover, beyond = ranking.lrap_and_coverage(r, labels)
    assert not beyond.any()
    assert lrap.mean() == pytest.approx(sklearn_metrics.label_ranking_average_precision_score(y, scores), abs=1e-9)
    assert cover.mean() == pytest.approx(sklearn_metrics.coverage_error(y, scores), abs=1e-9)
    # per-sample AP is LRAP, sample by sample (docs/metrics.md)
    assert lrap.mean() == pytest.approx(sklearn_metrics.average_precision_score(y, scores, average="samples"), abs=1e-9)
    classes, ap = ranking.class_ap(ranking.class_entries(r, labels, ranking.label_positions(r, labels), np.ones(len(y), bool)))
    reference = sklearn_metrics.average_precision_score(y, scores, average=None)
    np.testing.assert_allclose(ap, reference[classes], rtol=0, atol=1e-9)
    assert ap.mean() == pytest.approx(sklearn_metrics.average_precision_score(y, scores, average="macro"), abs=1e-9)


def test_hand_computed_lrap_coverage_and_ties():
    # one sample, 5 classes, scores [.4, .3, .3, .0, .0] (classes 0..4), labels {1, 3}
    #   class 1 ties with class 2 at .3: rank 3 (0, 1, 2 score >= .3), labels at or above: {1} -> 1/3
    #   class 3 ties with 4 at 0: rank 5, labels at or above: {1, 3} -> 2/5; LRAP = (1/3 + 2/5) / 2 = 11/30
    #   coverage error = worst rank = 5
    scores = np.array([[0.4, 0.3, 0.3, 0.0, 0.0]])
    r = ranked_from_scores(scores)
    lrap, cover, beyond = ranking.lrap_and_coverage(r, core.label_sets([[1, 3]]))
    assert lrap[0] == pytest.approx(11 / 30) and cover[0] == 5 and not beyond[0]


def test_empty_label_sets_are_not_scored():
    r = ranked_from_scores(np.array([[0.6, 0.4], [0.5, 0.5]]))
    lrap, cover, beyond = ranking.lrap_and_coverage(r, core.label_sets([[], [1]]))
    assert np.isnan(lrap[0]) and np.isnan(cover[0]) and not beyond[0]
    assert lrap[1] == pytest.approx(1 / 2) and cover[1] == 2  # tie at .5: pessimistic rank 2


def test_topk_bound_by_hand():
    # K = 2 of 6 classes stored: top [0, 1] with p [.4, .1], labels {1, 4, 5}: 4 and 5 not stored.
    #   missing labels: at best tied right after the K, both rank 4 with 3 labels at or above -> 3/4
    #   each (strictly ordered: 2/3 + 3/4, less: scikit-learn's ties count every tied label);
    #   stored label 1 is the K-th: up to floor(.5 left / .1) >= 2 unstored labels may tie with it
    #   -> (1 + 2) / (2 + 2) = 3/4. LRAP <= 3/4; coverage error >= K + 2 = 4.
    r = ranking.Ranked(np.array([[0, 1]]), np.array([[0.4, 0.1]]), 2, n_classes=6)
    lrap, cover, beyond = ranking.lrap_and_coverage(r, core.label_sets([[1, 4, 5]]))
    assert lrap[0] == pytest.approx(3 / 4) and cover[0] == 4 and beyond[0]
    # it is reached: a full ranking with 4 and 5 tied with 1 right after class 0 (the rest below)
    reached = ranking.Ranked(np.array([[0, 1, 4, 5, 2, 3]]), np.array([[0.4, 0.1, 0.1, 0.1, 0.05, 0.05]]), 6, n_classes=6)
    assert ranking.lrap_and_coverage(reached, core.label_sets([[1, 4, 5]]))[0][0] == pytest.approx(3 / 4)
    # a K-th probability the mass left cannot repeat: no unstored label ties with it
    # top [0, 1] p [.5, .3], .2 left < .3: label 1 keeps 1/2; missing 4, 5 -> 3/4 each: (1/2 + 3/2) / 3
    r2 = ranking.Ranked(np.array([[0, 1]]), np.array([[0.5, 0.3]]), 2, n_classes=6)
    assert ranking.lrap_and_coverage(r2, core.label_sets([[1, 4, 5]]))[0][0] == pytest.approx(2 / 3)


@pytest.mark.parametrize("seed", [3, 4])
def test_topk_gives_bounds_and_is_exact_when_every_label_is_stored(seed: int):
    rng = np.random.default_rng(seed)
    n, c, k = 400, 40, 6
    scores = np.exp(rng.normal(size=(n, c)) * 2)
    scores /= scores.sum(axis=1, keepdims=True)
    y = rng.random((n, c)) < 0.05
    y[np.arange(n), np.argmax(scores + rng.random((n, c)) * 0.2, axis=1)] = True
    labels = core.label_sets([np.flatnonzero(row).tolist() for row in y])
    exact_lrap, exact_cover, _ = ranking.lrap_and_coverage(ranked_from_scores(scores), labels)
    lrap, cover, beyond = ranking.lrap_and_coverage(ranked_from_scores(scores, k), labels)
    assert 0 < beyond.sum() < n
    assert np.all(lrap >= exact_lrap - 1e-12) and np.all(cover <= exact_cover)  # LRAP upper, coverage lower
    np.testing.assert_array_equal(lrap[~beyond], exact_lrap[~beyond])
    np.testing.assert_array_equal(cover[~beyond], exact_cover[~beyond])
    # mAP: every class's AP is an upper bound, exact where not flagged
    ex = ranking.class_ap(ranking.class_entries(ranked_from_scores(scores), labels,
                                                ranking.label_positions(ranked_from_scores(scores), labels), np.ones(n, bool)))
    rk = ranked_from_scores(scores, k)
    e = ranking.class_entries(rk, labels, ranking.label_positions(rk, labels), np.ones(n, bool))
    classes, ap = ranking.class_ap(e)
    np.testing.assert_array_equal(classes, ex[0])
    assert np.all(ap >= ex[1] - 1e-12)
    np.testing.assert_allclose(ap[~e.bounded[classes]], ex[1][~e.bounded[classes]], atol=1e-12)


def test_class_ap_exact_when_no_unstored_negative_can_pass_a_positive():
    # 3 classes, K = 1: each sample stores only its top class, which is its one label. An unstored
    # class scores at most min(stored p, 1 - stored p): .1, .4, .5, .3 -> below every positive
    # (.9, .6, .5, .7) of the classes those samples do not store: every AP is exact (and 1)
    labels = core.label_sets([[0], [1], [2], [0]])
    r = ranking.Ranked(np.array([[0], [1], [2], [0]]), np.array([[0.9], [0.6], [0.5], [0.7]]), 1, n_classes=3)
    e = ranking.class_entries(r, labels, ranking.label_positions(r, labels), np.ones(4, bool))
    classes, ap = ranking.class_ap(e)
    assert classes.tolist() == [0, 1, 2] and ap.tolist() == [1.0, 1.0, 1.0] and not e.bounded.any()
    # class 2's positive at .3 instead: sample 1 (stores class 1 at .6) may hold up to .4 on class 2
    r2 = ranking.Ranked(r.idx, np.array([[0.9], [0.6], [0.3], [0.7]]), 1, n_classes=3)
    e2 = ranking.class_entries(r2, labels, ranking.label_positions(r2, labels), np.ones(4, bool))
    assert e2.bounded.tolist() == [False, False, True]


def test_map_replicates_all_ones_equal_the_estimate_and_weights_mean_ordered_copies():
    scores, y, labels = random_multilabel(5, n=120, c=8, ties=True)
    r = ranked_from_scores(scores)
    e = ranking.class_entries(r, labels, ranking.label_positions(r, labels), np.ones(len(y), bool))
    _, ap = ranking.class_ap(e)
    np.testing.assert_allclose(ranking.class_ap_replicates(e, np.ones((3, len(y)), np.uint8)), ap.mean(), atol=1e-12)
    rng = np.random.default_rng(0)
    w = rng.integers(0, 4, size=(2, len(y))).astype(np.uint8)
    reps = ranking.class_ap_replicates(e, w)
    for b in range(2):  # reference: the resample written out, copies ordered by a tiny offset, genuine ties kept
        rows = np.repeat(np.arange(len(y)), w[b])
        offset = np.concatenate([np.arange(k) for k in w[b]]) * 1e-12
        aps = []
        for c in range(y.shape[1]):
            values, counts = np.unique(scores[:, c], return_counts=True)
            tied = np.isin(scores[rows, c], values[counts > 1])
            if y[rows, c].any():
                aps.append(sklearn_metrics.average_precision_score(y[rows, c], np.where(tied, scores[rows, c], scores[rows, c] - offset)))
        assert reps[b] == pytest.approx(np.mean(aps), abs=1e-9)


def test_lrap_and_coverage_bounds_hold_with_ties_past_the_top_k():
    # probabilities on a coarse grid (as bf16 logits give): many exact ties, among unstored classes
    # and across the K boundary. LRAP stays an upper bound (its missing-label terms allow for
    # ties), coverage error a lower bound.
    rng = np.random.default_rng(8)
    n, c, k = 500, 20, 4
    scores = np.round(rng.dirichlet(np.full(c, 0.3), size=n) * 20) / 20 + 1e-3
    scores /= scores.sum(axis=1, keepdims=True)
    y = rng.random((n, c)) < 0.15
    y[np.arange(n), rng.integers(0, c, n)] = True
    labels = core.label_sets([np.flatnonzero(row).tolist() for row in y])
    exact_lrap, exact_cover, _ = ranking.lrap_and_coverage(ranked_from_scores(scores), labels)
    lrap, cover, beyond = ranking.lrap_and_coverage(ranked_from_scores(scores, k), labels)
    assert beyond.sum() > n / 4
    assert np.all(lrap >= exact_lrap - 1e-12) and np.all(cover <= exact_cover)


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_label_ranking_loss_equals_scikit_learn(seed: int, ties: bool):
    scores, y, labels = random_multilabel(seed, ties=ties)
    loss, beyond = ranking.label_ranking_loss(ranked_from_scores(scores), labels)
    assert not beyond.any()
    assert loss.mean() == pytest.approx(sklearn_metrics.label_ranking_loss(y, scores), abs=1e-12)
    for i in range(0, len(y), 37):  # and sample by sample
        assert loss[i] == pytest.approx(sklearn_metrics.label_ranking_loss(y[i: i + 1], scores[i: i + 1]), abs=1e-12)
    # without probabilities (order only) the stored order is strict: ties broken by class index
    order_only = ranking.Ranked(ranked_from_scores(scores).idx, None, scores.shape[1], n_classes=scores.shape[1])
    strict = np.argsort(np.argsort(-scores, axis=1, kind="stable"), axis=1)  # rank position of each class
    assert ranking.label_ranking_loss(order_only, labels)[0].mean() == pytest.approx(
        sklearn_metrics.label_ranking_loss(y, -strict.astype(float)), abs=1e-12)


def test_label_ranking_loss_by_hand_and_edge_cases():
    # scores [.4, .3, .3, 0, 0] (classes 0..4), labels {1, 3}: pairs (true, other) = 2 x 3 = 6
    #   class 1 (.3): others >= .3: 0 and 2 (the tie counts) -> 2; class 3 (0): others >= 0: 0, 2, 4 -> 3
    #   loss 5/6. Every class true: no pair, 0 (scikit-learn's convention); empty label set: NaN.
    r = ranked_from_scores(np.array([[0.4, 0.3, 0.3, 0.0, 0.0]] * 3))
    loss, beyond = ranking.label_ranking_loss(r, core.label_sets([[1, 3], [0, 1, 2, 3, 4], []]))
    assert loss[0] == pytest.approx(5 / 6) and loss[1] == 0.0 and np.isnan(loss[2]) and not beyond.any()
    y = np.array([[0, 1, 0, 1, 0], [1, 1, 1, 1, 1]], dtype=bool)
    assert np.nanmean(loss[:2]) == pytest.approx(sklearn_metrics.label_ranking_loss(y, r.prob[:2][:, np.argsort(r.idx[0])]))
    # a perfect ranking: 0; the worst (true labels last): 1
    best = ranked_from_scores(np.array([[0.5, 0.3, 0.1, 0.1]]))
    assert ranking.label_ranking_loss(best, core.label_sets([[0, 1]]))[0][0] == 0.0
    worst = ranked_from_scores(np.array([[0.5, 0.3, 0.15, 0.05]]))
    assert ranking.label_ranking_loss(worst, core.label_sets([[2, 3]]))[0][0] == 1.0


@pytest.mark.parametrize("seed", [3, 4, 8])
def test_label_ranking_loss_from_the_top_k_is_a_lower_bound(seed: int):
    # with ties on a coarse grid too (seed 8): missing labels ranked right after the K is the best case
    rng = np.random.default_rng(seed)
    n, c, k = 400, 30, 5
    scores = rng.dirichlet(np.full(c, 0.3), size=n) + 1e-3
    if seed == 8:
        scores = np.round(scores * 20) / 20 + 1e-3
    scores /= scores.sum(axis=1, keepdims=True)
    y = rng.random((n, c)) < 0.1
    y[np.arange(n), rng.integers(0, c, n)] = True
    labels = core.label_sets([np.flatnonzero(row).tolist() for row in y])
    exact, _ = ranking.label_ranking_loss(ranked_from_scores(scores), labels)
    bound, beyond = ranking.label_ranking_loss(ranked_from_scores(scores, k), labels)
    assert 0 < beyond.sum() < n and np.all(bound <= exact + 1e-12)
    if seed != 8:  # distinct scores: exact wherever every label is stored
        np.testing.assert_allclose(bound[~beyond], exact[~beyond], atol=1e-12)
    # the bound is reached: the missing labels just after the K, above every other unstored class
    i = int(np.flatnonzero(beyond)[0])
    missing = [x for x in labels.pad[i][: labels.count[i]] if x not in ranked_from_scores(scores, k).idx[i]]
    rest = [x for x in np.argsort(-scores[i], kind="stable") if x not in ranked_from_scores(scores, k).idx[i] and x not in missing]
    order = np.r_[ranked_from_scores(scores, k).idx[i], missing, rest]
    best = ranking.Ranked(order[None, :], None, c, n_classes=c)
    assert ranking.label_ranking_loss(best, core.LabelSets(labels.pad[i: i + 1], labels.count[i: i + 1]))[0][0] == pytest.approx(bound[i])
