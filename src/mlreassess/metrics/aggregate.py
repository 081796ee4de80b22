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

from mlreassess.constants import DEFAULT_MIN_GROUP_N, IMAGENET_ASMA_RANGE, PATCHML_DEFAULT_COUNTS

# Dataset kinds whose subgroups and ASMA cover IMAGENET_ASMA_RANGE (the paper's 1..5 labels).
IMAGENET_KINDS = ("imagenet_v1", "imagenet_v2")


@dataclass
class Estimate:
    """One metric value in percent, over `n` samples, with its bootstrap replicates (percent).

    `groups`: for a mean of subgroups (ASMA), the label counts it averaged, e.g. "2,3,4,6,9".
    Beyond the oracle (docs/metrics.md): `param` the set's tau / q / alpha; `bound` 'upper' /
    'lower' when the stored top-K only bounds the value (the exact value is at most / at least
    this), 'neither' when it gives no side, None when exact; `beyond_k` how many of the samples (for
    mAP: classes) needed more than the stored top-K; conformal rows: `qhat` ('exact' /
    'conservative') and `temperature` (None: probabilities as stored). `value_pct` is in classes
    for class-unit metrics.
    """

    value_pct: float
    n: int
    reps: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (B,); empty without a bootstrap
    groups: str | None = None
    param: float | None = None
    bound: str | None = None
    beyond_k: int | None = None
    qhat: str | None = None
    temperature: float | None = None


def groups_text(groups: Sequence[int]) -> str:
    """The label counts a mean averaged, as metrics.parquet's `groups` column spells them: "2,3,4,6,9"."""
    return ",".join(str(int(g)) for g in groups)


def ratio(
    num: np.ndarray, den: np.ndarray, num_reps: np.ndarray | None = None, den_reps: np.ndarray | None = None,
    scale: float = 100.0,
) -> Estimate | None:
    """scale * sum(num) / sum(den) over the strata (axis 0); None when no sample applies.

    `num`, `den`: (S,) per-stratum sums of the scores and of the applicability mask; `num_reps`,
    `den_reps`: (S, B) the same sums in each bootstrap resample (summed in float64). `scale`: 100
    for percent, 1 for metrics in classes (coverage error, set size).
    """
    n = den.sum()
    if n <= 0:
        return None
    value = scale * num.sum() / n
    reps = np.zeros(0)
    if num_reps is not None and den_reps is not None:
        den_sum = den_reps.sum(axis=0, dtype=np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):  # a resample drawing no applicable sample: NaN
            reps = np.where(den_sum > 0, scale * num_reps.sum(axis=0, dtype=np.float64) / den_sum, np.nan)
    return Estimate(float(value), int(round(n)), reps)


def mean_of_groups(groups: dict[int, Estimate] | Sequence[Estimate]) -> Estimate | None:
    """ASMA from its subgroup estimates: unweighted mean of the values and of the replicates.

    `groups`: {label count: subgroup estimate} (the row then names the counts it averaged) or a
    plain sequence. `n` = samples in the groups used; None when there is no group.
    """
    ests = list(groups.values()) if isinstance(groups, dict) else list(groups)
    if not ests:
        return None
    return Estimate(
        float(np.mean([e.value_pct for e in ests])),
        sum(e.n for e in ests),
        np.mean([e.reps for e in ests], axis=0),
        groups_text(sorted(groups)) if isinstance(groups, dict) else None,
    )


def present_groups(counts: np.ndarray) -> list[int]:
    """The label counts g >= 1 that occur in `counts`, ascending."""
    return sorted(int(g) for g in np.unique(counts) if g > 0)


def design_counts(kind: str | None, patch_counts: Sequence[int] | None = None) -> tuple[int, ...]:
    """The label counts ASMA is defined over: V1/V2 1..5 (paper Sec. 4.2); PatchML its patch counts k
    (the manifest's `counts`, default 2,3,4,6,9: Table 2, Fig. 7); other kinds: none (every g present)."""
    if kind in IMAGENET_KINDS:
        return IMAGENET_ASMA_RANGE
    if kind == "patchml":
        return tuple(sorted(int(k) for k in (patch_counts or PATCHML_DEFAULT_COUNTS)))
    return ()


def subgroup_counts(kind: str | None, counts: np.ndarray) -> tuple[int, ...]:
    """The label counts that get subgroup rows: V1/V2 1..5 present (their rare 6+ label images would
    need a deeper top-K); other kinds every g >= 1 present (PatchML: also canvases that repeat a class)."""
    present = present_groups(counts)
    if kind in IMAGENET_KINDS:
        return tuple(g for g in IMAGENET_ASMA_RANGE if g in present)
    return tuple(present)


def asma_groups(design: Sequence[int], sizes: dict[int, int], min_n: int = DEFAULT_MIN_GROUP_N) -> tuple[int, ...]:
    """The label counts ASMA averages: those of `design` (every size given when empty) with at least
    `min_n` samples. Smaller groups keep their subgroup rows; they are only left out of the mean."""
    wanted = design or sorted(sizes)
    return tuple(int(g) for g in wanted if sizes.get(int(g), 0) >= min_n)


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


def asma(
    acc: np.ndarray, count: np.ndarray, g_range: Sequence[int] | None = None, min_n: int = 1
) -> tuple[float, dict[int, int]]:
    """ASMA: unweighted mean of the subgroup accuracies over `g_range` (default: every g >= 1 present).

    Groups in the range with fewer than `min_n` (scored) samples are skipped; returns
    (value_pct, {g: n}) for the groups that were used, so callers can say which were averaged.
    """
    if g_range is None:
        g_range = present_groups(np.asarray(count))
    groups = {int(g): _subgroup(acc, count, int(g)) for g in g_range}
    used = {g: e for g, e in groups.items() if e is not None and e.n >= min_n}
    est = mean_of_groups(used)
    return (est.value_pct if est else float("nan")), {g: e.n for g, e in used.items()}
