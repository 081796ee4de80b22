"""Score every model of one dataset: per-sample scores -> estimates with bootstrap replicates.

Every model's per-sample scores (`core`) become columns of one matrix, next to the masks saying
which samples each metric applies to; one shared stratified resample-count matrix turns them into
per-stratum sums for all models and resamples at once (`bootstrap`), and `aggregate` turns the sums
into estimates. PatchML seeds made with the same parameters are also averaged into one
`patchml_mean` dataset whose replicates pool the seeds' (replicate b of the mean = mean of the
seeds' replicate b). No file I/O here: predictions come as `Prediction`s or as callables that
build one when its block is scored.
"""

from __future__ import annotations

import contextlib
import hashlib
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterator

import numpy as np

from mlreassess.constants import DEFAULT_BOOTSTRAP, DEFAULT_MIN_GROUP_N, IMAGENET_ASMA_RANGE
from mlreassess.errors import InputError
from mlreassess.metrics import aggregate as agg
from mlreassess.metrics import beyond, core
from mlreassess.metrics import bootstrap as bs
from mlreassess.metrics.aggregate import Estimate
from mlreassess.metrics.conformal import Calibration
from mlreassess.metrics.inputs import Prediction, Sample
from mlreassess.metrics.perclass import per_class_estimate

PATCHML_MEAN = "patchml_mean"
# Per-model score columns (top-1 .. recall, then the oracle-free metrics of `beyond`), then
# per-availability-pattern mask columns.
_SCORES = ("top1", "top5", "real", "acc", "recall") + beyond.BOOT
_MASKS = ("has_label", "has_labels", "in_range", "eval_label", "eval_labels", "eval_all")
_BLOCK_COLUMNS = 800  # score columns per matrix product (bounds memory: n x 800 float32)
_MODEL_BLOCK = max(1, _BLOCK_COLUMNS // len(_SCORES))  # models scored per matrix product

Key = tuple  # (metric, label_count), or (metric, label_count, param) for a curve point


@dataclass
class DatasetResult:
    name: str
    kind: str
    estimates: dict[str, dict[Key, Estimate]]  # model -> estimates
    info: dict[str, Any]
    params: dict[str, Any] = field(default_factory=dict)  # PatchML parameters (what seeds must share)
    calibrations: dict[str, Calibration] = field(default_factory=dict)  # model -> conformal calibration
    calibration_ids: tuple = ()  # the sample ids that calibrated them (never scored as conformal test data)


@dataclass
class _Scored:
    """What a block keeps of one model once its predictions are dropped."""

    model: str
    path: Any  # the predictions file (None for in-memory predictions)
    k: int  # stored top-K
    avail: np.ndarray  # (n,) bool
    x: np.ndarray | None  # (n, len(_SCORES)) float32 scores; released once copied into the block matrix
    exact: np.ndarray  # (S, len(_SCORES)) float64 per-stratum sums (the point estimates)
    point_sums: np.ndarray  # (S, P) per-stratum sums of the point-only columns (`beyond.point_names`)
    extra: beyond.ModelColumns  # without its per-sample columns


def _model_scores(sample: Sample, pred: Prediction, ctx: beyond.Context) -> tuple[np.ndarray, np.ndarray, beyond.ModelColumns]:
    """(n, len(_SCORES)) float64 scores (0 where not applicable), (n,) availability, the `beyond` columns."""
    n = len(sample.label)
    k = pred.topk.shape[1]
    need = max(sample.groups, default=0)
    if need > k:
        raise InputError(
            f"{pred.path}: stored top-{k} predictions, but {sample.name} needs top-{need} "
            f"(samples with {need} labels); re-run inference with --topk {need} or more"
        )
    topk = np.full((n, max(k, 1)), -2, dtype=np.int64)  # -2: no prediction, never matches
    topk[pred.rows, :k] = pred.topk
    avail = np.zeros(n, dtype=bool)
    avail[pred.rows] = True
    in_range = np.isin(sample.labels.count, sample.groups) & avail
    x = np.zeros((n, len(_SCORES)), dtype=np.float64)
    x[:, 0] = np.nan_to_num(core.top1_correct(topk, sample.label))
    if k >= 5:
        x[:, 1] = np.nan_to_num(core.topk_correct(topk, sample.label, 5))
    x[:, 2] = np.nan_to_num(core.real_correct(topk, sample.labels))
    if in_range.any():
        acc, recall = core.variable_topk_scores(topk, sample.labels, in_range)
        x[:, 3] = np.nan_to_num(acc)
        x[:, 4] = np.nan_to_num(recall)
    extra = beyond.model_columns(sample, pred, ctx)
    x[:, 5:] = np.nan_to_num(extra.boot)
    x[~avail] = 0.0
    return x, avail, extra


def _masks(sample: Sample, avail: np.ndarray, ctx: beyond.Context) -> np.ndarray:
    """(n, 6) float32: which samples top-1, ReaL, the subgroup metrics and the conformal sets apply to
    (`eval_all`: every held-out sample, the published convention's set sizes)."""
    in_range = np.isin(sample.labels.count, sample.groups)
    label, labels = (sample.label >= 0) & avail, (sample.labels.count > 0) & avail
    return np.stack([label, labels, in_range & avail, label & ctx.evaluable, labels & ctx.evaluable,
                     avail & ctx.evaluable], axis=1).astype(np.float32)


def _wanted(sample: Sample, k: int) -> Iterator[tuple[str, int | None, list[int], str, str]]:
    """(metric, label_count, strata, score column, mask column) of every row a model gets.

    `real` counts every sample with a label set (Beyer et al., timm); V1/V2 also get `real_1to5`,
    the paper's convention (samples with 1..5 labels). Whole-set `recall` covers the design counts.
    """
    stratum_of = {int(g): s for s, g in enumerate(sample.strata)}
    all_strata = list(range(len(sample.strata)))
    yield "top1", None, all_strata, "top1", "has_label"
    if k >= 5:
        yield "top5", None, all_strata, "top5", "has_label"
    yield "real", None, all_strata, "real", "has_labels"
    if sample.kind in agg.IMAGENET_KINDS:
        yield "real_1to5", None, [stratum_of[g] for g in IMAGENET_ASMA_RANGE if g in stratum_of], "real", "has_labels"
    design = sample.design or sample.groups
    yield "recall", None, [stratum_of[g] for g in sample.groups if g in design], "recall", "in_range"
    for g in sample.groups:
        yield "subgroup", g, [stratum_of[g]], "acc", "in_range"
        yield "real", g, [stratum_of[g]], "real", "in_range"
        yield "recall", g, [stratum_of[g]], "recall", "in_range"


def _model_estimates(sample: Sample, point, reps, cols: tuple[int, int, int], averaged: tuple[int, ...]) -> dict[Key, Estimate]:
    """All metric estimates of one model from the stratum sums (point (S, C), reps (S, B, C)).

    `cols`: (first score column, first mask column, stored K); `averaged`: the label counts ASMA
    (and `asma_recall`, the same mean of recall@g) averages.
    """
    col, mcol, k = cols
    c = {name: col + i for i, name in enumerate(_SCORES)}
    m = {name: mcol + i for i, name in enumerate(_MASKS)}
    out: dict[Key, Estimate] = {}
    for metric, g, strata, num, den in _wanted(sample, k):
        if not strata:
            continue
        est = agg.ratio(point[strata, c[num]], point[strata, m[den]], reps[strata, :, c[num]], reps[strata, :, m[den]])
        if est is not None:
            out[(metric, g)] = est
    for metric, per_group in (("asma", "subgroup"), ("asma_recall", "recall")):
        mean = agg.mean_of_groups({g: out[(per_group, g)] for g in averaged if (per_group, g) in out})
        if mean is not None:
            out[(metric, None)] = mean
    return out


def _oracle_free_estimates(sample: Sample, totals: tuple, cols: tuple[int, int], scored: _Scored,
                           params: beyond.SetParams) -> dict[Key, Estimate]:
    """The rows of `beyond.row_specs` for one model: bootstrap rows from the shared product (conformal
    ones with Q-hat's shift over the calibration resamples added), curve points from the point-only
    sums; each with its top-K bound, beyond-K count, and for conformal rows `qhat` and `temperature`.

    `totals`: (point (S, C), reps (S, B, C)) stratum sums and, summed over the strata, the whole
    dataset's (C,) and (B, C): a row takes one stratum or the whole (every row of `row_specs` does)."""
    point, reps, point_all, reps_all = totals
    col, mcol = cols
    c = {name: col + i for i, name in enumerate(_SCORES)}
    m = {name: mcol + i for i, name in enumerate(_MASKS)}
    p = {name: i for i, name in enumerate(beyond.point_names(params))}
    extra, sums = scored.extra, scored.point_sums
    sums_all = sums.sum(axis=0)
    stratum_of = {int(g): s for s, g in enumerate(sample.strata)}
    out: dict[Key, Estimate] = {}
    if extra.map is not None:
        out[("map", None)] = extra.map
    for spec in beyond.row_specs(sample.groups, extra.has_prob, extra.families, params):
        s = stratum_of.get(spec.label_count)
        pt, rp, sm = (point_all, reps_all, sums_all) if spec.label_count is None else (point[s], reps[s], sums[s])
        scale = 1.0 if spec.metric in beyond.CLASS_UNIT else 100.0
        den = pt[m[spec.den]: m[spec.den] + 1]
        name = spec.flag[: -len("_beyond")]
        family = extra.families.get(name)
        if spec.boot:
            i, j = c[spec.num], m[spec.den]
            shift = _shift(extra, name, spec.metric[len(name) + 1:], s) if family else 0.0
            est = agg.ratio(pt[i: i + 1], den, rp[None, :, i] + shift, rp[None, :, j], scale=scale)
        else:
            est = agg.ratio(sm[p[spec.num]: p[spec.num] + 1], den, scale=scale)
        if est is None:
            continue
        est.param = spec.param
        est.beyond_k = int(round(sm[p[spec.flag]]))
        _mark(est, spec.metric, family, extra.complete, int(round(sm[p[f"{family.name}_open"]])) if family else 0)
        out[(spec.metric, spec.label_count) if spec.boot else (spec.metric, spec.label_count, spec.param)] = est
    return out


def _shift(extra: beyond.ModelColumns, family: str, stat: str, stratum: int | None) -> np.ndarray | float:
    """(1, B) how a conformal row's stratum sum moves with Q-hat in each resample (0 for other rows):
    the calibration half's share of its interval (`qshift`)."""
    got = extra.shifts.get(family)
    if got is None:
        return 0.0
    shifts, index = got
    j = extra.families[family].stats.index(stat)
    per = shifts[:, :, j].sum(axis=0) if stratum is None else shifts[stratum, :, j]
    return per[index][None, :]


def _mark(est: Estimate, metric: str, family, complete: bool, n_open: int) -> None:
    """`bound`: null when the value is exact (what the full softmax gives); "upper" / "lower" the
    side the exact value lies on; "neither" when the top-K gives no side: RAPS's kreg / lambda
    picked from the top-K may not be the full ranking's, and published-convention rows without
    temperature scaling (it needs every probability) are not the temperature-scaled sets at all.
    Conformal rows also get `qhat` and `temperature` (docs/metrics.md)."""
    side = "lower" if metric in beyond.LOWER_BOUND else "upper"
    if family is None:
        est.bound = side if est.beyond_k and not complete else None
        return
    est.qhat, est.temperature = family.qhat_state(), family.temperature
    if not family.params_exact or (family.name in beyond.PUBLISHED and family.temperature is None):
        est.bound = "neither"
    else:
        est.bound = side if n_open else None


def _scored(sample: Sample, pred: Prediction, ctx: beyond.Context) -> _Scored:
    """One model's columns and sums; its Prediction (and any softmax) is not kept."""
    x, avail, extra = _model_scores(sample, pred, ctx)
    sums = np.stack([np.nan_to_num(extra.point[a:b]).sum(axis=0) for a, b in sample.bounds])
    exact = np.stack([x[a:b].sum(axis=0) for a, b in sample.bounds])
    return _Scored(pred.model, pred.path, pred.topk.shape[1], avail, x.astype(np.float32), exact, sums,
                   replace(extra, boot=None, point=None))


# A worker process's dataset (set by `_init_worker` in the worker, never in the parent process).
_WORKER: dict[str, Any] = {}


def _init_worker(sample: Sample, preds: list, ctx: beyond.Context) -> None:
    _WORKER.update(sample=sample, preds=preds, ctx=ctx)


def _worker_scored(i: int) -> _Scored:
    return _scored(_WORKER["sample"], _resolve(_WORKER["preds"][i]), _WORKER["ctx"])


@contextlib.contextmanager
def _model_scorer(sample: Sample, preds: list, ctx: beyond.Context, workers: int):
    """Yields score(indices) -> [_Scored]: in this process, or in `workers` processes (every
    model's columns are independent of the others'; the pool gets the dataset once per worker)."""
    if workers <= 1 or len(preds) <= 1:
        yield lambda indices: [_scored(sample, _resolve(preds[i]), ctx) for i in indices]
        return
    with ProcessPoolExecutor(min(workers, len(preds)), mp_context=multiprocessing.get_context(),
                             initializer=_init_worker, initargs=(sample, preds, ctx)) as pool:
        yield lambda indices: list(pool.map(_worker_scored, indices))


def _check_unique(sample: Sample, scored: list[_Scored], done: dict, missing: dict[str, int]) -> None:
    seen = set(done)
    for s in scored:
        if s.model in seen:
            raise InputError(f"{s.path}: model {s.model!r} has two predictions files for {sample.name}")
        seen.add(s.model)
        missing[s.model] = int((~s.avail).sum())


def _score_block(sample: Sample, scored: list[_Scored], counts: np.ndarray, done: dict, missing: dict[str, int],
                 averaged: tuple[int, ...], ctx: beyond.Context) -> None:
    """Score a block of models with one matrix product; adds their estimates to `done`."""
    _check_unique(sample, scored, done, missing)
    patterns: dict[str, np.ndarray] = {}
    keys = []
    for s in scored:
        key = hashlib.sha1(np.packbits(s.avail).tobytes()).hexdigest()
        if key not in patterns:
            patterns[key] = _masks(sample, s.avail, ctx)
        keys.append(key)
    order = list(patterns)
    mask_base = len(scored) * len(_SCORES)
    x = np.empty((len(sample.label), mask_base + len(order) * len(_MASKS)), dtype=np.float32)
    per_class = {}
    for j, s in enumerate(scored):
        x[:, j * len(_SCORES):(j + 1) * len(_SCORES)] = s.x
        if sample.per_class:  # Shankar et al.'s figure: mean over classes of the per-class ReaL accuracy
            per_class[s.model] = per_class_estimate(s.x[s.avail, 2], sample.label[s.avail], counts[:, s.avail])
        s.x = None
    for i, key in enumerate(order):
        x[:, mask_base + i * len(_MASKS): mask_base + (i + 1) * len(_MASKS)] = patterns[key]
    point = np.stack([x[a:b].sum(axis=0, dtype=np.float64) for a, b in sample.bounds])
    point[:, :mask_base] = np.concatenate([s.exact for s in scored], axis=1)  # float64 point sums
    reps = bs.stratum_sums(counts, x, sample.bounds)
    del x
    totals = (point, reps, point.sum(axis=0), reps.sum(axis=0, dtype=np.float64))
    for j, (s, key) in enumerate(zip(scored, keys)):
        mcol = mask_base + order.index(key) * len(_MASKS)
        ests = _model_estimates(sample, point, reps, (j * len(_SCORES), mcol, s.k), averaged)
        ests.update(_oracle_free_estimates(sample, totals, (j * len(_SCORES), mcol), s, ctx.params))
        if per_class.get(s.model) is not None:
            ests[("real_per_class", None)] = per_class[s.model]
        done[s.model] = ests
        if ctx.is_calibration and s.extra.calibration is not None:
            ctx.calibrations[s.model] = s.extra.calibration


def _resolve(pred: Prediction | Callable[[], Prediction]) -> Prediction:
    # a callable is a lazy source (a file, a benchmark's generator): built only when its block is scored
    return pred if isinstance(pred, Prediction) else pred()


def evaluate_dataset(
    sample: Sample,
    preds: list[Prediction | Callable[[], Prediction]],
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
    min_group_n: int = DEFAULT_MIN_GROUP_N,
    sets: beyond.SetParams | None = None,
    calibrate: bool = False,
    calibrations: dict[str, Calibration] | None = None,
    cal_ids=None,
    workers: int = 1,
) -> DatasetResult:
    """Score every model's predictions of one dataset; CIs from one shared resample matrix.

    ASMA averages the design label counts with at least `min_group_n` samples in the dataset (the
    same groups for every model, so models compare on one footing). Conformal sets: with
    `calibrate`, this dataset is the calibration set (a seeded half calibrates each model, the
    other half is scored; `DatasetResult.calibrations`); otherwise `calibrations` (model ->
    Calibration) are used, on the samples whose id is not in `cal_ids`. `workers` > 1: the models'
    per-sample columns are computed in that many processes (same results)."""
    sets = sets or beyond.SetParams()
    counts = bs.resample_counts([b - a for a, b in sample.bounds], n_boot, seed)
    averaged = agg.asma_groups(sample.design, {g: n for g, n in sample.sizes.items() if g in sample.groups}, min_group_n)
    ctx = beyond.context(sample, sets, counts, calibrate, calibrations, cal_ids, boot_seed=seed)
    estimates: dict[str, dict[Key, Estimate]] = {}
    missing: dict[str, int] = {}
    with _model_scorer(sample, preds, ctx, workers) as score:
        for b0 in range(0, len(preds), _MODEL_BLOCK):
            block = range(b0, min(len(preds), b0 + _MODEL_BLOCK))
            _score_block(sample, score(block), counts, estimates, missing, averaged, ctx)
            if progress:
                progress(len(block))
    info = {"kind": sample.kind, "manifest": str(sample.source), **_group_info(sample, averaged, min_group_n),
            "missing_samples": {m: k for m, k in sorted(missing.items()) if k}, "models": sorted(estimates)}
    info.update(beyond.dataset_info(ctx, sorted(estimates)))
    return DatasetResult(sample.name, sample.kind, estimates, info, dict(sample.params),
                         dict(ctx.calibrations) if calibrate else {},
                         tuple(sample.sample_ids[ctx.cal]) if calibrate else ())


def _group_info(sample: Sample, averaged: tuple[int, ...], min_group_n: int) -> dict[str, Any]:
    """What metrics.parquet's metadata says about a dataset's label-count groups."""
    sizes = sample.sizes
    design = sample.design or sample.groups
    return {
        "n_samples": int(len(sample.label)),
        "label_count_n": {str(g): n for g, n in sizes.items()},
        "design_counts": list(sample.design),
        "min_group_n": min_group_n,
        "asma_range_present": list(averaged),
        "below_min_group_n": {str(g): sizes[g] for g in design if g in sizes and g not in averaged},
        "outside_design": {str(g): sizes[g] for g in sample.groups if g not in design},
    }


def seed_mismatch(results: list[DatasetResult]) -> str | None:
    """Why these PatchML seeds cannot be averaged (a parameter other than the seed differs), or None."""
    first = results[0] if results else None
    for res in results[1:]:
        for key in sorted(set(first.params) | set(res.params)):
            a, b = first.params.get(key), res.params.get(key)
            if a != b:
                return f"{first.name} and {res.name} differ in {key} ({a} vs {b})"
    return None


def mean_over_seeds(results: list[DatasetResult]) -> DatasetResult:
    """PatchML mean over seeds: value = mean of the seeds' values, n = number of seeds, CI pooled.

    Only seeds whose PatchML parameters are identical but for the seed are averaged (InputError
    otherwise). An ASMA row names the label counts averaged; seeds that averaged different ones
    (a group below --min-group-n in one seed) are named with theirs."""
    why = seed_mismatch(results)
    if why:
        raise InputError(f"{PATCHML_MEAN}: refusing to average PatchML sets made with other parameters: {why}")
    sums: dict[str, dict[Key, list]] = {}
    for res in results:
        for model, ests in res.estimates.items():
            for key, e in ests.items():
                acc = sums.setdefault(model, {}).setdefault(key, [0.0, np.zeros_like(e.reps), 0, {}, set(), 0, e.param,
                                                                   set(), set()])
                acc[0] += e.value_pct
                acc[1] = acc[1] + e.reps
                acc[2] += 1
                if e.groups is not None:
                    acc[3].setdefault(e.groups, []).append(res.name)
                acc[4].add(e.bound)
                acc[5] += e.beyond_k or 0
                acc[7].add(e.qhat)
                acc[8].add(e.temperature)
    estimates = {
        model: {key: Estimate(v / c, c, r / c, _seed_groups(g), param, _one_bound(b), beyond or None,
                              _one_qhat(q), next(iter(t)) if len(t) == 1 else None)
                for key, (v, r, c, g, b, beyond, param, q, t) in keys.items()}
        for model, keys in sums.items()
    }
    info = {"kind": "patchml", "seeds": [r.name for r in results], "models": sorted(estimates)}
    return DatasetResult(PATCHML_MEAN, "patchml", estimates, info, dict(results[0].params) if results else {})


def _one_bound(sides: set[str | None]) -> str | None:
    """The bound of a mean over seeds: a mean of exact values and bounds on one side is a bound on
    that side; mixing sides (or a seed bounding neither side) gives no side: "neither"."""
    sides = sides - {None}
    return None if not sides else next(iter(sides)) if len(sides) == 1 else "neither"


def _one_qhat(states: set[str | None]) -> str | None:
    # one seed's sets from a conservative Q-hat make the mean's conservative too
    states = states - {None}
    return None if not states else "conservative" if "conservative" in states else "exact"


def _seed_groups(by_groups: dict[str, list[str]]) -> str | None:
    """The `groups` text of a mean over seeds: one list when every seed averaged it, else each with its seeds."""
    if not by_groups:
        return None
    if len(by_groups) == 1:
        return next(iter(by_groups))
    return "; ".join(f"{g} ({', '.join(names)})" for g, names in by_groups.items())
