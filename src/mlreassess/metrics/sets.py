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


# --- sets known only up to a range (conformal sets whose Q-hat the stored top-K brackets) ------------


@dataclass(frozen=True)
class SetFacts:
    """What scoring the first s ranked classes needs, for any s: per sample the positions of its true
    labels (`pos` (n, L), -1: not ranked) and of its single label (`label_pos`, -1: not ranked or none),
    and, for state s = D + 1 (the set runs past the D ranked classes), the optimistic `set_stats` of
    that extended set (`ext`; None when every class is ranked)."""

    pos: np.ndarray
    g: np.ndarray
    label_pos: np.ndarray
    has_label: np.ndarray
    depth: int
    ext: dict | None = None

    def rows(self, at: np.ndarray) -> "SetFacts":
        ext = None if self.ext is None else {k: v[at] for k, v in self.ext.items()}
        return SetFacts(self.pos[at], self.g[at], self.label_pos[at], self.has_label[at], self.depth, ext)


def leading_stats(facts: SetFacts, s: np.ndarray) -> dict:
    """Per-sample `STATS` of the set of the first s[i] ranked classes (s[i] = D + 1: the extended set,
    `facts.ext`), with `set_stats`' conventions (NaN where the label set / single label is empty)."""
    s = np.asarray(s, dtype=np.int64)
    vis = np.minimum(s, facts.depth)
    h = ((facts.pos >= 0) & (facts.pos < vis[:, None])).sum(axis=1)
    g = facts.g
    ok = g > 0
    nan = np.full(len(g), np.nan)
    label_in = (facts.label_pos >= 0) & (facts.label_pos < vis)
    out = {
        "precision": np.where(ok, h / np.maximum(vis, 1), nan),
        "recall": np.where(ok, h / np.maximum(g, 1), nan),
        "f1": np.where(ok, 2.0 * h / np.maximum(g + vis, 1), nan),
        "exact": np.where(ok, ((h == g) & (vis == g)).astype(np.float64), nan),
        "coverage": np.where(ok, (h == g).astype(np.float64), nan),
        "label_coverage": np.where(facts.has_label, label_in.astype(np.float64), nan),
        "size": np.where(ok, vis.astype(np.float64), nan),
    }
    if facts.ext is not None:
        past = s > facts.depth
        for stat in STATS:
            out[stat] = np.where(past, facts.ext[stat], out[stat])
    return out


# Statistics that rise with the set (a bound from the largest set) and the one that only falls
# from it (size: from the smallest); the others can move either way as a set grows.
_MONOTONE_UP = ("recall", "coverage", "label_coverage")
_NOT_MONOTONE = ("precision", "f1", "exact")


def range_stats(facts: SetFacts, a: np.ndarray, b: np.ndarray) -> dict:
    """Bounds on the `STATS` of a set known only to lie between the first a[i] and the first b[i]
    ranked classes (a <= b; D + 1: extended): every statistic but size at its largest over the sets
    in between (recall, coverage, label coverage at b, where they are largest; precision, F1 and
    exact match, which can fall or rise as a set grows, maximised over every size in [a, b]), size at
    its smallest (at a). With a == b: `leading_stats` (the same values as `set_stats`)."""
    a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
    low, high = leading_stats(facts, a), leading_stats(facts, b)
    out = {"size": low["size"], **{s: high[s] for s in _MONOTONE_UP}}
    for stat in _NOT_MONOTONE:
        out[stat] = np.fmax(low[stat], high[stat])
    width = int((b - a).max(initial=0))
    for t in range(1, width):
        inner = leading_stats(facts, np.minimum(a + t, b))
        for stat in _NOT_MONOTONE:
            out[stat] = np.fmax(out[stat], inner[stat])
    return out


def conformal_state_scores(ranked: Ranked, cum: np.ndarray, u: np.ndarray, kreg: int, lam: float) -> np.ndarray:
    """(n, W) non-decreasing: the D ranked classes' conformal scores and, unless every class is ranked,
    a last column with the smallest score any unranked class can have (the set extends past D when
    it is <= Q-hat). The set of threshold q is in state (row <= q).sum(): its first s classes, or
    D + 1 (extended)."""
    scores = conformal_scores(ranked, cum, u, kreg, lam)
    if ranked.complete:
        return scores
    d = ranked.depth
    floor_next = cum[:, -1] + lam * max(0, d + 1 - kreg) if d else np.zeros(len(u))
    if ranked.n_classes <= d:
        floor_next = np.full(len(u), np.inf)
    return np.concatenate([scores, np.maximum(floor_next, scores[:, -1] if d else floor_next)[:, None]], axis=1)


def conformal_state(state_scores: np.ndarray, q: float) -> np.ndarray:
    """(n,) the state of each sample's set at threshold q (see `conformal_state_scores`)."""
    return (state_scores <= q).sum(axis=1)
