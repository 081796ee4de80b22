"""Throughput tables: images/s per architecture and input size, from timm's benchmark CSVs
(`results/benchmark-infer-*.csv` of pytorch-image-models: `model` = architecture, `infer_img_size`,
`infer_samples_per_sec`; the `-dynamo` files are compiled) or the rows `bench infer --csv FILE`
appends (the same columns plus ours). A model is looked up by architecture (its pretrained tag
dropped) at its input size; at another size its throughput is scaled by the pixel ratio (a rough
estimate, which callers say). A row may also hold `compile_s`, the measured compile time.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

from mlreassess.errors import InputError
from mlreassess.inference.models.weights import architecture

THROUGHPUT_COLUMNS = ("model", "infer_img_size", "infer_samples_per_sec")
COMPILE_SECONDS_COLUMN = "compile_s"  # optional: seconds the model took to compile

Table = dict[str, dict[int, float]]  # {architecture: {input size: value}}


def _rows(path: Path) -> list[dict]:
    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path}: cannot read the throughput table ({exc})") from None
    missing = [c for c in THROUGHPUT_COLUMNS if not rows or c not in rows[0]]
    if missing:
        raise InputError(f"{path}: not a throughput table (needs columns {', '.join(THROUGHPUT_COLUMNS)}; "
                         f"missing {', '.join(missing)})")
    return rows


def read_throughput(path: str | os.PathLike) -> Table:
    """{architecture: {input size: images/s}} from a timm-style benchmark CSV; one line per bad file."""
    path = Path(path)
    table: Table = {}
    for n, row in enumerate(_rows(path), 2):
        try:
            size, rate = int(row["infer_img_size"]), float(row["infer_samples_per_sec"])
        except (TypeError, ValueError):
            raise InputError(f"{path}: line {n}: infer_img_size / infer_samples_per_sec are not numbers") from None
        if not rate > 0 or size < 1:  # also refuses NaN
            raise InputError(f"{path}: line {n}: images/s must be positive and size at least 1")
        table.setdefault(architecture(row["model"]), {})[size] = rate
    return table


def read_compile_seconds(path: str | os.PathLike) -> Table:
    """{architecture: {input size: compile seconds}} from the rows of a throughput CSV that have a
    `compile_s` value (none: an empty table)."""
    path = Path(path)
    table: Table = {}
    for n, row in enumerate(_rows(path), 2):
        text = (row.get(COMPILE_SECONDS_COLUMN) or "").strip()
        if not text:
            continue
        try:
            size, seconds = int(row["infer_img_size"]), float(text)
        except (TypeError, ValueError):
            raise InputError(f"{path}: line {n}: {COMPILE_SECONDS_COLUMN} {text!r} is not a number") from None
        if not (math.isfinite(seconds) and seconds >= 0):
            raise InputError(f"{path}: line {n}: {COMPILE_SECONDS_COLUMN} must be a number of seconds, not {text!r}")
        table.setdefault(architecture(row["model"]), {})[size] = seconds
    return table


def images_per_s(table: Table, model: str, size: int) -> tuple[float | None, bool]:
    """(images/s of `model` at input `size`, whether it was scaled from another size)."""
    sizes = table.get(architecture(model))
    if not sizes:
        return None, False
    if size in sizes:
        return sizes[size], False
    nearest = min(sizes, key=lambda s: (abs(s - size), s))
    return sizes[nearest] * (nearest / size) ** 2, True


def nearest(table: Table, model: str, size: int) -> float | None:
    """The value of `model`'s architecture at the input size nearest `size` (unscaled), if any."""
    sizes = table.get(architecture(model))
    return sizes[min(sizes, key=lambda s: (abs(s - size), s))] if sizes else None
