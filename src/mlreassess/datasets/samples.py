"""How a manifest's samples are read again, whatever the input format (`datasets.formats`: image
files, Hugging Face parquet shards, WebDataset tars), and where PatchML finds its source images
(a folder of files, or a V1 manifest of any format, by sample id).

`reader(manifest)` is what inference (`image_opener`, `--decode gpu`), `--verify-images` and the
PatchML patch cache and renderer call; each DataLoader worker builds its own (open files stay
per process).
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import pyarrow as pa
from PIL import Image

from mlreassess.constants import PATCHML_DEFAULT_SOURCE_PATTERN
from mlreassess.datasets.formats import files, parquet, webdataset
from mlreassess.datasets.formats.base import check_shards
from mlreassess.datasets.images import encoded_size, image_size, open_image
from mlreassess.datasets.manifest import Manifest, read_manifest
from mlreassess.datasets.skip import raise_or_skip
from mlreassess.errors import InputError
from mlreassess.progress import bar

# The format modules by name (`constants.INPUT_FORMATS`, the options' choices, names the same).
FORMATS = {m.NAME: m for m in (files, parquet, webdataset)}


def format_of(manifest: Manifest) -> Any:
    """The format module of a manifest (`files` for manifests written before formats had a name)."""
    name = manifest.meta.get("format", files.NAME)
    if name not in FORMATS:
        raise InputError(f"{manifest.source}: unknown input format {name!r} (a newer mlreassess?)")
    return FORMATS[name]


def reader(manifest: Manifest) -> Any:
    """The sample reader of an image manifest: `read(i)` (encoded bytes), `open(i)` (RGB PIL
    image), `where(i)` (the file, or shard and row / member, for messages)."""
    if manifest.root is None:
        raise InputError(f"{manifest.source}: manifest has no image root in its metadata (rebuild it with `mlreassess data`)")
    where = str(manifest.source) if manifest.source is not None else manifest.name
    return format_of(manifest).Reader(manifest.root, manifest.table, where)


def check_sources(manifest: Manifest) -> None:
    """Before any work: the shards a manifest (or a PatchML manifest's source manifest) was built
    from are still there with the same bytes (sha256; each shard hashed once per process)."""
    where = str(manifest.source) if manifest.source is not None else manifest.name
    if manifest.meta.get("shards"):
        check_shards(Path(manifest.meta["root"]), manifest.meta["shards"], where)
    source = manifest.meta.get("source_manifest")
    if source and Path(source).is_file():
        check_sources(read_manifest(source))


def verify_manifest_images(manifest: Manifest, skip_bad: bool = False, progress: bool = True) -> Manifest:
    """Decode every image of an image manifest; raise on the first unreadable one unless `skip_bad`.

    Returns the manifest without the unreadable images, which are appended to `meta["skipped"]`.
    Costs a full decode per image (minutes for 50,000), so builders only do it on request.
    """
    if manifest.root is None:
        raise InputError(f"manifest {manifest.name!r} has no image root to verify")
    read = reader(manifest)
    ids = manifest.sample_ids
    bad, keep = [], []
    for i in bar(range(len(manifest)), desc=f"decoding {manifest.name}", unit="img", enabled=progress):
        try:
            read.open(i)
        except InputError as exc:
            bad.append((f"sample {ids[i]}", str(exc)))
            continue
        keep.append(i)
    skipped = raise_or_skip(bad, skip_bad)
    meta = {**manifest.meta, "skipped": manifest.meta.get("skipped", []) + skipped, "images_verified": True}
    return Manifest(table=manifest.table.take(pa.array(keep, pa.int64())), meta=meta, source=manifest.source)


# ---- PatchML sources: images by id ---------------------------------------------------------------


class FolderSources:
    """Source images as files: `root / pattern.format(id=...)`."""

    def __init__(self, root: str | os.PathLike, pattern: str = PATCHML_DEFAULT_SOURCE_PATTERN):
        self.root, self.pattern = Path(root), pattern

    @property
    def key(self) -> tuple[str, str, str]:
        return "folder", str(self.root), self.pattern

    def path(self, image_id: str) -> Path:
        return self.root / self.pattern.format(id=image_id)

    def where(self, image_id: str) -> str:
        return str(self.path(image_id))

    def exists(self, image_id: str) -> bool:
        return self.path(image_id).exists()

    def open(self, image_id: str) -> Image.Image:
        return open_image(self.path(image_id))

    def size(self, image_id: str) -> tuple[int, int]:
        return image_size(self.path(image_id))

    def describe(self) -> str:
        return str(self.root)


@lru_cache(maxsize=8)
def _indexed(path: str, version: tuple[int, int, int]) -> tuple[dict[str, int], Any]:
    """({sample id: row}, reader) of a source manifest; `version` (size, mtime, pid) is part of the
    key: an edited file is read again, and a forked worker opens its own shard files."""
    manifest = read_manifest(path)
    if manifest.kind == "patchml":
        raise InputError(f"{path}: a PatchML manifest cannot be the source of another; give a V1 manifest")
    return {sid: i for i, sid in enumerate(manifest.sample_ids)}, reader(manifest)


class ManifestSources:
    """Source images found by sample id in a V1 manifest of any format (picklable: only the path
    travels to worker processes, each reads the manifest once)."""

    def __init__(self, manifest_path: str | os.PathLike):
        self.manifest = Path(manifest_path).resolve()

    @property
    def key(self) -> tuple[str, str, str]:
        return "manifest", str(self.manifest), ""

    def _index(self) -> tuple[dict[str, int], Any]:
        try:
            st = self.manifest.stat()
        except OSError:
            raise InputError(f"{self.manifest}: source manifest not found") from None
        return _indexed(str(self.manifest), (st.st_size, st.st_mtime_ns, os.getpid()))

    def _row(self, image_id: str) -> tuple[int, Any]:
        rows, read = self._index()
        if image_id not in rows:
            raise InputError(f"{self.manifest}: no sample {image_id!r} (the PatchML source manifest)")
        return rows[image_id], read

    def where(self, image_id: str) -> str:
        rows, read = self._index()
        return read.where(rows[image_id]) if image_id in rows else f"{self.manifest}: {image_id}"

    def exists(self, image_id: str) -> bool:
        return image_id in self._index()[0]

    def open(self, image_id: str) -> Image.Image:
        row, read = self._row(image_id)
        return read.open(row)

    def size(self, image_id: str) -> tuple[int, int]:
        row, read = self._row(image_id)
        return encoded_size(read.read(row), read.where(row))

    def describe(self) -> str:
        return str(self.manifest)


# Where PatchML source images are: what the patch cache and the renderer open them through.
Sources = FolderSources | ManifestSources


def sources_at(location: str | os.PathLike, pattern: str | None = None) -> FolderSources | ManifestSources:
    """Source images at `location`: a folder (files named by `pattern`) or a manifest file."""
    location = Path(location)
    if location.is_file():
        return ManifestSources(location)
    return FolderSources(location, pattern or PATCHML_DEFAULT_SOURCE_PATTERN)


def manifest_sources(manifest: Manifest, override: str | os.PathLike | None = None) -> FolderSources | ManifestSources:
    """Where a PatchML manifest's source images are: `override` (a folder or a V1 manifest) if given,
    else its `source_manifest`, else its `source_root` folder with its `source_pattern`."""
    pattern = manifest.meta.get("source_pattern", PATCHML_DEFAULT_SOURCE_PATTERN)
    if override is not None:
        return sources_at(override, pattern)
    if manifest.meta.get("source_manifest"):
        return ManifestSources(manifest.meta["source_manifest"])
    if manifest.meta.get("source_root"):
        return FolderSources(manifest.meta["source_root"], pattern)
    where = manifest.source or "manifest"
    raise InputError(f"{where}: no source_root in its metadata; pass the source images' folder (or a V1 manifest)")
