"""Seeded, stratified bootstrap shared by every model of a dataset, as one matrix product.

One resample = for each stratum (samples with the same label count), draw its n_s samples with
replacement; the resample is stored as a count matrix W (B x n, uint8). Every model's per-sample
scores form the columns of X (n x c); W @ X gives all models' resampled sums at once (float32
BLAS). The same W is used for all models of a dataset, so their intervals are paired.
Percentile intervals (default 95%, 5,000 resamples). See docs/metrics.md.
"""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np

from mlreassess.constants import DEFAULT_BOOTSTRAP, DEFAULT_CI_LEVEL
from mlreassess.metrics.aggregate import ratio

_CHUNK = 128  # resamples generated / multiplied at a time (bounds the temporary memory)


def stratum_bounds(sizes: Sequence[int]) -> list[tuple[int, int]]:
    """[(start, end)] of each stratum when samples are ordered stratum by stratum."""
    ends = np.cumsum(np.asarray(sizes, dtype=np.int64))
    starts = ends - np.asarray(sizes, dtype=np.int64)
    return [(int(a), int(b)) for a, b in zip(starts, ends)]


def resample_counts(sizes: Sequence[int], n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0) -> np.ndarray:
    """(n_boot, sum(sizes)) uint8: how often each sample is drawn in each resample, per stratum.

    Samples must be ordered stratum by stratum. Same sizes, n_boot and seed -> same matrix.
    """
    sizes = [int(s) for s in sizes]
    n = sum(sizes)
    out = np.zeros((n_boot, n), dtype=np.uint8)
    rng = np.random.default_rng(seed)
    for (start, end) in stratum_bounds(sizes):
        size = end - start
        if size == 0:
            continue
        for b0 in range(0, n_boot, _CHUNK):
            b1 = min(b0 + _CHUNK, n_boot)
            draws = rng.integers(0, size, size=(b1 - b0, size))
            flat = (draws + (np.arange(b1 - b0) * size)[:, None]).ravel()
            counts = np.bincount(flat, minlength=(b1 - b0) * size).reshape(b1 - b0, size)
            if counts.max() > 255:  # practically impossible (Poisson(1) tails); refuse to wrap
                raise OverflowError("a bootstrap count exceeded 255")
            out[b0:b1, start:end] = counts
    return out


def stratum_sums(counts: np.ndarray, x: np.ndarray, bounds: Sequence[tuple[int, int]]) -> np.ndarray:
    """(S, B, c) float32: resampled column sums of `x` (n x c) within each stratum."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    n_boot = counts.shape[0]
    out = np.empty((len(bounds), n_boot, x.shape[1]), dtype=np.float32)
    for s, (start, end) in enumerate(bounds):
        xs = x[start:end]
        for b0 in range(0, n_boot, _CHUNK):
            b1 = min(b0 + _CHUNK, n_boot)
            out[s, b0:b1] = counts[b0:b1, start:end].astype(np.float32) @ xs
    return out


def percentile_interval(replicates: np.ndarray, level: float = DEFAULT_CI_LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval over axis 0 of the bootstrap replicates (NaN replicates ignored)."""
    tail = (100.0 - level) / 2.0
    replicates = np.asarray(replicates, dtype=np.float64)
    if replicates.ndim == 1:  # one statistic: the same, as scalars
        low, high = percentile_interval(replicates[:, None], level)
        return low[0], high[0]
    # np.percentile is vectorised; nanpercentile loops over columns in Python: use it only where needed
    low, high = np.percentile(replicates, [tail, 100.0 - tail], axis=0)
    gaps = np.isnan(replicates).any(axis=0)
    if np.any(gaps):
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN column stays NaN, as before
            low[..., gaps], high[..., gaps] = np.nanpercentile(replicates[:, gaps], [tail, 100.0 - tail], axis=0)
    return low, high


def bootstrap_ci(
    scores: np.ndarray,
    strata: np.ndarray | None = None,
    n_boot: int = DEFAULT_BOOTSTRAP,
    level: float = DEFAULT_CI_LEVEL,
    seed: int = 0,
) -> tuple[float, float]:
    """Percent CI of the mean of `scores` (NaN = not applicable), resampling within `strata`.

    The one-vector form of what `scoring` does for all models at once (same `aggregate.ratio`).
    """
    scores = np.asarray(scores, dtype=np.float64)
    strata = np.zeros(len(scores), dtype=np.int64) if strata is None else np.asarray(strata)
    order = np.argsort(strata, kind="stable")
    _, sizes = np.unique(strata[order], return_counts=True)
    s = scores[order]
    x = np.stack([np.nan_to_num(s, nan=0.0), (~np.isnan(s)).astype(np.float64)], axis=1)
    bounds = stratum_bounds(sizes)
    point = np.array([x[a:b].sum(axis=0) for a, b in bounds]).reshape(-1, 2)
    reps = stratum_sums(resample_counts(sizes, n_boot, seed), x, bounds)
    est = ratio(point[:, 0], point[:, 1], reps[:, :, 0], reps[:, :, 1])
    if est is None:
        return float("nan"), float("nan")
    low, high = percentile_interval(est.reps, level)
    return float(low), float(high)



def bias_shifted_interval(replicates: np.ndarray, estimate: float, level: float = DEFAULT_CI_LEVEL) -> tuple[float, float]:
    """The percentile interval moved by the bootstrap's estimate of the bias (mean replicate minus
    the estimate), for statistics whose resamples are biased. mAP needs it: a positive drawn twice
    raises its class's AP, so on a small set (few positives per class) the replicates can all lie
    above the estimate; Efron's BC correction breaks down there (z0 saturates). docs/metrics.md."""
    reps = np.asarray(replicates, dtype=np.float64)
    reps = reps[~np.isnan(reps)]
    if not len(reps) or not np.isfinite(estimate):
        return float("nan"), float("nan")
    tail = (100.0 - level) / 2.0
    low, high = np.percentile(reps, [tail, 100.0 - tail]) - (reps.mean() - estimate)
    return float(low), float(high)
