"""Thumbnails for the results page's image explorer: `RESULTS/thumbs/<dataset>/<row>.jpg`, one small
JPEG per sample of a manifest copy, read as inference reads it (folders, parquet shards, tars: the
format's reader; PatchML: the canvas rendered from its manifest, else its PNG).

The page loads them by row number, only for the rows it shows, so it stays small for 50,000 images. `thumbs.json` in
the folder records the manifest copy's sha256: the same manifest keeps its thumbnails (a second
`report` makes only the missing ones), another one (rebuilt, other images) makes them all anew.
"""

from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from mlreassess.datasets.manifest import Manifest, read_manifest
from mlreassess.datasets.samples import reader
from mlreassess.errors import MlreassessError
from mlreassess.io import atomic_path, write_text_atomic
from mlreassess.progress import bar
from mlreassess.provenance import file_sha256
from mlreassess.report.inputs import canvas_image, png_dirs
from mlreassess.results import ResultsLayout

log = logging.getLogger(__name__)

THUMB_SIDE = 112  # pixels, the longer side
THUMB_QUALITY = 80
INDEX = "thumbs.json"


@dataclass(frozen=True)
class Thumbs:
    dataset: str
    folder: str  # relative to RESULTS, '/'-separated
    missing: tuple[int, ...]  # rows whose image could not be read here (the page shows none)


def thumb_name(row: int) -> str:
    return f"{row}.jpg"


def _recorded(index: Path) -> dict:
    try:
        value = json.loads(index.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _image(manifest: Manifest, read, row: int, dirs: list[Path]) -> Image.Image | None:
    """Sample `row` as a small RGB image (JPEGs decoded at a reduced size: draft mode), None if unreadable."""
    if manifest.kind == "patchml":
        image = canvas_image(manifest, row, dirs)
    elif read is None:
        return None
    else:
        try:
            image = Image.open(io.BytesIO(read.read(row)))
            image.draft("RGB", (2 * THUMB_SIDE, 2 * THUMB_SIDE))
            image = image.convert("RGB")
        except (MlreassessError, OSError, ValueError, Image.DecompressionBombError):
            return None
    if image is not None:
        image.thumbnail((THUMB_SIDE, THUMB_SIDE))
    return image


def _reader(manifest: Manifest):
    """The format's sample reader (None for PatchML, rendered instead, or when the images are not here)."""
    if manifest.kind == "patchml":
        return None
    try:
        return reader(manifest)
    except MlreassessError:
        return None


def _clear(layout: ResultsLayout, folder: Path) -> None:
    for old in layout.files(folder, "*.jpg"):
        old.unlink()


def write_thumbs(layout: ResultsLayout, dataset: str, pred_meta: dict | None = None, progress: bool = True) -> Thumbs:
    """Make the missing thumbnails of `dataset`'s manifest copy (all of them when the manifest changed)."""
    manifest_path = layout.manifest_copy(dataset)
    manifest = read_manifest(manifest_path)
    folder = layout.thumbs_of(dataset)
    index = layout.inside(folder / INDEX)
    digest = file_sha256(manifest_path)
    recorded = _recorded(index) if index.is_file() else {}
    same = recorded.get("manifest_sha256") == digest and recorded.get("side") == THUMB_SIDE
    folder.mkdir(parents=True, exist_ok=True)
    if not same:
        _clear(layout, folder)
    read = _reader(manifest)
    dirs = png_dirs(layout, pred_meta or {}) if manifest.kind == "patchml" else []
    missing, made = [], 0
    for row in bar(range(len(manifest)), desc=f"thumbnails {dataset}", unit="img", enabled=progress):
        path = layout.inside(folder / thumb_name(row))
        if path.is_file():
            continue
        image = _image(manifest, read, row, dirs)
        if image is None:
            missing.append(row)
            continue
        with atomic_path(path) as tmp:
            image.save(tmp, format="JPEG", quality=THUMB_QUALITY)
        made += 1
    write_text_atomic(index, json.dumps({"manifest_sha256": digest, "side": THUMB_SIDE, "missing": missing}) + "\n")
    if made or missing:
        log.info(f"thumbnails: {dataset}: {made} made, {len(missing)} not readable here, in {folder}")
    return Thumbs(dataset, folder.relative_to(layout.root).as_posix(), tuple(missing))
