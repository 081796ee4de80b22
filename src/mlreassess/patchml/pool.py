"""PatchML stage 1: the pool of patches = the annotated boxes of the source images.

A patch is a box record (source image id, class, inclusive box), not pixels: composing canvases
needs only the boxes, so paper-scale manifests are built without any image; pixels are read
only when rendering (`mlreassess.patchml.render`).

Boxes come in the Kaggle "ImageNet Object Localization" CSV format, read by the one reader in
`mlreassess.datasets.kaggle` (ImageNet V1 reads it too). Coordinates are 0-based and inclusive
(x1 is at most width - 1), so a box is `x1 - x0 + 1` wide.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from mlreassess.constants import PATCHML_DEFAULT_SOURCE_PATTERN
from mlreassess.datasets.samples import FolderSources, ManifestSources, Sources
from mlreassess.datasets.kaggle import BadRow, BoxRecord, csv_rows, raise_bad_rows, read_boxes_csv
from mlreassess.datasets.paths import inside_root
from mlreassess.datasets.placements import check_source_pattern
from mlreassess.errors import InputError, short_repr
from mlreassess.progress import bar

# BadRow, BoxRecord and read_boxes_csv are re-exported: demo and tests import them from here.
__all__ = [
    "BadRow", "BoxRecord", "DEFAULT_SOURCE_PATTERN", "Pool", "SIZES_FILE", "box_side_min", "build_pool",
    "read_boxes_csv", "read_image_sizes", "sizes_from_images", "source_path",
]

SIZES_HEADER = ("ImageId", "width", "height")
SIZES_FILE = "image_sizes.csv"  # looked for beside the boxes file
DEFAULT_SOURCE_PATTERN = PATCHML_DEFAULT_SOURCE_PATTERN


@dataclass
class Pool:
    """Patches sorted by (image id, box order in its line); arrays are parallel."""

    image_ids: list[str]
    boxes: np.ndarray  # (n, 4) int64, inclusive x0, y0, x1, y1
    labels: np.ndarray  # (n,) int64

    def __len__(self) -> int:
        return len(self.image_ids)

    @property
    def widths(self) -> np.ndarray:
        return self.boxes[:, 2] - self.boxes[:, 0] + 1

    @property
    def heights(self) -> np.ndarray:
        return self.boxes[:, 3] - self.boxes[:, 1] + 1


def box_side_min(box: tuple[int, int, int, int]) -> int:
    x0, y0, x1, y1 = box
    return min(x1 - x0 + 1, y1 - y0 + 1)


def read_image_sizes(path: str | os.PathLike) -> dict[str, tuple[int, int]]:
    """{image id: (width, height)} from an `ImageId,width,height` CSV."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: image sizes file not found")
    sizes: dict[str, tuple[int, int]] = {}
    for row, fields in csv_rows(path, SIZES_HEADER):
        try:
            image_id, w, h = fields[0].strip(), int(fields[1]), int(fields[2])
            if w <= 0 or h <= 0:
                raise ValueError
        except (ValueError, IndexError):
            raise InputError(f"{path}: line {row}: expected 'ImageId,width,height' with positive integers") from None
        sizes[image_id] = (w, h)
    return sizes


def source_path(root: str | os.PathLike, image_id: str, pattern: str = DEFAULT_SOURCE_PATTERN) -> Path:
    """The file of source image `image_id` under `root` (pattern: e.g. '{id}.JPEG'); InputError when
    the id or the pattern would leave `root` (`datasets.paths`)."""
    return inside_root(root, check_source_pattern(pattern, "source images").format(id=image_id),
                       f"source image id {short_repr(image_id)}")


def sizes_from_images(
    root: str | os.PathLike | Sources,
    records: Iterable[BoxRecord],
    pattern: str = DEFAULT_SOURCE_PATTERN,
    skip_bad: bool = False,
    where: str = "boxes",
    progress: bool = True,
) -> tuple[dict[str, tuple[int, int]], list[BadRow]]:
    """Read each source image's size from its header; a missing/unreadable image is a bad row.

    `root`: the images' folder (files named by `pattern`), or `Sources` (e.g. a V1 manifest's images)."""
    sources = root if isinstance(root, (FolderSources, ManifestSources)) else FolderSources(root, pattern)
    rows: dict[str, int] = {}
    for r in records:
        rows.setdefault(r.image_id, r.row)
    sizes: dict[str, tuple[int, int]] = {}
    bad: list[BadRow] = []
    ids = sorted(rows)
    if ids and not any(sources.exists(i) for i in ids[:1000]):
        looked = sources.path(ids[0]).name if isinstance(sources, FolderSources) else ids[0]
        raise InputError(
            f"{sources.describe()}: no source images there (looked for {looked} and others); "
            "pass the folder that holds them (Kaggle layout: ROOT/ILSVRC/Data/CLS-LOC/val), set --source-pattern, "
            "or give a V1 manifest of them (--source-manifest)"
        )
    sizes_bar = bar(ids, desc="reading image sizes", unit="image", enabled=progress)
    sizes_bar.leave = False  # a step of `generate`: its bar goes once done
    for image_id in sizes_bar:
        try:
            sizes[image_id] = sources.size(image_id)
        except InputError as exc:
            bad.append(BadRow(rows[image_id], f"{where}: line {rows[image_id]}", str(exc)))
    raise_bad_rows(bad, skip_bad)
    return sizes, bad


def build_pool(
    records: Iterable[BoxRecord],
    sizes: Mapping[str, tuple[int, int]] | None,
    min_box_side: int,
    skip_bad: bool = False,
    where: str = "boxes",
) -> tuple[Pool, list[BadRow]]:
    """Stage 1: keep the boxes whose shorter side is >= `min_box_side` px, sorted by (image, box).

    With `sizes` ({image id: (w, h)}), a box outside its image (x1 >= w or y1 >= h) or an image
    without a size is a bad row: InputError naming `where` and the line, or with `skip_bad`, every
    box of that line is dropped (returned as BadRow). Without `sizes` bounds are not checked.
    """
    records = list(records)
    bad_rows: dict[int, BadRow] = {}
    if sizes is not None:
        for r in records:
            if r.row in bad_rows:
                continue
            size = sizes.get(r.image_id)
            if size is None:
                bad_rows[r.row] = BadRow(r.row, f"{where}: line {r.row}", f"no size known for image {r.image_id!r}")
            elif r.box[2] >= size[0] or r.box[3] >= size[1]:
                bad_rows[r.row] = BadRow(
                    r.row,
                    f"{where}: line {r.row}",
                    f"box {r.index} {list(r.box)} lies outside image {r.image_id} ({size[0]}x{size[1]}; "
                    f"inclusive coordinates need x1 < width and y1 < height)",
                )
    bad = [bad_rows[k] for k in sorted(bad_rows)]
    raise_bad_rows(bad, skip_bad)
    kept = sorted(
        (r for r in records if r.row not in bad_rows and box_side_min(r.box) >= min_box_side),
        key=lambda r: (r.image_id, r.index),
    )
    pool = Pool(
        image_ids=[r.image_id for r in kept],
        boxes=np.array([r.box for r in kept], dtype=np.int64).reshape(-1, 4),
        labels=np.array([r.label for r in kept], dtype=np.int64),
    )
    return pool, bad
