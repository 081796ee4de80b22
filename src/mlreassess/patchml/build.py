"""`generate` (module `build`): a whole PatchML set, what `mlreassess patchml` runs, in four steps.

compose (boxes file -> pool -> canvases table + metadata), check (against what `out_dir` already
holds), write (the manifest, unless the same one is there), render (PNGs, with `images`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import pyarrow as pa

from mlreassess.constants import PATCHML_DEFAULT_CANVAS, PATCHML_DEFAULT_COUNTS, PATCHML_DEFAULT_MIN_BOX_SIDE
from mlreassess.datasets.manifest import Manifest, read_manifest, write_manifest
from mlreassess.datasets.samples import FolderSources, ManifestSources, Sources, check_sources
from mlreassess.errors import InputError, short_repr
from mlreassess.io import check_replaceable, manifest_kind, remove_stale_tmp
from mlreassess.locks import folder_lock
from mlreassess.options import PatchMLOptions
from mlreassess.patchml import layout
from mlreassess.patchml import pool as pool_mod
from mlreassess.patchml import render as render_mod
from mlreassess.patchml.pool import BadRow, Pool
from mlreassess.results import PATCHML_IMAGES as IMAGES_DIR
from mlreassess.results import inside
from mlreassess.results import PATCHML_MANIFEST as MANIFEST_NAME

log = logging.getLogger(__name__)

# Metadata that says where things are, not what the canvases are: a rerun may change them.
_LOCATION_KEYS = ("root", "source_root", "source_manifest", "mlreassess_version")


@dataclass
class GenerateResult:
    manifest_path: Path
    manifest: Manifest
    status: str  # "written" | "unchanged" | "updated source_root"
    boxes_read: int
    rows_dropped: int
    pool_size: int
    bounds_source: str | None  # where image sizes came from; None = bounds unchecked
    render: render_mod.RenderSummary | None = None  # when images were rendered
    elapsed_s: float = 0.0


@dataclass(frozen=True)
class Params:
    """The composing parameters, defaults filled in."""

    counts: list[int]
    canvas_size: int
    min_box_side: int
    resample: str
    source_pattern: str


@dataclass
class Composed:
    """The canvases of a set before anything is written, and how they came about."""

    table: pa.Table
    meta: dict[str, Any]
    boxes_read: int
    rows_dropped: int
    pool_size: int
    bounds_source: str | None


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def resolve_params(
    counts: Sequence[int] | None,
    canvas_size: int | None,
    min_box_side: int | None,
    resample: str | None,
    source_pattern: str | None,
) -> Params:
    """Defaults filled in and checked, so bad parameters fail before any file is read."""
    params = Params(
        counts=list(counts or PATCHML_DEFAULT_COUNTS),
        canvas_size=canvas_size or PATCHML_DEFAULT_CANVAS,
        min_box_side=PATCHML_DEFAULT_MIN_BOX_SIDE if min_box_side is None else min_box_side,
        resample=resample or render_mod.DEFAULT_RESAMPLE,
        source_pattern=source_pattern or pool_mod.DEFAULT_SOURCE_PATTERN,
    )
    render_mod.resample_filter(params.resample)
    for k in params.counts:
        layout.grid_for(k, params.canvas_size)
    return params


def _image_sizes(
    boxes: Path, records: list, images: Sources | None, image_sizes: str | os.PathLike | None,
    params: Params, skip_bad: bool, progress: bool,
) -> tuple[dict[str, tuple[int, int]] | None, list[BadRow], str | None]:
    """(sizes of the source images or None, bad rows, where the sizes came from)."""
    if images is not None:
        sizes, bad = pool_mod.sizes_from_images(images, records, skip_bad=skip_bad, where=str(boxes), progress=progress)
        return sizes, bad, f"the images in {images.describe()}"
    sizes_file = Path(image_sizes) if image_sizes else boxes.with_name(pool_mod.SIZES_FILE)
    if image_sizes or sizes_file.exists():
        return pool_mod.read_image_sizes(sizes_file), [], str(sizes_file)
    return None, [], None


def _read_pool(
    boxes: Path, images: Sources | None, image_sizes: str | os.PathLike | None,
    params: Params, skip_bad: bool, progress: bool,
) -> tuple[Pool, list[BadRow], int, str | None]:
    """Stage 1: (pool, bad rows, boxes read, where the image sizes came from)."""
    records, bad = pool_mod.read_boxes_csv(boxes, skip_bad)
    sizes, bad_images, bounds_source = _image_sizes(boxes, records, images, image_sizes, params, skip_bad, progress)
    bad += bad_images
    dropped_rows = {b.row for b in bad}
    kept = [r for r in records if r.row not in dropped_rows]
    patch_pool, bad_pool = pool_mod.build_pool(kept, sizes, params.min_box_side, skip_bad, where=str(boxes))
    return patch_pool, bad + bad_pool, len(records), bounds_source


def compose_set(
    boxes: Path, seed: int, params: Params, *, images: Sources | None, image_sizes: str | os.PathLike | None,
    name: str | None, skip_bad: bool, progress: bool,
) -> Composed:
    """The manifest table and metadata of a set (stages 1 and 2); nothing is written."""
    patch_pool, bad, boxes_read, bounds_source = _read_pool(boxes, images, image_sizes, params, skip_bad, progress)
    table = layout.compose(patch_pool, seed, params.counts, params.canvas_size)
    meta = layout.patchml_meta(
        dataset=name or f"patchml_seed{seed}",
        seed=seed,
        counts=params.counts,
        canvas_size=params.canvas_size,
        min_box_side=params.min_box_side,
        resample=params.resample,
        source_root=str(images.root) if isinstance(images, FolderSources) else None,
        source_pattern=params.source_pattern,
        boxes_file=boxes.name,
        boxes_sha256=sha256_file(boxes),
        pool_size=len(patch_pool),
        # The file's name, not its path: the manifest must not depend on where it was run.
        bad_rows=[
            {"file": f"{boxes.name}: line {b.row}", "error": b.problem} for b in sorted(bad, key=lambda b: b.row)
        ],
        **_manifest_source_meta(images),
    )
    return Composed(table, meta, boxes_read, len(bad), len(patch_pool), bounds_source)


def _manifest_source_meta(images: Sources | None) -> dict[str, Any]:
    """A V1 manifest as the sources: its path, and its shards' sha256 (the canvases' pixels depend on them)."""
    if not isinstance(images, ManifestSources):
        return {}
    source = read_manifest(images.manifest)
    check_sources(source)
    return {"source_manifest": str(images.manifest), "source_shards": source.meta.get("shards")}


def _sources(images: str | os.PathLike | None, source_manifest: str | os.PathLike | None,
             pattern: str) -> Sources | None:
    """The source images: a folder (`--images`) or a V1 manifest's (`--source-manifest`), or none."""
    if images is not None and source_manifest is not None:
        raise InputError("--images and --source-manifest both name the source images; give one")
    if source_manifest is not None:
        return ManifestSources(source_manifest)
    if images is not None:
        folder = Path(images).resolve()
        if not folder.is_dir():
            raise InputError(f"{folder}: images folder not found")
        return FolderSources(folder, pattern)
    return None


def _difference(old: Manifest, table: pa.Table, meta: dict[str, Any]) -> str | None:
    """How an existing manifest differs from the one just composed (None: same canvases)."""
    diffs = [
        f"{key} {short_repr(old.meta.get(key), 40)} there vs {short_repr(meta.get(key), 40)} now"
        for key in sorted(set(old.meta) | set(meta))
        if key not in _LOCATION_KEYS and old.meta.get(key) != meta.get(key)
    ]
    if not diffs and not old.table.equals(table):
        diffs.append("the canvases differ")
    return "; ".join(diffs) or None


def check_out_dir(out_dir: Path, composed: Composed, images: Sources | None) -> str:
    """What writing `composed` to `out_dir` means: "written", "unchanged", "updated source_root" or
    "redone" (the folder held an older build: other inputs or options; its PNGs go).

    InputError if `out_dir` holds PNGs without a manifest (they may be another set's).
    """
    path = out_dir / MANIFEST_NAME
    check_replaceable(path, manifest_kind("patchml"))  # a V1 manifest there is an input: left alone
    if path.exists():
        old = read_manifest(path)
        diff = _difference(old, composed.table, composed.meta)
        if diff is not None:
            log.info(f"{path}: redoing it: {diff}")
            _remove_pngs(out_dir)
            return "redone"
        moved = any(old.meta.get(k) != composed.meta.get(k) for k in ("source_root", "source_manifest"))
        if images is not None and moved:
            return "updated source_root"
        return "unchanged"
    if any((out_dir / IMAGES_DIR).glob("*.png")):
        # PNGs without their manifest may be another set's: resuming would mix two sets.
        raise InputError(f"{out_dir / IMAGES_DIR}: holds PNGs but {path} is missing; remove them or use another --out")
    return "written"


def _remove_pngs(out_dir: Path) -> None:
    """The canvases of an older build: every one of them may differ from the new set's."""
    for png in (out_dir / IMAGES_DIR).glob("*.png"):
        png.unlink()


def write_set(out_dir: Path, composed: Composed, status: str, elapsed_s: float) -> Manifest:
    """Write the manifest unless the same one is there; the manifest as read back from the file."""
    path = out_dir / MANIFEST_NAME
    if status != "unchanged":
        write_manifest(path, composed.table, composed.meta, elapsed_s=elapsed_s)
    return read_manifest(path)


def generate(
    boxes: str | os.PathLike,
    seed: int,
    out_dir: str | os.PathLike,
    *,
    images: str | os.PathLike | None = None,
    source_manifest: str | os.PathLike | None = None,
    image_sizes: str | os.PathLike | None = None,
    counts: Sequence[int] | None = None,
    canvas_size: int | None = None,
    min_box_side: int | None = None,
    resample: str | None = None,
    source_pattern: str | None = None,
    name: str | None = None,
    workers: int | None = None,
    skip_bad: bool = False,
    progress: bool = True,
    render: bool = True,
) -> GenerateResult:
    """Compose a PatchML set from a Kaggle-format boxes file into `out_dir/manifest.parquet`.

    With `images` (folder of the source images) or `source_manifest` (a V1 manifest of any format,
    whose images are found by sample id), box bounds are checked against the images, the folder
    (`source_root`) or the manifest (`source_manifest`) is recorded (so canvases render on the fly anywhere),
    and unless `render=False` every canvas is also rendered to `out_dir/images/<sample_id>.png`.
    A rerun with the same inputs leaves the manifest alone and renders only missing PNGs; a
    different manifest already in `out_dir` is an error.
    """
    start = time.perf_counter()
    params = resolve_params(counts, canvas_size, min_box_side, resample, source_pattern)
    boxes, out_dir = Path(boxes), Path(out_dir)
    for part in (MANIFEST_NAME, IMAGES_DIR):  # the set's folder holds its own files (as RESULTS does)
        inside(out_dir, out_dir / part)
    images = _sources(images, source_manifest, params.source_pattern)
    composed = compose_set(
        boxes, seed, params, images=images, image_sizes=image_sizes, name=name, skip_bad=skip_bad, progress=progress
    )
    status = check_out_dir(out_dir, composed, images)
    manifest = write_set(out_dir, composed, status, elapsed_s=time.perf_counter() - start)
    result = GenerateResult(
        manifest_path=out_dir / MANIFEST_NAME,
        manifest=manifest,
        status=status,
        boxes_read=composed.boxes_read,
        rows_dropped=composed.rows_dropped,
        pool_size=composed.pool_size,
        bounds_source=composed.bounds_source,
    )
    if images is not None and render:
        result.render = render_mod.render_to_dir(
            manifest, out_dir / IMAGES_DIR, workers=workers, skip_bad=skip_bad, progress=progress
        )
    result.elapsed_s = time.perf_counter() - start
    return result


def generate_from(options: PatchMLOptions, out_dir: str | os.PathLike, render: bool = True,
                  progress: bool = True) -> GenerateResult:
    """`generate` with the schema's options (what the CLI and `mlreassess run` pass), holding
    `out_dir` so that no second writer composes into it at the same time (and so the temporary
    files a killed run left there can go: `render_to_dir` clears those of the images)."""
    with folder_lock(out_dir):
        remove_stale_tmp(out_dir)
        return generate(
            options.boxes, options.seed, out_dir, images=options.images, source_manifest=options.source_manifest,
            image_sizes=options.image_sizes,
            counts=options.counts, canvas_size=options.canvas, min_box_side=options.min_box_side,
            resample=options.resample, source_pattern=options.source_pattern, name=options.name,
            workers=options.workers, skip_bad=options.skip_bad, progress=progress, render=render,
        )
