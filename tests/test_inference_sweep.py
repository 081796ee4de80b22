"""A sweep decodes each dataset once per preprocessing group: passes sized by memory (`--models-per-pass
auto`), one patch cache per sweep for PatchML, decodes per image recorded, and predictions bit-identical
to running each model alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import timm
from test_inference_run import N_IMAGES, infer, make_images, make_manifest, save_weights, write_sources

import mlreassess.datasets.formats.files as files
import mlreassess.datasets.samples as samples
import mlreassess.inference.input.caches as caches
from mlreassess.cli import main
from mlreassess.datasets.manifest import read_manifest
from mlreassess.errors import InputError
from mlreassess.inference.models import registry as models
from mlreassess.inference.sweep import passes, writers
from mlreassess.inference.models.registry import ModelSpec
from mlreassess.inference.sweep.passes import Unit
from mlreassess.inference.input.preprocess import Preprocess
from mlreassess.options import InferOptions
from mlreassess.results import ResultsLayout

# Twelve timm test models with one preprocessing (160x160 bicubic, resize-only).
TWELVE = ("test_byobnet", "test_convnext", "test_convnext2", "test_convnext3", "test_efficientnet",
          "test_efficientnet_evos", "test_efficientnet_gn", "test_efficientnet_ln", "test_nfnet", "test_vit",
          "test_vit2", "test_vit3")


@pytest.fixture(scope="module")
def twelve(tmp_path_factory):
    base = tmp_path_factory.mktemp("twelve")
    ids = make_images(base / "images")
    models = base / "models.txt"
    models.write_text("".join(f"{m} file:{save_weights(base / f'{m}.pth', m, seed)}\n" for seed, m in enumerate(TWELVE)))
    return {"base": base, "manifest": make_manifest(base / "tiny.parquet", base / "images", ids), "models": models}


def count_opens(monkeypatch, *modules) -> list[str]:
    """File names opened through `open_image` by `modules` (in this process: run with --workers 0)."""
    opened = []
    for module in modules:
        real = module.open_image
        monkeypatch.setattr(module, "open_image", lambda p, real=real: opened.append(Path(p).name) or real(p))
    return opened


def topk(out: Path, dataset: str, model: str):
    table, meta = writers.read_predictions(ResultsLayout(out).prediction(dataset, model))
    return np.array(table.column("topk_idx").to_pylist()), np.array(table.column("topk_prob").to_pylist()), meta


def test_twelve_models_decode_each_image_once_and_match_one_at_a_time(twelve, tmp_path, monkeypatch):
    opened = count_opens(monkeypatch, files)  # image files are opened by their format's reader
    together, alone = tmp_path / "together", tmp_path / "alone"
    assert infer("--data", str(twelve["manifest"]), "--models", str(twelve["models"]), out=together) == 0
    assert sorted(opened) == sorted(f"img{i:03d}.jpg" for i in range(N_IMAGES))  # each image once
    opened.clear()
    assert infer("--data", str(twelve["manifest"]), "--models", str(twelve["models"]), "--models-per-pass", "1",
                 out=alone) == 0
    assert len(opened) == 12 * N_IMAGES
    for model in TWELVE:
        idx, prob, meta = topk(together, "tiny", model)
        idx1, prob1, meta1 = topk(alone, "tiny", model)
        np.testing.assert_array_equal(idx, idx1)
        np.testing.assert_array_equal(prob, prob1)  # bit for bit
        assert meta["decoded_with"] == sorted(TWELVE) and meta1["decoded_with"] == [model]
        assert (meta["models_per_pass"], meta["dataset_passes"], meta["decodes_per_image"]) == ("auto", 1, 1)
        assert (meta1["models_per_pass"], meta1["dataset_passes"], meta1["decodes_per_image"]) == (1, 12, 12)


def test_the_summary_counts_passes(twelve, tmp_path, capsys):
    assert infer("--data", str(twelve["manifest"]), "--models", str(twelve["models"]), "--models-per-pass", "5",
                 out=tmp_path) == 0
    assert "infer: 12 done, 0 skipped, 0 failed in 3 passes (3 dataset decodes);" in capsys.readouterr().out
    # How models are grouped changes no result: another grouping finds everything up to date.
    assert infer("--data", str(twelve["manifest"]), "--models", str(twelve["models"]), out=tmp_path) == 0
    assert "infer: 0 done, 12 skipped, 0 failed in 0 passes (0 dataset decodes);" in capsys.readouterr().out


@pytest.fixture(scope="module")
def two_seeds(tmp_path_factory):
    """PatchML seeds 1 and 2 over the same generated sources, manifests only (canvases rendered at inference)."""
    base = tmp_path_factory.mktemp("seeds")
    write_sources(base, 8)
    for seed in (1, 2):
        assert main(["patchml", "--boxes", str(base / "boxes.csv"), "--seed", str(seed), "--out", str(base / f"s{seed}"),
                     "--images", str(base / "src"), "--no-render", "--counts", "2,3", "--canvas", "64",
                     "--min-box-side", "4", "--workers", "1"]) == 0
    return base


def test_patchml_sources_are_decoded_once_per_sweep(tiny_models, two_seeds, tmp_path, monkeypatch):
    opened = count_opens(monkeypatch, samples)  # PatchML sources (cache and render) open through datasets.samples
    manifests = [str(two_seeds / f"s{seed}" / "manifest.parquet") for seed in (1, 2)]
    # Two preprocessing groups (bicubic, bilinear), decoding apart, over two seeds: four passes, one
    # decode per source.
    args = [a for m in manifests for a in ("--data", m)]
    assert infer(*args, "--models", str(tiny_models), "--no-share-decode", out=tmp_path) == 0
    used = {s for m in manifests for ids in read_manifest(m).table.column("src_ids").to_pylist() for s in ids}
    assert sorted(opened) == sorted(f"{s}.JPEG" for s in used)
    for seed in (1, 2):
        for model in ("test_convnext", "test_resnet"):
            _, _, meta = topk(tmp_path, f"patchml_seed{seed}", model)
            assert (meta["dataset_passes"], meta["decodes_per_image"]) == (2, 1)


def test_a_patchml_set_with_all_its_pngs_is_scanned_once_per_sweep(tiny_models, tmp_path, monkeypatch):
    write_sources(tmp_path, 4)
    assert main(["patchml", "--boxes", str(tmp_path / "boxes.csv"), "--seed", "1", "--out", str(tmp_path / "set"),
                 "--images", str(tmp_path / "src"), "--counts", "2", "--canvas", "64", "--min-box-side", "4",
                 "--workers", "1"]) == 0
    scans = []
    real = caches.rows_to_render
    monkeypatch.setattr(caches, "rows_to_render", lambda m, rows: scans.append(m.name) or real(m, rows))
    # Two passes (bicubic, bilinear); nothing to cache: the PNG check is not redone for each pass.
    assert infer("--data", str(tmp_path / "set" / "manifest.parquet"), "--models", str(tiny_models),
                 "--no-share-decode", out=tmp_path / "out") == 0
    assert scans == ["patchml_seed1"]
    _, _, meta = topk(tmp_path / "out", "patchml_seed1", "test_resnet")
    assert (meta["dataset_passes"], meta["decodes_per_image"]) == (2, 2)  # each PNG read once per pass


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    base = tmp_path_factory.mktemp("two_groups")
    models = base / "models.txt"
    models.write_text("".join(f"{m} file:{save_weights(base / f'{m}.pth', m, seed)}\n"
                              for seed, m in enumerate(("test_convnext", "test_resnet"))))
    return models


# ---- auto pass sizes ---------------------------------------------------------------------------------


def test_auto_fills_passes_up_to_the_budget_and_keeps_the_order():
    sizes = {"a": 5, "b": 4, "c": 3, "d": 9, "e": 1}
    assert passes.fill(list("abcde"), sizes.get, 9) == [["a", "b"], ["c"], ["d"], ["e"]]
    assert passes.fill(list("abcde"), sizes.get, 100) == [list("abcde")]
    assert passes.fill(["d"], sizes.get, 1) == [["d"]]  # a model over the budget still runs, alone
    assert passes.fill([], sizes.get, 1) == []


def test_passes_are_model_major_and_never_mix_preprocessing():
    p, q = Preprocess(8, 8, "bicubic"), Preprocess(8, 8, "bilinear")
    a, b, c = (ModelSpec(n, "random") for n in "abc")
    units = [Unit(d, m, prep) for d in (0, 1, 2) for m, prep in ((a, p), (b, p), (c, q))]
    one = lambda m: 1  # noqa: E731
    made = passes.make_passes(units, "auto", one, 10, share_decode=False)
    # One pass per group: each model loaded once, every dataset streamed through it.
    assert [(x.preprocess, x.models, x.datasets) for x in made] == [(p, [a, b], [0, 1, 2]), (q, [c], [0, 1, 2])]
    assert made[0].units == sorted((u for u in units if u.preprocess == p), key=lambda u: (u.dataset, u.model))
    assert [x.models for x in passes.make_passes(units, "auto", one, 1)] == [[a], [b], [c]]  # the budget cuts models
    assert [x.models for x in passes.make_passes(units, 1, None, 0)] == [[a], [b], [c]]
    assert [x.models for x in passes.make_passes(units[1:], 4, None, 0, share_decode=False)] == [[a, b], [c]]
    head, rest = passes.split_models(made[0], 1)
    assert (head.models, rest.models, len(head.units) + len(rest.units)) == ([a], [b], 6)
    assert [len(x.units) for x in passes.one_model_passes(made)] == [3, 3, 3]
    assert [len(x.units) for x in passes.one_unit_passes(made)] == [1] * 9


def test_model_sizes_come_from_an_empty_build():
    model = timm.create_model("test_resnet")
    expected = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    assert models.model_bytes(ModelSpec("test_resnet", "random")) == expected
    assert models.model_bytes(ModelSpec("hf-hub:someone/model", "hub")) is None  # only known once downloaded
    assert models.model_bytes(ModelSpec("no_such_model", "random")) is None


def test_unit_cost_counts_weights_and_kept_predictions():
    assert passes.unit_bytes(1000, 10, 5, False, 10**6) == 1000 + 10 * 5 * 8
    assert passes.unit_bytes(1000, 10, 5, True, 10**6) == 1000 + 10 * (5 * 8 + 2000)
    assert passes.unit_bytes(None, 0, 5, False, 400) == 100  # unknown size: a quarter of the budget


def test_the_budget_is_a_share_of_the_free_memory():
    free = passes.free_memory("cpu")
    share = passes.MODEL_MEMORY_SHARE
    assert free > 0 and (share - 0.1) * free < passes.memory_budget("cpu") < (share + 0.1) * free
    assert passes.memory_budget("cuda", free=80 * 2**30) == int(80 * 2**30 * share)  # --plan's --device-memory
    assert passes.fits(100, 80) and not passes.fits(99, 80)  # 1.25 x the largest probed forward pass


def test_models_per_pass_accepts_auto_or_a_positive_integer(tmp_path, capsys):
    assert InferOptions().models_per_pass == "auto" and InferOptions(models_per_pass=3).models_per_pass == 3
    for bad in (0, "all", 2.5, True):
        with pytest.raises(InputError, match="--models-per-pass"):
            InferOptions(models_per_pass=bad)
    with pytest.raises(SystemExit):
        main(["infer", "--data", "x", "--model", "test_resnet", "--out", str(tmp_path), "--models-per-pass", "many"])
    assert "'many': expected int or auto" in capsys.readouterr().err


def test_decode_gpu_refuses_a_model_without_a_device_resize_before_any_work(twelve, tmp_path, monkeypatch, capsys):
    import mlreassess.inference.sweep.plan as plan

    real = plan.data_config
    monkeypatch.setattr(plan, "data_config",
                        lambda spec, *a: {**real(spec, *a), "interpolation": "lanczos"} if spec.name == "test_vit" else real(spec, *a))
    assert infer("--data", str(twelve["manifest"]), "--models", str(twelve["models"]), "--decode", "gpu", out=tmp_path) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["mlreassess: error: model 'test_vit': --decode gpu: the model's interpolation 'lanczos' has no device "
                   "resize (bicubic, bilinear, nearest); use --decode cpu"]
    assert not (tmp_path / "predictions").exists()


def test_with_decode_gpu_a_shared_pass_also_matches_one_at_a_time(twelve, tmp_path):
    common = ["--data", str(twelve["manifest"]), "--models", str(twelve["models"]), "--decode", "gpu"]
    assert infer(*common, out=tmp_path / "together") == 0
    assert infer(*common, "--models-per-pass", "1", out=tmp_path / "alone") == 0
    for model in TWELVE:
        idx, prob, meta = topk(tmp_path / "together", "tiny", model)
        idx1, prob1, _ = topk(tmp_path / "alone", "tiny", model)
        np.testing.assert_array_equal(idx, idx1)
        np.testing.assert_array_equal(prob, prob1)
        assert meta["recipe"]["decode"] == "gpu" and meta["decodes_per_image"] == 1
