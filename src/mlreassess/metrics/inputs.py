"""Reading and validating what `evaluate` scores: manifests (-> `Sample`) and predictions files.

A dataset's samples are reordered by (label_count, sample_id), so each label-count stratum is one
contiguous block (see `bootstrap`); predictions are matched to them by sample_id, never by position.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from mlreassess.constants import NUM_CLASSES
from mlreassess.datasets.manifest import read_manifest
from mlreassess.errors import InputError
from mlreassess.io import read_meta, read_table
from mlreassess.metrics import bootstrap as bs
from mlreassess.metrics import core
from mlreassess.metrics.aggregate import asma_range
from mlreassess.results import ResultsLayout


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
    path: Path | None
    rows: np.ndarray  # positions in Sample order
    topk: np.ndarray  # (len(rows), K) int64


def make_sample(name: str, kind: str, sample_ids, label, labels: core.LabelSets, source: Path | None = None) -> Sample:
    """A Sample from arrays in any order (label -1 = none); reorders by (label_count, sample_id)."""
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
    """The Sample of a manifest file; its name is the file's stem."""
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
    """A predictions file, checked against `sample` (dataset, sample ids, top-k shape and range)."""
    meta = read_meta(path)
    if meta.get("dataset") not in (None, sample.name):
        raise InputError(f"{path}: predictions are for dataset {meta['dataset']!r}, but sit under {sample.name!r}")
    table = read_table(path)
    for col in ("sample_id", "topk_idx"):
        if col not in table.column_names:
            raise InputError(f"{path}: not a predictions file (no {col!r} column)")
    ids = table.column("sample_id").to_numpy(zero_copy_only=False)
    rows = _sample_rows(path, sample, ids)
    topk = _read_topk(path, table)
    _check_class_range(path, ids, topk)
    return Prediction(model=meta.get("model") or path.stem, path=path, rows=rows, topk=topk)


def _sample_rows(path: Path, sample: Sample, ids: np.ndarray) -> np.ndarray:
    """Positions of `ids` in Sample order; every id must be in the manifest, once."""
    rows = sample.index.get_indexer(ids).astype(np.int64)
    if (rows < 0).any():
        bad = ids[int(np.flatnonzero(rows < 0)[0])]
        raise InputError(f"{path}: sample {bad!r} is not in the manifest {sample.source}")
    if len(np.unique(rows)) != len(rows):
        raise InputError(f"{path}: duplicate sample_id rows")
    return rows


def _read_topk(path: Path, table: pa.Table) -> np.ndarray:
    """(n, K) int64 top-k classes, tied probabilities ordered by class index (`core.canonical_topk`)."""
    topk = _list_matrix(table.column("topk_idx"), path, "topk_idx", np.int64)
    if "topk_prob" in table.column_names:
        prob = _list_matrix(table.column("topk_prob"), path, "topk_prob", np.float32)
        if prob.shape != topk.shape:
            raise InputError(f"{path}: topk_prob has shape {prob.shape} but topk_idx has {topk.shape}")
        topk = core.canonical_topk(topk, prob)
    return topk


def _check_class_range(path: Path, ids: np.ndarray, topk: np.ndarray) -> None:
    bad = (topk < 0) | (topk >= NUM_CLASSES)
    if len(topk) and bad.any():
        i = int(np.flatnonzero(bad.any(axis=1))[0])
        raise InputError(f"{path}: sample {ids[i]!r}: class index out of range 0..{NUM_CLASSES - 1} in topk_idx")


def _list_matrix(column, path: Path, name: str, dtype) -> np.ndarray:
    arr = column.combine_chunks()
    lengths = arr.value_lengths().fill_null(0).to_numpy()
    if len(lengths) and (lengths != lengths[0]).any():
        raise InputError(f"{path}: {name} lists have different lengths ({lengths.min()}..{lengths.max()})")
    k = int(lengths[0]) if len(lengths) else 0
    return arr.flatten().to_numpy(zero_copy_only=False).astype(dtype).reshape(len(lengths), k)


def discover(layout: ResultsLayout) -> list[tuple[Path, list[Path]]]:
    """[(manifest, [predictions files])] for every dataset with predictions, sorted by name."""
    pred_root = layout.predictions_dir
    if not pred_root.is_dir():
        raise InputError(
            f"{layout.root}: no {pred_root.name}/ folder (run `mlreassess infer --results {layout.root}` first)"
        )
    found = []
    for folder in sorted(p for p in pred_root.iterdir() if p.is_dir()):
        preds = sorted(layout.predictions_of(folder.name).glob("*.parquet"))
        if not preds:
            continue
        manifest = layout.manifest_copy(folder.name)
        if not manifest.exists():
            raise InputError(f"{folder}: predictions without their manifest {manifest}")
        found.append((manifest, preds))
    if not found:
        raise InputError(f"{pred_root}: no predictions files (*.parquet) in any dataset folder")
    return found
