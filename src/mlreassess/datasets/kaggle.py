"""The Kaggle "ImageNet Object Localization" boxes CSV (`LOC_val_solution.csv`): the one reader.

Format: a header `ImageId,PredictionString`, then one line per image with `wnid x0 y0 x1 y1`
repeated once per box. Coordinates are 0-based and inclusive (x1 is at most width - 1), so a box
is `x1 - x0 + 1` wide. ImageNet V1 (one class per image) and PatchML (the pool of boxes) both read
it here, with the same checks; a bad line is a `BadRow`, and `raise_bad_rows` applies the one
skip-bad policy (`mlreassess.datasets.skip`).

A bad line: wrong column count, an empty ImageId, box tokens not in groups of 5, a non-integer or
negative coordinate, x1 <= x0 or y1 <= y0, an unknown wnid, a repeated ImageId, or text that is not
UTF-8 CSV. A line with an ImageId and no boxes is well-formed (an image without boxes); users that
need a box per image (V1) check that themselves.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, NamedTuple, Sequence

from mlreassess.datasets.labels import wnid_to_index
from mlreassess.datasets.skip import raise_or_skip
from mlreassess.errors import InputError

BOXES_HEADER = ("ImageId", "PredictionString")


class BoxRecord(NamedTuple):  # a tuple: 80k of them build fast
    image_id: str
    label: int  # class index 0..999
    box: tuple[int, int, int, int]  # x0, y0, x1, y1, inclusive
    row: int  # line number in the boxes file (the header is line 1), for error messages
    index: int  # position of the box within its line


@dataclass(frozen=True)
class KaggleLine:
    row: int  # line number in the file (the header is line 1)
    image_id: str
    boxes: tuple[BoxRecord, ...]  # in line order; may be empty


# Larger coordinates cannot come from an image (and would overflow the int64 manifest columns).
MAX_COORDINATE = 1 << 20


@dataclass(frozen=True)
class BadRow:
    row: int  # line number in the boxes file
    where: str  # "FILE: line N"
    problem: str


def raise_bad_rows(bad: Sequence[BadRow], skip_bad: bool) -> list[dict[str, str]]:
    """The skip-bad policy for bad lines: raise on the first unless `skip_bad`."""
    return raise_or_skip([(b.where, b.problem) for b in bad], skip_bad, "bad rows")


def csv_rows(path: Path, header: tuple[str, ...]) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of each non-blank line after the expected header (UTF-8 CSV; a byte
    order mark, as some spreadsheet programs write, is read as if it were not there)."""
    with path.open(newline="", encoding="utf-8-sig") as f:
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


def read_kaggle_lines(path: str | os.PathLike) -> tuple[list[KaggleLine], list[BadRow]]:
    """Every well-formed line of a Kaggle boxes CSV in file order, and the bad ones (not raised)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: boxes file not found")
    classes = wnid_to_index()
    lines: list[KaggleLine] = []
    bad: list[BadRow] = []
    seen: dict[str, int] = {}
    for row, fields in csv_rows(path, BOXES_HEADER):
        line, problem = _parse_line(fields, row, classes)
        if line is not None and line.image_id in seen:
            problem = f"ImageId {line.image_id!r} repeated (first on line {seen[line.image_id]})"
        if line is None or problem is not None:
            bad.append(BadRow(row, f"{path}: line {row}", str(problem)))
            continue
        seen[line.image_id] = row
        lines.append(line)
    return lines, bad


def read_boxes_csv(path: str | os.PathLike, skip_bad: bool = False) -> tuple[list[BoxRecord], list[BadRow]]:
    """All boxes of a Kaggle boxes CSV in file order, wnids resolved to class indices.

    A bad line raises InputError naming the file and line, unless `skip_bad`: then the whole
    line is dropped and returned in the second list.
    """
    lines, bad = read_kaggle_lines(path)
    raise_bad_rows(bad, skip_bad)
    return [r for line in lines for r in line.boxes], bad


def _parse_line(fields: list[str], row: int, classes: Mapping[str, int]) -> tuple[KaggleLine | None, str | None]:
    if len(fields) != 2:
        return None, f"expected 2 fields (ImageId,PredictionString), got {len(fields)}"
    image_id, tokens = fields[0].strip(), fields[1].split()
    if not image_id:
        return None, "empty ImageId"
    if len(tokens) % 5:
        return None, f"PredictionString has {len(tokens)} tokens, not groups of 5 (wnid x0 y0 x1 y1)"
    boxes = []
    for j in range(0, len(tokens), 5):
        wnid, coords = tokens[j], tokens[j + 1 : j + 5]
        if wnid not in classes:
            return None, f"box {j // 5}: unknown wnid {wnid!r} (not an ImageNet-1k class)"
        try:
            box = tuple(int(v) for v in coords)
        except ValueError:
            return None, f"box {j // 5}: coordinates {' '.join(coords)!r} are not integers"
        x0, y0, x1, y1 = box
        if min(box) < 0:
            return None, f"box {j // 5}: negative coordinate in {list(box)}"
        if max(box) > MAX_COORDINATE:
            return None, f"box {j // 5}: coordinate {max(box)} beyond any image ({MAX_COORDINATE:,} px)"
        if x1 <= x0 or y1 <= y0:
            return None, f"box {j // 5}: empty or inverted box {list(box)} (needs x1 > x0 and y1 > y0)"
        boxes.append(BoxRecord(image_id, classes[wnid], box, row, j // 5))  # type: ignore[arg-type]
    return KaggleLine(row, image_id, tuple(boxes)), None
