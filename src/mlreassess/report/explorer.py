"""The results page's image explorer: for each predicted dataset, every sample's thumbnail, labels,
each shown model's top-5 and its label candidates from consensus, as compact JSON the page's script
filters and sorts (resources/results_page.html).

Compact because it is inline (the page loads nothing): classes are indices into one list of
names, top-5 are flat lists of class indices (-1: no prediction) and probabilities in permille.
Which models: the page's top models (by PatchML ASMA, else V1 top-1) and any asked for.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mlreassess.constants import NUM_CLASSES
from mlreassess.datasets.labels import class_name
from mlreassess.datasets.manifest import read_manifest
from mlreassess.io import read_meta
from mlreassess.metrics.consensus import CONSENSUS_TOPK, candidates, votes
from mlreassess.metrics.core import label_sets
from mlreassess.metrics.inputs import manifest_labels
from mlreassess.report.inputs import model_topk
from mlreassess.report.thumbs import write_thumbs
from mlreassess.results import ResultsLayout

EXPLORER_KINDS = ("imagenet_v1", "imagenet_v2", "patchml")


def majority(n_models: int) -> int:
    """Votes a consensus candidate needs on the page: more than half of the models shown."""
    return n_models // 2 + 1


def _known_labels(label: np.ndarray, labels: list[list[int]]):
    """Each image's known classes: its label set and its original label."""
    return label_sets([sorted({*ls, *([int(lb)] if lb >= 0 else [])}) for lb, ls in zip(label, labels)])


def dataset_view(layout: ResultsLayout, dataset: str, kind: str, models: list[str], progress: bool = True) -> dict | None:
    """The explorer's data for one dataset (None when none of `models` predicted it); makes its thumbnails."""
    manifest = read_manifest(layout.manifest_copy(dataset))
    ids = pd.Index(np.asarray(manifest.sample_ids, dtype=object))
    tops = {m: t for m in models if (t := model_topk(layout, dataset, m, ids)) is not None}
    if not tops:
        return None
    label, sets = manifest_labels(manifest.table)
    labels = [row[:n].tolist() for row, n in zip(sets.pad, sets.count)]
    stack = np.stack([t.idx for t in tops.values()])
    cand = candidates(votes(stack), _known_labels(label, labels), majority(len(tops)))
    first = layout.prediction(dataset, next(iter(tops)))
    thumbs = write_thumbs(layout, dataset, read_meta(first), progress, manifest)
    return {"name": dataset, "kind": kind, "thumbs": thumbs.folder, "missing": list(thumbs.missing),
            "ids": [str(s) for s in ids], "label": label.tolist(), "labels": labels, "models": list(tops),
            "top": {m: t.idx.ravel().tolist() for m, t in tops.items()},
            "prob": {m: np.rint(1000 * np.clip(t.prob, 0, 1)).astype(np.int64).ravel().tolist() for m, t in tops.items()},
            "cand": cand, "cand_votes": majority(len(tops))}


def explorer_data(layout: ResultsLayout, kinds: dict[str, str], order: list[str], models: list[str],
                  progress: bool = True) -> dict | None:
    """{classes, k, datasets: [dataset_view ...]} for the datasets of `order` that have a manifest copy
    and predictions of `models`; None when there are none."""
    views = []
    for dataset in order:
        if kinds.get(dataset) in EXPLORER_KINDS and models and layout.manifest_copy(dataset).is_file():
            view = dataset_view(layout, dataset, kinds[dataset], models, progress)
            if view is not None:
                views.append(view)
    if not views:
        return None
    return {"classes": [class_name(c) for c in range(NUM_CLASSES)], "k": CONSENSUS_TOPK, "datasets": views}
