"""Atomic parquet output with JSON metadata: partial files never look complete.

Every table this tool writes carries its provenance (parameters, seed, versions, time) as JSON
under one schema-metadata key, so a file alone says how it was made.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from mlreassess.constants import MANIFEST_KINDS
from mlreassess.errors import InputError

META_KEY = b"mlreassess"


# The temporary files of `atomic_path`: `.<name>.<32 hex digits>.tmp`.
_TMP_NAME = re.compile(r"^\..+\.[0-9a-f]{32}\.tmp$")


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    The temporary file is created with mode 0o666 and the kernel applies the process umask, so
    outputs get the same permissions as any other new file (outputs are shared data). A process
    killed mid-write (kill -9, power loss) leaves it behind: `remove_stale_tmp` clears them.
    """
    path = Path(path)
    tmp_path = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        yield tmp_path
        os.replace(tmp_path, path)
    except OSError as exc:
        # A full disk or a read-only folder raises without a file name: say which output it hit.
        raise InputError(f"{path}: cannot write it ({exc.strerror or exc})") from None
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def remove_stale_tmp(folder: str | os.PathLike) -> int:
    """Remove the temporary files `atomic_path` left in `folder` (not below it) when its process died;
    returns how many. Call it only while holding the folder's lock (`locks.folder_lock`): a live
    writer's temporary file looks the same."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    gone = 0
    for entry in os.scandir(folder):
        if _TMP_NAME.match(entry.name) and entry.is_file(follow_symlinks=False):
            Path(entry.path).unlink(missing_ok=True)
            gone += 1
    return gone


def read_text(path: str | os.PathLike) -> str:
    """A UTF-8 text file's content; InputError naming the file when it is not UTF-8 text (a binary
    file, another encoding), instead of a decoder error that names no file. A byte-order mark is
    dropped (harmless; some editors write one)."""
    path = Path(path)
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})") from None


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_table(path: str | os.PathLike, table: pa.Table, meta: dict[str, Any] | None = None) -> None:
    """Write `table` to `path` atomically, with `meta` stored as JSON in the schema metadata.

    Written deterministically (no creation timestamps from pyarrow itself) so identical inputs
    give byte-identical files.
    """
    check_replaceable(path, output_kind(meta or {}))
    if meta is not None:
        existing = dict(table.schema.metadata or {})
        existing[META_KEY] = json.dumps(meta, sort_keys=True).encode()
        table = table.replace_schema_metadata(existing)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd", write_statistics=True)


PREDICTIONS, METRICS = "predictions", "metrics"  # output kinds (`output_kind`)


def manifest_kind(kind: str) -> str:
    """The output kind of a manifest of `kind` (imagenet_v1, imagenet_v2, patchml)."""
    return f"{'an' if kind[:1] in 'aeiou' else 'a'} {kind} manifest"


def output_kind(meta: dict[str, Any]) -> str:
    """What an mlreassess parquet file is, by its metadata: 'a <kind> manifest', 'predictions',
    'metrics' or 'an mlreassess table'. An output replaces only a file of its own kind."""
    if meta.get("kind") in MANIFEST_KINDS:
        return manifest_kind(meta["kind"])
    if "topk" in meta and "model" in meta:
        return PREDICTIONS
    if isinstance(meta.get("datasets"), dict):  # evaluate's per-dataset record
        return METRICS
    return "an mlreassess table"


def check_replaceable(path: str | os.PathLike, kind: str) -> None:
    """An existing file is replaced only if this tool wrote it, as an output of the same kind
    (`output_kind`): an output path that names one of the inputs (`--out ROOT/LOC_val_solution.csv`,
    `evaluate --out RESULTS/manifests/v1.parquet`) must not destroy it. Writers call it before any work."""
    path = Path(path)
    if not path.exists():
        return
    try:
        raw = (pq.read_schema(path).metadata or {}).get(META_KEY)
        old = json.loads(raw) if raw else None
    except Exception:  # not parquet at all, or its metadata is not JSON
        old = None
    if not isinstance(old, dict):
        raise InputError(f"{path}: exists and is not an mlreassess output; refusing to replace it (choose another output path)")
    was = output_kind(old)
    if was != kind:
        raise InputError(f"{path}: holds {was}; refusing to replace it with {kind} (choose another output path)")


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON metadata of a parquet file written by `write_table` ({} if it has none)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    try:
        schema = pq.read_schema(path)
    except Exception as exc:  # pyarrow raises several types for non-parquet files
        raise InputError(f"{path}: not a readable parquet file ({exc})") from None
    raw = (schema.metadata or {}).get(META_KEY)
    if not raw:
        return {}
    try:
        meta = json.loads(raw)
    except ValueError:  # not JSON, or not UTF-8
        raise InputError(f"{path}: its mlreassess metadata is not valid JSON") from None
    if not isinstance(meta, dict):
        raise InputError(f"{path}: its mlreassess metadata is {type(meta).__name__}, not a JSON object")
    return meta


def read_table(path: str | os.PathLike, columns: list[str] | None = None) -> pa.Table:
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    try:
        return pq.read_table(path, columns=columns)
    except Exception as exc:
        raise InputError(f"{path}: not a readable parquet file ({exc})") from None
