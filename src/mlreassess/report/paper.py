"""The paper's reported numbers (Tables 3-10): parse them, map checkpoint names, compare with ours.

`parse_paper_tables(text)` reads the paper's markdown-ish tables into long rows
(checkpoint, timm_checkpoint, metric, dataset, value, source_table); `scripts/parse_paper_tables.py`
writes them to `data_manifests/paper_reported.csv`. Dataset names are roles: `imagenet_v1`,
`imagenet_v2`, `patchml_mean`; the report maps them to the datasets actually evaluated.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path

# The paper's reported numbers, parsed from its tables (scripts/parse_paper_tables.py).
REPORTED_CSV = Path(__file__).resolve().parents[3] / "data_manifests" / "paper_reported.csv"

CSV_COLUMNS = ("checkpoint", "timm_checkpoint", "metric", "dataset", "value", "source_table")
# Columns of Tables 4-10 after the checkpoint name, in order.
_T4_COLUMNS = (
    ("top1", "imagenet_v1"),
    ("top1", "imagenet_v2"),
    ("real", "imagenet_v1"),
    ("real", "imagenet_v2"),
    ("asma", "imagenet_v1"),
    ("asma", "imagenet_v2"),
    ("asma", "patchml_mean"),
    ("rank_shift", "patchml_mean"),
)
# Table 3: V1 top-1, its rank, PatchML ASMA (mean over 5 seeds), rank shift.
_T3_COLUMNS = (("top1", "imagenet_v1"), ("top1_rank", "imagenet_v1"), ("asma", "patchml_mean"), ("rank_shift", "patchml_mean"))
_NUMBER = re.compile(r"^[+-]?\d+(\.\d+)?$")


@dataclass(frozen=True)
class Reported:
    checkpoint: str  # as printed in the paper
    timm_checkpoint: str  # current timm name ("" if it could not be mapped)
    metric: str
    dataset: str
    value: float
    source_table: str


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _data_rows(lines: list[str], width: int) -> list[list[str]]:
    rows = []
    for line in lines:
        cells = _cells(line)
        if len(cells) >= width and cells[0] and all(_NUMBER.match(c) for c in cells[1:width]):
            rows.append(cells[:width])
    return rows


def _table_blocks(text: str) -> list[list[str]]:
    """Consecutive runs of lines starting with '|'."""
    blocks, cur = [], []
    for line in text.splitlines():
        if line.startswith("|"):
            cur.append(line)
        elif cur:
            blocks.append(cur)
            cur = []
    if cur:
        blocks.append(cur)
    return blocks


def parse_paper_tables(text: str) -> list[Reported]:
    """Tables 3-10 of the paper as long rows, in the paper's order (Table 3 first)."""
    t3_rows: list[list[str]] = []
    t4_chunks: list[list[list[str]]] = []
    for block in _table_blocks(text):
        header = block[0]
        if header.startswith("| Model Checkpoint |"):
            t3_rows = _data_rows(block, 5)
        elif header.startswith("| Checkpoint Name |"):
            # A block may hold several page-chunks, each starting with a repeated header.
            chunk: list[str] = []
            for line in block:
                if line.startswith("| Checkpoint Name |") and chunk:
                    t4_chunks.append(_data_rows(chunk, 9))
                    chunk = []
                chunk.append(line)
            t4_chunks.append(_data_rows(chunk, 9))
    if not t3_rows or not t4_chunks:
        raise ValueError("paper text: Table 3 or Tables 4-10 not found (expected '| Model Checkpoint |' / '| Checkpoint Name |' tables)")
    names = [r[0] for chunk in t4_chunks for r in chunk]
    out: list[Reported] = []
    for row in t3_rows:
        timm_name = map_old_name(row[0], names)
        for (metric, dataset), cell in zip(_T3_COLUMNS, row[1:]):
            out.append(Reported(row[0], timm_name, metric, dataset, float(cell), "3"))
    for t, chunk in enumerate(t4_chunks):
        for row in chunk:
            for (metric, dataset), cell in zip(_T4_COLUMNS, row[1:]):
                out.append(Reported(row[0], row[0], metric, dataset, float(cell), str(4 + t)))
    return out


def map_old_name(name: str, current: list[str]) -> str:
    """Table 3 prints some checkpoints in timm's older naming (`volo_d5_448_in1k`); map them to
    the Tables 4-10 name with the same architecture (`volo_d5_448.sail_in1k`) when unique."""
    if name in current:
        return name
    arch = re.sub(r"_in1k$", "", name)
    matches = [c for c in current if c.split(".")[0] == arch]
    return matches[0] if len(matches) == 1 else ""


def checkpoints_in_order(rows: list[Reported]) -> list[str]:
    """Every checkpoint of Tables 4-10, in the paper's order (the `configs/paper.yaml` model list)."""
    seen: dict[str, None] = {}
    for r in rows:
        if r.source_table != "3":
            seen.setdefault(r.timm_checkpoint, None)
    return list(seen)


def to_csv_text(rows: list[Reported]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for r in rows:
        value = f"{r.value:+.0f}" if r.metric == "rank_shift" else (f"{r.value:.0f}" if r.metric == "top1_rank" else f"{r.value:.2f}")
        w.writerow([r.checkpoint, r.timm_checkpoint, r.metric, r.dataset, value, r.source_table])
    return buf.getvalue()


def checkpoint_name(model: str) -> str:
    """timm checkpoint name of a model as evaluated: `arch.tag` stays; a bare `arch` gets timm's
    default pretrained tag (e.g. tf_efficientnet_lite0 -> tf_efficientnet_lite0.in1k)."""
    if "." in model:
        return model
    try:
        from timm.models import get_pretrained_cfg  # lazy: timm imports torch (seconds); the parser never needs it

        cfg = get_pretrained_cfg(model)
    except Exception:  # unknown to this timm: keep the name as is
        return model
    tag = getattr(cfg, "tag", None) if cfg is not None else None
    return f"{model}.{tag}" if tag else model
