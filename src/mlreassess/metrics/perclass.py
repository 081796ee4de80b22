"""The mean over classes of the per-class accuracy: what Shankar et al. 2020 recommend for their
multi-labels (TFDS `imagenet2012_multilabel` README), as metrics.parquet `real_per_class`.

Their 20,000 images are class-balanced (20 per class) but the problematic images left out are
not, so they average per class: for each original class c, the share of its images whose top-1 is
among their labels (correct or unclear), then the unweighted mean over the classes present. An
image with an empty label set counts, as a miss. Pure functions on arrays, no file I/O.
"""

from __future__ import annotations

import numpy as np

from mlreassess.metrics.aggregate import Estimate

_CHUNK = 128  # resamples at a time (bounds the temporary memory: chunk x n floats)


def per_class_accuracy(correct: np.ndarray, classes: np.ndarray) -> tuple[float, int]:
    """(mean over classes of the per-class accuracy in percent, number of classes) over the samples
    with a class (>= 0); (nan, 0) when there is none. `correct`: 1/0 (or a fraction) per sample."""
    correct = np.asarray(correct, dtype=np.float64)
    classes = np.asarray(classes)
    keep = classes >= 0
    if not keep.any():
        return float("nan"), 0
    present, inverse = np.unique(classes[keep], return_inverse=True)
    hits = np.bincount(inverse, weights=correct[keep], minlength=len(present))
    sizes = np.bincount(inverse, minlength=len(present))
    return float(100.0 * np.mean(hits / sizes)), int(len(present))


def per_class_estimate(correct: np.ndarray, classes: np.ndarray, counts: np.ndarray | None = None) -> Estimate | None:
    """`per_class_accuracy` with its bootstrap replicates: resample b weighs sample i counts[b, i]
    times (the dataset's shared resample matrix, B x n); a class drawn 0 times in a resample is left
    out of that resample's mean. `n` = samples with a class. None when no sample has one."""
    value, n_classes = per_class_accuracy(correct, classes)
    classes = np.asarray(classes)
    keep = np.flatnonzero(classes >= 0)
    if not n_classes:
        return None
    reps = np.zeros(0)
    if counts is not None and counts.shape[0]:
        order = keep[np.argsort(classes[keep], kind="stable")]
        starts = np.flatnonzero(np.r_[True, np.diff(classes[order]) != 0])
        hit = np.asarray(correct, dtype=np.float64)[order]
        reps = np.empty(counts.shape[0])
        for b0 in range(0, counts.shape[0], _CHUNK):
            w = counts[b0:b0 + _CHUNK, order].astype(np.float64)
            num, den = np.add.reduceat(w * hit, starts, axis=1), np.add.reduceat(w, starts, axis=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                reps[b0:b0 + len(w)] = 100.0 * np.nanmean(np.where(den > 0, num / den, np.nan), axis=1)
    return Estimate(value, int(len(keep)), reps)
