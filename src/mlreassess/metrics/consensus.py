"""Label candidates from consensus (issue 25): for each image, the classes that many models put in
their top-5 but its label set lacks. How a lab finds images to relabel.

`votes` counts, per image and class, the models that ranked the class in their top-`k` (a class a
model lists twice counts once). A class is a candidate of an image at threshold `t` when at least
`t` models voted for it and it is not one of the image's known labels. `against_reference` measures
the candidates found when only the original label is known against a fuller label set (ReaL):
precision = candidates that are in the reference / candidates; recall = reference labels beyond
the original that were found / reference labels beyond the original. Pure functions on arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mlreassess.constants import NUM_CLASSES
from mlreassess.metrics.core import LabelSets

CONSENSUS_TOPK = 5  # the top-5 of each model, as the paper's Figure 1 shows them


@dataclass(frozen=True)
class Votes:
    """Sparse (image, class, models) triples, sorted by image then class; `n_models` voters."""

    image: np.ndarray  # (m,) int64
    cls: np.ndarray  # (m,) int64
    count: np.ndarray  # (m,) int64
    n_images: int
    n_models: int


def votes(topk: np.ndarray, k: int = CONSENSUS_TOPK) -> Votes:
    """Votes of (M, n, K) top-K class indices (best first, -1 = none), each model's top-`k` only."""
    topk = np.asarray(topk, dtype=np.int64)
    n_models, n_images = topk.shape[:2]
    top = topk[:, :, :k]
    image = np.broadcast_to(np.arange(n_images)[None, :, None], top.shape)
    model = np.broadcast_to(np.arange(n_models)[:, None, None], top.shape)
    keep = top >= 0
    # One vote per (model, image, class): a repeated class in one row counts once.
    key = np.unique((image[keep] * NUM_CLASSES + top[keep]) * max(n_models, 1) + model[keep])
    pair, count = np.unique(key // max(n_models, 1), return_counts=True)
    return Votes(pair // NUM_CLASSES, pair % NUM_CLASSES, count.astype(np.int64), n_images, n_models)


def _known(votes_: Votes, known: LabelSets) -> np.ndarray:
    """(m,) bool: the voted class is one of the image's known labels."""
    rows = known.pad[votes_.image]
    return (rows == votes_.cls[:, None]).any(axis=1)


def candidates(votes_: Votes, known: LabelSets, at_least: int) -> list[list[int]]:
    """Per image, the classes with at least `at_least` votes that are not among its known labels,
    most votes first (then by class index)."""
    keep = (votes_.count >= at_least) & ~_known(votes_, known)
    order = np.lexsort((votes_.cls[keep], -votes_.count[keep], votes_.image[keep]))
    image, cls = votes_.image[keep][order], votes_.cls[keep][order]
    out: list[list[int]] = [[] for _ in range(votes_.n_images)]
    for i, c in zip(image.tolist(), cls.tolist()):
        out[i].append(c)
    return out


@dataclass(frozen=True)
class Agreement:
    """Candidates at one threshold against a reference label set."""

    at_least: int  # votes needed (of n_models)
    n_models: int
    images: int  # images measured (an original label and a non-empty reference)
    with_candidate: int  # of them, images with at least one candidate
    candidates: int
    correct: int  # candidates in the reference (each a reference label beyond the original: found)
    missing: int  # reference labels beyond the original label

    @property
    def precision_pct(self) -> float:
        return 100.0 * self.correct / self.candidates if self.candidates else float("nan")

    @property
    def recall_pct(self) -> float:
        return 100.0 * self.correct / self.missing if self.missing else float("nan")


def against_reference(votes_: Votes, label: np.ndarray, reference: LabelSets) -> list[Agreement]:
    """For every threshold 1..n_models: the candidates found when only the original `label` (n,) is
    known (-1: none), measured against `reference` (e.g. ReaL). Images without an original label or
    with an empty reference set are left out."""
    label = np.asarray(label, dtype=np.int64)
    measured = (label >= 0) & (reference.count > 0)
    v = votes_
    on = measured[v.image] & (v.cls != label[v.image])  # a voted class other than the original label
    in_ref = (reference.pad[v.image] == v.cls[:, None]).any(axis=1)
    extra_ref = reference.count - (reference.pad == label[:, None]).any(axis=1)  # reference labels beyond the original
    missing = int(extra_ref[measured].sum())
    out = []
    for t in range(1, v.n_models + 1):
        cand = on & (v.count >= t)
        hit = cand & in_ref
        out.append(Agreement(t, v.n_models, int(measured.sum()), int(len(np.unique(v.image[cand]))),
                             int(cand.sum()), int(hit.sum()), missing))
    return out
