"""`mlreassess report`: which items exist, what each needs, and running them.

Items (paper numbering, SPEC 5): table1, table2, table3, tables4-10, reported_vs_reproduced,
figure4 .. figure8; and figure_sets (SPEC 8: coverage against set size, F1 against tau). Each item whose inputs are absent is skipped with a one-line note (logged).
`inputs` reads RESULTS; `tables` and `figures` build from plain values; this module joins them
and writes the files.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from mlreassess.constants import IMAGENET_ASMA_RANGE, PATCHML_DEFAULT_COUNTS
from mlreassess.datasets.labelsets.real import real_labels
from mlreassess.errors import MlreassessError
from mlreassess.report import derived, figures, tables
from mlreassess.report.html_canvases import CANVAS_DIR
from mlreassess.report.inputs import ReportInputs, Skip, figure8_examples, read_reported
from mlreassess.report.paper import REPORTED_CSV
from mlreassess.report.tables import PAPER_REAL, asma_groups, metric_column
from mlreassess.report.timm_results import TIMM_NOTE, timm_reference
from mlreassess.results import ResultsLayout

log = logging.getLogger(__name__)

TABLES = ("table1", "table2", "table3", "tables4-10", "reported_vs_reproduced")
FIGURES = ("figure4", "figure5", "figure6", "figure7", "figure8", "figure_sets")
ITEMS = TABLES + FIGURES
ALIASES = {f"table{i}": "tables4-10" for i in range(4, 11)}
_PAPER_RANGE = f"{IMAGENET_ASMA_RANGE[0]}-{IMAGENET_ASMA_RANGE[-1]}"
REAL_NOTE = (f"ReaL = over images with {_PAPER_RANGE} labels, the paper's convention (metrics.parquet `{PAPER_REAL}`; "
             "its `real` counts every labelled image, as Beyer et al. and timm do).")
FIGURE7_TOP = 5  # lines per family in Figure 7


def figure7_lines(metrics: pd.DataFrame, v1: str | None, pm: str, groups: list[int]) -> tuple[dict, dict]:
    """Figure 7's lines: PatchML subgroup accuracy per label count of the top models by V1 top-1 and by
    PatchML ASMA, both chosen among the models that have PatchML results (a line needs them)."""
    asma = metric_column(metrics, pm, "asma").dropna()

    def lines(values: pd.Series) -> dict:
        top = values[values.index.isin(asma.index)].sort_values(ascending=False, kind="stable").index[:FIGURE7_TOP]
        return {m: {g: float(metric_column(metrics, pm, "subgroup", g).get(m, np.nan)) for g in groups} for m in top}

    return (lines(metric_column(metrics, v1, "top1")) if v1 else {}), lines(asma)


def sets_curves(metrics: pd.DataFrame, dataset: str) -> dict[str, dict[str, pd.DataFrame]]:
    """figure_sets' data of one dataset: model -> set type -> (param, size, coverage, f1, bound) rows,
    whole-dataset rows, the headline and every curve point (docs/metrics.md)."""
    if "param" not in metrics.columns:
        return {}
    m = metrics[(metrics["dataset"] == dataset) & metrics["label_count"].isna() & metrics["param"].notna()]
    out: dict[str, dict[str, pd.DataFrame]] = {}
    for kind in figures.SET_MARKERS:
        rows = m[m["metric"].isin([f"{kind}_size", f"{kind}_coverage", f"{kind}_f1"])]
        if rows.empty:
            continue
        rows = rows.assign(stat=rows["metric"].str[len(kind) + 1:], bounded=rows["bound"].notna())
        wide = rows.pivot_table(index=["model", "param"], columns="stat", values="value_pct", aggfunc="first")
        wide["bound"] = rows.groupby(["model", "param"])["bounded"].any()
        for model, per in wide.reset_index().groupby("model"):
            out.setdefault(model, {})[kind] = per
    return out


def _groups_label(metrics: pd.DataFrame, names: dict[str, str | None]) -> str:
    """'label counts 1,2,3,4,5', or each dataset's when they differ ('V1: 1,2,3; V2: 1,2,3,4,5')."""
    found = {role: asma_groups(metrics, name) for role, name in names.items() if name}
    distinct = {g for g in found.values() if g}
    if len(distinct) == 1:
        return f"label counts {distinct.pop()}"
    return "; ".join(f"{role}: {g or 'none'}" for role, g in found.items())


def resolve_items(names: list[str]) -> list[str]:
    """Item names as given on the command line (aliases, 'all' or none = every item), in order, once."""
    if not names or names == ["all"]:
        return list(ITEMS)
    out = []
    for n in names:
        n = ALIASES.get(n, n)
        if n not in ITEMS:
            raise MlreassessError(f"unknown report item {n!r} (choose from: {', '.join(ITEMS)}, table4..table10, all)")
        if n not in out:
            out.append(n)
    return out


@dataclass
class Report:
    """Writes the items' tables into `tables_dir` and figures into `figures_dir`."""

    results: Path | None
    tables_dir: Path
    figures_dir: Path
    data: list[Path] = field(default_factory=list)
    v1: str | None = None
    v2: str | None = None
    reported_csv: Path = REPORTED_CSV
    inputs: ReportInputs = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.inputs = ReportInputs(self.results, list(self.data), self.v1, self.v2)

    def run(self, items: list[str]) -> dict[str, list[Path]]:
        """Build `items`; returns item -> files written. One line per item is logged at INFO. Each file
        written is recorded with what it was made from (`derived`); the files a skipped item made
        in an earlier run are removed, so none of them passes for current."""
        note = log.info
        self._check_inside()
        self.inputs.metrics  # checked (and made current) before any item is written
        root = self.results if self.results is not None else self.tables_dir
        done = {}
        for item in items:
            self.inputs.touched = set()
            try:
                done[item] = getattr(self, item.replace("-", "_"))()
                derived.record(done[item], self.inputs.touched, root)
                note(f"{item}: wrote {', '.join(p.name for p in done[item])}")
            except Skip as why:
                gone = derived.forget(self.files_of(item))
                note(f"{item}: skipped ({why})" + (f"; removed its old {', '.join(p.name for p in gone)}" if gone else ""))
        return done

    def _check_inside(self) -> None:
        """The folders the report writes into and the page reads from resolve inside RESULTS, and so
        does every file in them (docs/outputs.md): one line now, before anything is written."""
        if self.results is None:
            return
        layout = ResultsLayout(self.results)
        for folder in {self.tables_dir, self.figures_dir, self.figures_dir / CANVAS_DIR}:
            if Path(folder).is_relative_to(self.results):
                layout.files(folder, "*")

    def files_of(self, item: str) -> list[Path]:
        """The files `item` writes."""
        if item in TABLES:
            return [self.tables_dir / f"{item}.{ext}" for ext in ("md", "csv", "tex")]
        return [self.figures_dir / f"{item}.{ext}" for ext in ("png", "pdf")]

    # ------------------------------------------------------------ tables
    def table1(self) -> list[Path]:
        counts = self.inputs.label_counts(("imagenet_v1", "imagenet_v2"))
        note = "Column 0: images with no valid label (the paper's Table 1 leaves them out)."
        if not counts:
            counts = {"ImageNetV1 (ReaL labels, 50,000 val images)": np.array([len(ls) for ls in real_labels()])}
            note += " Source: the ReaL labels shipped with timm (no V1/V2 manifests given)."
        return tables.write_table_files(tables.table1(counts), self.tables_dir, "table1",
                                        "Table 1: number of images per label count.", note)

    def table2(self) -> list[Path]:
        counts = self.inputs.label_counts(("patchml",))
        if not counts:
            raise Skip("no PatchML manifests (--data or RESULTS/manifests)")
        design = ",".join(map(str, self.inputs.manifest_counts(("patchml",)) or PATCHML_DEFAULT_COUNTS))
        note = (f"Label counts {design} are the sets' patch counts k, the paper's columns. A canvas whose patches "
                "repeat a class has fewer labels than patches (other columns): it has subgroup rows, not ASMA.")
        return tables.write_table_files(tables.table2(counts), self.tables_dir, "table2",
                                        "Table 2: PatchML images per label count, per seed.", note)

    def table3(self) -> list[Path]:
        metrics = self.inputs.need_metrics()
        v1, pm = self.inputs.v1_name, self.inputs.patchml_name
        if not v1:
            raise Skip("needs ImageNetV1 metrics")
        if not pm:
            raise Skip(self.inputs.no_patchml_mean())
        ranked = tables.ranks(metric_column(metrics, v1, "top1"), metric_column(metrics, pm, "asma"))
        note = (f"V1 = {v1}; PatchML ASMA = mean over seeds ({pm}) of ASMA over "
                f"{_groups_label(metrics, {'PatchML': pm})}. Ranks over the {len(ranked)} models "
                "with both; ties share the best rank.")
        return tables.write_table_files(tables.table3(metrics, v1, pm), self.tables_dir, "table3",
                                        "Table 3: top-10 models by PatchML ASMA.", note)

    def tables4_10(self) -> list[Path]:
        metrics = self.inputs.need_metrics()
        v1, v2, pm = self.inputs.v1_name, self.inputs.v2_name, self.inputs.patchml_name
        if not (v1 or v2 or pm):
            raise Skip("no ImageNetV1 / V2 / PatchML metrics")
        note = (f"V1 = {v1 or 'not run'}, V2 = {v2 or 'not run'}, PatchML = {pm or 'not run'} "
                f"(mean over seeds). {REAL_NOTE} ASMA over {_groups_label(metrics, {'V1': v1, 'V2': v2, 'PatchML': pm})}. "
                "The paper splits this table over Tables 4-10; here it is one table, same order "
                "(PatchML ASMA, descending). Rank shift = rank by V1 top-1 minus rank by PatchML ASMA.")
        return tables.write_table_files(tables.tables4_10(metrics, v1, v2, pm), self.tables_dir, "tables4-10",
                                        "Tables 4-10: every checkpoint.", note)

    def reported_vs_reproduced(self) -> list[Path]:
        if not self.reported_csv.exists():
            raise Skip(f"{self.reported_csv} not found (run scripts/parse_paper_tables.py)")
        reported = read_reported(self.reported_csv)
        self.inputs.touched.add(self.reported_csv)
        metrics = self.inputs.metrics
        if metrics is None:
            roles = {}
            metrics = pd.DataFrame(columns=["model", "dataset", "metric", "label_count", "value_pct"])
        else:
            roles = {"imagenet_v1": self.inputs.v1_name, "imagenet_v2": self.inputs.v2_name,
                     "patchml_mean": self.inputs.patchml_name}
        df = tables.reported_vs_reproduced(reported, metrics, roles, **timm_reference(self.inputs.layout, metrics, roles))
        done = int(((df["Status"] == "reproduced") & (df["Table"] != "timm")).sum())
        used = ", ".join(f"{role} = {name or 'not run'}" for role, name in roles.items()) or "no metrics yet"
        note = (f"{done} of {int((df['Table'] != 'timm').sum())} reported values have a reproduced counterpart; "
                f"Difference = ours - paper. Ours from: {used} (a subset of a dataset gives other numbers than the "
                f"paper's full set). The paper's ReaL is compared with ours over images with {_PAPER_RANGE} labels "
                f"(`{PAPER_REAL}`). Ranks are recomputed over the models evaluated here. {TIMM_NOTE}")
        return tables.write_table_files(df, self.tables_dir, "reported_vs_reproduced",
                                        "The paper's numbers beside ours.", note)

    # ------------------------------------------------------------ figures
    def figure4(self) -> list[Path]:
        counts = self.inputs.label_counts(("imagenet_v1", "imagenet_v2"))
        if not counts:
            raise Skip("no ImageNetV1/V2 manifests (--data or RESULTS/manifests)")
        labelled = {name: c for name, c in counts.items() if (c >= 1).any()}  # a pie needs a labelled image
        if not labelled:
            raise Skip(f"no image with a label in {', '.join(counts)} (empty, or empty label lists)")
        return figures.save_figure(figures.figure4(labelled), self.figures_dir, "figure4")

    def _v1_v2(self) -> tuple[pd.DataFrame, str, str]:
        metrics = self.inputs.need_metrics()
        v1, v2 = self.inputs.v1_name, self.inputs.v2_name
        if not v1 or not v2:
            raise Skip("needs both ImageNetV1 and ImageNetV2 metrics")
        return metrics, v1, v2

    def figure5(self) -> list[Path]:
        metrics, v1, v2 = self._v1_v2()
        panels = {
            title: (metric_column(metrics, v1, m), metric_column(metrics, v2, m))
            for title, m in (("Top-1 accuracy", "top1"),
                             (f"ReaL accuracy (images with {_PAPER_RANGE} labels, the paper's convention)", PAPER_REAL),
                             (f"ASMA ({_groups_label(metrics, {'V1': v1, 'V2': v2})})", "asma"))
        }
        if all(a.index.intersection(b.index).empty for a, b in panels.values()):
            raise Skip("no model has both V1 and V2 metrics")
        return figures.save_figure(figures.figure5(panels, v1, v2), self.figures_dir, "figure5")

    def figure6(self) -> list[Path]:
        metrics, v1, v2 = self._v1_v2()
        groups = list(IMAGENET_ASMA_RANGE)
        panels = {
            title: {name: {g: metric_column(metrics, name, m, g).to_numpy() for g in groups} for name in (v1, v2)}
            for title, m in (("ReaL accuracy", "real"), ("Subgroup accuracy", "subgroup"))
        }
        return figures.save_figure(figures.figure6(panels, groups), self.figures_dir, "figure6")

    def figure7(self) -> list[Path]:
        metrics = self.inputs.need_metrics()
        pm, v1, seeds = self.inputs.patchml_name, self.inputs.v1_name, self.inputs.patchml_seeds()
        if not pm or not seeds:
            raise Skip(self.inputs.no_patchml_mean())
        sub = metrics[(metrics["metric"] == "subgroup") & metrics["dataset"].isin(seeds)]
        present = sorted(int(g) for g in sub["label_count"].dropna().unique())
        # the design label counts (patch counts k), as in the paper; repeated-class canvases are not drawn
        groups = [g for g in self.inputs.design_counts(seeds) if g in present] or present
        per_seed = {g: sub[sub["label_count"] == g]["value_pct"].to_numpy() for g in groups}
        top_v1, top_asma = figure7_lines(metrics, v1, pm, groups)
        return figures.save_figure(figures.figure7(per_seed, groups, top_v1, top_asma), self.figures_dir, "figure7")

    def figure_sets(self) -> list[Path]:
        metrics = self.inputs.need_metrics()
        names = [(f"ImageNetV1 ({self.inputs.v1_name})", self.inputs.v1_name),
                 (f"ImageNetV2 ({self.inputs.v2_name})", self.inputs.v2_name),
                 ("PatchML (mean over seeds)", self.inputs.patchml_name)]
        panels = {title: curves for title, name in names if name and (curves := sets_curves(metrics, name))}
        if not panels:
            raise Skip("no set metrics (thr_*, mass_*: evaluate with this version, predictions with probabilities)")
        return figures.save_figure(figures.figure_sets(panels), self.figures_dir, "figure_sets")

    def figure8(self) -> list[Path]:
        metrics = self.inputs.need_metrics()
        pm = self.inputs.patchml_name
        if not pm:
            raise Skip(self.inputs.no_patchml_mean())
        asma = metric_column(metrics, pm, "asma")
        if asma.empty:
            raise Skip("no PatchML ASMA values")
        seeds = self.inputs.patchml_seeds()
        if not seeds:
            raise Skip("no PatchML seed metrics")
        best = asma.sort_values(ascending=False, kind="stable").index[0]
        examples = figure8_examples(self.inputs.layout, seeds[0], best)
        self.inputs.touched.update([self.inputs.layout.manifest_copy(seeds[0]), self.inputs.layout.prediction(seeds[0], best)])
        return figures.save_figure(figures.figure8(examples), self.figures_dir, "figure8")
