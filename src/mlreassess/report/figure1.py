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
from mlreassess.datasets.manifest import read_manifest
from mlreassess.io import read_meta
from mlreassess.metrics.core import LabelSets, real_correct, top1_correct
from mlreassess.metrics.inputs import manifest_labels
from mlreassess.report.inputs import Skip, image_reader, model_topk, png_dirs, sample_image
from mlreassess.results import ResultsLayout

FIGURE1_IMAGES = 8  # the paper shows a handful; 8 fill a 2 x 4 grid
FIGURE1_SEED = 0
FIGURE1_TOPK = 5
IMAGE_SIDE = 256  # images drawn at most this many pixels a side


def top1_wrong_labels_right(topk: np.ndarray, label: np.ndarray, labels: LabelSets) -> np.ndarray:
    """(n,) bool: top-1 is not the original label (there is one) but is one of the labels."""
    return (top1_correct(topk, label) == 0) & (real_correct(topk, labels) == 1)


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
    manifest = read_manifest(layout.manifest_copy(dataset))
    ids = np.asarray(manifest.sample_ids, dtype=object)
    top = model_topk(layout, dataset, model, pd.Index(ids), FIGURE1_TOPK)
    if top is None or not top.seen.any():
        raise Skip(f"no predictions of {model} on {dataset}")
    label, labels = manifest_labels(manifest.table)
    mask = top.seen & top1_wrong_labels_right(top.idx, label, labels)
    read, dirs = image_reader(manifest), png_dirs(layout, read_meta(layout.prediction(dataset, model)))
    out = []
    for row in pick(ids, mask, count, seed):
        known = top.idx[row] >= 0
        ex = Example(str(ids[row]), int(label[row]), labels.pad[row, : labels.count[row]].tolist(),
                     top.idx[row][known].tolist(), top.prob[row][known].tolist(),
                     sample_image(manifest, read, int(row), dirs, IMAGE_SIDE))
        if ex.image is None:
            raise Skip(f"cannot read the image of {ex.sample_id} ({manifest.name}'s images are not reachable here)")
        out.append(ex)
    return out, int(mask.sum())
