"""The per-class mean accuracy Shankar et al. recommend (`real_per_class`): scikit-learn as the
reference, a hand-computed case, its bootstrap, and evaluate writing it for a Shankar manifest only."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import balanced_accuracy_score

from mlreassess.metrics.bootstrap import resample_counts
from mlreassess.metrics.evaluate import evaluate_results
from mlreassess.metrics.perclass import per_class_accuracy, per_class_estimate


def test_hand_computed():
    # class 3: 2 of 2 right; class 5: 1 of 4 right; class 9: 0 of 1 -> (100 + 25 + 0) / 3
    classes = np.array([3, 5, 5, 3, 5, 9, 5, -1])
    correct = np.array([1, 0, 1, 1, 0, 0, 0, 1])  # the last has no class: left out
    value, n_classes = per_class_accuracy(correct, classes)
    assert value == pytest.approx(125 / 3) and n_classes == 3
    assert per_class_accuracy(np.array([1.0]), np.array([-1])) == (pytest.approx(float("nan"), nan_ok=True), 0)


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_matches_sklearn_balanced_accuracy():
    # With a miss written as a class no sample has, balanced accuracy is exactly this mean of per-class recalls.
    rng = np.random.default_rng(0)
    classes = rng.integers(0, 40, 2000)
    correct = rng.random(2000) < rng.random(40)[classes]
    y_pred = np.where(correct, classes, -1)
    value, n_classes = per_class_accuracy(correct.astype(float), classes)
    assert value == pytest.approx(100 * balanced_accuracy_score(classes, y_pred))
    assert n_classes == len(np.unique(classes))


def test_bootstrap_replicates():
    rng = np.random.default_rng(1)
    classes = rng.integers(0, 5, 300)
    correct = (rng.random(300) < 0.7).astype(float)
    ones = per_class_estimate(correct, classes, np.ones((4, 300), dtype=np.uint8))
    assert np.allclose(ones.reps, ones.value_pct) and ones.n == 300  # every sample once: the point value
    est = per_class_estimate(correct, classes, resample_counts([300], 200, seed=0))
    assert est.reps.shape == (200,) and np.isfinite(est.reps).all()
    assert np.percentile(est.reps, 2.5) < est.value_pct < np.percentile(est.reps, 97.5)
    # resample b by hand: the weighted per-class means
    counts = resample_counts([300], 3, seed=4)
    by_hand = [np.mean([np.sum(w[classes == c] * correct[classes == c]) / np.sum(w[classes == c])
                        for c in range(5)]) * 100 for w in counts.astype(float)]
    assert per_class_estimate(correct, classes, counts).reps == pytest.approx(by_hand)
    assert per_class_estimate(correct, np.full(300, -1)) is None


def test_evaluate_writes_it_for_shankar_manifests_only(tmp_path, write_dataset, write_predictions):
    samples = {"a": (1, [1]), "b": (1, [1, 2]), "c": (2, [2]), "d": (2, []), "e": (3, [3])}
    preds = {"a": [1, 0], "b": [2, 0], "c": [0, 1], "d": [2, 0], "e": [3, 0]}
    write_dataset(tmp_path, "shankar", "imagenet_v1", samples, per_class_metric=True)
    write_dataset(tmp_path, "plain", "imagenet_v1", samples)
    for name in ("shankar", "plain"):
        write_predictions(tmp_path, name, "imagenet_v1", "m", preds)
    evaluate_results(tmp_path, n_boot=50)
    m = pd.read_parquet(tmp_path / "metrics.parquet")
    rows = m[m.metric == "real_per_class"]
    assert rows["dataset"].tolist() == ["shankar"]
    # class 1: a, b right (2/2); class 2: c wrong, d (no label) wrong (0/2); class 3: e right -> (100 + 0 + 100) / 3
    assert rows["value_pct"].iloc[0] == pytest.approx(200 / 3) and rows["n"].iloc[0] == 5
    assert rows["ci_low_pct"].iloc[0] <= rows["value_pct"].iloc[0] <= rows["ci_high_pct"].iloc[0]
