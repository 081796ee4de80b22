"""Label candidates from consensus (metrics.consensus): hand-computed cases."""

from __future__ import annotations

import numpy as np

from mlreassess.metrics.consensus import against_reference, candidates, votes
from mlreassess.metrics.core import label_sets

# 3 models, 3 images, top-3 each (k=3 below).
TOPK = np.array([
    [[1, 2, 3], [5, 6, 7], [9, 8, 7]],   # model 0
    [[2, 1, 4], [5, 7, 6], [9, 9, 8]],   # model 1 (class 9 listed twice on image 2: one vote)
    [[2, 3, 1], [6, 5, 4], [0, 1, -1]],  # model 2 (-1: no class)
])


def test_votes_count_models_once_per_class():
    v = votes(TOPK, k=3)
    table = {(i, c): n for i, c, n in zip(v.image.tolist(), v.cls.tolist(), v.count.tolist())}
    assert table[(0, 1)] == 3 and table[(0, 2)] == 3 and table[(0, 3)] == 2 and table[(0, 4)] == 1
    assert table[(1, 5)] == 3 and table[(1, 7)] == 2 and table[(1, 4)] == 1
    assert table[(2, 9)] == 2 and table[(2, 8)] == 2 and table[(2, 0)] == 1 and (2, -1) not in table
    assert v.n_models == 3 and v.n_images == 3
    assert votes(TOPK, k=1).count.max() == 2  # top-1 only: image 0 class 2 from models 1 and 2


def test_candidates_are_voted_classes_the_label_set_lacks():
    v = votes(TOPK, k=3)
    known = label_sets([[1], [5, 6], []])
    assert candidates(v, known, 2) == [[2, 3], [7], [8, 9]]  # most votes first, then class
    assert candidates(v, known, 3) == [[2], [], []]


def test_against_reference_counts_by_hand():
    v = votes(TOPK, k=3)
    label = np.array([1, 5, -1])  # image 2 has no original label: left out
    real = label_sets([[1, 2], [5], [8]])
    rows = {a.at_least: a for a in against_reference(v, label, real)}
    # >=2 votes: image 0 -> {2, 3} (2 in ReaL), image 1 -> {6, 7} (neither): 4 candidates, 1 correct;
    # ReaL beyond the original: image 0 has {2}, image 1 nothing: 1 missing, found.
    a = rows[2]
    assert (a.images, a.with_candidate, a.candidates, a.correct, a.missing) == (2, 2, 4, 1, 1)
    assert a.precision_pct == 25.0 and a.recall_pct == 100.0
    a = rows[3]  # 3 votes: class 2 on image 0 (in ReaL), class 6 on image 1 (not)
    assert (a.candidates, a.correct, a.with_candidate) == (2, 1, 2) and a.precision_pct == 50.0
    a = rows[1]  # any vote: image 0 -> {2, 3, 4}, image 1 -> {4, 6, 7} (5 is its label)
    assert (a.candidates, a.correct) == (6, 1) and abs(a.precision_pct - 100 / 6) < 1e-12


def test_nothing_to_measure_gives_nan_not_an_error():
    v = votes(np.zeros((2, 0, 5), dtype=np.int64))
    (a, b) = against_reference(v, np.zeros(0, dtype=np.int64), label_sets([]))
    assert a.images == 0 and np.isnan(a.precision_pct) and np.isnan(a.recall_pct)
