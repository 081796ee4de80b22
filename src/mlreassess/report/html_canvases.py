"""PatchML canvases for the results page, as in the paper's Figure 8: a few canvases of one seed,
each with the top-g predictions of the top models (and of any model asked for).

The canvases are shared by every model shown, so the page adds exactly `count` PNG files
(`RESULTS/figures/canvases/canvas-<k>.png`) however many models it shows; the bars are data the
page draws. Canvases are rendered from the manifest (`patchml.render.render_row`), else taken from
the PNGs `mlreassess patchml --images` wrote beside the manifest.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.compute as pc

from mlreassess.datasets.labels import class_name
from mlreassess.datasets.manifest import read_manifest
from mlreassess.io import atomic_path, read_meta, read_table
from mlreassess.report.html_build import data_uri
from mlreassess.report.inputs import canvas_image, png_dirs
from mlreassess.results import ResultsLayout

log = logging.getLogger(__name__)

CANVAS_DIR = "canvases"  # under RESULTS/figures/
CANVAS_STEM = "canvas-"


@dataclass(frozen=True)
class CanvasRequest:
    dataset: str  # the PatchML seed whose canvases are shown
    models: tuple[str, ...]  # whose top-g bars are drawn (top models first)
    count: int = 4  # canvases (= PNG files written)


def pick_canvases(table: pd.DataFrame, count: int) -> list[int]:
    """Row positions of `count` canvases spread over the label counts present (largest first), the
    first sample id of each; more than one per label count only when there are too few counts."""
    if count <= 0 or table.empty:
        return []
    table = table.sort_values(["label_count", "sample_id"], kind="stable")
    counts = sorted(table["label_count"].unique(), reverse=True)
    k = min(count, len(counts))
    wanted = [counts[round(i * (len(counts) - 1) / max(k - 1, 1))] for i in range(k)]
    picks: list[int] = []
    for depth in range(count):  # depth 0: the first canvas of each wanted count; 1: the second ...
        for g in dict.fromkeys(wanted if depth == 0 else counts):
            rows = table.index[table["label_count"] == g]
            if depth < len(rows) and rows[depth] not in picks and len(picks) < count:
                picks.append(int(rows[depth]))
        if len(picks) == count:
            break
    return picks


def _predictions(layout: ResultsLayout, dataset: str, model: str, ids: list[str]) -> pd.DataFrame | None:
    """sample_id -> topk_idx, topk_prob for `ids` (None when the model has no predictions there)."""
    path = layout.prediction(dataset, model)
    if not path.exists():
        return None
    table = read_table(path, columns=["sample_id", "topk_idx", "topk_prob"])
    table = table.filter(pc.is_in(table.column("sample_id"), value_set=pc.cast(ids, table.schema.field("sample_id").type)))
    return table.to_pandas().set_index("sample_id")


def _bars(pred: pd.DataFrame | None, sample_id: str, labels: set[int], g: int) -> list | None:
    """The model's top-g classes on one canvas: [[class name, probability %, in the labels], ...]."""
    if pred is None or sample_id not in pred.index:
        return None
    idx = np.asarray(pred.loc[sample_id, "topk_idx"])[:g]
    prob = np.asarray(pred.loc[sample_id, "topk_prob"], dtype=float)[:g]
    return [[class_name(int(c)), round(100.0 * float(p), 2), int(c) in labels] for c, p in zip(idx, prob)]


def _clear_old(layout: ResultsLayout, folder: Path, keep: set[Path]) -> None:
    """Remove canvases of an earlier page that this one does not show (keeps the file count bounded)."""
    for old in layout.files(folder, f"{CANVAS_STEM}*.png"):
        if old not in keep:
            old.unlink()


def write_canvases(layout: ResultsLayout, request: CanvasRequest) -> dict | None:
    """Write the canvases' PNGs; return {dataset, items: [{src, sample_id, label_count, labels}],
    models, bars: {model: [bars per canvas]}} for the page, or None when there is nothing to show."""
    folder = layout.inside(layout.figures / CANVAS_DIR)
    manifest_path = layout.manifest_copy(request.dataset)
    if not manifest_path.exists() or not request.models:
        _clear_old(layout, folder, set())
        return None
    manifest = read_manifest(manifest_path)
    t = manifest.table.select(["sample_id", "labels", "label_count"]).to_pandas()
    preds = {m: _predictions(layout, request.dataset, m, t["sample_id"].tolist()) for m in request.models}
    have = [p for p in preds.values() if p is not None]
    if not have:
        _clear_old(layout, folder, set())
        return None
    common = set.intersection(*(set(p.index) for p in have))
    picks = pick_canvases(t[t["sample_id"].isin(common)], request.count)
    image_dirs = png_dirs(layout, read_meta(layout.prediction(request.dataset, next(m for m, p in preds.items() if p is not None))))
    items, bars, written = [], {m: [] for m in request.models}, set()
    for i in picks:
        row = t.loc[i]
        image = canvas_image(manifest, i, image_dirs)
        if image is None:
            log.warning("results page: canvas %s of %s not shown (no source images, nor %s.png in %s)",
                        row["sample_id"], request.dataset, row["sample_id"], image_dirs[0])
            continue
        path = layout.inside(folder / f"{CANVAS_STEM}{len(items) + 1}.png")
        with atomic_path(path) as tmp:
            image.save(tmp, format="PNG")
        written.add(path)
        labels = sorted(int(x) for x in row["labels"])
        g = int(row["label_count"])
        items.append({"src": data_uri(path), "file": path.relative_to(layout.root).as_posix(), "sample_id": str(row["sample_id"]),
                      "label_count": g, "labels": [class_name(c) for c in labels]})
        for m in request.models:
            bars[m].append(_bars(preds[m], row["sample_id"], set(labels), g))
    _clear_old(layout, folder, written)
    if not items:
        return None
    return {"dataset": request.dataset, "items": items, "models": list(request.models), "bars": bars}
