"""Dataset manifests: one parquet row per sample, the same core columns for every dataset.

Core columns (SPEC 1):
  sample_id   str            unique within the dataset; predictions are joined on it
  path        str | null     image path relative to the manifest's `root` (null for PatchML canvases)
  label       int64 | null   original single label 0..999
  labels      list<int64>    multi-label ground truth (sorted, unique; may be empty)
  label_count int64          len(labels)

A dataset kind may add columns (PatchML adds its placements). The file's metadata (see
`mlreassess.io`) holds at least:
  kind     "imagenet_v1" | "imagenet_v2" | "patchml"
  dataset  the dataset's name: predictions go to RESULTS/predictions/<dataset>/<model>.parquet
  root     absolute folder that `path` is relative to (PatchML: the source images' folder, may be null)
  plus whatever parameters made it (seed, variant, label source, ...).
The parquet itself holds nothing time- or machine-dependent, so the same inputs give a
byte-identical file; when and how long it took go to a sidecar `<name>.provenance.json`.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mlreassess.constants import MANIFEST_KINDS, NUM_CLASSES, VERSION
from mlreassess.datasets.paths import check_path_column
from mlreassess.datasets.placements import validate_patchml
from mlreassess.errors import InputError, short_repr
from mlreassess.io import read_meta, read_table, write_table, write_text_atomic

KINDS = MANIFEST_KINDS
CORE_COLUMNS = ("sample_id", "path", "label", "labels", "label_count")

CORE_SCHEMA = pa.schema(
    [
        pa.field("sample_id", pa.string(), nullable=False),
        pa.field("path", pa.string()),
        pa.field("label", pa.int64()),
        pa.field("labels", pa.list_(pa.int64())),
        pa.field("label_count", pa.int64()),
    ]
)


@dataclass
class Manifest:
    table: pa.Table
    meta: dict[str, Any] = field(default_factory=dict)
    source: Path | None = None  # file it was read from

    @property
    def kind(self) -> str:
        return self.meta["kind"]

    @property
    def name(self) -> str:
        return self.meta["dataset"]

    @property
    def root(self) -> Path | None:
        root = self.meta.get("root")
        return Path(root) if root else None

    def __len__(self) -> int:
        return self.table.num_rows

    @property
    def sample_ids(self) -> list[str]:
        return self.table.column("sample_id").to_pylist()


def core_table(
    sample_ids: list[str],
    paths: list[str | None],
    labels_single: list[int | None],
    labels_multi: list[Iterable[int]],
    extra: dict[str, pa.Array] | None = None,
) -> pa.Table:
    """Build a manifest table in sorted `sample_id` order, normalising `labels` to sorted unique."""
    multi = [sorted({int(x) for x in ls}) for ls in labels_multi]
    order = sorted(range(len(sample_ids)), key=sample_ids.__getitem__)
    columns: dict[str, Any] = {
        "sample_id": pa.array([sample_ids[i] for i in order], pa.string()),
        "path": pa.array([paths[i] for i in order], pa.string()),
        "label": pa.array([labels_single[i] for i in order], pa.int64()),
        "labels": pa.array([multi[i] for i in order], pa.list_(pa.int64())),
        "label_count": pa.array([len(multi[i]) for i in order], pa.int64()),
    }
    table = pa.table(columns, schema=CORE_SCHEMA)
    for name, arr in (extra or {}).items():
        table = table.append_column(name, arr.take(pa.array(order)))
    return table


def validate(table: pa.Table, where: str, meta: dict[str, Any] | None = None) -> None:
    """Raise InputError naming `where` if `table` is not a valid manifest: core columns and types,
    unique ids, labels in range, `labels` sorted and unique with `label_count` its length, paths
    inside the root (`datasets.paths`); with `meta` of a PatchML set, its placements too
    (`datasets.placements`)."""
    missing = [c for c in CORE_COLUMNS if c not in table.column_names]
    if missing:
        raise InputError(f"{where}: not an mlreassess manifest (missing columns: {', '.join(missing)})")
    for expected in CORE_SCHEMA:
        actual = table.schema.field(expected.name).type
        all_null = expected.nullable and pa.types.is_null(actual)  # e.g. no sample has a single label
        if actual != expected.type and not all_null:  # e.g. labels stored as strings by hand-made tooling
            raise InputError(f"{where}: column {expected.name!r} is {actual}, expected {expected.type}")
    _check_ids(table, where)
    _check_range(table, "label", where)
    _check_label_sets(table, where)
    _check_range(table, "labels", where)
    check_path_column(table, where)
    if meta is not None and meta.get("kind") == "patchml":
        validate_patchml(table, meta, where)


def _check_ids(table: pa.Table, where: str) -> None:
    """Sample ids unique (vectorised: a manifest of 400k rows is checked in milliseconds)."""
    ids = table.column("sample_id")
    if ids.null_count:
        raise InputError(f"{where}: row {ids.to_pylist().index(None)}: sample_id is null")
    if pc.count_distinct(ids, mode="all").as_py() == len(ids):
        return
    counts = pc.value_counts(ids)
    dup = min(v["values"] for v in counts.to_pylist() if v["counts"] > 1)
    raise InputError(f"{where}: duplicate sample_id {dup!r}")


def _check_range(table: pa.Table, column: str, where: str) -> None:
    """Every class index of `column` (label, or the items of labels) in 0..NUM_CLASSES-1."""
    col = table.column(column)
    values = pc.list_flatten(col) if column == "labels" else col
    if len(values) == 0 or pa.types.is_null(values.type):
        return
    bad = pc.or_(pc.less(values, 0), pc.greater_equal(values, NUM_CLASSES))
    if not pc.any(bad).as_py():
        return
    ids = table.column("sample_id").to_pylist()
    for sid, v in zip(ids, col.to_pylist()):  # only on failure: name the first bad sample
        items = v if column == "labels" else ([] if v is None else [v])
        if any(not 0 <= x < NUM_CLASSES for x in items):
            what = f"labels {short_repr(v)}" if column == "labels" else f"label {v}"
            raise InputError(f"{where}: sample {short_repr(sid)}: {what} out of range 0..{NUM_CLASSES - 1}")


def _check_label_sets(table: pa.Table, where: str) -> None:
    """`labels`: no null list or item, sorted and unique, and `label_count` its length; vectorised,
    with the first bad sample named only on failure."""
    labels, counts = table.column("labels").combine_chunks(), table.column("label_count").combine_chunks()
    lengths = pc.fill_null(pc.list_value_length(labels), -1).to_numpy(zero_copy_only=False)
    flat = pc.list_flatten(labels)
    ok = labels.null_count == 0 and flat.null_count == 0
    if ok and len(flat):
        values = flat.to_numpy(zero_copy_only=False)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        rising = np.diff(values) > 0
        rising[starts[(lengths > 0) & (starts > 0)] - 1] = True  # a list's first item vs the previous list's last
        ok = bool(rising.all())
    ok = ok and np.array_equal(lengths, pc.fill_null(counts, -2).to_numpy(zero_copy_only=False))
    if ok:
        return
    ids = table.column("sample_id").to_pylist()
    for sid, ls, n in zip(ids, labels.to_pylist(), counts.to_pylist()):
        if ls is None or any(x is None for x in ls):
            raise InputError(f"{where}: sample {short_repr(sid)}: labels {short_repr(ls)} holds a null")
        if ls != sorted(set(ls)) or n != len(ls):
            raise InputError(f"{where}: sample {short_repr(sid)}: labels {short_repr(ls)} with label_count {n}: "
                             "labels must be sorted, unique, and label_count their number")


def base_meta(kind: str, dataset: str, root: str | os.PathLike | None, **params: Any) -> dict[str, Any]:
    if kind not in KINDS:
        raise ValueError(f"unknown manifest kind {kind!r}")
    return {
        "kind": kind,
        "dataset": dataset,
        "root": str(Path(root).resolve()) if root is not None else None,
        "mlreassess_version": VERSION,
        **params,
    }


def provenance_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path.with_name(path.stem + ".provenance.json")


def write_manifest(
    path: str | os.PathLike, table: pa.Table, meta: dict[str, Any], elapsed_s: float | None = None
) -> None:
    """Validate and write a manifest atomically, plus its provenance sidecar (time, elapsed)."""
    validate(table, str(path), meta)
    write_table(path, table, meta)
    provenance = {
        **meta,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "elapsed_s": None if elapsed_s is None else round(elapsed_s, 3),
        "rows": table.num_rows,
    }
    write_text_atomic(provenance_path(path), json.dumps(provenance, indent=2, sort_keys=True) + "\n")


def read_manifest(path: str | os.PathLike) -> Manifest:
    path = Path(path)
    meta = read_meta(path)
    table = read_table(path)
    if meta.get("kind") not in KINDS or "dataset" not in meta:
        raise InputError(f"{path}: not an mlreassess manifest (no kind/dataset in its metadata)")
    if not isinstance(meta["dataset"], str) or (meta.get("root") is not None and not isinstance(meta["root"], str)):
        raise InputError(f"{path}: dataset {short_repr(meta['dataset'])} and root {short_repr(meta.get('root'))} "
                         "in its metadata must be strings")
    validate(table, str(path), meta)
    return Manifest(table=table, meta=meta, source=path)


def label_count_distribution(table: pa.Table) -> dict[int, int]:
    """{label count: number of samples}, ascending by label count (Table 1's rows)."""
    counts: dict[int, int] = {}
    for c in table.column("label_count").to_pylist():
        counts[c] = counts.get(c, 0) + 1
    return dict(sorted(counts.items()))
