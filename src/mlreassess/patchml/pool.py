"""PatchML stage 1: the pool of patches = the annotated boxes of the source images.

A patch is a box record (source image id, class, inclusive box), not pixels: composing canvases
needs only the boxes, so paper-scale manifests are built without any image; pixels are read
only when rendering (`mlreassess.patchml.render`).

Boxes come in the Kaggle "ImageNet Object Localization" CSV format: a header
`ImageId,PredictionString`, then one line per image with `wnid x0 y0 x1 y1` repeated once per box.
Coordinates are 0-based and inclusive (x1 is at most width - 1), so a box is `x1 - x0 + 1` wide.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Mapping, NamedTuple

import numpy as np

from mlreassess.errors import InputError

BOXES_HEADER = ("ImageId", "PredictionString")
SIZES_HEADER = ("ImageId", "width", "height")
SIZES_FILE = "image_sizes.csv"  # looked for beside the boxes file
DEFAULT_SOURCE_PATTERN = "{id}.JPEG"


class BoxRecord(NamedTuple):  # a tuple: 80k of them build fast
    image_id: str
    label: int  # class index 0..999
    box: tuple[int, int, int, int]  # x0, y0, x1, y1, inclusive
    row: int  # line number in the boxes file (the header is line 1), for error messages
    index: int  # position of the box within its line


@dataclass(frozen=True)
class BadRow:
    row: int  # line number in the boxes file
    where: str  # "FILE: line N"
    problem: str


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


def _csv_rows(path: Path, header: tuple[str, ...]) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of each non-blank line after the expected header."""
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        try:
            first = next(reader, None)
            if first is None or tuple(h.strip() for h in first) != header:
                raise InputError(f"{path}: line 1: expected header {','.join(header)!r}, got {first!r}")
            for fields in reader:
                if fields:
                    yield reader.line_num, fields
        except (csv.Error, UnicodeDecodeError) as exc:
            raise InputError(f"{path}: line {reader.line_num + 1}: not a readable CSV text line ({exc})") from None


def _raise_or_collect(bad: list[BadRow], skip_bad: bool) -> None:
    if bad and not skip_bad:
        first = bad[0]
        more = f" (and {len(bad) - 1} more bad rows)" if len(bad) > 1 else ""
        raise InputError(f"{first.where}: {first.problem}{more}; use --skip-bad to drop bad rows")


def read_boxes_csv(path: str | os.PathLike, skip_bad: bool = False) -> tuple[list[BoxRecord], list[BadRow]]:
    """All boxes of a Kaggle-format boxes CSV, in file order, with wnids resolved to class indices.

    A bad line (wrong column count, box tokens not in groups of 5, a non-integer or negative
    coordinate, x1 <= x0 or y1 <= y0, an unknown wnid, a repeated ImageId) raises InputError
    naming the file and line, unless `skip_bad`: then the whole line is dropped and returned
    in the second list.
    """
    from mlreassess.datasets.labels import wnid_to_index

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: boxes file not found")
    classes = wnid_to_index()
    records: list[BoxRecord] = []
    bad: list[BadRow] = []
    seen: dict[str, int] = {}
    for row, fields in _csv_rows(path, BOXES_HEADER):
        row_records, problem = _parse_line(fields, row, classes)
        if problem is None and row_records and row_records[0].image_id in seen:
            image_id = row_records[0].image_id
            problem = f"ImageId {image_id!r} repeated (first on line {seen[image_id]})"
        if problem is not None:
            bad.append(BadRow(row, f"{path}: line {row}", problem))
            continue
        if row_records:
            seen[row_records[0].image_id] = row
        records.extend(row_records)
    _raise_or_collect(bad, skip_bad)
    return records, bad


def _parse_line(fields: list[str], row: int, classes: Mapping[str, int]) -> tuple[list[BoxRecord], str | None]:
    if len(fields) != 2:
        return [], f"expected 2 fields (ImageId,PredictionString), got {len(fields)}"
    image_id, boxes = fields[0].strip(), fields[1].split()
    if not image_id:
        return [], "empty ImageId"
    if len(boxes) % 5:
        return [], f"PredictionString has {len(boxes)} tokens, not groups of 5 (wnid x0 y0 x1 y1)"
    out = []
    for j in range(0, len(boxes), 5):
        wnid = boxes[j]
        if wnid not in classes:
            return [], f"box {j // 5}: unknown wnid {wnid!r} (not an ImageNet-1k class)"
        try:
            box = tuple(int(v) for v in boxes[j + 1 : j + 5])
        except ValueError:
            return [], f"box {j // 5}: coordinates {' '.join(boxes[j + 1 : j + 5])!r} are not integers"
        x0, y0, x1, y1 = box
        if min(box) < 0:
            return [], f"box {j // 5}: negative coordinate in {list(box)}"
        if x1 <= x0 or y1 <= y0:
            return [], f"box {j // 5}: empty or inverted box {list(box)} (needs x1 > x0 and y1 > y0)"
        out.append(BoxRecord(image_id, classes[wnid], box, row, j // 5))  # type: ignore[arg-type]
    return out, None


def read_image_sizes(path: str | os.PathLike) -> dict[str, tuple[int, int]]:
    """{image id: (width, height)} from an `ImageId,width,height` CSV."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: image sizes file not found")
    sizes: dict[str, tuple[int, int]] = {}
    for row, fields in _csv_rows(path, SIZES_HEADER):
        try:
            image_id, w, h = fields[0].strip(), int(fields[1]), int(fields[2])
            if w <= 0 or h <= 0:
                raise ValueError
        except (ValueError, IndexError):
            raise InputError(f"{path}: line {row}: expected 'ImageId,width,height' with positive integers") from None
        sizes[image_id] = (w, h)
    return sizes


def source_path(root: str | os.PathLike, image_id: str, pattern: str = DEFAULT_SOURCE_PATTERN) -> Path:
    """The file of source image `image_id` under `root` (pattern: e.g. '{id}.JPEG')."""
    return Path(root) / pattern.format(id=image_id)


def sizes_from_images(
    root: str | os.PathLike,
    records: Iterable[BoxRecord],
    pattern: str = DEFAULT_SOURCE_PATTERN,
    skip_bad: bool = False,
    where: str = "boxes",
    progress: bool = True,
) -> tuple[dict[str, tuple[int, int]], list[BadRow]]:
    """Read each source image's size from its header; a missing/unreadable image is a bad row."""
    from tqdm import tqdm

    from mlreassess.datasets.images import image_size

    rows: dict[str, int] = {}
    for r in records:
        rows.setdefault(r.image_id, r.row)
    sizes: dict[str, tuple[int, int]] = {}
    bad: list[BadRow] = []
    ids = sorted(rows)
    if ids and not any(source_path(root, i, pattern).exists() for i in ids[:1000]):
        raise InputError(
            f"{root}: no source images there (looked for {source_path(root, ids[0], pattern).name} and others); "
            "pass the folder that holds them (Kaggle layout: ROOT/ILSVRC/Data/CLS-LOC/val) or set --source-pattern"
        )
    for image_id in tqdm(ids, desc="reading image sizes", unit="image", leave=False, disable=not progress):
        try:
            sizes[image_id] = image_size(source_path(root, image_id, pattern))
        except InputError as exc:
            bad.append(BadRow(rows[image_id], f"{where}: line {rows[image_id]}", str(exc)))
    _raise_or_collect(bad, skip_bad)
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
    _raise_or_collect(bad, skip_bad)
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
