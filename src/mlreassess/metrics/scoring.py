"""Score every model of one dataset: per-sample scores -> estimates with bootstrap replicates.

Every model's per-sample scores (`core`) become columns of one matrix, next to the masks saying
which samples each metric applies to; one shared stratified resample-count matrix turns them into
per-stratum sums for all models and resamples at once (`bootstrap`), and `aggregate` turns the sums
into estimates. PatchML seeds are also averaged into one `patchml_mean` dataset whose replicates
pool the seeds' (replicate b of the mean = mean of the seeds' replicate b). No file I/O here:
predictions come as `Prediction`s or as callables that build one when its block is scored.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np

from mlreassess.constants import DEFAULT_BOOTSTRAP
from mlreassess.errors import InputError
from mlreassess.metrics import aggregate as agg
from mlreassess.metrics import bootstrap as bs
from mlreassess.metrics import core
from mlreassess.metrics.aggregate import Estimate
from mlreassess.metrics.inputs import Prediction, Sample

PATCHML_MEAN = "patchml_mean"
_MODEL_BLOCK = 64  # models scored per matrix product (bounds memory: n x 5*block floats)
# Per-model score columns, then per-availability-pattern mask columns.
_SCORES = ("top1", "top5", "real", "acc", "recall")
_MASKS = ("has_label", "has_labels", "in_range")

Key = tuple[str, int | None]  # (metric, label_count)


@dataclass
class DatasetResult:
    name: str
    kind: str
    estimates: dict[str, dict[Key, Estimate]]  # model -> estimates
    info: dict[str, Any]


def _model_scores(sample: Sample, pred: Prediction) -> tuple[np.ndarray, np.ndarray]:
    """(n, 5) float64 scores (0 where not applicable) and (n,) availability, in Sample order."""
    n = len(sample.label)
    k = pred.topk.shape[1]
    need = max(sample.asma_range, default=0)
    if need > k:
        raise InputError(
            f"{pred.path}: stored top-{k} predictions, but {sample.name} needs top-{need} "
            f"(samples with {need} labels); re-run inference with --topk {need} or more"
        )
    topk = np.full((n, max(k, 1)), -2, dtype=np.int64)  # -2: no prediction, never matches
    topk[pred.rows, :k] = pred.topk
    avail = np.zeros(n, dtype=bool)
    avail[pred.rows] = True
    in_range = np.isin(sample.labels.count, sample.asma_range) & avail
    x = np.zeros((n, len(_SCORES)), dtype=np.float64)
    x[:, 0] = np.nan_to_num(core.top1_correct(topk, sample.label))
    if k >= 5:
        x[:, 1] = np.nan_to_num(core.topk_correct(topk, sample.label, 5))
    x[:, 2] = np.nan_to_num(core.real_correct(topk, sample.labels))
    if in_range.any():
        acc, recall = core.variable_topk_scores(topk, sample.labels, in_range)
        x[:, 3] = np.nan_to_num(acc)
        x[:, 4] = np.nan_to_num(recall)
    x[~avail] = 0.0
    return x, avail


def _masks(sample: Sample, avail: np.ndarray) -> np.ndarray:
    """(n, 3) float32: which samples top-1, ReaL and the ASMA-range metrics apply to."""
    in_range = np.isin(sample.labels.count, sample.asma_range)
    return np.stack([(sample.label >= 0) & avail, (sample.labels.count > 0) & avail, in_range & avail], axis=1).astype(np.float32)


def _wanted(sample: Sample, k: int) -> Iterator[tuple[str, int | None, list[int], str, str]]:
    """(metric, label_count, strata, score column, mask column) of every row a model gets."""
    all_strata = list(range(len(sample.strata)))
    stratum_of = {int(g): s for s, g in enumerate(sample.strata)}
    in_range = [stratum_of[g] for g in sample.asma_range]
    yield "top1", None, all_strata, "top1", "has_label"
    if k >= 5:
        yield "top5", None, all_strata, "top5", "has_label"
    yield "real", None, all_strata, "real", "has_labels"
    yield "recall", None, in_range, "recall", "in_range"
    for g, s in zip(sample.asma_range, in_range):
        yield "subgroup", g, [s], "acc", "in_range"
        yield "real", g, [s], "real", "in_range"
        yield "recall", g, [s], "recall", "in_range"


def _model_estimates(sample: Sample, point, reps, col: int, mcol: int, k: int) -> dict[Key, Estimate]:
    """All metric estimates of one model from the stratum sums (point (S, C), reps (S, B, C))."""
    c = {name: col + i for i, name in enumerate(_SCORES)}
    m = {name: mcol + i for i, name in enumerate(_MASKS)}
    out: dict[Key, Estimate] = {}
    for metric, g, strata, num, den in _wanted(sample, k):
        if not strata:
            continue
        est = agg.ratio(point[strata, c[num]], point[strata, m[den]], reps[strata, :, c[num]], reps[strata, :, m[den]])
        if est is not None:
            out[(metric, g)] = est
    asma = agg.mean_of_groups([out[("subgroup", g)] for g in sample.asma_range if ("subgroup", g) in out])
    if asma is not None:
        out[("asma", None)] = asma
    return out


def _score_block(sample: Sample, block: list[Prediction], counts: np.ndarray, done: dict, missing: dict[str, int]) -> None:
    """Score a block of models with one matrix product; adds their estimates to `done`."""
    cols, exact, patterns, layout = [], [], {}, []
    for pred in block:
        if pred.model in done or any(pred.model == q.model for q, _ in layout):
            raise InputError(f"{pred.path}: model {pred.model!r} has two predictions files for {sample.name}")
        x, avail = _model_scores(sample, pred)
        # point estimates from float64 scores (exact); the bootstrap works on float32 copies
        exact.append(np.stack([x[a:b].sum(axis=0) for a, b in sample.bounds]))
        key = hashlib.sha1(np.packbits(avail).tobytes()).hexdigest()
        if key not in patterns:
            patterns[key] = _masks(sample, avail)
        layout.append((pred, key))
        cols.append(x.astype(np.float32))
        missing[pred.model] = int((~avail).sum())
    keys = list(patterns)
    x = np.concatenate(cols + [patterns[k] for k in keys], axis=1)
    point = np.stack([x[a:b].sum(axis=0, dtype=np.float64) for a, b in sample.bounds])
    mask_base = len(cols) * len(_SCORES)
    point[:, :mask_base] = np.concatenate(exact, axis=1)
    reps = bs.stratum_sums(counts, x, sample.bounds)
    for j, (pred, key) in enumerate(layout):
        mcol = mask_base + keys.index(key) * len(_MASKS)
        done[pred.model] = _model_estimates(sample, point, reps, j * len(_SCORES), mcol, pred.topk.shape[1])


def _resolve(pred: Prediction | Callable[[], Prediction]) -> Prediction:
    # a callable is a lazy source (a file, a benchmark's generator): built only when its block is scored
    return pred if isinstance(pred, Prediction) else pred()


def evaluate_dataset(
    sample: Sample,
    preds: list[Prediction | Callable[[], Prediction]],
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
) -> DatasetResult:
    """Score every model's predictions of one dataset; CIs from one shared resample matrix."""
    counts = bs.resample_counts([b - a for a, b in sample.bounds], n_boot, seed)
    estimates: dict[str, dict[Key, Estimate]] = {}
    missing: dict[str, int] = {}
    for b0 in range(0, len(preds), _MODEL_BLOCK):
        block = [_resolve(p) for p in preds[b0 : b0 + _MODEL_BLOCK]]
        _score_block(sample, block, counts, estimates, missing)
        if progress:
            progress(len(block))
    groups = {int(g): int(b - a) for g, (a, b) in zip(sample.strata, sample.bounds)}
    info = {
        "kind": sample.kind,
        "manifest": str(sample.source),
        "n_samples": int(len(sample.label)),
        "label_count_n": {str(g): n for g, n in groups.items()},
        "asma_range_present": list(sample.asma_range),
        "missing_samples": {m: k for m, k in sorted(missing.items()) if k},
        "models": sorted(estimates),
    }
    return DatasetResult(sample.name, sample.kind, estimates, info)


def mean_over_seeds(results: list[DatasetResult]) -> DatasetResult:
    """PatchML mean over seeds: value = mean of the seeds' values, n = number of seeds, CI pooled."""
    sums: dict[str, dict[Key, list]] = {}
    for res in results:
        for model, ests in res.estimates.items():
            for key, e in ests.items():
                acc = sums.setdefault(model, {}).setdefault(key, [0.0, np.zeros_like(e.reps), 0])
                acc[0] += e.value_pct
                acc[1] = acc[1] + e.reps
                acc[2] += 1
    estimates = {
        model: {key: Estimate(v / c, c, r / c) for key, (v, r, c) in keys.items()} for model, keys in sums.items()
    }
    info = {"kind": "patchml", "seeds": [r.name for r in results], "models": sorted(estimates)}
    return DatasetResult(PATCHML_MEAN, "patchml", estimates, info)
