"""Ranking metrics over multi-label sets (SPEC 8): LRAP (= per-sample AP), coverage error, mAP over classes.

Pure functions on a `Ranked`: per sample, classes best first with their probabilities, D of them.
With the full softmax (D = 1000) every value is exact. With only the stored top-K (D = K), a true
label outside the K cannot be placed; each function then returns the bound the top-K implies, the
optimistic one (the missing labels right after the K stored classes), and flags the sample.
Proofs and conventions: docs/metrics.md, "Beyond the oracle".

Ties follow scikit-learn: a class's rank is the number of classes scoring at least as high (every
tied class counts), so LRAP, coverage error and AP here equal `label_ranking_average_precision_score`,
`coverage_error` and `average_precision_score` (tests/test_metrics_ranking.py). Unstored classes are
taken to score strictly below the K-th stored one (a tie across the boundary cannot be seen).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mlreassess.constants import NUM_CLASSES
from mlreassess.metrics.core import LabelSets

_CHUNK = 1 << 22  # elements per temporary (n x L x D) comparison block


@dataclass(frozen=True)
class Ranked:
    """Per sample, the first D classes by probability (best first; exact ties by class index).

    `idx` (n, D) class indices, negative where a sample has no prediction; `prob` (n, D)
    non-increasing probabilities, or None when the file stored none (order only, no ties known);
    `stored`: how many leading columns the predictions file stored as its top-K (a softmax may
    add the rest: `beyond_k` counts stay relative to K).
    """

    idx: np.ndarray
    prob: np.ndarray | None
    stored: int
    n_classes: int = NUM_CLASSES

    @property
    def depth(self) -> int:
        return int(self.idx.shape[1])

    @property
    def complete(self) -> bool:
        """Every class is ranked (the full softmax): nothing lies beyond the D columns."""
        return self.depth >= self.n_classes

    def rows(self, sel: slice | np.ndarray) -> "Ranked":
        return Ranked(self.idx[sel], None if self.prob is None else self.prob[sel], self.stored, self.n_classes)


def label_positions(ranked: Ranked, labels: LabelSets) -> np.ndarray:
    """(n, L) 0-based position of each true label in `ranked.idx`; -1 where absent (or padding)."""
    idx, pad = ranked.idx, labels.pad
    n, width = pad.shape
    out = np.full((n, width), -1, dtype=np.int64)
    if ranked.complete:  # inverse permutation: O(n x D) instead of O(n x L x D)
        inv = np.full((n, ranked.n_classes), -1, dtype=np.int64)
        ok = idx >= 0
        rows = np.broadcast_to(np.arange(n)[:, None], idx.shape)
        inv[rows[ok], idx[ok]] = np.broadcast_to(np.arange(idx.shape[1]), idx.shape)[ok]
        real = pad >= 0
        out[real] = inv[np.broadcast_to(np.arange(n)[:, None], pad.shape)[real], pad[real]]
        return out
    step = max(1, _CHUNK // max(1, width * idx.shape[1]))
    for a in range(0, n, step):
        eq = (pad[a : a + step, :, None] == idx[a : a + step, None, :]) & (pad[a : a + step, :, None] >= 0)
        out[a : a + step] = np.where(eq.any(axis=2), eq.argmax(axis=2), -1)
    return out


def tie_ends(ranked: Ranked) -> np.ndarray:
    """(n, D): for each position, the last position holding the same probability (its tie group's end)."""
    n, d = ranked.idx.shape
    if ranked.prob is None or d == 0:
        return np.broadcast_to(np.arange(d), (n, d)).copy()
    prob = ranked.prob
    last = np.ones((n, d), dtype=bool)
    last[:, :-1] = prob[:, 1:] != prob[:, :-1]
    ends = np.where(last, np.arange(d), d)
    return np.minimum.accumulate(ends[:, ::-1], axis=1)[:, ::-1]


def label_ranks(ranked: Ranked, pos: np.ndarray) -> np.ndarray:
    """(n, L) pessimistic 1-based rank of each found label (classes scoring >= it); 0 where not found."""
    ends = tie_ends(ranked)
    found = pos >= 0
    rows = np.broadcast_to(np.arange(len(pos))[:, None], pos.shape)
    return np.where(found, ends[rows, np.where(found, pos, 0)] + 1, 0)


def _missed_terms(h: np.ndarray, m: np.ndarray, depth: int) -> np.ndarray:
    """The most the m missing labels' LRAP terms can add up to: m (h + m) / (D + m).

    A missing label with c true labels at or above it (itself included, c <= m) ranks at least
    D + c, so its term is at most (h + c) / (D + c) <= (h + m) / (D + m); all m tied right after the
    D ranked classes reach that (scikit-learn counts a tie group's labels for each of them, so ties
    can beat any strict order, e.g. with bf16 logits: the bound allows for them)."""
    return m * (h + m) / (depth + np.maximum(m, 1))


def _boundary_ties(ranked: Ranked, m: np.ndarray) -> np.ndarray:
    """(n,) how many of the m missing labels can tie with the D-th ranked class: floor(mass left / p_D)."""
    if ranked.prob is None or not ranked.depth:
        return np.zeros(len(m), dtype=np.int64)
    last = ranked.prob[:, -1].astype(np.float64)
    left = np.maximum(0.0, 1.0 - ranked.prob.sum(axis=1, dtype=np.float64)) + _MASS_SLACK
    fits = np.floor(left / np.maximum(last, np.finfo(np.float64).tiny))
    return np.minimum(m, np.where(last > 0, fits, m)).astype(np.int64)


def _label_standing(ranked: Ranked, labels: LabelSets, pos: np.ndarray | None):
    """Where each true label stands in the ranking: (g, found, rank, at_or_above, h, m) with g labels,
    found (stored in the top-D), rank (its tie-group end), at_or_above (true labels at or above that
    end: pessimistic, like scikit-learn), h found and m missing per sample."""
    pos = label_positions(ranked, labels) if pos is None else pos
    g = labels.count
    found = pos >= 0
    rank = label_ranks(ranked, pos)
    at_or_above = ((pos[:, None, :] <= rank[:, :, None] - 1) & found[:, None, :]).sum(axis=2)
    h = found.sum(axis=1)
    return g, found, rank, at_or_above, h, g - h


def lrap_and_coverage(ranked: Ranked, labels: LabelSets, pos: np.ndarray | None = None):
    """Per sample (LRAP, coverage error, beyond): NaN where the label set is empty.

    LRAP = mean over true labels j of |{true k: s_k >= s_j}| / |{k: s_k >= s_j}| (= per-sample AP).
    Coverage error = the largest rank of a true label. `beyond`: some true label lies past the D
    ranked classes; its LRAP is then an upper bound (`_missed_terms`) and its coverage error a
    lower bound (D + the number missing), see docs/metrics.md.
    """
    g, found, rank, at_or_above, h, m = _label_standing(ranked, labels, pos)
    beyond = m > 0
    # a stored label tied with the last ranked class may tie with unranked ones too: at most the m
    # missing labels join its group (non-labels would only lower its term), and no more than the
    # mass left holds at that probability. Without probabilities the order is taken as strict.
    edge = (found & (rank == ranked.depth) & beyond[:, None]) * _boundary_ties(ranked, m)[:, None]
    terms = np.where(found, (at_or_above + edge) / np.where(found, rank + edge, 1), 0.0).sum(axis=1)
    terms = terms + _missed_terms(h, m, ranked.depth)
    ok = g > 0
    lrap = np.where(ok, terms / np.where(ok, g, 1), np.nan)
    cover = np.where(beyond, ranked.depth + m, rank.max(axis=1, initial=0)).astype(np.float64)
    return lrap, np.where(ok, cover, np.nan), beyond & ok


def label_ranking_loss(ranked: Ranked, labels: LabelSets, pos: np.ndarray | None = None):
    """Per sample (ranking loss, beyond): NaN where the label set is empty.

    scikit-learn's `label_ranking_loss` per sample: the share of (true k, other l) pairs with
    s_l >= s_k (a tie counts as wrongly ordered), over g (C - g) pairs; 0 when every class is
    true. `beyond`: some true label lies past the D ranked classes; the value is then a lower
    bound: every ranked non-label scores at least as high as a missing label (D - h of them for
    each of the m missing) and the unranked classes can only add wrongly ordered pairs."""
    g, found, rank, at_or_above, h, m = _label_standing(ranked, labels, pos)
    wrong = np.where(found, rank - at_or_above, 0).sum(axis=1) + m * (ranked.depth - h)
    pairs = g * (ranked.n_classes - g)
    ok = g > 0
    loss = np.where(pairs > 0, wrong / np.maximum(pairs, 1), 0.0)
    return np.where(ok, loss, np.nan), (m > 0) & ok


# --- mAP over classes --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClassEntries:
    """The (sample, class, score, positive) pairs a per-class AP needs, sorted by class then score
    (descending); pairs scoring below every positive of their class are left out (they cannot move
    an AP). `n_classes` classes; `beyond`: per sample, a true label was placed past the D ranked."""

    sample: np.ndarray  # (T,) int64: row of the sample (the bootstrap weights' column)
    cls: np.ndarray  # (T,) int64
    score: np.ndarray  # (T,) float64
    positive: np.ndarray  # (T,) bool
    n_classes: int
    bounded: np.ndarray  # (n_classes,) bool: the class's AP is an upper bound, not exact


def class_entries(ranked: Ranked, labels: LabelSets, pos: np.ndarray, keep: np.ndarray,
                  floor: np.ndarray | None = None) -> ClassEntries:
    """The entries of the samples in `keep` (available, non-empty label set).

    Past the D ranked classes nothing is known but that a score lies below the sample's D-th
    probability and within the mass the D leave (`unranked_ceiling`). So a true label there is
    placed at that ceiling (the highest it can score), and an unranked non-label at the very bottom:
    AP never falls when a positive rises or a negative sinks, so each class's AP is an upper bound.
    It is exact when no positive of the class is missing and its lowest positive scores at least
    the ceiling of every sample that did not rank the class (no unranked negative can pass it).

    `floor` (C,): each class's lowest positive score over the whole dataset, when these rows are
    one chunk of it (entries below it are dropped); default: computed from these rows."""
    prob = ranked.prob
    rows = np.flatnonzero(keep)
    idx, p, lab, lpos = ranked.idx[rows], prob[rows].astype(np.float64), labels.pad[rows], pos[rows]
    missed = (lab >= 0) & (lpos < 0)
    ceiling = unranked_ceiling(p)
    below = np.minimum(np.nextafter(p[:, -1], -np.inf), ceiling) if p.shape[1] else np.zeros(len(rows))
    in_labels = label_member(idx, lab)
    sample = np.concatenate([np.repeat(rows, idx.shape[1]), np.broadcast_to(rows[:, None], lab.shape)[missed]])
    cls = np.concatenate([idx.ravel(), lab[missed]])
    score = np.concatenate([p.ravel(), np.broadcast_to(below[:, None], lab.shape)[missed]])
    positive = np.concatenate([in_labels.ravel(), np.ones(int(missed.sum()), dtype=bool)])
    entries = _prune_and_sort(sample, cls, score, positive, ranked.n_classes, floor)
    if ranked.complete:
        return entries
    bounded = np.zeros(ranked.n_classes, dtype=bool)
    bounded[lab[missed]] = True
    floor = np.full(ranked.n_classes, np.inf)
    np.minimum.at(floor, entries.cls[entries.positive], entries.score[entries.positive])
    bounded |= floor < _class_ceiling(idx, ceiling, ranked.n_classes)
    return ClassEntries(entries.sample, entries.cls, entries.score, entries.positive, entries.n_classes, bounded)


_MASS_SLACK = 1e-6  # float32 rounding of K probabilities can overstate their sum by about this


def unranked_ceiling(prob: np.ndarray) -> np.ndarray:
    """(n,) the most an unranked class can score: the D-th probability, and the mass left past the D."""
    if not prob.shape[1]:
        return np.ones(len(prob))
    left = np.maximum(0.0, 1.0 - prob.sum(axis=1, dtype=np.float64)) + _MASS_SLACK
    return np.minimum(prob[:, -1], left)


def _class_ceiling(idx: np.ndarray, last: np.ndarray, n_classes: int, top: int = 32) -> np.ndarray:
    """(C,) the largest ceiling (`unranked_ceiling`) among samples that did not rank class c: an
    upper bound on any unranked score of c. Only the `top` samples with the largest ceiling are
    looked at; a class ranked by all of them gets the top-th value, which is larger than the rest's."""
    order = np.argsort(-last, kind="stable")[:top]
    if not len(order):  # no sample (every label set empty): no unranked score to bound
        return np.full(n_classes, -np.inf)
    ceiling = np.full(n_classes, last[order[-1]])
    ranked_by = np.zeros((len(order), n_classes), dtype=bool)
    ranked_by[np.repeat(np.arange(len(order)), idx.shape[1]), np.clip(idx[order].ravel(), 0, None)] = True
    first = np.argmax(~ranked_by, axis=0)  # first (largest) sample not ranking the class
    free = (~ranked_by).any(axis=0)
    ceiling[free] = last[order[first[free]]]
    return ceiling


def label_member(idx: np.ndarray, pad: np.ndarray) -> np.ndarray:
    """(n, D) bool: idx[i, j] is one of sample i's labels (pad: (n, L), -1 padding)."""
    out = np.zeros(idx.shape, dtype=bool)
    step = max(1, _CHUNK // max(1, idx.shape[1] * pad.shape[1]))
    for a in range(0, len(idx), step):
        out[a : a + step] = ((idx[a : a + step, :, None] == pad[a : a + step, None, :]) & (pad[a : a + step, None, :] >= 0)).any(axis=2)
    return out


def merge_entries(parts: list[ClassEntries]) -> ClassEntries:
    """One ClassEntries from those of several chunks of samples (each already pruned)."""
    if len(parts) == 1:
        return parts[0]
    cat = [np.concatenate([getattr(p, f) for p in parts]) for f in ("sample", "cls", "score", "positive")]
    order = np.lexsort((-cat[2], cat[1]))
    bounded = np.logical_or.reduce([p.bounded for p in parts])
    return ClassEntries(*(c[order] for c in cat), parts[0].n_classes, bounded)


def _prune_and_sort(sample, cls, score, positive, n_classes: int, floor: np.ndarray | None = None) -> ClassEntries:
    ok = cls >= 0
    sample, cls, score, positive = sample[ok], cls[ok], score[ok], positive[ok]
    if floor is None:
        floor = np.full(n_classes, np.inf)
        np.minimum.at(floor, cls[positive], score[positive])
    keep = score >= floor[cls]  # classes without a positive keep nothing
    sample, cls, score, positive = sample[keep], cls[keep], score[keep], positive[keep]
    order = np.lexsort((-score, cls))
    return ClassEntries(sample[order], cls[order], score[order], positive[order], n_classes,
                        np.zeros(n_classes, dtype=bool))


def _ap_layout(e: ClassEntries):
    """Index arrays of the weighted AP: per positive, its tie group's end and its class's start
    (in entries and in positives), and the classes that have positives."""
    t = len(e.cls)
    new = np.ones(t, dtype=bool)
    new[1:] = (e.cls[1:] != e.cls[:-1]) | (e.score[1:] != e.score[:-1])
    group = np.cumsum(new) - 1
    group_end = np.append(np.flatnonzero(new)[1:] - 1, t - 1)[group]
    group_start = np.flatnonzero(new)[group]
    class_start = np.searchsorted(e.cls, e.cls, side="left")
    pos = np.flatnonzero(e.positive)
    end = group_end[pos]
    start = class_start[pos]
    pos_end = np.searchsorted(pos, end, side="right") - 1  # last positive at or before the group end
    pos_start = np.searchsorted(pos, start, side="left")
    pos_cls = e.cls[pos]
    first = np.flatnonzero(np.r_[True, pos_cls[1:] != pos_cls[:-1]]) if len(pos) else np.zeros(0, dtype=np.int64)
    lone = (end == pos) & (group_start[pos] == pos)  # the positive shares its score with no other entry
    return pos, end, start, pos_end, pos_start, first, pos_cls, lone


def class_ap(e: ClassEntries) -> tuple[np.ndarray, np.ndarray]:
    """(classes with a positive, their AP): AP = mean over positives of precision at their tie group's end."""
    pos, end, start, pos_end, pos_start, first, pos_cls, _ = _ap_layout(e)
    if not len(pos):
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    precision = (pos_end - pos_start + 1) / (end - start + 1)
    sums = np.add.reduceat(precision, first)
    counts = np.diff(np.append(first, len(pos)))
    return pos_cls[first], sums / counts


def class_ap_replicates(e: ClassEntries, counts: np.ndarray, chunk: int = 8) -> np.ndarray:
    """(B,) mAP (fraction) of each resample: `counts` (B, n) uint8 how often each sample is drawn.

    A resample is the data with sample i repeated counts[b, i] times. Copies of one sample are
    ranked next to each other, not tied: under scikit-learn's tie rule w copies of a positive would
    all get the precision of the last one, (A + w) / (N + w), which inflates every resample's AP
    (on the 1,300-image mini set it put the point estimate below its whole interval). Strictly
    ordered copies give sum_{t=1..w} (A + t) / (N + t) = w - (N - A)(H(N + w) - H(N)), with A, N the
    weighted positives and samples ranked above and H the harmonic numbers. Genuine score ties
    between different samples keep scikit-learn's rule, so all-ones weights give `class_ap`.
    Classes with no positive drawn are left out of that resample's mean."""
    pos, end, start, pos_end, pos_start, first, _, lone = _ap_layout(e)
    out = np.full(counts.shape[0], np.nan)
    if not len(pos):
        return out
    harmonic = np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, int(counts.sum(axis=1).max()) + 2))])
    tied = np.flatnonzero(~lone)
    # (resamples, entries) layout: prefix sums run along contiguous rows (10x faster than along axis 0).
    # Index 0 of each padded prefix array is "before everything" (reads 0).
    for b0 in range(0, counts.shape[0], chunk):
        w = counts[b0 : b0 + chunk][:, e.sample]  # (b, T)
        cw = np.zeros((w.shape[0], len(e.sample) + 1), dtype=np.int32)
        np.cumsum(w, axis=1, dtype=np.int32, out=cw[:, 1:])  # cw[:, j]: weighted entries before entry j
        wp = w[:, pos].astype(np.int32)  # (chunk: 8 resamples: the arrays stay in cache)
        cwp = np.zeros((w.shape[0], len(pos) + 1), dtype=np.int32)
        np.cumsum(wp, axis=1, dtype=np.int32, out=cwp[:, 1:])  # cwp[:, k]: weighted positives before positive k
        base_w, base_p = cw[:, start], cwp[:, pos_start]
        n_above = cw[:, pos] - base_w  # entries of the class ranked above the copies
        wrong = n_above - (cwp[:, :-1] - base_p)  # ... of which not positives
        term = wp - wrong * (harmonic[n_above + wp] - harmonic[n_above])  # copies ordered: sum (A+t)/(N+t)
        if len(tied):  # genuine score ties: scikit-learn's precision at the tie group's end
            through = cw[:, end[tied] + 1] - base_w[:, tied]
            term[:, tied] = wp[:, tied] * (cwp[:, pos_end[tied] + 1] - base_p[:, tied]) / np.maximum(through, 1)
        wsum = np.add.reduceat(wp, first, axis=1)
        drawn = wsum > 0
        ap = np.add.reduceat(term, first, axis=1) / np.maximum(wsum, 1)
        n_drawn = drawn.sum(axis=1)
        out[b0 : b0 + chunk] = np.where(n_drawn > 0, (ap * drawn).sum(axis=1) / np.maximum(n_drawn, 1), np.nan)
    return out
