"""The paper's tables (SPEC 5) as DataFrames, and their Markdown / CSV / LaTeX files.

Builders take plain inputs (label-count arrays, the long metrics DataFrame) and return a
DataFrame whose columns are the printed headers; `write_table_files` writes one stem three ways.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from mlreassess.constants import IMAGENET_ASMA_RANGE
from mlreassess.io import write_text_atomic
from mlreassess.metrics import core
from mlreassess.report.paper import checkpoint_name
from mlreassess.report.timm_results import FILES as TIMM_FILES
from mlreassess.report.timm_results import Protocol, outside, timm_value

NONE = "–"  # printed for a value that was not computed
# The paper's ReaL is over samples with 1..5 labels (Sec. 4.2): its tables and figures use ours of that name.
PAPER_REAL = "real_1to5"
# Metric names of data_manifests/paper_reported.csv -> the metric of metrics.parquet they compare with.
PAPER_METRICS = {"real": PAPER_REAL}


# ---------------------------------------------------------------- formatting / writing

def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return NONE
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}"
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.2f}"
    return str(v)


def to_markdown(df: pd.DataFrame) -> str:
    head = "| " + " | ".join(str(c) for c in df.columns) + " |"
    sep = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, sep, *body]) + "\n"


def _tex(s: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("_", r"\_"), ("%", r"\%"), ("&", r"\&"), ("#", r"\#"), (">", r"$>$"), ("–", "--")):
        s = s.replace(a, b)
    return s


def to_latex(df: pd.DataFrame, caption: str, label: str) -> str:
    """A `longtable` (it may span pages like the paper's Tables 4-10); needs \\usepackage{longtable}."""
    align = "l" + "r" * (len(df.columns) - 1)
    head = " & ".join(_tex(str(c)) for c in df.columns) + r" \\"
    lines = [
        rf"\begin{{longtable}}{{{align}}}",
        rf"\caption{{{_tex(caption)}}}\label{{{label}}}\\",
        r"\hline",
        head,
        r"\hline",
        r"\endhead",
    ]
    lines += [" & ".join(_tex(_fmt(v)) for v in row) + r" \\" for row in df.itertuples(index=False)]
    lines += [r"\hline", r"\end{longtable}"]
    return "\n".join(lines) + "\n"


def write_table_files(df: pd.DataFrame, out_dir: Path, stem: str, caption: str, note: str = "") -> list[Path]:
    """OUT/<stem>.md (caption, table, note), .csv (raw values) and .tex; each written atomically."""
    out_dir = Path(out_dir)
    md = f"**{caption}**\n\n{to_markdown(df)}" + (f"\n{note}\n" if note else "")
    paths = [out_dir / f"{stem}.md", out_dir / f"{stem}.csv", out_dir / f"{stem}.tex"]
    write_text_atomic(paths[0], md)
    write_text_atomic(paths[1], df.to_csv(index=False))
    write_text_atomic(paths[2], to_latex(df, caption + (f" {note}" if note else ""), f"tab:{stem}"))
    return paths


# ---------------------------------------------------------------- Table 1 and 2: label counts

def label_count_row(counts: np.ndarray, top: int = IMAGENET_ASMA_RANGE[-1]) -> dict[str, int]:
    """Images per label count: '0', '1'..'top', '>top' (the paper's Table 1 omits '0')."""
    counts = np.asarray(counts)
    row = {"0": int((counts == 0).sum())}
    row.update({str(g): int((counts == g).sum()) for g in range(1, top + 1)})
    row[f">{top}"] = int((counts > top).sum())
    row["total"] = int(len(counts))
    return row


def table1(counts_by_dataset: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """Table 1: label-count distribution of each dataset (rows), 0 / 1..5 / >5 / total."""
    rows = [{"Dataset": name, **label_count_row(c)} for name, c in counts_by_dataset.items()]
    return pd.DataFrame(rows)


def table2(counts_by_seed: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """Table 2: PatchML images per label count (columns: every count present) per seed (rows)."""
    present = sorted({int(g) for c in counts_by_seed.values() for g in np.unique(c)})
    rows = [
        {"Dataset": name, **{str(g): int((np.asarray(c) == g).sum()) for g in present}, "total": int(len(c))}
        for name, c in counts_by_seed.items()
    ]
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- Tables 3-10: per-model metrics

def metric_column(metrics: pd.DataFrame, dataset: str | None, metric: str, label_count: int | None = None) -> pd.Series:
    """value_pct per model for one (dataset, metric, label_count); empty if absent."""
    if dataset is None:
        return pd.Series(dtype=float)
    m = metrics[(metrics["dataset"] == dataset) & (metrics["metric"] == metric)]
    m = m[m["label_count"].isna()] if label_count is None else m[m["label_count"] == label_count]
    return m.set_index("model")["value_pct"].astype(float)


def asma_groups(metrics: pd.DataFrame, dataset: str | None, metric: str = "asma") -> str:
    """The label counts `dataset`'s ASMA rows averaged ("2,3,4,6,9"; distinct lists joined by " | "), or ""."""
    if dataset is None or "groups" not in metrics.columns:
        return ""
    m = metrics[(metrics["dataset"] == dataset) & (metrics["metric"] == metric) & metrics["label_count"].isna()]
    return " | ".join(sorted({str(g) for g in m["groups"].dropna()}))


def ranks(top1_v1: pd.Series, asma_patchml: pd.Series) -> pd.DataFrame:
    """V1 top-1 rank, PatchML ASMA rank and rank shift over the models that have both."""
    both = pd.concat([top1_v1.rename("top1"), asma_patchml.rename("asma")], axis=1).dropna()
    top1, asma = both["top1"].to_numpy(), both["asma"].to_numpy()
    return pd.DataFrame(
        {"top1_rank": core.rank(top1), "asma_rank": core.rank(asma), "rank_shift": core.rank_shift(top1, asma)},
        index=both.index,
    )


def _signed(v) -> str:
    return NONE if v is None or (isinstance(v, float) and math.isnan(v)) else f"{int(v):+d}"


def table3(metrics: pd.DataFrame, v1: str, patchml: str, top: int = 10) -> pd.DataFrame:
    """Table 3: the top models by PatchML ASMA (mean over seeds), with V1 top-1, its rank, rank shift."""
    t1 = metric_column(metrics, v1, "top1")
    asma = metric_column(metrics, patchml, "asma")
    r = ranks(t1, asma).sort_values(["asma_rank", "top1_rank"], kind="stable")
    r = r.iloc[:top]
    return pd.DataFrame(
        {
            "Model checkpoint": r.index,
            "ImageNetV1 top-1": t1.reindex(r.index).to_numpy(),
            "ImageNetV1 rank": r["top1_rank"].to_numpy(),
            "PatchML ASMA": asma.reindex(r.index).to_numpy(),
            "Rank shift": [_signed(v) for v in r["rank_shift"]],
        }
    )


def tables4_10(metrics: pd.DataFrame, v1: str | None, v2: str | None, patchml: str | None) -> pd.DataFrame:
    """Tables 4-10 (one combined table): every model, sorted by PatchML ASMA (else V1 top-1)."""
    cols = {
        "Top-1 V1": metric_column(metrics, v1, "top1"),
        "Top-1 V2": metric_column(metrics, v2, "top1"),
        "ReaL V1": metric_column(metrics, v1, PAPER_REAL),
        "ReaL V2": metric_column(metrics, v2, PAPER_REAL),
        "ASMA V1": metric_column(metrics, v1, "asma"),
        "ASMA V2": metric_column(metrics, v2, "asma"),
        "ASMA PatchML": metric_column(metrics, patchml, "asma"),
    }
    wide = pd.concat([s.rename(k) for k, s in cols.items()], axis=1)
    wide = wide.reindex(columns=list(cols))
    shift = ranks(cols["Top-1 V1"], cols["ASMA PatchML"])["rank_shift"]
    wide["Rank shift"] = [_signed(shift.get(m, float("nan"))) for m in wide.index]
    key = "ASMA PatchML" if wide["ASMA PatchML"].notna().any() else "Top-1 V1"
    wide = wide.sort_values([key], ascending=False, kind="stable", na_position="last")
    wide.index.name = "Checkpoint"
    return wide.reset_index()


# The columns beside the paper's: our protocol, timm's value and the difference, which references
# lie outside our interval (docs/outputs.md).
REFERENCE_COLUMNS = ("Crop", "Reference for our protocol", "timm", "Ours (timm's metric)", "Difference vs timm",
                     "Outside our interval")


@dataclass(frozen=True)
class _Ours:
    """Our whole-dataset values with their intervals, and what to compare them with."""

    cells: dict[tuple[str, str, str], tuple[float, float | None, float | None]]  # (checkpoint, dataset, metric)
    models: dict[str, str]  # checkpoint -> the model name evaluated
    roles: Mapping[str, str | None]
    timm: Mapping
    protocols: Mapping[tuple[str, str], Protocol]
    timm_roles: Mapping[str, str]


def _our_cells(metrics: pd.DataFrame, roles: Mapping[str, str | None]) -> dict:
    whole = metrics[metrics["label_count"].isna()]
    lows = whole["ci_low_pct"] if "ci_low_pct" in whole else pd.Series(float("nan"), index=whole.index)
    highs = whole["ci_high_pct"] if "ci_high_pct" in whole else pd.Series(float("nan"), index=whole.index)
    cells = {(checkpoint_name(m), d, k): (float(v), float(lo), float(hi))
             for m, d, k, v, lo, hi in zip(whole["model"], whole["dataset"], whole["metric"], whole["value_pct"], lows, highs)}
    v1, pm = roles.get("imagenet_v1"), roles.get("patchml_mean")
    if v1 and pm:
        r = ranks(metric_column(metrics, v1, "top1"), metric_column(metrics, pm, "asma"))
        for model, row in r.iterrows():
            cells[(checkpoint_name(model), pm, "rank_shift")] = (float(row["rank_shift"]), None, None)
            cells[(checkpoint_name(model), v1, "top1_rank")] = (float(row["top1_rank"]), None, None)
    return cells


def _references(ours: _Ours, name: str, role: str, metric: str, paper: float | None) -> dict:
    """The REFERENCE_COLUMNS of one row: our protocol, timm's value beside ours in timm's metric."""
    dataset = ours.roles.get(role)
    mine = ours.cells.get((name, dataset, PAPER_METRICS.get(metric, metric))) if dataset else None
    protocol = ours.protocols.get((ours.models.get(name, name), dataset), Protocol())
    timm = mine_t = None
    if role in ours.timm_roles and (role, metric) in TIMM_FILES:
        timm = timm_value(ours.timm, name, role, metric, protocol)
        mine_t = ours.cells.get((name, ours.timm_roles[role], metric))
    flags = [ref for ref, value, cell in (("paper", paper, mine), ("timm", timm, mine_t))
             if cell is not None and outside(value, cell[1], cell[2])]
    return {
        "Crop": protocol.crop, "Reference for our protocol": protocol.reference if mine else None, "timm": timm,
        "Ours (timm's metric)": mine_t[0] if mine_t and timm is not None else None,
        "Difference vs timm": mine_t[0] - timm if mine_t and timm is not None else None,
        "Outside our interval": ", ".join(flags) if mine or mine_t else None,
    }


def _timm_only_rows(ours: _Ours, paper_keys: set) -> list[dict]:
    """Rows for the (checkpoint, dataset, metric) timm publishes and we ran, that the paper has not."""
    out = []
    for name in sorted(ours.models):
        for (role, metric) in TIMM_FILES:
            if role not in ours.timm_roles or (name, role, metric) in paper_keys:
                continue
            mine = ours.cells.get((name, ours.timm_roles[role], metric))
            refs = _references(ours, name, role, metric, None)
            if mine is None or refs["timm"] is None:
                continue
            out.append({"Checkpoint": name, "Table": "timm", "Metric": metric, "Dataset": role, "Paper": None,
                        "Ours": mine[0], "Difference": None, "Status": "reproduced", **refs})
    return out


def reported_vs_reproduced(reported: pd.DataFrame, metrics: pd.DataFrame, roles: Mapping[str, str | None],
                           timm: Mapping | None = None, protocols: Mapping[tuple[str, str], Protocol] | None = None,
                           timm_roles: Mapping[str, str] | None = None) -> pd.DataFrame:
    """The paper's numbers beside ours with the difference (ours - paper); unrun rows marked; then,
    beside both, timm's published value (`report.timm_results`) and which reference our protocol matches.

    `reported`: data_manifests/paper_reported.csv; `roles` maps its dataset names
    (imagenet_v1, imagenet_v2, patchml_mean) to the evaluated datasets' names. The paper's ReaL is
    compared with ours under its convention (`PAPER_METRICS`), timm's with our `real`. Rank rows are
    recomputed over the models evaluated here, so they differ when fewer ran. `timm`: timm's table
    (`timm_results.timm_table`); `protocols`: (model, dataset) -> how our predictions were made;
    `timm_roles`: the roles timm's files cover. Models timm publishes that the paper has not get rows
    of their own (Table "timm").
    """
    ours = _Ours(_our_cells(metrics, roles), {checkpoint_name(m): m for m in metrics["model"].unique()}, roles,
                 timm or {}, protocols or {}, timm_roles or {})
    out, paper_keys = [], set()
    for row in reported.itertuples(index=False):
        name = row.timm_checkpoint if isinstance(row.timm_checkpoint, str) and row.timm_checkpoint else row.checkpoint
        dataset = roles.get(row.dataset)
        cell = ours.cells.get((name, dataset, PAPER_METRICS.get(row.metric, row.metric))) if dataset else None
        value = None if cell is None else cell[0]
        paper_keys.add((name, row.dataset, row.metric))
        out.append({
            "Checkpoint": row.checkpoint, "Table": str(row.source_table), "Metric": row.metric, "Dataset": row.dataset,
            "Paper": float(row.value), "Ours": value, "Difference": None if value is None else value - float(row.value),
            "Status": "reproduced" if value is not None else "not run",
            **_references(ours, name, row.dataset, row.metric, float(row.value)),
        })
    return pd.DataFrame(out + _timm_only_rows(ours, paper_keys))
