"""The paper's Figure 1: images that top-1 counts as wrong while the model found another of their
labels, each with the model's top-5 (`figures.figure1` draws it; `tables/figure1.csv` lists them).

Which images: those whose top-1 is not the original label but is in the image's label set
(`metrics.core`: top-1 wrong, ReaL right). Which ones of them: a seeded draw (`FIGURE1_SEED`), so
the same RESULTS always give the same figure, in sample-id order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from PIL import Image

from mlreassess.datasets.labels import class_name
from mlreassess.datasets.manifest import Manifest, read_manifest
from mlreassess.datasets.samples import reader
from mlreassess.errors import MlreassessError
from mlreassess.io import read_meta, read_table
from mlreassess.metrics.core import label_sets, real_correct, top1_correct
from mlreassess.report.inputs import Skip, canvas_image, png_dirs
from mlreassess.results import ResultsLayout

FIGURE1_IMAGES = 8  # the paper shows a handful; 8 fill a 2 x 4 grid
FIGURE1_SEED = 0
FIGURE1_TOPK = 5
IMAGE_SIDE = 256  # images drawn at most this many pixels a side


def top1_wrong_labels_right(topk: np.ndarray, label: np.ndarray, labels: list[list[int]]) -> np.ndarray:
    """(n,) bool: top-1 is not the original label (there is one) but is one of the labels."""
    sets = label_sets(labels)
    return (top1_correct(topk, label) == 0) & (real_correct(topk, sets) == 1)


@dataclass
class Example:
    sample_id: str
    label: int
    labels: list[int]
    topk: list[int]
    probs: list[float]
    image: Image.Image | None = None

    def csv_row(self) -> dict:
        return {"sample_id": self.sample_id, "label": self.label, "label_name": class_name(self.label),
                "labels": " ".join(map(str, self.labels)), "label_names": "; ".join(class_name(c) for c in self.labels),
                "top5": " ".join(map(str, self.topk)), "top5_names": "; ".join(class_name(c) for c in self.topk),
                "top5_probs": " ".join(f"{p:.4f}" for p in self.probs)}

    def drawn(self) -> dict:
        """What `figures.figure1` draws for this image."""
        labels = set(self.labels)
        return {"image": self.image, "names": [class_name(c) for c in self.topk], "probs": self.probs,
                "in_labels": [c in labels for c in self.topk], "original": [c == self.label for c in self.topk],
                "title": f"{self.sample_id}\nlabel: {class_name(self.label)}"}


def pick(ids: np.ndarray, mask: np.ndarray, count: int = FIGURE1_IMAGES, seed: int = FIGURE1_SEED) -> np.ndarray:
    """Positions of up to `count` samples where `mask` holds, drawn with `seed`, in sample-id order."""
    where = np.flatnonzero(mask)
    if len(where) > count:
        where = np.random.default_rng(seed).choice(where, size=count, replace=False)
    return where[np.argsort(ids[where], kind="stable")]


def examples(layout: ResultsLayout, dataset: str, model: str, count: int = FIGURE1_IMAGES,
             seed: int = FIGURE1_SEED) -> tuple[list[Example], int]:
    """(the examples drawn, how many images of `dataset` qualify) for `model`'s predictions."""
    path = layout.prediction(dataset, model)
    if not path.exists():
        raise Skip(f"no predictions of {model} on {dataset}")
    manifest = read_manifest(layout.manifest_copy(dataset))
    pred = read_table(path, columns=["sample_id", "topk_idx", "topk_prob"]).to_pandas()
    rows = manifest.table.select(["sample_id", "label", "labels"]).to_pandas().reset_index(names="row")
    both = rows.merge(pred, on="sample_id", how="inner")
    if both.empty:
        raise Skip(f"no predictions of {model} on {dataset}")
    topk = np.stack(both["topk_idx"].to_numpy()).astype(np.int64)
    label = both["label"].fillna(-1).astype(np.int64).to_numpy()
    mask = top1_wrong_labels_right(topk, label, [list(x) for x in both["labels"]])
    chosen = pick(both["sample_id"].to_numpy(dtype=object), mask, count, seed)
    out = [_example(both.iloc[j]) for j in chosen]
    _add_images(layout, manifest, [int(both["row"].iloc[j]) for j in chosen], out, read_meta(path))
    return out, int(mask.sum())


def _example(row: pd.Series) -> Example:
    return Example(str(row["sample_id"]), int(row["label"]), sorted(int(c) for c in row["labels"]),
                   [int(c) for c in row["topk_idx"][:FIGURE1_TOPK]], [float(p) for p in row["topk_prob"][:FIGURE1_TOPK]])


def _add_images(layout: ResultsLayout, manifest: Manifest, rows: list[int], out: list[Example], meta: dict) -> None:
    """Each example's image, read as inference read it (any input format; PatchML rendered)."""
    for row, ex in zip(rows, out):
        ex.image = sample_image(layout, manifest, row, meta)
        if ex.image is None:
            raise Skip(f"cannot read the image of {ex.sample_id} ({manifest.name}'s images are not reachable here)")
        ex.image.thumbnail((IMAGE_SIDE, IMAGE_SIDE))


def sample_image(layout: ResultsLayout, manifest: Manifest, i: int, pred_meta: dict) -> Image.Image | None:
    """Sample `i`'s RGB image (PatchML: its canvas), None when it cannot be read here."""
    if manifest.kind == "patchml":
        return canvas_image(manifest, i, png_dirs(layout, pred_meta))
    try:
        return reader(manifest).open(i)
    except (MlreassessError, OSError):
        return None
