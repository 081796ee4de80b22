"""Label candidates from consensus, read from RESULTS: every model's top-5 on one dataset, aligned by
sample id, and the table of how often the candidates found from the original label alone are in
the dataset's label set (`metrics.consensus`; the report item `consensus`, the explorer's column).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from mlreassess.constants import NUM_CLASSES
from mlreassess.datasets.manifest import read_manifest
from mlreassess.io import read_table
from mlreassess.metrics.consensus import CONSENSUS_TOPK, Agreement, against_reference, votes
from mlreassess.metrics.core import label_sets
from mlreassess.report.inputs import Skip
from mlreassess.results import ResultsLayout


@dataclass
class Aligned:
    """The samples every given model predicted, in manifest order, with each model's top-K."""

    rows: np.ndarray  # manifest rows
    sample_ids: np.ndarray
    models: list[str]
    topk: np.ndarray  # (M, n, K) int64


@dataclass(frozen=True)
class TopK:
    """One model's top-`k` on a manifest's rows (-1 / 0 where it has no prediction)."""

    idx: np.ndarray  # (n, k) int64
    prob: np.ndarray  # (n, k) float64
    seen: np.ndarray  # (n,) bool: the row has a prediction


def model_topk(layout: ResultsLayout, dataset: str, model: str, ids: pd.Index, k: int = CONSENSUS_TOPK) -> TopK | None:
    """`model`'s top-`k` on `dataset`, by sample id onto the rows of `ids` (None: no predictions file)."""
    path = layout.prediction(dataset, model)
    if not path.exists():
        return None
    table = read_table(path, columns=["sample_id", "topk_idx", "topk_prob"])
    rows = ids.get_indexer(table.column("sample_id").to_numpy(zero_copy_only=False))
    ok = rows >= 0
    idx, prob = np.full((len(ids), k), -1, np.int64), np.zeros((len(ids), k))
    listed_idx = table.column("topk_idx").to_pylist()
    listed_prob = table.column("topk_prob").to_pylist()
    for r, i, p in zip(rows, listed_idx, listed_prob):
        if r >= 0 and i and p and len(i) == len(p):  # evaluate refuses other rows; here they show nothing
            n = min(k, len(i))
            idx[r, :n], prob[r, :n] = i[:n], [np.nan if v is None else v for v in p[:n]]
    bad = (idx < 0) | (idx >= NUM_CLASSES) | ~np.isfinite(prob)  # a damaged file shows no class, never a wrong one
    idx[bad], prob[bad] = -1, 0.0
    seen = np.zeros(len(ids), bool)
    seen[rows[ok]] = True
    return TopK(idx, prob, seen)


def aligned_topk(layout: ResultsLayout, dataset: str, models: list[str], k: int = CONSENSUS_TOPK) -> Aligned:
    """Each model's top-`k` on the samples all of them predicted (a model with no file is left out)."""
    manifest = read_manifest(layout.manifest_copy(dataset))
    ids = pd.Index(np.asarray(manifest.sample_ids, dtype=object))
    tops = {m: t for m in models if (t := model_topk(layout, dataset, m, ids, k)) is not None}
    if not tops:
        raise Skip(f"no predictions on {dataset}")
    rows = np.flatnonzero(np.logical_and.reduce([t.seen for t in tops.values()]))
    return Aligned(rows, ids.to_numpy()[rows], list(tops), np.stack([t.idx[rows] for t in tops.values()]))


def agreement_table(layout: ResultsLayout, dataset: str, models: list[str]) -> tuple[pd.DataFrame, list[Agreement]]:
    """The consensus table of `dataset` (its manifest's label set as the reference) over `models`."""
    data = aligned_topk(layout, dataset, models)
    manifest = read_manifest(layout.manifest_copy(dataset))
    table = manifest.table.take(data.rows).select(["label", "labels"]).to_pydict()
    label = np.array([-1 if v is None else int(v) for v in table["label"]], dtype=np.int64)
    found = against_reference(votes(data.topk), label, label_sets(table["labels"]))
    df = pd.DataFrame([{
        "Models agreeing": f"{a.at_least} of {a.n_models}", "Images": a.images, "Images with a candidate": a.with_candidate,
        "Candidates": a.candidates, "In the label set": a.correct, "Precision (%)": round(a.precision_pct, 2),
        "Label-set labels beyond the original": a.missing, "Recall (%)": round(a.recall_pct, 2)} for a in found])
    return df, found
