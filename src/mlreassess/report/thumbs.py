"""Thumbnails for the results page's image explorer: `RESULTS/thumbs/<dataset>/<row>.jpg`, one small
JPEG per sample of a manifest copy, read as inference reads it (folders, parquet shards, tars: the
format's reader; PatchML: the canvas rendered from its manifest, else its PNG).

The page loads them by row number, only for the rows it shows, so it stays small for 50,000 images. `thumbs.json` in
the folder records the manifest copy's sha256: the same manifest keeps its thumbnails (a second
`report` makes only the missing ones), another one (rebuilt, other images) makes them all anew.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from mlreassess.datasets.manifest import Manifest, read_manifest
from mlreassess.io import atomic_path, write_text_atomic
from mlreassess.progress import bar
from mlreassess.provenance import file_sha256
from mlreassess.report.inputs import image_reader, png_dirs, sample_image
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


def _clear(layout: ResultsLayout, folder: Path) -> None:
    for old in layout.files(folder, "*.jpg"):
        old.unlink()


def write_thumbs(layout: ResultsLayout, dataset: str, pred_meta: dict | None = None, progress: bool = True,
                 manifest: Manifest | None = None) -> Thumbs:
    """Make the missing thumbnails of `dataset`'s manifest copy (all of them when the manifest changed);
    `manifest`: that copy, when the caller has read it already."""
    manifest_path = layout.manifest_copy(dataset)
    manifest = read_manifest(manifest_path) if manifest is None else manifest
    folder = layout.thumbs_of(dataset)
    index = layout.inside(folder / INDEX)
    digest = file_sha256(manifest_path)
    recorded = _recorded(index) if index.is_file() else {}
    same = recorded.get("manifest_sha256") == digest and recorded.get("side") == THUMB_SIDE
    folder.mkdir(parents=True, exist_ok=True)
    if not same:
        _clear(layout, folder)
    read = image_reader(manifest)
    dirs = png_dirs(layout, pred_meta or {}) if manifest.kind == "patchml" else []
    missing, made = [], 0
    for row in bar(range(len(manifest)), desc=f"thumbnails {dataset}", unit="img", enabled=progress):
        path = layout.inside(folder / thumb_name(row))
        if path.is_file():
            continue
        image = sample_image(manifest, read, row, dirs, THUMB_SIDE)
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
