"""Per-sample scores -> percent estimates: mean, subgroup accuracy and ASMA, implemented once.

Everything is computed from per-stratum sums (a stratum = the samples with one label count): a
metric over some strata is 100 * sum(scores) / sum(applicable) over them, and ASMA is the
unweighted mean of the subgroup estimates. `scoring` feeds these functions the sums of a block of
models and of every bootstrap resample at once; `mean_pct`, `subgroup_accuracy` and `asma` feed
them one score vector (NaN = not applicable), so the hand-computed cases test the same code.
No file I/O here (see docs/metrics.md for the conventions).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from mlreassess.constants import IMAGENET_ASMA_RANGE

# Dataset kinds whose ASMA averages over IMAGENET_ASMA_RANGE; other kinds use every g >= 1 present.
IMAGENET_KINDS = ("imagenet_v1", "imagenet_v2")


@dataclass
class Estimate:
    """One metric value in percent, over `n` samples, with its bootstrap replicates (percent)."""

    value_pct: float
    n: int
    reps: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (B,); empty without a bootstrap


def ratio(
    num: np.ndarray, den: np.ndarray, num_reps: np.ndarray | None = None, den_reps: np.ndarray | None = None
) -> Estimate | None:
    """100 * sum(num) / sum(den) over the strata (axis 0); None when no sample applies.

    `num`, `den`: (S,) per-stratum sums of the scores and of the applicability mask; `num_reps`,
    `den_reps`: (S, B) the same sums in each bootstrap resample (summed in float64).
    """
    n = den.sum()
    if n <= 0:
        return None
    value = 100.0 * num.sum() / n
    reps = np.zeros(0)
    if num_reps is not None and den_reps is not None:
        with np.errstate(invalid="ignore", divide="ignore"):
            reps = 100.0 * num_reps.sum(axis=0, dtype=np.float64) / den_reps.sum(axis=0, dtype=np.float64)
    return Estimate(float(value), int(round(n)), reps)


def mean_of_groups(groups: Sequence[Estimate]) -> Estimate | None:
    """ASMA from its subgroup estimates: unweighted mean of the values and of the replicates.

    `n` = samples in the groups used; None when no group has a sample.
    """
    if not groups:
        return None
    return Estimate(
        float(np.mean([e.value_pct for e in groups])), sum(e.n for e in groups), np.mean([e.reps for e in groups], axis=0)
    )


def present_groups(counts: np.ndarray) -> list[int]:
    """The label counts g >= 1 that occur in `counts`, ascending."""
    return sorted(int(g) for g in np.unique(counts) if g > 0)


def asma_range(kind: str | None, counts: np.ndarray) -> tuple[int, ...]:
    """V1/V2: g = 1..5 (paper Sec. 4.2); other kinds (PatchML): every g >= 1 present. Only present groups are kept."""
    present = set(present_groups(counts))
    wanted = IMAGENET_ASMA_RANGE if kind in IMAGENET_KINDS else sorted(present)
    return tuple(g for g in wanted if g in present)


# --- one score vector (NaN = not applicable) through the same functions ---------------------------


def _sums(scores: np.ndarray, keep: np.ndarray | bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(1,) sums of the applicable scores and of their number: one stratum holding the kept samples."""
    scores = np.asarray(scores, dtype=np.float64)
    ok = ~np.isnan(scores) & keep
    return np.array([scores[ok].sum()]), np.array([float(ok.sum())])


def _subgroup(acc: np.ndarray, count: np.ndarray, g: int) -> Estimate | None:
    return ratio(*_sums(acc, np.asarray(count) == g))


def mean_pct(scores: np.ndarray) -> tuple[float, int]:
    """(mean of the non-NaN scores in percent, how many); NaN and 0 when none apply."""
    est = ratio(*_sums(scores))
    return (est.value_pct, est.n) if est else (float("nan"), 0)


def subgroup_accuracy(acc: np.ndarray, count: np.ndarray, g: int) -> tuple[float, int]:
    """Mean sample accuracy (percent) over the samples with exactly g labels, and their number."""
    est = _subgroup(acc, count, g)
    return (est.value_pct, est.n) if est else (float("nan"), 0)


def asma(acc: np.ndarray, count: np.ndarray, g_range: Sequence[int] | None = None) -> tuple[float, dict[int, int]]:
    """ASMA: unweighted mean of the subgroup accuracies over `g_range` (default: every g >= 1 present).

    Groups in the range with no (scored) samples are skipped; returns (value_pct, {g: n}) for the
    groups that were used, so callers can say which were present.
    """
    if g_range is None:
        g_range = present_groups(np.asarray(count))
    groups = {int(g): _subgroup(acc, count, int(g)) for g in g_range}
    used = {g: e for g, e in groups.items() if e is not None}
    est = mean_of_groups(list(used.values()))
    return (est.value_pct if est else float("nan")), {g: e.n for g, e in used.items()}
