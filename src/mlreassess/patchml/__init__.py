"""PatchML: seed-controlled synthetic multi-label canvases from ImageNet boxes (SPEC 2).

- `pool`: stage 1, boxes file -> pool of patches (box records, no pixels).
- `layout`: stage 2, Algorithm 1: the canvases' placements -> manifest table.
- `render`: pixels: one canvas on the fly (`render_row`) or all of them to PNG.
`generate` runs the whole thing (what `mlreassess patchml` calls).
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

MANIFEST_NAME = "manifest.parquet"
IMAGES_DIR = "images"
# Metadata that says where things are, not what the canvases are: a rerun may change them.
_LOCATION_KEYS = ("root", "source_root", "mlreassess_version")


@dataclass
class GenerateResult:
    manifest_path: Path
    manifest: Any  # mlreassess.datasets.manifest.Manifest
    status: str  # "written" | "unchanged" | "updated source_root"
    boxes_read: int
    rows_dropped: int
    pool_size: int
    bounds_source: str | None  # where image sizes came from; None = bounds unchecked
    render: Any = None  # render.RenderSummary when images were rendered
    elapsed_s: float = 0.0


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _difference(old: Any, table: Any, meta: dict[str, Any]) -> str | None:
    """How an existing manifest differs from the one just composed (None: same canvases)."""
    diffs = [
        f"{key} {_short(old.meta.get(key))} there vs {_short(meta.get(key))} now"
        for key in sorted(set(old.meta) | set(meta))
        if key not in _LOCATION_KEYS and old.meta.get(key) != meta.get(key)
    ]
    if not diffs and not old.table.equals(table):
        diffs.append("the canvases differ")
    return "; ".join(diffs) or None


def generate(
    boxes: str | os.PathLike,
    seed: int,
    out_dir: str | os.PathLike,
    *,
    images: str | os.PathLike | None = None,
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

    With `images` (folder of the source images), box bounds are checked against the images, the
    folder is recorded as the manifest's `source_root` (so canvases render on the fly anywhere),
    and unless `render=False` every canvas is also rendered to `out_dir/images/<sample_id>.png`.
    A rerun with the same inputs leaves the manifest alone and renders only missing PNGs; a
    different manifest already in `out_dir` is an error.
    """
    from mlreassess.datasets.manifest import read_manifest, write_manifest
    from mlreassess.errors import InputError
    from mlreassess.patchml import layout, pool as pool_mod, render as render_mod

    start = time.perf_counter()
    boxes = Path(boxes)
    counts = list(counts or layout.DEFAULT_COUNTS)
    canvas_size = canvas_size or layout.DEFAULT_CANVAS
    min_box_side = layout.DEFAULT_MIN_BOX_SIDE if min_box_side is None else min_box_side
    resample = resample or render_mod.DEFAULT_RESAMPLE
    source_pattern = source_pattern or pool_mod.DEFAULT_SOURCE_PATTERN
    render_mod.resample_filter(resample)
    for k in counts:
        layout.grid_for(k, canvas_size)  # fail on bad parameters before reading anything

    records, bad = pool_mod.read_boxes_csv(boxes, skip_bad)
    sizes = None
    bounds_source = None
    if images is not None:
        images = Path(images).resolve()
        if not images.is_dir():
            raise InputError(f"{images}: images folder not found")
        sizes, bad_images = pool_mod.sizes_from_images(
            images, records, source_pattern, skip_bad, where=str(boxes), progress=progress
        )
        bad += bad_images
        bounds_source = f"the images in {images}"
    else:
        sizes_file = Path(image_sizes) if image_sizes else boxes.with_name(pool_mod.SIZES_FILE)
        if image_sizes or sizes_file.exists():
            sizes = pool_mod.read_image_sizes(sizes_file)
            bounds_source = str(sizes_file)
    boxes_read = len(records)
    dropped_rows = {b.row for b in bad}
    records = [r for r in records if r.row not in dropped_rows]
    patch_pool, bad_pool = pool_mod.build_pool(records, sizes, min_box_side, skip_bad, where=str(boxes))
    bad += bad_pool

    table = layout.compose(patch_pool, seed, counts, canvas_size)
    meta = layout.patchml_meta(
        dataset=name or f"patchml_seed{seed}",
        seed=seed,
        counts=counts,
        canvas_size=canvas_size,
        min_box_side=min_box_side,
        resample=resample,
        source_root=None if images is None else str(images),
        source_pattern=source_pattern,
        boxes_file=boxes.name,
        boxes_sha256=sha256_file(boxes),
        pool_size=len(patch_pool),
        # The file's name, not its path: the manifest must not depend on where it was run.
        bad_rows=[
            {"file": f"{boxes.name}: line {b.row}", "error": b.problem} for b in sorted(bad, key=lambda b: b.row)
        ],
    )

    out_dir = Path(out_dir)
    path = out_dir / MANIFEST_NAME
    status = "written"
    if path.exists():
        old = read_manifest(path)
        diff = _difference(old, table, meta)
        if diff is not None:
            raise InputError(f"{path}: holds a different PatchML manifest ({diff}); use another --out or remove it")
        status = "unchanged"
        if images is not None and old.meta.get("source_root") != meta["source_root"]:
            status = "updated source_root"
    elif any((out_dir / IMAGES_DIR).glob("*.png")):
        # PNGs without their manifest may be another set's: resuming would mix two sets.
        raise InputError(f"{out_dir / IMAGES_DIR}: holds PNGs but {path} is missing; remove them or use another --out")
    if status != "unchanged":
        write_manifest(path, table, meta, elapsed_s=time.perf_counter() - start)
    manifest = read_manifest(path)

    result = GenerateResult(
        manifest_path=path,
        manifest=manifest,
        status=status,
        boxes_read=boxes_read,
        rows_dropped=len(bad),
        pool_size=len(patch_pool),
        bounds_source=bounds_source,
    )
    if images is not None and render:
        result.render = render_mod.render_to_dir(
            manifest, out_dir / IMAGES_DIR, images, workers=workers, skip_bad=skip_bad, progress=progress
        )
    result.elapsed_s = time.perf_counter() - start
    return result
