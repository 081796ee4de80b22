"""Hand-computed cases for every metric in mlreassess.metrics.core and .aggregate (worked out in the comments)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mlreassess.metrics import aggregate, core

# Four samples, K = 3 (best first):
#   s0: top [1,2,3], label 1,    labels {1}      -> top1 1, ReaL 1, g=1: top-1 {1}, m=1 -> acc 1/(2-1)=1,   recall 1
#   s1: top [2,1,3], label 1,    labels {1,5}    -> top1 0, ReaL 0, g=2: top-2 {2,1}, m=1 -> acc 1/(4-1)=1/3, recall 1/2
#   s2: top [4,5,6], label 7,    labels {}       -> top1 0, ReaL skipped, acc skipped
#   s3: top [3,4,5], no label,   labels {3,5,9}  -> top1 skipped, ReaL 1, g=3: top-3 {3,4,5}, m=2 -> acc 2/(6-2)=1/2, recall 2/3
TOPK = np.array([[1, 2, 3], [2, 1, 3], [4, 5, 6], [3, 4, 5]])
LABEL = np.array([1, 1, 7, -1])
LABELS = core.label_sets([[1], [1, 5], [], [3, 5, 9]])
NAN = float("nan")


def assert_scores(got, expected):
    np.testing.assert_allclose(np.asarray(got, dtype=float), np.asarray(expected, dtype=float), rtol=0, atol=1e-12)


def test_top1_skips_samples_without_label():
    assert_scores(core.top1_correct(TOPK, LABEL), [1, 0, 0, NAN])
    value, n = aggregate.mean_pct(core.top1_correct(TOPK, LABEL))
    assert n == 3 and value == pytest.approx(100 / 3)


def test_topk_correct():
    # label within the first 2: s0 yes (pos 0), s1 yes (pos 1), s2 no
    assert_scores(core.topk_correct(TOPK, LABEL, 2), [1, 1, 0, NAN])


def test_real_skips_empty_label_sets():
    assert_scores(core.real_correct(TOPK, LABELS), [1, 0, NAN, 1])
    value, n = aggregate.mean_pct(core.real_correct(TOPK, LABELS))
    assert n == 3 and value == pytest.approx(200 / 3)


def test_variable_topk_sample_accuracy_and_recall():
    acc, recall = core.variable_topk_scores(TOPK, LABELS)
    assert_scores(acc, [1, 1 / 3, NAN, 1 / 2])
    assert_scores(recall, [1, 1 / 2, NAN, 2 / 3])
    assert_scores(core.sample_accuracy(TOPK, LABELS), acc)
    assert_scores(core.recall_at_g(TOPK, LABELS), recall)


def test_sample_accuracy_equals_m_over_2g_minus_m_and_set_formula():
    # random distinct predictions: |L∩P|/|L∪P| from Python sets must equal m/(2g-m)
    rng = np.random.default_rng(1)
    topk = np.stack([rng.choice(20, size=6, replace=False) for _ in range(200)])
    lists = [sorted(rng.choice(20, size=rng.integers(1, 7), replace=False).tolist()) for _ in range(200)]
    acc = core.sample_accuracy(topk, core.label_sets(lists))
    for i, ls in enumerate(lists):
        g = len(ls)
        inter = len(set(ls) & set(topk[i, :g].tolist()))
        assert acc[i] == pytest.approx(inter / len(set(ls) | set(topk[i, :g].tolist())))
        assert acc[i] == pytest.approx(inter / (2 * g - inter))


def test_subgroup_and_asma_with_missing_groups():
    acc = core.sample_accuracy(TOPK, LABELS)
    # g=1: s0 -> 100; g=2: s1 -> 33.33; g=3: s3 -> 50; g=4, g=5 absent
    assert aggregate.subgroup_accuracy(acc, LABELS.count, 2) == (pytest.approx(100 / 3), 1)
    assert aggregate.subgroup_accuracy(acc, LABELS.count, 4)[1] == 0
    assert math.isnan(aggregate.subgroup_accuracy(acc, LABELS.count, 4)[0])
    value, used = aggregate.asma(acc, LABELS.count, (1, 2, 3, 4, 5))
    # unweighted mean of the groups present: (100 + 33.33 + 50) / 3; groups 4 and 5 skipped
    assert value == pytest.approx((100 + 100 / 3 + 50) / 3)
    assert used == {1: 1, 2: 1, 3: 1}
    # default range: every g >= 1 present (PatchML) -> same groups; the empty set never counts
    assert aggregate.asma(acc, LABELS.count)[1] == {1: 1, 2: 1, 3: 1}


def test_asma_is_unweighted_over_groups():
    # g=1: two samples (acc 1, 0) -> 50; g=2: one sample (acc 1) -> 100. ASMA = 75 (sample mean would be 66.7)
    acc = np.array([1.0, 0.0, 1.0])
    count = np.array([1, 1, 2])
    assert aggregate.asma(acc, count, (1, 2))[0] == pytest.approx(75.0)


def test_duplicate_labels_count_once():
    ls = core.label_sets([[5, 1, 5, 1]])
    assert ls.count.tolist() == [2] and ls.pad[0].tolist() == [1, 5]
    flat = core.label_sets_from_flat(np.array([0, 4, 4, 6]), np.array([5, 1, 5, 1, 2, 0]))
    assert flat.count.tolist() == [2, 0, 2]
    assert flat.pad[0, :2].tolist() == [1, 5] and flat.pad[2, :2].tolist() == [0, 2]
    assert (flat.pad[1] == -1).all()
    # labels {1,5} (g=2); duplicated labels must not inflate g: top-2 [1,5] -> acc 1
    assert core.sample_accuracy(np.array([[1, 5, 7]]), ls)[0] == 1.0


def test_duplicate_predictions_count_once():
    # labels {1,5}, g=2, top-2 = [1,1]: P = {1}, |L∩P| = 1, |L∪P| = 2 -> acc 1/2, recall 1/2
    acc, recall = core.variable_topk_scores(np.array([[1, 1, 5]]), core.label_sets([[1, 5]]))
    assert acc[0] == pytest.approx(0.5) and recall[0] == pytest.approx(0.5)


def test_g_larger_than_stored_topk_is_a_clear_error():
    labels = core.label_sets([[1, 2, 3]])
    with pytest.raises(core.TopKTooShort, match="top-3 .* only top-2"):
        core.sample_accuracy(np.array([[1, 2]]), labels)
    with pytest.raises(core.TopKTooShort, match="top-5"):
        core.topk_correct(np.array([[1, 2]]), np.array([1]), 5)
    # a sample outside the mask may have g > K
    acc = core.sample_accuracy(np.array([[1, 2], [1, 2]]), core.label_sets([[1, 2, 3], [2]]), mask=np.array([False, True]))
    assert_scores(acc, [NAN, 0.0])  # g=1, top-1 {1} vs {2}: no hit


def test_ties_in_probabilities_are_broken_by_class_index():
    # classes 7 and 3 tie at 0.4: canonical order puts 3 first, whatever order they were stored in
    a = core.canonical_topk(np.array([[7, 3, 9]]), np.array([[0.4, 0.4, 0.2]], dtype=np.float32))
    b = core.canonical_topk(np.array([[3, 7, 9]]), np.array([[0.4, 0.4, 0.2]], dtype=np.float32))
    assert a.tolist() == b.tolist() == [[3, 7, 9]]
    # so the top-1 {3} is correct for labels {3} either way
    assert core.sample_accuracy(a, core.label_sets([[3]]))[0] == 1.0
    # rows without ties are untouched
    untied = np.array([[5, 2, 8]])
    assert core.canonical_topk(untied, np.array([[0.5, 0.3, 0.2]])).tolist() == [[5, 2, 8]]


def test_rank_competition_ties_and_nan_last():
    assert core.rank([90, 80, 90, 70]).tolist() == [1, 3, 1, 4]
    assert core.rank([50, float("nan"), 60]).tolist() == [2, 3, 1]


def test_rank_shift_positive_means_climbs():
    # top-1 ranks [1,2,3]; ASMA [10,30,20] -> ranks [3,1,2]; shift = [1-3, 2-1, 3-2]
    assert core.rank_shift([90, 80, 70], [10, 30, 20]).tolist() == [-2, 1, 1]


def test_mean_pct_empty():
    value, n = aggregate.mean_pct(np.array([NAN, NAN]))
    assert n == 0 and math.isnan(value)


def test_ratio_over_strata_with_replicates():
    # the form `evaluate` uses: per-stratum sums of the scores (num) and of the applicable samples (den)
    # strata g=1: 3 of 4 right, g=2: 1 of 2 right -> over both: 4/6 = 66.67 (n 6)
    # two resamples: (4 of 4, 0 of 2) -> 4/6; (2 of 4, 2 of 2) -> 4/6
    num, den = np.array([3.0, 1.0]), np.array([4.0, 2.0])
    num_reps = np.array([[4.0, 2.0], [0.0, 2.0]], dtype=np.float32)  # (S, B)
    den_reps = np.array([[4.0, 4.0], [2.0, 2.0]], dtype=np.float32)
    est = aggregate.ratio(num, den, num_reps, den_reps)
    assert est.value_pct == pytest.approx(200 / 3) and est.n == 6
    assert_scores(est.reps, [200 / 3, 200 / 3])
    assert aggregate.ratio(np.zeros(2), np.zeros(2)) is None  # nothing applies: no row
    assert aggregate.ratio(num, den).reps.shape == (0,)  # no bootstrap


def test_mean_of_groups_is_asma_of_subgroup_estimates():
    # subgroups 50% (n 2, reps [40, 60]) and 100% (n 1, reps [100, 80]) -> ASMA 75, n 3, reps [70, 70]
    groups = [aggregate.Estimate(50.0, 2, np.array([40.0, 60.0])), aggregate.Estimate(100.0, 1, np.array([100.0, 80.0]))]
    est = aggregate.mean_of_groups(groups)
    assert est.value_pct == 75.0 and est.n == 3
    assert_scores(est.reps, [70, 70])
    assert aggregate.mean_of_groups([]) is None


def test_asma_groups_by_dataset_kind():
    counts = np.array([0, 1, 2, 2, 6, 7])
    # subgroup rows: V1/V2 1..5 present (0, 6, 7 never); PatchML every g >= 1 present
    assert aggregate.subgroup_counts("imagenet_v1", counts) == (1, 2)
    assert aggregate.subgroup_counts("imagenet_v2", counts) == (1, 2)
    assert aggregate.subgroup_counts("patchml", counts) == (1, 2, 6, 7)
    # design label counts: V1/V2 1..5; PatchML its patch counts (default those of Table 2)
    assert aggregate.design_counts("imagenet_v1") == (1, 2, 3, 4, 5)
    assert aggregate.design_counts("patchml", [9, 2, 6]) == (2, 6, 9)
    assert aggregate.design_counts("patchml", None) == (2, 3, 4, 6, 9)
    # averaged: design counts present with at least min_n samples
    sizes = {1: 2, 2: 40, 3: 29, 4: 30, 6: 100, 9: 31}
    assert aggregate.asma_groups((2, 3, 4, 6, 9), sizes, 30) == (2, 4, 6, 9)  # 1 not a design count, 3 too small
    assert aggregate.asma_groups((1, 2, 3, 4, 5), sizes, 30) == (2, 4)  # 5 absent
    assert aggregate.asma_groups((1, 2, 3, 4, 5), sizes, 1) == (1, 2, 3, 4)


def test_asma_leaves_out_groups_below_min_n_and_names_the_groups():
    # g=1: acc 1, 0 (n 2) -> 50; g=2: acc 1 (n 1) -> 100; min_n 2 -> only g=1 -> 50
    acc, count = np.array([1.0, 0.0, 1.0]), np.array([1, 1, 2])
    assert aggregate.asma(acc, count, (1, 2), min_n=2) == (pytest.approx(50.0), {1: 2})
    subgroups = {1: aggregate.Estimate(50.0, 2), 2: aggregate.Estimate(100.0, 1)}
    assert aggregate.mean_of_groups(subgroups).groups == "1,2"
    assert aggregate.mean_of_groups(list(subgroups.values())).groups is None  # a plain list names none
