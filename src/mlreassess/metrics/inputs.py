"""Reading and validating what `evaluate` scores: manifests (-> `Sample`) and predictions files.

A dataset's samples are reordered by (label_count, sample_id), so each label-count stratum is one
contiguous block (see `bootstrap`); predictions are matched to them by sample_id, never by position.
What a file must hold to be scored (column types, a softmax's top-k) is checked in `checks`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mlreassess.constants import NUM_CLASSES
from mlreassess.datasets.manifest import read_manifest
from mlreassess.errors import InputError, short_repr
from mlreassess.io import read_meta, read_table
from mlreassess.metrics import bootstrap as bs
from mlreassess.metrics import checks, core
from mlreassess.metrics.aggregate import design_counts, subgroup_counts
from mlreassess.results import ResultsLayout, model_file_name

# PatchML parameters that must agree for seeds to be averaged (everything that shapes a set but its seed).
PATCHML_PARAMS = ("counts", "canvas_size", "min_box_side", "resample", "boxes_sha256", "pool_size")


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
    design: tuple[int, ...]  # label counts ASMA is defined over (V1/V2 1..5, PatchML its patch counts)
    groups: tuple[int, ...]  # label counts present that get subgroup rows
    index: Any = field(repr=False, default=None)  # pandas.Index of sample_ids (fast lookup)
    params: dict[str, Any] = field(default_factory=dict)  # PatchML: PATCHML_PARAMS of the manifest
    per_class: bool = False  # its label set asks for the per-class mean accuracy too (`real_per_class`)

    @property
    def sizes(self) -> dict[int, int]:
        """Samples per label count present (0 included)."""
        return {int(g): int(b - a) for g, (a, b) in zip(self.strata, self.bounds)}


@dataclass
class Prediction:
    model: str
    path: Path | None
    rows: np.ndarray  # positions in Sample order
    topk: np.ndarray  # (len(rows), K) int64
    prob: np.ndarray | None = None  # (len(rows), K) float32 `topk_prob`, when stored
    softmax: np.ndarray | None = None  # (len(rows), 1000) float16, when stored (--save-softmax)


def make_sample(name: str, kind: str, sample_ids, label, labels: core.LabelSets, source: Path | None = None,
                meta: dict[str, Any] | None = None) -> Sample:
    """A Sample from arrays in any order (label -1 = none); reorders by (label_count, sample_id).

    `meta`: the manifest's metadata (PatchML: its `counts` are the design label counts)."""
    meta = meta or {}
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
        design=design_counts(kind, meta.get("counts")),
        groups=subgroup_counts(kind, labels.count),
        index=pd.Index(ids[order]),
        params={k: meta.get(k) for k in PATCHML_PARAMS} if kind == "patchml" else {},
        per_class=bool(meta.get("per_class_metric")),
    )


def manifest_labels(table: pa.Table) -> tuple[np.ndarray, core.LabelSets]:
    """A manifest table's labels in its row order: (label (n,) int64, -1 = none; the label sets)."""
    label = table.column("label").to_numpy(zero_copy_only=False)
    label = np.array([-1 if v is None or v != v else int(v) for v in label], dtype=np.int64)
    lists = table.column("labels").combine_chunks()
    offsets = np.concatenate([[0], np.cumsum(lists.value_lengths().fill_null(0).to_numpy())])
    return label, core.label_sets_from_flat(offsets, lists.flatten().to_numpy())


def load_sample(path: Path) -> Sample:
    """The Sample of a manifest file; its name is the file's stem."""
    manifest = read_manifest(path)
    table = manifest.table
    if table.num_rows == 0:
        raise InputError(f"{path}: the manifest has no samples: nothing to score (remove its predictions folder)")
    ids = table.column("sample_id").to_numpy(zero_copy_only=False)
    label, labels = manifest_labels(table)
    return make_sample(path.stem, manifest.kind, ids, label, labels, source=path, meta=manifest.meta)


# Keys a predictions file's metadata must have to count as a finished output.
REQUIRED_META = ("model", "dataset", "n_samples", "topk")


def incomplete_reason(path: Path, meta: dict[str, Any] | None = None) -> str | None:
    """Why the predictions file `path` is not a finished output (None: it is). The one rule of
    `infer` (which redoes such a file: `writers.is_complete`) and `evaluate` (which refuses it):
    metadata with REQUIRED_META, each key of the right type and range (`checks.prediction_meta_problem`),
    naming the model and dataset its path names, as many rows as its `n_samples`. Writes are atomic, so a file under
    its final name is whole unless something else cut or edited it."""
    try:
        meta = read_meta(path) if meta is None else meta
        rows = pq.read_metadata(path).num_rows
    except Exception as exc:  # not parquet, unreadable: pyarrow raises several types
        return f"not a readable parquet file ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        return f"its metadata lacks {', '.join(missing)}"
    problem = checks.prediction_meta_problem(meta)
    if problem is not None:
        return problem
    if _file_stem(meta["model"]) != path.stem or meta["dataset"] != path.parent.name:
        return (f"its metadata says model {short_repr(meta['model'])} on dataset {short_repr(meta['dataset'])}, "
                f"not what its path says ({path.parent.name}/{path.name})")
    if rows != meta["n_samples"]:
        return f"it holds {rows} rows, its metadata says {short_repr(meta['n_samples'])} (cut short or edited)"
    return None


def _file_stem(model: str) -> str | None:
    try:
        return model_file_name(model)
    except InputError:  # not printable: no file of ours is named after it
        return None


def load_prediction(path: Path, sample: Sample) -> Prediction:
    """A predictions file, checked against `sample` (dataset, sample ids, top-k shape and range)."""
    meta = read_meta(path)
    why = incomplete_reason(path, meta)
    if why is not None:
        raise InputError(f"{path}: not a finished predictions file: {why} "
                         "(`mlreassess infer` redoes it; or remove it)")
    if meta["dataset"] != sample.name:
        raise InputError(f"{path}: predictions are for dataset {short_repr(meta['dataset'])}, but sit under {sample.name!r}")
    table = read_table(path)
    checks.check_prediction_types(path, table)
    if table.num_rows == 0:
        raise InputError(f"{path}: holds no predictions (0 rows); rerun `mlreassess infer` for it, or remove it")
    ids = table.column("sample_id").to_numpy(zero_copy_only=False)
    rows = _sample_rows(path, sample, ids)
    topk, prob = _read_topk(path, table, ids)
    softmax = _read_softmax(path, table, ids) if "softmax" in table.column_names else None
    return Prediction(model=meta.get("model") or path.stem, path=path, rows=rows, topk=topk, prob=prob,
                      softmax=softmax)


def _sample_rows(path: Path, sample: Sample, ids: np.ndarray) -> np.ndarray:
    """Positions of `ids` in Sample order; every id must be in the manifest, once."""
    rows = sample.index.get_indexer(ids).astype(np.int64)
    if (rows < 0).any():
        bad = ids[int(np.flatnonzero(rows < 0)[0])]
        raise InputError(f"{path}: sample {bad!r} is not in the manifest {sample.source}")
    if len(np.unique(rows)) != len(rows):
        raise InputError(f"{path}: duplicate sample_id rows")
    return rows


def _read_topk(path: Path, table: pa.Table, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(n, K) int64 top-k classes, checked to be a softmax's top-k (`checks`), tied probabilities
    ordered by class index (`core.canonical_topk`), and their (n, K) float32 probabilities if stored
    (reordering within a tie leaves the probabilities as they are)."""
    topk = _list_matrix(table.column("topk_idx"), path, "topk_idx", np.int64)
    checks.check_topk_classes(path, ids, topk)
    prob = None
    if "topk_prob" in table.column_names:
        prob = _list_matrix(table.column("topk_prob"), path, "topk_prob", np.float32)
        if prob.shape != topk.shape:
            raise InputError(f"{path}: topk_prob has shape {prob.shape} but topk_idx has {topk.shape}")
        checks.check_topk_probs(path, ids, prob)
        topk = core.canonical_topk(topk, prob)
    return topk, prob


def _read_softmax(path: Path, table: pa.Table, ids: np.ndarray) -> np.ndarray:
    """(n, 1000) float16 full softmax (--save-softmax), checked (`checks.check_softmax`)."""
    column = table.column("softmax").combine_chunks()
    values = column.flatten().to_numpy(zero_copy_only=False)
    if len(column) and values.size != len(column) * NUM_CLASSES:
        raise InputError(f"{path}: softmax rows must hold {NUM_CLASSES} probabilities each")
    softmax = values.reshape(len(column), NUM_CLASSES)
    checks.check_softmax(path, ids, softmax)
    return softmax


def _list_matrix(column, path: Path, name: str, dtype) -> np.ndarray:
    arr = column.combine_chunks()
    lengths = arr.value_lengths().fill_null(0).to_numpy()
    if len(lengths) and (lengths != lengths[0]).any():
        raise InputError(f"{path}: {name} lists have different lengths ({lengths.min()}..{lengths.max()})")
    k = int(lengths[0]) if len(lengths) else 0
    return arr.flatten().to_numpy(zero_copy_only=False).astype(dtype).reshape(len(lengths), k)


def discover(layout: ResultsLayout, only: list[str] | None = None) -> list[tuple[Path, list[Path]]]:
    """[(manifest, [predictions files])] for every dataset with predictions (of those named in `only`,
    when given: a study's own datasets), sorted by name (none when the predictions folder holds no
    predictions file: every one was removed or retired)."""
    pred_root = layout.predictions_dir
    if not pred_root.is_dir():
        raise InputError(
            f"{layout.root}: no {pred_root.name}/ folder (run `mlreassess infer --out {layout.root}` first)"
        )
    found = []
    for folder in sorted(p for p in pred_root.iterdir() if p.is_dir() and (only is None or p.name in only)):
        preds = layout.files(layout.predictions_of(folder.name), "*.parquet")
        if not preds:
            continue
        manifest = layout.manifest_copy(folder.name)
        if not manifest.exists():
            raise InputError(f"{folder}: predictions without their manifest {manifest}")
        found.append((manifest, preds))
    return found
