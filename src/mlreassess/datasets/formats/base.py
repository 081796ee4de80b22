"""What every input format shares: ImageNet val names, references kept inside their root, what a
scan of a copy finds, and which shards a folder holds.

A *format* (one module each: `files`, `parquet`, `webdataset`) knows how to list the images of a
copy (`scan`) and how to read one sample's encoded bytes again from what the manifest records
(`Reader.read`), in a DataLoader worker, with its own open file handles.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
from PIL import Image

from mlreassess.constants import NUM_VAL_IMAGES
from mlreassess.datasets.images import decode_image
from mlreassess.datasets.paths import relative_problem
from mlreassess.errors import InputError, short_repr
from mlreassess.provenance import file_sha256


# ILSVRC2012_val_00000042, optionally with the class's wnid as Hugging Face names its files
# (ILSVRC2012_val_00000042_n01751748), optionally with a suffix (.JPEG).
_VAL_NAME = re.compile(r"ILSVRC2012_val_(\d{8})(?:_(n\d{8}))?")
WNID = re.compile(r"n\d{8}")

# Split names in shard paths (`data/validation-00000-of-00014.parquet`, `imagenet1k-validation-0000.tar`).
VALIDATION_SPLITS = ("validation", "val")
OTHER_SPLITS = ("train", "test")
_TOKEN = re.compile(r"[^A-Za-z0-9]+")


@dataclass(frozen=True)
class ValName:
    """What an ImageNet val file name says: its 1-based image number and, in HF-style names, its wnid."""

    number: int
    wnid: str | None

    @property
    def stem(self) -> str:
        """The sample id every layout gives this image (ReaL, PatchML boxes and predictions use it)."""
        return f"ILSVRC2012_val_{self.number:08d}"


def val_name(name: str | None) -> ValName | None:
    """The val image a file or member name (stem or with suffixes, no folders) is; None if it is none."""
    if not name:
        return None
    m = _VAL_NAME.fullmatch(name.split(".", 1)[0])
    if not m or not 1 <= int(m.group(1)) <= NUM_VAL_IMAGES:
        return None
    return ValName(int(m.group(1)), m.group(2))


def relative_name(name: str, where: str) -> str:
    """`name` as a relative POSIX path that cannot leave the folder it is relative to (the one rule,
    `datasets.paths.relative_problem`, plus no backslash or empty / '.' part: a shard path or tar
    member name is what a manifest records to find an image again, never extracted)."""
    problem = relative_problem(name)
    if problem is None and ("\\" in name or any(part in ("", ".") for part in name.split("/"))):
        problem = "has a backslash or an empty or '.' part"
    if problem is not None:
        raise InputError(f"{where}: {short_repr(name)} {problem}")
    return name


def inside(root: Path, name: str, where: str) -> Path:
    """`root / name` for a relative name a manifest recorded (checked by `relative_name`)."""
    return root / relative_name(name, where)


@dataclass
class Found:
    """One image of a scanned copy, before labels are attached."""

    sample_id: str
    number: int | None  # val image number, None when no name gives it
    where: str  # for messages: the file, or shard and row / member
    label: int | None  # the class the copy itself gives (folder, name, label column, .cls); None: look it up
    columns: dict[str, Any]  # the manifest columns that find it again: path (+ row | member, offset, size)


@dataclass
class Scan:
    """What a format's scan of a copy found."""

    found: list[Found]
    bad: list[tuple[str, str]]  # (where, problem): dropped with --skip-bad
    label_source: str
    meta: dict[str, Any] = field(default_factory=dict)  # format-specific metadata (shards, ...)
    extra_columns: tuple[tuple[str, Any], ...] = ()  # (name, pyarrow type) beyond the core columns
    skipped: list[dict[str, str]] = field(default_factory=list)  # already dropped with --skip-bad (bad lines)


def _split_of(rel: str) -> str | None:
    tokens = {t.lower() for t in _TOKEN.split(rel) if t}
    for split in VALIDATION_SPLITS:
        if split in tokens:
            return "validation"
    return next((s for s in OTHER_SPLITS if s in tokens), None)


def find_shards(root: Path, suffix: str, depth: int = 3) -> list[str]:
    """Relative paths of the `suffix` files under `root` (at most `depth` folders down) of the
    validation split: the files whose path names `validation` or `val` when any does; else all of
    them, unless their paths name the train split or several splits (an error then names them)."""
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")) if len(rel_dir.parts) < depth else []
        found += [(rel_dir / f).as_posix() for f in sorted(filenames) if f.endswith(suffix) and not f.startswith(".")]
    splits = {rel: _split_of(rel) for rel in found}
    val = [rel for rel in found if splits[rel] == "validation"]
    if val:
        return sorted(val)
    named = sorted({s for s in splits.values() if s is not None})
    if "train" in named or len(named) > 1:  # one unnamed or `test` split: CLIP_benchmark's val is `test/`
        raise InputError(f"{root}: no validation shards among its {suffix} files (splits named: "
                         f"{', '.join(named)}); point --root at the validation shards")
    return sorted(found)


def shard_fingerprints(root: Path, shards: list[str]) -> dict[str, str]:
    """{shard: sha256 of its bytes}: a manifest records them, so a changed shard is noticed."""
    return {rel: file_sha256(inside(root, rel, str(root))) for rel in shards}


def check_shards(root: Path, recorded: dict[str, str], where: str) -> None:
    """Raise InputError when a shard a manifest was built from is gone or holds other bytes now."""
    for rel, sha in sorted(recorded.items()):
        path = inside(root, rel, where)
        if not path.is_file():
            raise InputError(f"{where}: shard {path} is gone (the manifest was built from it)")
        if file_sha256(path) != sha:
            raise InputError(f"{where}: shard {path} changed since the manifest was built; rebuild the "
                             "manifest (`mlreassess data imagenet-val`), and its predictions are redone")


class ShardReader:
    """What the shard formats' readers share: row i's shard and member (the name it has in the shard)
    and its decode; a format adds `read(i)` (encoded bytes) and `where(i)`."""

    columns: tuple[tuple[str, Any], ...] = ()  # the format's extra manifest columns and their types

    def __init__(self, root: Path, table: Any, where: str):
        for name, type in (("path", pa.string()), *self.columns):
            if name not in table.column_names or table.schema.field(name).type != type:
                raise InputError(f"{where}: no {type} column {name!r}, which finds each image in its shard "
                                 "(rebuild the manifest with `mlreassess data imagenet-val`)")
        self.root = Path(root)
        self.manifest = where
        self.shards = table.column("path").to_pylist()
        self.members = table.column("member").to_pylist()

    def read(self, i: int) -> bytes:
        raise NotImplementedError

    def where(self, i: int) -> str:
        raise NotImplementedError

    def open(self, i: int) -> Image.Image:
        return decode_image(self.read(i), self.where(i))
