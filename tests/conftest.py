"""Shared fixtures. Real ImageNet data lives in ../shared/data (never copied into the repo)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MLREASSESS_SHARED_DATA", REPO.parent / "shared" / "data"))
MINI_ROOT = SHARED_DATA / "imagenet-val-mini"
BOXES_ROOT = SHARED_DATA / "imagenet-val-boxes"
V2_REFINED_LABELS = SHARED_DATA / "imagenetv2-refined-labels" / "imagenetv2_refined_labels.json"


@pytest.fixture(scope="session")
def mini_root() -> Path:
    if not (MINI_ROOT / "LOC_val_solution.csv").exists():
        pytest.skip(f"real ImageNet mini set not found at {MINI_ROOT} (../shared/data absent)")
    return MINI_ROOT


@pytest.fixture(scope="session")
def boxes_root() -> Path:
    if not (BOXES_ROOT / "LOC_val_solution.csv").exists():
        pytest.skip(f"full ImageNet val boxes not found at {BOXES_ROOT} (../shared/data absent)")
    return BOXES_ROOT


@pytest.fixture(scope="session")
def v2_refined_labels() -> Path:
    """The published ImageNetV2 refined labels of Anzaku et al. (10,000 keys `<sha1>.jpeg`)."""
    if not V2_REFINED_LABELS.exists():
        pytest.skip(f"published ImageNetV2 refined labels not found at {V2_REFINED_LABELS} (../shared/data absent)")
    return V2_REFINED_LABELS


def _write_jpeg(path: Path, color=(128, 64, 32), size=(8, 6)) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, "JPEG")
    return path


@pytest.fixture
def write_jpeg():
    """write_jpeg(path, color=(r, g, b), size=(w, h)) -> path: a tiny real JPEG for layout fixtures."""
    return _write_jpeg


def _placements(labels: list[list[int]], counts: list[int] | None, canvas: int) -> dict:
    """Valid PatchML placement columns for canvases with these labels: k = the label count, or the
    smallest patch count above it (the last class repeated), one full-cell patch per cell."""
    import pyarrow as pa

    from mlreassess.datasets.placements import PATCHML_COLUMNS, grid_for

    cols: dict[str, list] = {c: [] for c in PATCHML_COLUMNS}
    for n, ls in enumerate(labels):
        ls = list(ls) or [0]
        k = len(ls) if counts is None or len(ls) in counts else min(c for c in counts if c >= len(ls))
        g = grid_for(k, canvas)
        cols["k"].append(k)
        cols["src_ids"].append([f"src{n:05d}_{j}" for j in range(k)])
        cols["src_boxes"].append([[0, 0, 9, 9]] * k)
        cols["patch_labels"].append(ls + [ls[-1]] * (k - len(ls)))
        cols["sizes"].append([[g.cell, g.cell]] * k)
        cols["positions"].append([[(j % g.columns) * g.cell, (j // g.columns) * g.cell] for j in range(k)])
    nested = pa.list_(pa.list_(pa.int64()))
    types = {"k": pa.int64(), "src_ids": pa.list_(pa.string()), "src_boxes": nested, "patch_labels": pa.list_(pa.int64()),
             "sizes": nested, "positions": nested}
    return {c: pa.array(v, types[c]) for c, v in cols.items()}


def _write_dataset(results: Path, name: str, kind: str, samples: dict, **params) -> Path:
    """RESULTS/manifests/<name>.parquet from {sample_id: (label or None, [labels])} (metrics/report tests);
    PatchML sets get valid placements (`_placements`) and a canvas size."""
    from mlreassess.datasets.manifest import base_meta, core_table, write_manifest

    ids = list(samples)
    extra = None
    if kind == "patchml":
        params = {"canvas_size": 448, "resample": "bicubic", **params}
        extra = _placements([samples[s][1] for s in ids], params.get("counts"), params["canvas_size"])
    table = core_table(ids, [None] * len(ids), [samples[s][0] for s in ids], [samples[s][1] for s in ids], extra)
    path = results / "manifests" / f"{name}.parquet"
    write_manifest(path, table, base_meta(kind, name, None, **params))
    return path


def _write_predictions(results: Path, dataset: str, kind: str, model: str, preds: dict) -> Path:
    """RESULTS/predictions/<dataset>/<model>.parquet from {sample_id: [top-k classes, best first]}."""
    import pyarrow as pa

    from mlreassess.io import write_table

    ids = sorted(preds)
    k = len(preds[ids[0]])
    table = pa.table(
        {
            "sample_id": pa.array(ids, pa.string()),
            "topk_idx": pa.array([preds[s] for s in ids], pa.list_(pa.int32())),
            "topk_prob": pa.array([[0.5 / (j + 1) for j in range(k)] for _ in ids], pa.list_(pa.float32())),
        }
    )
    from mlreassess.results import ResultsLayout

    path = ResultsLayout(results).prediction(dataset, model)  # named as infer names it (model_file_name)
    write_table(path, table, {"model": model, "dataset": dataset, "dataset_kind": kind, "n_samples": len(ids), "topk": k})
    return path


@pytest.fixture(scope="session")
def write_dataset():
    """write_dataset(results, name, kind, {sample_id: (label, [labels])}, **meta) -> manifest path."""
    return _write_dataset


@pytest.fixture(scope="session")
def write_predictions():
    """write_predictions(results, dataset, kind, model, {sample_id: [top-k]}) -> predictions path."""
    return _write_predictions
