#!/usr/bin/env python3
"""Two results folders side by side: top-1 and ReaL per (dataset, model), and how many samples'
top-1 class differs between them (e.g. `infer --decode cpu` vs `--decode gpu`).

usage: compare_predictions.py RESULTS_A RESULTS_B      (run `mlreassess evaluate` in both first)

One image of the 1,300-image mini set is 0.077 points.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from mlreassess.inference.sweep.writers import read_predictions
from mlreassess.results import ResultsLayout


def headline(results: Path) -> pd.DataFrame:
    """Whole-dataset top1 and real (percent) per (dataset, model)."""
    m = pd.read_parquet(ResultsLayout(results).metrics)
    m = m[m["metric"].isin(["top1", "real"]) & m["label_count"].isna()]
    return m.pivot_table(index=["dataset", "model"], columns="metric", values="value_pct")


def top1(results: Path, dataset: str, model: str) -> dict[str, int]:
    table, _ = read_predictions(ResultsLayout(results).prediction(dataset, model))
    return {s: t[0] for s, t in zip(table.column("sample_id").to_pylist(), table.column("topk_idx").to_pylist())}


def main(a: str, b: str) -> int:
    a, b = Path(a), Path(b)
    left, right = headline(a), headline(b)
    print(f"A = {a}\nB = {b}")
    print("| dataset | model | top-1 A | top-1 B | diff | ReaL A | ReaL B | diff | top-1 class changed |")
    print("|---|---|---|---|---|---|---|---|---|")
    for dataset, model in sorted(set(left.index) & set(right.index)):
        x, y = left.loc[(dataset, model)], right.loc[(dataset, model)]
        pa, pb = top1(a, dataset, model), top1(b, dataset, model)
        changed = sum(1 for s in pa.keys() & pb.keys() if pa[s] != pb[s])
        print(f"| {dataset} | {model} | {x['top1']:.2f} | {y['top1']:.2f} | {y['top1'] - x['top1']:+.3f} | "
              f"{x['real']:.2f} | {y['real']:.2f} | {y['real'] - x['real']:+.3f} | {changed} of {len(pa.keys() & pb.keys())} |")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    raise SystemExit(main(*sys.argv[1:]))
