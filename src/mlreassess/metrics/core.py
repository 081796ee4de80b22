"""Pure per-sample metric functions over arrays (SPEC 4, paper Sec. 3.3). No file I/O here.

Conventions (see docs/metrics.md):
- `topk` is an (n, K) integer array of class indices, best first. A negative entry never matches.
- Single labels are an (n,) integer array with -1 for "no label".
- Multi-label sets are a `LabelSets` (padded (n, L) array, -1 padding, duplicates removed).
- Per-sample scores are float arrays with NaN where the metric does not apply to the sample
  (no label for top-1, empty label set for ReaL / sample accuracy); `aggregate` turns them into
  percentages (mean, subgroup accuracy, ASMA).
- Duplicate class indices inside one prediction row count once (a set of predictions).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from mlreassess.errors import InputError


class TopKTooShort(InputError):
    """The stored top-K predictions are shorter than a metric needs (g > K)."""


@dataclass(frozen=True)
class LabelSets:
    """Multi-label ground truth: `pad[i, :count[i]]` are sample i's distinct labels, the rest -1."""

    pad: np.ndarray  # (n, L) int64
    count: np.ndarray  # (n,) int64

    def __len__(self) -> int:
        return len(self.count)


def label_sets(labels: Iterable[Iterable[int]]) -> LabelSets:
    """Build `LabelSets` from a sequence of label lists; duplicates inside a list count once."""
    rows = [sorted({int(x) for x in ls}) for ls in labels]
    width = max((len(r) for r in rows), default=0)
    pad = np.full((len(rows), max(width, 1)), -1, dtype=np.int64)
    for i, r in enumerate(rows):
        pad[i, : len(r)] = r
    return LabelSets(pad=pad, count=np.array([len(r) for r in rows], dtype=np.int64))


def label_sets_from_flat(offsets: np.ndarray, values: np.ndarray) -> LabelSets:
    """Vectorised `label_sets` from Arrow-style list offsets (n+1,) and flat values."""
    offsets = np.asarray(offsets, dtype=np.int64)
    values = np.asarray(values, dtype=np.int64)
    n = len(offsets) - 1
    lengths = np.diff(offsets)
    width = int(lengths.max()) if n and lengths.size else 0
    pad = np.full((n, max(width, 1)), -1, dtype=np.int64)
    if width:
        row = np.repeat(np.arange(n), lengths)
        col = np.arange(len(values)) - np.repeat(offsets[:-1], lengths)
        pad[row, col] = values[offsets[0] : offsets[-1]]
        # Sort each row with padding last, blank repeated labels, sort again to close the gaps.
        big = np.iinfo(np.int64).max
        pad[pad < 0] = big
        pad.sort(axis=1)
        repeat = np.zeros_like(pad, dtype=bool)
        repeat[:, 1:] = pad[:, 1:] == pad[:, :-1]
        pad[repeat] = big
        pad.sort(axis=1)
        pad[pad == big] = -1
    count = (pad >= 0).sum(axis=1).astype(np.int64)
    return LabelSets(pad=pad, count=count)


def canonical_topk(topk: np.ndarray, prob: np.ndarray | None) -> np.ndarray:
    """Order each row by probability (descending), breaking exact ties by class index (ascending).

    Makes top-g sets independent of how the inference engine ordered tied classes. Only rows
    that contain a tie are re-sorted, so the common case costs one comparison pass.
    """
    topk = np.asarray(topk)
    if prob is None or topk.shape[1] < 2:
        return topk
    prob = np.asarray(prob)
    tied = (prob[:, 1:] == prob[:, :-1]).any(axis=1)
    if not tied.any():
        return topk
    out = topk.copy()
    rows = np.flatnonzero(tied)
    for i in rows:  # ties are rare: a per-row lexsort is fine
        order = np.lexsort((topk[i], -prob[i].astype(np.float64)))
        out[i] = topk[i, order]
    return out


def _check_depth(topk: np.ndarray, depth: int) -> None:
    if depth > topk.shape[1]:
        raise TopKTooShort(
            f"needs the top-{depth} predictions of each sample but only top-{topk.shape[1]} are stored "
            f"(re-run inference with --topk {depth} or more)"
        )


def _first_occurrence(topk: np.ndarray) -> np.ndarray:
    """(n, K) bool: True where the class at position j does not already appear at positions < j."""
    k = topk.shape[1]
    same = topk[:, :, None] == topk[:, None, :]  # (n, K, K): [i, j, j'] = topk[i,j] == topk[i,j']
    earlier = np.tril(np.ones((k, k), dtype=bool), -1)  # j' < j
    return ~(same & earlier).any(axis=2)


def top1_correct(topk: np.ndarray, label: np.ndarray) -> np.ndarray:
    """Per-sample top-1 correctness (1/0), NaN where the sample has no single label (-1)."""
    return topk_correct(topk, label, 1)


def topk_correct(topk: np.ndarray, label: np.ndarray, k: int) -> np.ndarray:
    """1 if the single label is among the first k predictions, else 0; NaN for no label."""
    topk = np.asarray(topk)
    label = np.asarray(label)
    _check_depth(topk, k)
    hit = (topk[:, :k] == label[:, None]).any(axis=1) & (label >= 0)
    return np.where(label >= 0, hit.astype(np.float64), np.nan)


def real_correct(topk: np.ndarray, labels: LabelSets) -> np.ndarray:
    """ReaL: 1 if the top-1 prediction is in the label set; NaN for empty label sets (skipped)."""
    topk = np.asarray(topk)
    _check_depth(topk, 1)
    hit = (topk[:, :1] == labels.pad).any(axis=1) & (topk[:, 0] >= 0)
    return np.where(labels.count > 0, hit.astype(np.float64), np.nan)


def variable_topk_hits(topk: np.ndarray, labels: LabelSets, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """For g = |labels|: (m, p) = (# distinct top-g predictions in the labels, # distinct top-g predictions).

    Samples outside `mask` (default: all) are ignored and may have g > K; any selected sample
    with g > K raises `TopKTooShort`.
    """
    topk = np.asarray(topk)
    g = labels.count
    sel = np.ones(len(g), dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    sel = sel & (g > 0)
    depth = int(g[sel].max()) if sel.any() else 0
    _check_depth(topk, depth)
    m = np.zeros(len(g), dtype=np.int64)
    p = np.zeros(len(g), dtype=np.int64)
    # One label count at a time: only g x g comparisons per sample instead of depth x depth.
    for gv in np.unique(g[sel]):
        rows = np.flatnonzero(sel & (g == gv))
        top = topk[rows, :gv]
        distinct = _first_occurrence(top) & (top >= 0)
        m[rows] = (distinct & (top[:, :, None] == labels.pad[rows, None, :gv]).any(axis=2)).sum(axis=1)
        p[rows] = distinct.sum(axis=1)
    return m, p


def variable_topk_scores(
    topk: np.ndarray, labels: LabelSets, mask: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(sample accuracy, recall@g) per sample from one pass over the top-g predictions.

    Sample accuracy = |L ∩ P| / |L ∪ P| with P = top-g, g = |L| (= m / (2g - m) when the top-g
    are distinct); recall@g = |L ∩ P| / g. NaN for empty label sets (excluded from ASMA) and for
    samples outside `mask`.
    """
    m, p = variable_topk_hits(topk, labels, mask)
    g = labels.count
    ok = g > 0 if mask is None else (g > 0) & np.asarray(mask, dtype=bool)
    union = g + p - m
    acc = np.where(ok, m / np.where(union > 0, union, 1), np.nan)
    recall = np.where(ok, m / np.where(g > 0, g, 1), np.nan)
    return acc, recall


def sample_accuracy(topk: np.ndarray, labels: LabelSets, mask: np.ndarray | None = None) -> np.ndarray:
    """|labels ∩ top-g| / |labels ∪ top-g| per sample (see `variable_topk_scores`)."""
    return variable_topk_scores(topk, labels, mask)[0]


def recall_at_g(topk: np.ndarray, labels: LabelSets, mask: np.ndarray | None = None) -> np.ndarray:
    """|labels ∩ top-g| / g per sample (see `variable_topk_scores`)."""
    return variable_topk_scores(topk, labels, mask)[1]


def rank(values: Sequence[float]) -> np.ndarray:
    """Rank 1 = highest value; exact ties share the best rank ("competition" ranking: 1, 2, 2, 4).

    NaN values rank last (after every number), sharing one rank.
    """
    v = np.asarray(values, dtype=np.float64)
    key = np.where(np.isnan(v), -np.inf, v)
    # rank = 1 + number of values strictly better
    return 1 + (key[None, :] > key[:, None]).sum(axis=1)


def rank_shift(top1_v1: Sequence[float], asma_patchml: Sequence[float]) -> np.ndarray:
    """Rank by V1 top-1 minus rank by PatchML ASMA over the same models (positive = climbs)."""
    return rank(top1_v1) - rank(asma_patchml)
