"""What the results page shows, as JSON-ready data: leaderboard columns and rows (value, 95%
interval and n of every top-1 / ReaL / ASMA; the paper's and timm's values beside ours; rank shift), each
model's subgroup accuracies and prediction metadata, and the failures.

Everything is read from the RESULTS folder (`metrics.parquet`, `failures.jsonl`, the predictions'
metadata) and from the paper's numbers (`data_manifests/paper_reported.csv`); `html` turns it
into the page. Values stay unrounded: the page rounds for display, its CSV keeps them exact.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import pandas as pd

from mlreassess.errors import MlreassessError
from mlreassess.io import read_meta
from mlreassess.metrics.inputs import incomplete_reason
from mlreassess.metrics.table import curve_point_mask, unit_of
from mlreassess.report.inputs import read_reported
from mlreassess.report.paper import checkpoint_name
from mlreassess.report.tables import metric_column, ranks
from mlreassess.report.timm_results import Protocol, outside, protocols, timm_roles, timm_table, timm_value
from mlreassess.results import ResultsLayout

log = logging.getLogger(__name__)

# Beyond the oracle (docs/metrics.md): LRAP, F1 of the sets p >= tau, RAPS's mean set size (classes).
ORACLE_FREE_METRICS = ("lrap", "thr_f1", "raps_size")
LEADERBOARD_METRICS = ("top1", "real", "asma", *ORACLE_FREE_METRICS)
# ReaL beside the paper's value is the paper's convention (images with 1..5 labels) where evaluate
# wrote it (V1, V2); the column keeps its id and label, and says which metric it shows.
PAPER_CONVENTION = {"real": "real_1to5"}
CELL_METRICS = (*LEADERBOARD_METRICS, *PAPER_CONVENTION.values())
METRIC_LABELS = {"top1": "top-1", "real": "ReaL", "asma": "ASMA", "rank_shift": "rank shift", "lrap": "LRAP",
                 "thr_f1": "F1 (p\u2265\u03c4)", "raps_size": "RAPS size"}
KIND_LABELS = {"imagenet_v1": "ImageNetV1", "imagenet_v2": "ImageNetV2", "patchml": "PatchML"}
RANK_SHIFT = "rank_shift"  # the id of the rank-shift column (also the paper's metric name)
# Prediction metadata shown per model (docs/architecture.md, "Predictions").
META_KEYS = ("weights", "input_size", "interpolation", "crop", "precision", "batch_size", "device",
             "images_per_s", "elapsed_s", "n_samples")


@dataclass(frozen=True)
class Roles:
    """Which evaluated datasets play the paper's ImageNetV1, ImageNetV2 and PatchML (mean) roles."""

    v1: str | None = None
    v2: str | None = None
    patchml: str | None = None  # the mean over seeds (`patchml_mean`)

    def paper_role(self, dataset: str) -> str | None:
        """The paper_reported.csv dataset name of an evaluated dataset, if it plays a role."""
        roles = {self.v1: "imagenet_v1", self.v2: "imagenet_v2", self.patchml: "patchml_mean"}
        return roles.get(dataset) if dataset else None


def clean(v: Any) -> float | None:
    """A float for JSON: None for missing / NaN (JSON has no NaN)."""
    if v is None or v is pd.NA:
        return None
    v = float(v)
    return None if math.isnan(v) else v


def dataset_order(kinds: Mapping[str, str], roles: Roles) -> list[str]:
    """V1 datasets first, then V2, then the PatchML seeds and their mean, then anything else;
    within a kind the dataset playing the paper's role leads."""
    leading = {roles.v1, roles.v2}
    order = {kind: i for i, kind in enumerate(KIND_LABELS)}

    def key(name: str) -> tuple:
        return (order.get(kinds[name], len(order)), name == roles.patchml, name not in leading, name)

    return sorted(kinds, key=key)


def role_label(dataset: str, kind: str, roles: Roles) -> str:
    if dataset == roles.patchml:
        return "PatchML mean over seeds"
    if dataset in (roles.v1, roles.v2):
        return f"{KIND_LABELS[kind]} · vs the paper"
    if kind == "patchml":
        return "PatchML seed"
    return KIND_LABELS.get(kind, kind or "dataset")


def _whole(metrics: pd.DataFrame) -> pd.DataFrame:
    """The whole-dataset rows of the leaderboard's metrics (a set metric's headline row, not its curve)."""
    return metrics[metrics["label_count"].isna() & metrics["metric"].isin(CELL_METRICS) & ~curve_point_mask(metrics)]


def leaderboard_columns(metrics: pd.DataFrame, kinds: Mapping[str, str], roles: Roles, paper: Mapping) -> list[dict]:
    """One column per (dataset, metric) present among top-1 / ReaL / ASMA / LRAP / F1 / RAPS size,
    then rank shift. `unit`: "pct" or "classes"."""
    whole = _whole(metrics)
    present = set(zip(whole["dataset"], whole["metric"]))
    paper_keys = {(role, metric) for _, role, metric in paper}
    columns = []
    for dataset in dataset_order(kinds, roles):
        for metric in LEADERBOARD_METRICS:
            if (dataset, metric) in present:
                role = roles.paper_role(dataset)
                shown = PAPER_CONVENTION.get(metric, metric)
                shown = shown if (dataset, shown) in present else metric
                columns.append({"id": f"{dataset}/{metric}", "dataset": dataset, "metric": shown,
                                "paper_metric": metric,
                                "label": METRIC_LABELS[metric], "kind": kinds[dataset],
                                "group": role_label(dataset, kinds[dataset], roles),
                                "paper": (role, metric) in paper_keys, "unit": unit_of(metric)})
    if roles.v1 and roles.patchml:
        columns.append({"id": RANK_SHIFT, "dataset": roles.patchml, "metric": RANK_SHIFT,
                        "label": METRIC_LABELS[RANK_SHIFT], "kind": "rank",
                        "group": f"rank by {roles.v1} top-1 minus rank by PatchML ASMA",
                        "paper": ("patchml_mean", RANK_SHIFT) in paper_keys})
    return columns


def whole_dataset_cells(metrics: pd.DataFrame) -> dict[tuple[str, str, str], list]:
    """(model, dataset, metric) -> [value, ci_low, ci_high, n, bound] for the whole-dataset rows
    (bound: "upper" / "lower" where the stored top-K only bounds the value, else None)."""
    m = _whole(metrics)
    bounds = m["bound"] if "bound" in m.columns else pd.Series(None, index=m.index, dtype=object)
    return {
        (r.model, r.dataset, r.metric): [clean(r.value_pct), clean(r.ci_low_pct), clean(r.ci_high_pct),
                                         None if pd.isna(r.n) else int(r.n), None if pd.isna(b) else str(b)]
        for r, b in zip(m.itertuples(index=False), bounds)
    }


def rank_cells(metrics: pd.DataFrame, roles: Roles) -> dict[str, list]:
    """model -> [rank shift, rank by V1 top-1, rank by PatchML ASMA] (the report's definition)."""
    if not (roles.v1 and roles.patchml):
        return {}
    r = ranks(metric_column(metrics, roles.v1, "top1"), metric_column(metrics, roles.patchml, "asma"))
    return {model: [int(row.rank_shift), int(row.top1_rank), int(row.asma_rank)] for model, row in r.iterrows()}


def paper_values(reported_csv: Path | None) -> dict[tuple[str, str, str], float]:
    """(timm checkpoint, paper dataset role, metric) -> the paper's value. Tables 4-10 win over
    Table 3 where both print a value (they disagree once; docs/outputs.md)."""
    if reported_csv is None or not Path(reported_csv).exists():
        return {}
    reported = read_reported(Path(reported_csv))  # the one reader: a bad file is one line naming it
    reported = reported.sort_values("source_table", key=lambda s: s.astype(str) != "3", kind="stable")
    out = {}
    for row in reported.itertuples(index=False):
        name = str(row.timm_checkpoint or row.checkpoint)
        out[(name, str(row.dataset), str(row.metric))] = float(row.value)
    return out


def read_failures(path: Path) -> list[dict]:
    """failures.jsonl as {model, dataset, error} dicts, the last line of each (model, dataset) kept."""
    if not path.exists():
        return []
    latest: dict[tuple[str, str], dict] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            key = (str(entry["model"]), str(entry.get("dataset", "")))
        except (ValueError, KeyError, TypeError):
            log.warning("%s: line %d is not a failure record; left out of the results page", path, number)
            continue
        latest[key] = {"model": key[0], "dataset": key[1], "error": str(entry.get("error", ""))}
    return list(latest.values())


def open_failures(failures: Iterable[dict], metrics: pd.DataFrame | None) -> list[dict]:
    """The failures not made good since: no metric of that (model, dataset) exists."""
    done = set() if metrics is None else set(zip(metrics["model"], metrics["dataset"]))
    return [f for f in failures if (f["model"], f["dataset"]) not in done]


def leaderboard_rows(metrics: pd.DataFrame | None, columns: list[dict], roles: Roles,
                     paper: Mapping, failures: list[dict]) -> list[dict]:
    """One row per checkpoint (evaluated or failed): its cells and the paper's value per column."""
    cells = whole_dataset_cells(metrics) if metrics is not None else {}
    shifts = rank_cells(metrics, roles) if metrics is not None else {}
    models = sorted({m for m, _, _ in cells} | {f["model"] for f in failures})
    rows = []
    for model in models:
        name = checkpoint_name(model) if paper else model
        row_cells, row_paper = [], []
        for col in columns:
            if col["id"] == RANK_SHIFT:
                row_cells.append(shifts.get(model))
            else:
                row_cells.append(cells.get((model, col["dataset"], col["metric"])))
            role = roles.paper_role(col["dataset"])
            row_paper.append(paper.get((name, role, col.get("paper_metric", col["metric"]))) if col["paper"] else None)
        failed = [[f["dataset"], f["error"]] for f in failures if f["model"] == model]
        rows.append({"model": model, "checkpoint": name, "cells": row_cells, "paper": row_paper, "failed": failed})
    return rows


def subgroups(metrics: pd.DataFrame, datasets: list[str]) -> dict[str, dict[str, list]]:
    """model -> dataset -> [[label count, value, ci_low, ci_high, n], ...] (ascending label count)."""
    sub = metrics[(metrics["metric"] == "subgroup") & metrics["label_count"].notna()]
    sub = sub.sort_values(["model", "dataset", "label_count"], kind="stable")
    out: dict[str, dict[str, list]] = {}
    for r in sub.itertuples(index=False):
        per = out.setdefault(r.model, {})
        per.setdefault(r.dataset, []).append(
            [int(r.label_count), clean(r.value_pct), clean(r.ci_low_pct), clean(r.ci_high_pct),
             None if pd.isna(r.n) else int(r.n)])
    order = {d: i for i, d in enumerate(datasets)}
    return {m: dict(sorted(per.items(), key=lambda kv: order.get(kv[0], len(order)))) for m, per in out.items()}


def prediction_meta(layout: ResultsLayout, model: str, datasets: Iterable[str]) -> dict[str, dict]:
    """dataset -> the META_KEYS of the model's prediction file there (files that exist only)."""
    out = {}
    for dataset in datasets:
        try:
            path = layout.prediction(dataset, model)
            meta = read_meta(path) if path.exists() else None
            why = incomplete_reason(path, meta) if meta else None
        except MlreassessError as exc:  # an odd name or an unreadable file: the page goes on
            log.warning("results page: %s", exc)
            continue
        if why is not None:
            log.warning("results page: %s: its run details not shown: %s", path, why)
            continue
        if meta:
            out[dataset] = {k: meta[k] for k in META_KEYS if meta.get(k) is not None}
            out[dataset]["failed_samples"] = len(meta.get("failed_samples") or [])
    return out


def add_timm_references(rows: list[dict], columns: list[dict], metrics: pd.DataFrame | None, roles: Roles,
                        layout: ResultsLayout) -> None:
    """Beside the paper's value, timm's published one (`report.timm_results`): each row gets `timm`,
    per column [timm's value, ours - timm, outside our interval, timm's protocol is ours] or None,
    with ours in timm's metric (ReaL: `real`, over every labelled image); a column that has any gets
    `timm: true`. The protocol (crop) and input size come from the predictions' metadata."""
    covered = timm_roles(layout, {"imagenet_v1": roles.v1, "imagenet_v2": roles.v2})
    if metrics is None or not covered:
        return
    table, cells = timm_table(), whole_dataset_cells(metrics)
    wanted = [(col, roles.paper_role(col["dataset"]), col.get("paper_metric")) for col in columns]
    seen = protocols(layout, [(r["model"], col["dataset"]) for r in rows for col, role, _ in wanted if role in covered])
    for r in rows:
        entries = []
        for col, role, metric in wanted:
            mine = cells.get((r["model"], col["dataset"], metric)) if role in covered else None
            protocol = seen.get((r["model"], col["dataset"]), Protocol())
            value = timm_value(table, checkpoint_name(r["model"]), role, metric, protocol) if mine else None
            entries.append(None if value is None else
                           [value, mine[0] - value, bool(outside(value, mine[1], mine[2])), protocol.reference == "timm"])
        r["timm"] = entries
    for i, col in enumerate(columns):
        col["timm"] = any(r["timm"][i] is not None for r in rows)
