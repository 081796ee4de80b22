"""The inference outputs (docs/architecture.md, "Predictions"): schema, completeness, failures.
Their paths come from `mlreassess.results.ResultsLayout`.

RESULTS/predictions/<dataset>/<model>.parquet   sample_id, topk_idx, topk_prob [, softmax]
RESULTS/manifests/<dataset>.parquet             the manifest the predictions were made from
RESULTS/failures.jsonl                          one JSON line per failed (model, dataset)
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from mlreassess.datasets.manifest import Manifest, read_manifest
from mlreassess.errors import InputError
from mlreassess.inference.input.preprocess import Preprocess
from mlreassess.io import read_meta, read_table, write_table, write_text_atomic
from mlreassess.metrics.inputs import incomplete_reason
from mlreassess.options import InferOptions, result_options
from mlreassess.provenance import canonical, changed, fingerprint
from mlreassess.results import ResultsLayout

log = logging.getLogger(__name__)

def is_complete(path: str | os.PathLike) -> bool:
    """True for a finished predictions file (`metrics.inputs.incomplete_reason`, the rule evaluate
    applies too). Writes are atomic (temp file + rename), so a file under the final name is whole
    unless something else damaged it: then it is redone."""
    path = Path(path)
    return path.is_file() and incomplete_reason(path) is None


def predictions_table(
    sample_ids: list[str], topk_idx: np.ndarray, topk_prob: np.ndarray, softmax: np.ndarray | None = None
) -> pa.Table:
    """Rows sorted by sample_id; top-k as list<int32> / list<float32>, softmax as fixed-size float16."""
    n, k = topk_idx.shape if topk_idx.ndim == 2 else (0, 0)
    order = np.argsort(np.asarray(sample_ids, dtype=object), kind="stable") if n else np.zeros(0, dtype=np.int64)
    offsets = pa.array(np.arange(n + 1, dtype=np.int32) * k)
    columns = {
        "sample_id": pa.array([sample_ids[i] for i in order], pa.string()),
        "topk_idx": pa.ListArray.from_arrays(offsets, pa.array(np.ascontiguousarray(topk_idx[order], np.int32).ravel())),
        "topk_prob": pa.ListArray.from_arrays(offsets, pa.array(np.ascontiguousarray(topk_prob[order], np.float32).ravel())),
    }
    if softmax is not None:
        flat = pa.array(np.ascontiguousarray(softmax[order], np.float16).ravel(), pa.float16())
        columns["softmax"] = pa.FixedSizeListArray.from_arrays(flat, softmax.shape[1])
    return pa.table(columns)


def write_predictions(path: str | os.PathLike, table: pa.Table, meta: dict[str, Any]) -> None:
    write_table(path, table, {**meta, "n_samples": table.num_rows})


def read_predictions(path: str | os.PathLike) -> tuple[pa.Table, dict[str, Any]]:
    return read_table(path), read_meta(path)


def record_failure(layout: ResultsLayout, model: str, dataset: str, error: str, **extra: Any) -> None:
    """Append one line to RESULTS/failures.jsonl (one write call: lines from ranks never interleave)."""
    path = layout.failures
    path.parent.mkdir(parents=True, exist_ok=True)
    entry = {
        "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "model": model,
        "dataset": dataset,
        "error": error,
        **extra,
    }
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, (json.dumps(entry, sort_keys=True) + "\n").encode())
        finally:
            os.close(fd)
    except OSError as exc:  # a full disk names no file by itself
        raise InputError(f"{path}: cannot write it ({exc.strerror or exc})") from None


def _content(table: pa.Table) -> pa.Table:
    """A manifest's rows without metadata, in sample_id order: the same samples in another row order
    are the same manifest."""
    table = table.replace_schema_metadata(None)
    return table.sort_by("sample_id") if "sample_id" in table.column_names else table


# What the labels of a manifest are: evaluate reads them, the predictions do not depend on them.
LABEL_COLUMNS = ("label", "labels", "label_count", "patch_labels")
# Manifest metadata that changes the pixels of PatchML canvases.
PIXEL_META = ("canvas_size", "resample", "source_pattern")
# Manifest metadata naming the bytes its samples are read from (each shard's sha256, of its own shards
# or of a PatchML set's source manifest): hashed only when present, so manifests of image files keep
# the digest their predictions recorded.
SOURCE_META = ("shards", "source_shards")


def pixels_sha256(manifest: Manifest) -> str:
    """sha256 of what a manifest's predictions depend on: its samples and how their pixels are made
    (ids, paths, PatchML placements and resize), not its labels, so a relabelled dataset (another
    ReaL file) is re-evaluated without running every model again."""
    table = _content(manifest.table)
    table = table.drop_columns([c for c in LABEL_COLUMNS if c in table.column_names])
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table.combine_chunks())
    digest = hashlib.sha256(sink.getvalue().to_pybytes())
    digest.update(json.dumps({k: manifest.meta.get(k) for k in PIXEL_META}, sort_keys=True).encode())
    sources = {k: manifest.meta[k] for k in SOURCE_META if manifest.meta.get(k)}
    if sources:  # a changed shard (a rebuilt manifest) redoes the predictions
        digest.update(json.dumps(sources, sort_keys=True).encode())
    return digest.hexdigest()


def recipe(spec_weights: str, opts: InferOptions, prep: Preprocess, pixels: str,
           model_entries: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a predictions file depends on: its manifest's samples (`pixels_sha256`), the weights (and
    their bytes), the options that change results, the preprocessing resolved from the model's config,
    and what else its model source says the model depends on (`models.recipe_entries`)."""
    options = {k: v for k, v in result_options(opts).items() if k != "weights"}
    is_file = spec_weights.startswith("file:")
    if not is_file:
        options.pop("checkpoint_key")  # it only picks an entry of a file checkpoint
    return canonical({
        **options,
        "weights": spec_weights,
        "weights_sha256": fingerprint(Path(spec_weights[len("file:") :]).expanduser()) if is_file else None,
        "input_size": [prep.height, prep.width],
        "interpolation": prep.interpolation,
        "crop_pct": prep.crop_pct,
        "samples_sha256": pixels,
        **(model_entries or {}),
    })


# Recipe entries added after outputs were first written, with the value every older output had
# (so those outputs stay valid).
RECIPE_DEFAULTS = {"decode": "cpu"}


def stale_reason(path: Path, wanted: dict[str, Any]) -> str | None:
    """Why the complete predictions file `path` must be redone (None: it is up to date)."""
    old = read_meta(path).get("recipe")
    old = {**RECIPE_DEFAULTS, **old} if old else old
    return changed(old, wanted, first=("weights", "weights_sha256", "samples_sha256"))


def retire(path: Path, retired: Path) -> None:
    """Move a stale predictions file out of the predictions tree (to `retired`) before it is redone,
    so evaluate never reads it as current; a rename, atomic on one filesystem."""
    retired.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(path, retired)
    except OSError as exc:
        raise InputError(f"{path}: cannot move the stale predictions out of the way ({exc.strerror or exc})") from None


def drop_retired(retired: Path) -> None:
    """The retired copy of an output that has now been redone is history."""
    try:
        retired.unlink()
    except FileNotFoundError:
        return
    for folder in (retired.parent, retired.parent.parent):
        try:
            folder.rmdir()  # only when empty
        except OSError:
            break


def prune_failures(layout: ResultsLayout) -> int:
    """Drop failures.jsonl entries of units whose predictions now exist; returns how many went."""
    path = layout.failures
    if not path.is_file():
        return 0
    lines = path.read_text().splitlines()
    keep = [ln for ln in lines if not _fixed(ln, layout)]
    if len(keep) < len(lines):
        if keep:
            write_text_atomic(path, "".join(ln + "\n" for ln in keep))
        else:
            path.unlink()
    return len(lines) - len(keep)


def _fixed(line: str, layout: ResultsLayout) -> bool:
    try:
        entry = json.loads(line)
        return is_complete(layout.prediction(entry["dataset"], entry["model"]))
    except (ValueError, KeyError, TypeError, InputError):
        return False  # keep what cannot be read: a person may want to see it


def check_manifest_copy(layout: ResultsLayout, manifest: Manifest) -> str:
    """What RESULTS/manifests/<dataset>.parquet holds for `manifest`: "same" (its rows and sources),
    "absent", "relabelled" (the same samples with other labels: the copy is to be replaced, and every
    prediction of the dataset still stands) or "new sources" (the same rows, whose pixels now come
    from other bytes, e.g. a shard rebuilt: the copy is replaced, the recipes redo the predictions).

    A copy with other samples means two different datasets share a name: their predictions would mix.
    """
    path = layout.manifest_copy(manifest.name)
    if not path.exists():
        return "absent"
    existing = read_manifest(path)
    if _content(existing.table).equals(_content(manifest.table)):
        return "same" if pixels_sha256(existing) == pixels_sha256(manifest) else "new sources"
    if pixels_sha256(existing) == pixels_sha256(manifest):
        return "relabelled"
    raise InputError(
        f"{manifest.source}: dataset name {manifest.name!r} is already used in {path} by a manifest with "
        f"other samples; give this one another name (`--name` when building it) or use another --out"
    )


def write_manifest_copy(layout: ResultsLayout, manifest: Manifest) -> None:
    meta = {**manifest.meta, "copied_from": str(manifest.source) if manifest.source else None}
    write_table(layout.manifest_copy(manifest.name), manifest.table, meta)
