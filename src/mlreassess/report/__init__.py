"""`mlreassess report`: the paper's tables and figures from RESULTS (metrics.parquet, manifests).

Items (paper numbering, SPEC 5): table1, table2, table3, tables4-10, reported_vs_reproduced,
figure4 .. figure8. Each item whose inputs are absent is skipped with a one-line note.
Builders live in `tables`, `figures` and `paper`; this module finds the inputs and writes files.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Callable

from mlreassess.errors import MlreassessError

TABLES = ("table1", "table2", "table3", "tables4-10", "reported_vs_reproduced")
FIGURES = ("figure4", "figure5", "figure6", "figure7", "figure8")
ITEMS = TABLES + FIGURES
ALIASES = {f"table{i}": "tables4-10" for i in range(4, 11)}
DEFAULT_V2 = "imagenet_v2_matched-frequency"
REPORTED_CSV = Path(__file__).resolve().parents[3] / "data_manifests" / "paper_reported.csv"
FIGURE8_EXAMPLES = 6


class Skip(Exception):
    """An item's inputs are absent: the report notes it and goes on."""


@dataclass
class Report:
    results: Path | None
    tables_dir: Path
    figures_dir: Path
    data: list[Path] = field(default_factory=list)
    v1: str | None = None
    v2: str | None = None
    reported_csv: Path = REPORTED_CSV

    # ------------------------------------------------------------ inputs (loaded on first use)
    @cached_property
    def metrics(self):
        import pandas as pd

        from mlreassess.io import read_meta, read_table

        if self.results is None or not (self.results / "metrics.parquet").exists():
            return None
        path = self.results / "metrics.parquet"
        df = read_table(path).to_pandas()
        df["label_count"] = df["label_count"].astype("Int64")
        self._metrics_meta = read_meta(path)
        return df if len(df) else pd.DataFrame(columns=df.columns)

    def _need_metrics(self):
        if self.metrics is None:
            raise Skip(f"no metrics ({'no --results' if self.results is None else self.results / 'metrics.parquet'} missing: run `mlreassess evaluate`)")
        return self.metrics

    def kinds(self) -> dict[str, str]:
        """dataset name -> kind, for the datasets in metrics.parquet."""
        self._need_metrics()
        return {name: info.get("kind", "") for name, info in self._metrics_meta.get("datasets", {}).items()}

    def _pick(self, kind: str, wanted: str | None, default: str) -> str | None:
        names = sorted(n for n, k in self.kinds().items() if k == kind)
        if wanted:
            if wanted not in names:
                raise MlreassessError(f"--{'v1' if kind == 'imagenet_v1' else 'v2'} {wanted}: no such {kind} dataset in the metrics (have: {', '.join(names) or 'none'})")
            return wanted
        return default if default in names else (names[0] if names else None)

    @property
    def v1_name(self) -> str | None:
        return self._pick("imagenet_v1", self.v1, "imagenet_v1")

    @property
    def v2_name(self) -> str | None:
        return self._pick("imagenet_v2", self.v2, DEFAULT_V2)

    @property
    def patchml_name(self) -> str | None:
        from mlreassess.metrics.evaluate import PATCHML_MEAN

        return PATCHML_MEAN if PATCHML_MEAN in self.kinds() else None

    @cached_property
    def manifests(self) -> list[tuple[str, str, Path]]:
        """(dataset, kind, path) of --data manifests, else of RESULTS/manifests/*.parquet."""
        from mlreassess.io import read_meta

        paths = list(self.data)
        if not paths and self.results is not None and (self.results / "manifests").is_dir():
            paths = sorted((self.results / "manifests").glob("*.parquet"))
        out = []
        for p in paths:
            meta = read_meta(p)
            if "kind" not in meta:
                raise MlreassessError(f"{p}: not an mlreassess manifest (no kind in its metadata)")
            out.append((meta.get("dataset", p.stem), meta["kind"], Path(p)))
        return out

    def label_counts(self, kinds: tuple[str, ...]):
        import numpy as np

        from mlreassess.io import read_table

        return {
            name: np.asarray(read_table(p, columns=["label_count"]).column("label_count").to_numpy())
            for name, kind, p in self.manifests
            if kind in kinds
        }

    # ------------------------------------------------------------ items
    def table1(self) -> list[Path]:
        from mlreassess.report import tables

        counts = self.label_counts(("imagenet_v1", "imagenet_v2"))
        note = "Column 0: images with no valid label (the paper's Table 1 leaves them out)."
        if not counts:
            import numpy as np

            from mlreassess.datasets.labels import real_labels

            counts = {"ImageNetV1 (ReaL labels, 50,000 val images)": np.array([len(ls) for ls in real_labels()])}
            note += " Source: the ReaL labels shipped with timm (no V1/V2 manifests given)."
        df = tables.table1(counts)
        return tables.write_table_files(df, self.tables_dir, "table1", "Table 1: number of images per label count.", note)

    def table2(self) -> list[Path]:
        from mlreassess.report import tables

        counts = self.label_counts(("patchml",))
        if not counts:
            raise Skip("no PatchML manifests (--data or RESULTS/manifests)")
        df = tables.table2(counts)
        return tables.write_table_files(df, self.tables_dir, "table2", "Table 2: PatchML images per label count, per seed.")

    def table3(self) -> list[Path]:
        from mlreassess.report import tables

        metrics = self._need_metrics()
        if not self.v1_name or not self.patchml_name:
            raise Skip("needs ImageNetV1 and PatchML metrics")
        df = tables.table3(metrics, self.v1_name, self.patchml_name)
        note = f"V1 = {self.v1_name}; PatchML ASMA = mean over seeds ({self.patchml_name}). Ranks over the {len(tables.ranks(tables.metric_column(metrics, self.v1_name, 'top1'), tables.metric_column(metrics, self.patchml_name, 'asma')))} models with both; ties share the best rank."
        return tables.write_table_files(df, self.tables_dir, "table3", "Table 3: top-10 models by PatchML ASMA.", note)

    def tables4_10(self) -> list[Path]:
        from mlreassess.report import tables

        metrics = self._need_metrics()
        if not (self.v1_name or self.v2_name or self.patchml_name):
            raise Skip("no ImageNetV1 / V2 / PatchML metrics")
        df = tables.tables4_10(metrics, self.v1_name, self.v2_name, self.patchml_name)
        note = (f"V1 = {self.v1_name or 'not run'}, V2 = {self.v2_name or 'not run'}, PatchML = {self.patchml_name or 'not run'} "
                "(mean over seeds). The paper splits this table over Tables 4-10; here it is one table, same order "
                "(PatchML ASMA, descending). Rank shift = rank by V1 top-1 minus rank by PatchML ASMA.")
        return tables.write_table_files(df, self.tables_dir, "tables4-10", "Tables 4-10: every checkpoint.", note)

    def reported_vs_reproduced(self) -> list[Path]:
        import pandas as pd

        from mlreassess.report import tables

        if not self.reported_csv.exists():
            raise Skip(f"{self.reported_csv} not found (run scripts/parse_paper_tables.py)")
        reported = pd.read_csv(self.reported_csv, dtype={"timm_checkpoint": str}, keep_default_na=False)
        metrics = self.metrics
        if metrics is None:
            roles = {}
            metrics = pd.DataFrame(columns=["model", "dataset", "metric", "label_count", "value_pct"])
        else:
            roles = {"imagenet_v1": self.v1_name, "imagenet_v2": self.v2_name, "patchml_mean": self.patchml_name}
        df = tables.reported_vs_reproduced(reported, metrics, roles)
        done = int((df["Status"] == "reproduced").sum())
        used = ", ".join(f"{role} = {name or 'not run'}" for role, name in roles.items()) or "no metrics yet"
        note = (f"{done} of {len(df)} reported values have a reproduced counterpart; Difference = ours - paper. "
                f"Ours from: {used} (a subset of a dataset gives other numbers than the paper's full set). "
                "Ranks are recomputed over the models evaluated here.")
        return tables.write_table_files(df, self.tables_dir, "reported_vs_reproduced", "The paper's numbers beside ours.", note)

    def figure4(self) -> list[Path]:
        from mlreassess.report import figures

        counts = self.label_counts(("imagenet_v1", "imagenet_v2"))
        if not counts:
            raise Skip("no ImageNetV1/V2 manifests (--data or RESULTS/manifests)")
        colors = None
        fig = figures.figure4(counts, colors)
        return figures.save_figure(fig, self.figures_dir, "figure4")

    def _v1_v2(self):
        metrics = self._need_metrics()
        if not self.v1_name or not self.v2_name:
            raise Skip("needs both ImageNetV1 and ImageNetV2 metrics")
        return metrics, self.v1_name, self.v2_name

    def figure5(self) -> list[Path]:
        from mlreassess.report import figures
        from mlreassess.report.tables import metric_column

        metrics, v1, v2 = self._v1_v2()
        panels = {
            title: (metric_column(metrics, v1, m), metric_column(metrics, v2, m))
            for title, m in (("Top-1 accuracy", "top1"), ("ReaL accuracy", "real"), ("ASMA (label counts 1-5)", "asma"))
        }
        if all(a.index.intersection(b.index).empty for a, b in panels.values()):
            raise Skip("no model has both V1 and V2 metrics")
        return figures.save_figure(figures.figure5(panels, v1, v2), self.figures_dir, "figure5")

    def figure6(self) -> list[Path]:
        from mlreassess.report import figures
        from mlreassess.report.tables import metric_column

        metrics, v1, v2 = self._v1_v2()
        groups = [1, 2, 3, 4, 5]
        panels = {
            title: {name: {g: metric_column(metrics, name, m, g).to_numpy() for g in groups} for name in (v1, v2)}
            for title, m in (("ReaL accuracy", "real"), ("Subgroup accuracy", "subgroup"))
        }
        return figures.save_figure(figures.figure6(panels, groups), self.figures_dir, "figure6")

    def figure7(self) -> list[Path]:
        import numpy as np

        from mlreassess.report import figures
        from mlreassess.report.tables import metric_column

        metrics = self._need_metrics()
        pm = self.patchml_name
        seeds = sorted(n for n, k in self.kinds().items() if k == "patchml" and n != pm)
        if not pm or not seeds:
            raise Skip("no PatchML metrics")
        sub = metrics[(metrics["metric"] == "subgroup") & metrics["dataset"].isin(seeds)]
        groups = sorted(int(g) for g in sub["label_count"].dropna().unique())
        per_seed = {g: sub[sub["label_count"] == g]["value_pct"].to_numpy() for g in groups}

        def lines(values) -> dict:
            top = values.sort_values(ascending=False, kind="stable").index[:5]
            return {m: {g: float(metric_column(metrics, pm, "subgroup", g).get(m, np.nan)) for g in groups} for m in top}

        top_v1 = lines(metric_column(metrics, self.v1_name, "top1")) if self.v1_name else {}
        top_asma = lines(metric_column(metrics, pm, "asma"))
        return figures.save_figure(figures.figure7(per_seed, groups, top_v1, top_asma), self.figures_dir, "figure7")

    def figure8(self) -> list[Path]:
        from mlreassess.report import figures
        from mlreassess.report.tables import metric_column

        metrics = self._need_metrics()
        pm = self.patchml_name
        if not pm:
            raise Skip("no PatchML metrics")
        asma = metric_column(metrics, pm, "asma")
        if asma.empty:
            raise Skip("no PatchML ASMA values")
        best = asma.sort_values(ascending=False, kind="stable").index[0]
        seed = sorted(n for n, k in self.kinds().items() if k == "patchml" and n != pm)[0]
        examples = _figure8_examples(self.results, seed, best)
        return figures.save_figure(figures.figure8(examples), self.figures_dir, "figure8")

    def run(self, items: list[str], log: Callable[[str], None]) -> dict[str, list[Path]]:
        done = {}
        for item in items:
            try:
                done[item] = getattr(self, item.replace("-", "_"))()
                log(f"{item}: wrote {', '.join(p.name for p in done[item])}")
            except Skip as why:
                log(f"{item}: skipped ({why})")
        return done


def _figure8_examples(results: Path, dataset: str, model: str) -> list[dict]:
    """Up to FIGURE8_EXAMPLES canvases of `dataset` (one per label count, largest first) with the
    model's top-g predictions; canvases rendered from the manifest, else read from images/."""
    import numpy as np
    from PIL import Image

    from mlreassess.datasets.labels import class_name
    from mlreassess.datasets.manifest import read_manifest
    from mlreassess.io import read_meta, read_table

    from mlreassess.inference.writers import prediction_path
    from mlreassess.patchml.render import render_row

    manifest = read_manifest(results / "manifests" / f"{dataset}.parquet")
    pred_path = prediction_path(results, dataset, model)
    if not pred_path.exists():
        raise Skip(f"{pred_path} not found")
    pred = read_table(pred_path).to_pandas().set_index("sample_id")
    meta = read_meta(pred_path)
    t = manifest.table.to_pandas()
    t = t[t["sample_id"].isin(pred.index)]
    picks = []
    for g in sorted(t["label_count"].unique(), reverse=True):
        picks.append(t.index[t["label_count"] == g][0])
        if len(picks) == FIGURE8_EXAMPLES:
            break
    image_dirs = [Path(meta["manifest"]).parent / "images"] if meta.get("manifest") else []
    image_dirs.append(results / "manifests" / "images")

    def image(i: int, sid: str):
        try:
            return render_row(manifest, int(i))
        except (MlreassessError, OSError):  # source images not reachable here: try the PNGs
            pass
        for d in image_dirs:
            if (d / f"{sid}.png").exists():
                return Image.open(d / f"{sid}.png").convert("RGB")
        raise Skip(f"cannot render canvas {sid} (no source images, nor {image_dirs[0]}/{sid}.png)")

    examples = []
    for i in sorted(picks, key=lambda i: -t.loc[i, "label_count"]):
        row = t.loc[i]
        g = int(row["label_count"])
        idx = np.asarray(pred.loc[row["sample_id"], "topk_idx"])[:g]
        prob = np.asarray(pred.loc[row["sample_id"], "topk_prob"])[:g]
        labels = set(int(x) for x in row["labels"])
        correct = [int(c) in labels for c in idx]
        examples.append({
            "image": image(i, row["sample_id"]),
            "names": [class_name(int(c)) for c in idx],
            "probs": prob,
            "correct": correct,
            "title": f"{row['sample_id']}: {g} label{'s' if g > 1 else ''}, {sum(correct)} in top-{g}",
        })
    if not examples:
        raise Skip(f"no predictions of {model} on {dataset}")
    return examples


def resolve_items(names: list[str]) -> list[str]:
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


def log_stderr(line: str) -> None:
    print(line, file=sys.stderr)
