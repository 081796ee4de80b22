"""RESULTS/predictions + RESULTS/manifests -> RESULTS/metrics.parquet (the only file I/O of metrics/).

Per dataset: samples are ordered by (label_count, sample_id) so each label-count stratum is a
contiguous block; every model's per-sample scores become columns of one matrix; one shared
stratified resample-count matrix turns them into bootstrap replicates for all models at once
(see `bootstrap`). PatchML seeds are also averaged into one `patchml_mean` dataset whose
intervals pool the seeds' replicates (replicate b of the mean = mean of the seeds' replicate b).
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from mlreassess.errors import InputError
from mlreassess.metrics import bootstrap as bs
from mlreassess.metrics import core

METRICS = ("top1", "top5", "real", "asma", "subgroup", "recall")
COLUMNS = ("model", "dataset", "metric", "label_count", "value_pct", "n", "ci_low_pct", "ci_high_pct")
PATCHML_MEAN = "patchml_mean"
METRICS_FILE = "metrics.parquet"
_MODEL_BLOCK = 64  # models scored per matrix product (bounds memory: n x 5*block floats)
# Per-model score columns, then per-availability-pattern mask columns.
_SCORES = ("top1", "top5", "real", "acc", "recall")
_MASKS = ("has_label", "has_labels", "in_range")


@dataclass
class Sample:
    """A dataset's manifest, reordered by (label_count, sample_id)."""

    name: str
    kind: str
    source: Path
    sample_ids: np.ndarray  # (n,) object, in stratum order
    label: np.ndarray  # (n,) int64, -1 = none
    labels: core.LabelSets
    strata: np.ndarray  # sorted distinct label counts present
    bounds: list[tuple[int, int]]
    asma_range: tuple[int, ...]  # label counts ASMA averages over (those present)
    index: Any = field(repr=False, default=None)  # pandas.Index of sample_ids (fast lookup)


@dataclass
class Prediction:
    model: str
    path: Path
    rows: np.ndarray  # positions in Sample order
    topk: np.ndarray  # (len(rows), K) int64


def asma_range(kind: str, counts: np.ndarray) -> tuple[int, ...]:
    """V1/V2: g = 1..5 (paper Sec. 4.2); PatchML: every g >= 1 present. Only present groups are kept."""
    present = {int(g) for g in np.unique(counts) if g > 0}
    wanted = core.IMAGENET_ASMA_RANGE if kind in ("imagenet_v1", "imagenet_v2") else sorted(present)
    return tuple(g for g in wanted if g in present)


def make_sample(name: str, kind: str, sample_ids, label, labels: core.LabelSets, source: Path | None = None) -> Sample:
    """A Sample from arrays in any order (label -1 = none); reorders by (label_count, sample_id)."""
    import pandas as pd

    ids = np.asarray(sample_ids, dtype=object)
    label = np.asarray(label, dtype=np.int64)
    order = np.lexsort((ids.astype(str), labels.count))
    labels = core.LabelSets(labels.pad[order], labels.count[order])
    strata, sizes = np.unique(labels.count, return_counts=True)
    return Sample(
        name=name,
        kind=kind,
        source=source or Path(f"<{name}>"),
        sample_ids=ids[order],
        label=label[order],
        labels=labels,
        strata=strata,
        bounds=bs.stratum_bounds(sizes),
        asma_range=asma_range(kind, labels.count),
        index=pd.Index(ids[order]),
    )


def load_sample(path: Path) -> Sample:
    from mlreassess.datasets.manifest import read_manifest

    manifest = read_manifest(path)
    table = manifest.table
    ids = table.column("sample_id").to_numpy(zero_copy_only=False)
    label = table.column("label").to_numpy(zero_copy_only=False)
    label = np.array([-1 if v is None or v != v else int(v) for v in label], dtype=np.int64)
    lists = table.column("labels").combine_chunks()
    offsets = np.concatenate([[0], np.cumsum(lists.value_lengths().fill_null(0).to_numpy())])
    labels = core.label_sets_from_flat(offsets, lists.flatten().to_numpy())
    return make_sample(path.stem, manifest.kind, ids, label, labels, source=path)


def load_prediction(path: Path, sample: Sample) -> Prediction:
    from mlreassess.io import read_meta, read_table

    meta = read_meta(path)
    if meta.get("dataset") not in (None, sample.name):
        raise InputError(f"{path}: predictions are for dataset {meta['dataset']!r}, but sit under {sample.name!r}")
    table = read_table(path)
    for col in ("sample_id", "topk_idx"):
        if col not in table.column_names:
            raise InputError(f"{path}: not a predictions file (no {col!r} column)")
    model = meta.get("model") or path.stem
    ids = table.column("sample_id").to_numpy(zero_copy_only=False)
    rows = sample.index.get_indexer(ids).astype(np.int64)
    if (rows < 0).any():
        bad = ids[int(np.flatnonzero(rows < 0)[0])]
        raise InputError(f"{path}: sample {bad!r} is not in the manifest {sample.source}")
    if len(np.unique(rows)) != len(rows):
        raise InputError(f"{path}: duplicate sample_id rows")
    topk = _list_matrix(table.column("topk_idx"), path, "topk_idx", np.int64)
    if "topk_prob" in table.column_names:
        prob = _list_matrix(table.column("topk_prob"), path, "topk_prob", np.float32)
        if prob.shape != topk.shape:
            raise InputError(f"{path}: topk_prob has shape {prob.shape} but topk_idx has {topk.shape}")
        topk = core.canonical_topk(topk, prob)
    if len(topk) and ((topk < 0) | (topk >= 1000)).any():
        i = int(np.flatnonzero(((topk < 0) | (topk >= 1000)).any(axis=1))[0])
        raise InputError(f"{path}: sample {ids[i]!r}: class index out of range 0..999 in topk_idx")
    return Prediction(model=model, path=path, rows=rows, topk=topk)


def _list_matrix(column, path: Path, name: str, dtype) -> np.ndarray:
    arr = column.combine_chunks()
    lengths = arr.value_lengths().fill_null(0).to_numpy()
    if len(lengths) and (lengths != lengths[0]).any():
        raise InputError(f"{path}: {name} lists have different lengths ({lengths.min()}..{lengths.max()})")
    k = int(lengths[0]) if len(lengths) else 0
    return arr.flatten().to_numpy(zero_copy_only=False).astype(dtype).reshape(len(lengths), k)


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
    in_range = np.isin(sample.labels.count, sample.asma_range)
    return np.stack([(sample.label >= 0) & avail, (sample.labels.count > 0) & avail, in_range & avail], axis=1).astype(np.float32)


@dataclass
class Estimate:
    value_pct: float
    n: int
    reps: np.ndarray  # (B,) percent


def _ratio(point: np.ndarray, reps: np.ndarray, strata: list[int], num: int, den: int) -> Estimate | None:
    n = point[strata, den].sum()
    if n <= 0:
        return None
    value = 100.0 * point[strata, num].sum() / n
    with np.errstate(invalid="ignore", divide="ignore"):
        r = 100.0 * reps[strata][:, :, num].sum(axis=0, dtype=np.float64) / reps[strata][:, :, den].sum(axis=0, dtype=np.float64)
    return Estimate(float(value), int(round(n)), r)


def _model_estimates(sample: Sample, point, reps, col: int, mcol: int, k: int) -> dict[tuple[str, int | None], Estimate]:
    """All metric estimates of one model from the stratum sums; key (metric, label_count)."""
    c = {name: col + i for i, name in enumerate(_SCORES)}
    m = {name: mcol + i for i, name in enumerate(_MASKS)}
    all_strata = list(range(len(sample.strata)))
    stratum_of = {int(g): s for s, g in enumerate(sample.strata)}
    in_range = [stratum_of[g] for g in sample.asma_range]
    out: dict[tuple[str, int | None], Estimate] = {}
    wanted = [("top1", None, all_strata, "top1", "has_label"), ("real", None, all_strata, "real", "has_labels")]
    if k >= 5:
        wanted.insert(1, ("top5", None, all_strata, "top5", "has_label"))
    wanted.append(("recall", None, in_range, "recall", "in_range"))
    for g, s in zip(sample.asma_range, in_range):
        wanted += [("subgroup", g, [s], "acc", "in_range"), ("real", g, [s], "real", "in_range"), ("recall", g, [s], "recall", "in_range")]
    for metric, g, strata, num, den in wanted:
        est = _ratio(point, reps, strata, c[num], m[den]) if strata else None
        if est is not None:
            out[(metric, g)] = est
    groups = [out[("subgroup", g)] for g in sample.asma_range if ("subgroup", g) in out]
    if groups:
        out[("asma", None)] = Estimate(
            float(np.mean([e.value_pct for e in groups])), sum(e.n for e in groups), np.mean([e.reps for e in groups], axis=0)
        )
    return out


@dataclass
class DatasetResult:
    name: str
    kind: str
    estimates: dict[str, dict[tuple[str, int | None], Estimate]]  # model -> estimates
    info: dict[str, Any]


def evaluate_dataset(
    sample: Sample,
    preds: list[Path | Prediction | Callable[[], Prediction]],
    n_boot: int = bs.DEFAULT_RESAMPLES,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
) -> DatasetResult:
    """Score every predictions file (or in-memory Prediction) of one dataset; CIs from one shared resample matrix."""
    counts = bs.resample_counts([b - a for a, b in sample.bounds], n_boot, seed)
    estimates: dict[str, dict] = {}
    missing: dict[str, int] = {}
    for b0 in range(0, len(preds), _MODEL_BLOCK):
        block = [_resolve(p, sample) for p in preds[b0 : b0 + _MODEL_BLOCK]]
        cols, patterns, layout, exact = [], {}, [], []
        for pred in block:
            if pred.model in estimates or any(pred.model == q.model for q, _ in layout):
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
        point[:, : len(cols) * len(_SCORES)] = np.concatenate(exact, axis=1)
        reps = bs.stratum_sums(counts, x, sample.bounds)
        mask_base = len(cols) * len(_SCORES)
        for j, (pred, key) in enumerate(layout):
            mcol = mask_base + keys.index(key) * len(_MASKS)
            estimates[pred.model] = _model_estimates(sample, point, reps, j * len(_SCORES), mcol, pred.topk.shape[1])
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


def _resolve(pred, sample: Sample) -> Prediction:
    if isinstance(pred, Prediction):
        return pred
    if callable(pred):  # lazy in-memory source (benchmarks): built only when its block is scored
        return pred()
    return load_prediction(Path(pred), sample)


def mean_over_seeds(results: list[DatasetResult]) -> DatasetResult:
    """PatchML mean over seeds: value = mean of the seeds' values, n = number of seeds, CI pooled."""
    sums: dict[str, dict[tuple[str, int | None], list]] = {}
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


def rows_of(result: DatasetResult, level: float) -> list[dict[str, Any]]:
    order = {m: i for i, m in enumerate(METRICS)}
    rows = []
    for model in sorted(result.estimates):
        ests = result.estimates[model]
        keys = sorted(ests, key=lambda k: (order[k[0]], -1 if k[1] is None else k[1]))
        if not keys:
            continue
        lows, highs = bs.percentile_interval(np.stack([ests[k].reps for k in keys], axis=1), level)
        for k, lo, hi in zip(keys, lows, highs):
            e = ests[k]
            rows.append(
                {
                    "model": model,
                    "dataset": result.name,
                    "metric": k[0],
                    "label_count": k[1],
                    "value_pct": e.value_pct,
                    "n": e.n,
                    "ci_low_pct": float(lo),
                    "ci_high_pct": float(hi),
                }
            )
    return rows


def metrics_table(rows: list[dict[str, Any]]):
    import pyarrow as pa

    schema = pa.schema(
        [
            ("model", pa.string()),
            ("dataset", pa.string()),
            ("metric", pa.string()),
            ("label_count", pa.int64()),
            ("value_pct", pa.float64()),
            ("n", pa.int64()),
            ("ci_low_pct", pa.float64()),
            ("ci_high_pct", pa.float64()),
        ]
    )
    return pa.Table.from_pylist(rows, schema=schema)


def discover(results: Path) -> list[tuple[Path, list[Path]]]:
    """[(manifest, [predictions files])] for every dataset with predictions, sorted by name."""
    pred_root = results / "predictions"
    if not pred_root.is_dir():
        raise InputError(f"{results}: no predictions/ folder (run `mlreassess infer --results {results}` first)")
    found = []
    for folder in sorted(p for p in pred_root.iterdir() if p.is_dir()):
        preds = sorted(folder.glob("*.parquet"))
        if not preds:
            continue
        manifest = results / "manifests" / f"{folder.name}.parquet"
        if not manifest.exists():
            raise InputError(f"{folder}: predictions without their manifest {manifest}")
        found.append((manifest, preds))
    if not found:
        raise InputError(f"{pred_root}: no predictions files (*.parquet) in any dataset folder")
    return found


def fingerprint(inputs: Iterable[Path], params: dict[str, Any]) -> str:
    """Hash of the input files' names, sizes and modification times, and the parameters."""
    h = hashlib.sha256(json.dumps(params, sort_keys=True).encode())
    for p in sorted(inputs):
        st = p.stat()
        h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def evaluate_results(
    results: str | Path,
    n_boot: int = bs.DEFAULT_RESAMPLES,
    level: float = bs.DEFAULT_LEVEL,
    seed: int = 0,
    force: bool = False,
    out: str | Path | None = None,
) -> tuple[Path, dict[str, Any] | None]:
    """Write RESULTS/metrics.parquet; return (path, summary) — summary None when it was up to date."""
    from tqdm import tqdm

    from mlreassess.io import read_meta, write_table

    results = Path(results)
    out = Path(out) if out else results / METRICS_FILE
    if n_boot < 1:
        raise InputError(f"--bootstrap must be >= 1 (got {n_boot})")
    if not 0 < level < 100:
        raise InputError(f"--ci must be between 0 and 100 (got {level})")
    datasets = discover(results)
    params = {"n_boot": n_boot, "level": level, "seed": seed}
    fp = fingerprint([m for m, _ in datasets] + [p for _, ps in datasets for p in ps], params)
    if out.exists() and not force:
        try:
            if read_meta(out).get("inputs_fingerprint") == fp:
                return out, None
        except InputError:
            pass  # unreadable old output: recompute
    rows, info, patchml = [], {}, []
    total = sum(len(ps) for _, ps in datasets)
    with tqdm(total=total, desc="evaluate", unit="file", file=sys.stderr, disable=None) as bar:
        for manifest, preds in datasets:
            sample = load_sample(manifest)
            res = evaluate_dataset(sample, preds, n_boot, seed, progress=bar.update)
            rows += rows_of(res, level)
            info[res.name] = res.info
            if res.kind == "patchml":
                patchml.append(res)
            del res
    if patchml:
        mean = mean_over_seeds(patchml)
        rows += rows_of(mean, level)
        info[PATCHML_MEAN] = mean.info
    table = metrics_table(rows)
    meta = {"inputs_fingerprint": fp, **params, "ci_method": "stratified percentile bootstrap", "datasets": info}
    write_table(out, table, meta)
    summary = {"rows": table.num_rows, "datasets": info}
    return out, summary
