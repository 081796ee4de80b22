"""Label candidates from consensus, read from RESULTS: every model's top-5 on one dataset, aligned by
sample id, and the table of how often the candidates found from the original label alone are in
the dataset's label set (`metrics.consensus`; the report item `consensus`, the explorer's column).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from mlreassess.datasets.manifest import Manifest, read_manifest
from mlreassess.metrics.consensus import CONSENSUS_TOPK, Agreement, against_reference, votes
from mlreassess.metrics.inputs import manifest_labels
from mlreassess.report.inputs import Skip, model_topk
from mlreassess.results import ResultsLayout


@dataclass
class Aligned:
    """The samples every given model predicted, in manifest order, with each model's top-K."""

    rows: np.ndarray  # manifest rows
    sample_ids: np.ndarray
    models: list[str]
    topk: np.ndarray  # (M, n, K) int64


def aligned_topk(layout: ResultsLayout, manifest: Manifest, models: list[str], k: int = CONSENSUS_TOPK) -> Aligned:
    """Each model's top-`k` on the samples of `manifest` (a manifest copy) all of them predicted (a
    model with no file is left out)."""
    dataset = manifest.name
    ids = pd.Index(np.asarray(manifest.sample_ids, dtype=object))
    tops = {m: t for m in models if (t := model_topk(layout, dataset, m, ids, k)) is not None}
    if not tops:
        raise Skip(f"no predictions on {dataset}")
    rows = np.flatnonzero(np.logical_and.reduce([t.seen for t in tops.values()]))
    return Aligned(rows, ids.to_numpy()[rows], list(tops), np.stack([t.idx[rows] for t in tops.values()]))


def agreement_table(layout: ResultsLayout, dataset: str, models: list[str]) -> tuple[pd.DataFrame, list[Agreement]]:
    """The consensus table of `dataset` (its manifest's label set as the reference) over `models`."""
    manifest = read_manifest(layout.manifest_copy(dataset))
    data = aligned_topk(layout, manifest, models)
    label, labels = manifest_labels(manifest.table.take(data.rows))
    found = against_reference(votes(data.topk), label, labels)
    df = pd.DataFrame([{
        "Models agreeing": f"{a.at_least} of {a.n_models}", "Images": a.images, "Images with a candidate": a.with_candidate,
        "Candidates": a.candidates, "In the label set": a.correct, "Precision (%)": round(a.precision_pct, 2),
        "Label-set labels beyond the original": a.missing, "Recall (%)": round(a.recall_pct, 2)} for a in found])
    return df, found
