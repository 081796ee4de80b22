"""Prediction sets a model chooses itself (SPEC 8) and how they score against the label sets.

A set is the first `size` ranked classes (`ranking.Ranked`, best first), plus, where the ranked
depth D ran out before the set was complete (`extends`: only possible with the stored top-K, never
with the full softmax), between `extra_lo` and `extra_hi` further classes that cannot be seen.
Set builders here: classes with p >= tau (`threshold_sets`), the smallest set with cumulative mass
>= q (`mass_sets`), and the split-conformal APS / RAPS sets (`conformal_sets`; calibration in
`conformal`). `set_stats` scores any of them; for a set that extends it gives the optimistic
bound (the unseen classes being the missing true labels first), see docs/metrics.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mlreassess.metrics.ranking import Ranked

# Per-sample statistics of a set, in metrics.parquet's order (`<set>_<stat>` metric names).
STATS = ("precision", "recall", "f1", "exact", "coverage", "label_coverage", "size")


@dataclass(frozen=True)
class Sets:
    size: np.ndarray  # (n,) int64: leading ranked classes in the set (<= D)
    extends: np.ndarray  # (n,) bool: the set may hold classes past the D ranked ones
    extra_lo: np.ndarray  # (n,) int64: at least this many of them (0 where not extending)
    extra_hi: np.ndarray  # (n,) int64: at most this many


def _sets(size: np.ndarray, extends: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> Sets:
    extends = extends & (hi > 0)
    zero = np.zeros_like(size)
    return Sets(size.astype(np.int64), extends, np.where(extends, lo, zero).astype(np.int64),
                np.where(extends, hi, zero).astype(np.int64))


def cumulative(ranked: Ranked) -> np.ndarray:
    """(n, D) float64 cumulative probability along the ranking."""
    return np.cumsum(ranked.prob, axis=1, dtype=np.float64)


def _tail(cum: np.ndarray) -> np.ndarray:
    """Probability mass left past the D ranked classes, never understated (float32 probabilities)."""
    return np.maximum(0.0, 1.0 - cum[:, -1]) + 1e-6 if cum.shape[1] else np.ones(len(cum))


def threshold_sets(ranked: Ranked, tau: float, cum: np.ndarray | None = None) -> Sets:
    """{c : p_c >= tau}. Past D: when every ranked class passes, up to floor(tail / tau) unseen
    classes may too (none when tau > 1 / (D + 1): then the stored top-K is always enough)."""
    size = (ranked.prob >= tau).sum(axis=1)
    cum = cumulative(ranked) if cum is None else cum
    unseen = ranked.n_classes - ranked.depth
    hi = np.minimum(unseen, np.floor(_tail(cum) / tau)).astype(np.int64)
    return _sets(size, (not ranked.complete) & (size == ranked.depth), np.zeros_like(size), hi)


def mass_sets(ranked: Ranked, q: float, cum: np.ndarray | None = None) -> Sets:
    """The smallest leading set with cumulative probability >= q. Past D: when the D ranked classes
    hold less than q, at least ceil((q - mass) / p_D) more are needed (each holds <= p_D)."""
    cum = cumulative(ranked) if cum is None else cum
    short = (cum < q).sum(axis=1)
    size = np.minimum(short + 1, ranked.depth)
    unseen = ranked.n_classes - ranked.depth
    extends = (not ranked.complete) & (short == ranked.depth)
    last = ranked.prob[:, -1].astype(np.float64) if ranked.depth else np.zeros(len(cum))
    need = np.ceil((q - cum[:, -1]) / np.maximum(last, np.finfo(np.float64).tiny) - 1e-9) if ranked.depth else np.ones(len(cum))
    lo = np.clip(need, 1, unseen).astype(np.int64)
    return _sets(size, extends, lo, np.full(len(size), unseen))


def conformal_scores(ranked: Ranked, cum: np.ndarray, u: np.ndarray, kreg: int, lam: float) -> np.ndarray:
    """(n, D) the RAPS score of each ranked class: mass above it + u * its probability + lam * (rank - kreg)+.

    lam = 0 is APS. Non-decreasing along the ranking, so a conformal set is a leading run."""
    rank = np.arange(1, ranked.depth + 1)
    return cum - ranked.prob * (1.0 - u[:, None]) + lam * np.maximum(0, rank - kreg)


def conformal_sets(ranked: Ranked, cum: np.ndarray, u: np.ndarray, qhat: float, kreg: int, lam: float) -> Sets:
    """{y : score(y) <= qhat} with the sample's uniform u (Angelopoulos et al.'s randomised sets,
    empty sets allowed). Past D: a class at rank r > D scores >= mass(D) + lam * (r - kreg)+."""
    size = (conformal_scores(ranked, cum, u, kreg, lam) <= qhat).sum(axis=1)
    d, unseen = ranked.depth, ranked.n_classes - ranked.depth
    floor_next = cum[:, -1] + lam * max(0, d + 1 - kreg) if d else np.zeros(len(u))
    extends = (not ranked.complete) & (size == d) & (floor_next <= qhat)
    if lam > 0 and np.isfinite(qhat):
        hi = np.floor((qhat - cum[:, -1]) / lam + 1e-9) + kreg - d if d else np.full(len(u), unseen)
        hi = np.clip(np.where(extends, hi, 0), 0, unseen)
    else:
        hi = np.full(len(u), unseen)
    return _sets(size, extends, np.zeros_like(size), hi.astype(np.int64))


def set_stats(sets: Sets, pos: np.ndarray, g: np.ndarray, label_pos: np.ndarray, has_label: np.ndarray) -> dict:
    """Per-sample `STATS` of a set against the label set (NaN where it is empty: size too, so every
    statistic but label_coverage averages the same samples) and the single label (NaN where none).

    pos: (n, L) positions of the true labels in the ranking (-1: not ranked); label_pos: (n,)
    position of the single label (-1: not ranked or none). precision = |L∩S|/|S| (0 for an empty
    set), recall = |L∩S|/|L|, F1 = 2|L∩S|/(|L|+|S|), exact = S == L, coverage = L ⊆ S,
    label_coverage = label ∈ S, size = |S|. A set that extends: the unseen classes are taken to be
    the missing true labels first (as many as fit), which maximises every statistic but size; size
    is its smallest possible value. Both are bounds ('upper' / 'lower' in metrics.parquet).
    """
    h = ((pos >= 0) & (pos < sets.size[:, None])).sum(axis=1)
    j = np.where(sets.extends, np.minimum(g - h, sets.extra_hi), 0)
    inter = h + j
    size = sets.size + np.maximum(sets.extra_lo, j)
    ok = g > 0
    nan = np.full(len(g), np.nan)
    label_in = ((label_pos >= 0) & (label_pos < sets.size)) | (sets.extends & (label_pos < 0))
    return {
        "precision": np.where(ok, inter / np.maximum(size, 1), nan),
        "recall": np.where(ok, inter / np.maximum(g, 1), nan),
        "f1": np.where(ok, 2.0 * inter / np.maximum(g + size, 1), nan),
        "exact": np.where(ok, ((inter == g) & (size == g)).astype(np.float64), nan),
        "coverage": np.where(ok, (inter == g).astype(np.float64), nan),
        "label_coverage": np.where(has_label, label_in.astype(np.float64), nan),
        "size": np.where(ok, sets.size + sets.extra_lo, nan),  # over the same samples as the rest
    }
