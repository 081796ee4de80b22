"""`--decode gpu` (inference.device_input, device_resize, device_canvas) on a CPU device: the tensor
path against the PIL path (`data.pil_batches`), odd files, PatchML canvases, timm's centre crop,
errors, and `infer` / `bench` end to end. The CUDA tests (nvjpeg, canvases painted on the GPU)
skip cleanly without CUDA."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from PIL import Image
from test_inference_run import make_images, make_manifest, save_weights
from test_patchml_render import PARAMS, make_sources

from mlreassess.cli import main
from mlreassess.datasets.manifest import Manifest, read_manifest
from mlreassess.errors import InputError
from mlreassess.inference.input import device_input
from mlreassess.inference.sweep import writers
from mlreassess.inference.input.pipeline import pil_batches
from mlreassess.inference.input.device_canvas import CanvasPainter
from mlreassess.inference.input.device_input import device_batches, jpeg_components
from mlreassess.inference.input.device_resize import check_device_preprocess, fit, resize
from mlreassess.inference.input.preprocess import Preprocess
from mlreassess.patchml import generate
from mlreassess.patchml.cache import build_cache
from mlreassess.patchml.render import render_row
from mlreassess.results import ResultsLayout

# torchvision 0.29 deprecates its image decoders in favour of TorchCodec; they still work.
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (nvjpeg, device painting)")


def collect(make, manifest, prep, rows=None, workers=0, batch_size=4, device="cpu", **kw):
    """(rows, images, errors) of a whole pass, batches concatenated."""
    rows = list(range(len(manifest))) if rows is None else rows
    out = list(make(manifest, rows, prep, device, batch_size, workers, **kw))
    return (torch.cat([r for r, _, _ in out]), torch.cat([i.cpu() for _, i, _ in out]),
            [e for _, _, errors in out for e in errors])


def both(manifest, prep, **kw):
    """The PIL path and the tensor path over the same rows: same rows, same errors; their images."""
    rows_p, pil, errors_p = collect(pil_batches, manifest, prep, **kw)
    rows_d, dev, errors_d = collect(device_batches, manifest, prep, **kw)
    assert torch.equal(rows_p, rows_d) and errors_p == errors_d
    return pil, dev, errors_p


def level_diff(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a.int() - b.int()).abs()


@pytest.fixture(scope="module")
def v1(tmp_path_factory):
    """A V1-style manifest of nine small random-noise JPEGs (noise is the hard case for resizing)."""
    base = tmp_path_factory.mktemp("v1")
    ids = make_images(base / "images")
    return read_manifest(make_manifest(base / "tiny.parquet", base / "images", ids))


# ---- JPEGs: tensor path vs PIL path ------------------------------------------------------------


@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear", "nearest"])
@pytest.mark.parametrize("size", [(28, 36), (64, 48)])
def test_tensor_path_matches_the_pil_path(v1, interpolation, size):
    rows = [5, 0, 8, 3, 3, 1, 7, 2, 6, 4]  # any order, repeats: as given
    pil, dev, errors = both(v1, Preprocess(*size, interpolation), rows=rows)
    assert errors == [""] * len(rows) and dev.shape == (len(rows), 3, *size)
    diff = level_diff(pil, dev)
    if interpolation == "nearest":  # PIL's own pixel picks: exact
        assert torch.equal(pil, dev)
    else:  # measured on these noise images: at most 1 level, on 0.03% (bicubic) / 3% (bilinear) of values
        assert diff.max() <= 1 and (diff > 0).float().mean() < 0.05


def test_worker_processes_give_the_same_batches(v1):
    prep = Preprocess(28, 36, "bicubic")
    _, in_main, _ = collect(device_batches, v1, prep)
    _, in_workers, errors = collect(device_batches, v1, prep, workers=2)
    assert torch.equal(in_main, in_workers) and errors == [""] * len(v1)


@pytest.mark.parametrize("shape", [(30, 45, 224, 224), (500, 333, 288, 288), (333, 500, 288, 288), (356, 56, 232, 22),
                                   (60, 300, 224, 224), (17, 300, 64, 64), (64, 64, 224, 224)])
@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear"])
def test_resize_follows_pils_passes(shape, interpolation):
    """Noise through PIL's two passes: a wrong pass order shows as errors of 10+ levels (PIL rounds
    and clamps between the passes), tall and wide images alike."""
    h, w, height, width = shape
    a = np.random.default_rng(h * w).integers(0, 256, (h, w, 3), dtype=np.uint8)
    ref = np.array(Image.fromarray(a).resize((width, height), getattr(Image.Resampling, interpolation.upper())))
    out = resize(torch.from_numpy(a).permute(2, 0, 1)[None].contiguous(), (height, width), interpolation)
    diff = level_diff(torch.from_numpy(ref).permute(2, 0, 1), out[0])
    assert diff.max() <= 2 and (diff > 1).float().mean() < 1e-3  # measured: 2 levels on <= 0.03% of values


# ---- odd files ---------------------------------------------------------------------------------


def _odd_files(root: Path) -> list[str]:
    """24 x 32 images of every kind the tensor path must handle; returns file names."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(3)
    rgb = Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8))
    rgb.save(root / "rgb.jpg", quality=90)
    rgb.save(root / "progressive.jpg", quality=90, progressive=True)
    rgb.convert("L").save(root / "gray.jpg", quality=90)
    rgb.convert("CMYK").save(root / "cmyk.jpg", quality=90)
    rgb.save(root / "png_named.jpg", format="PNG")
    (root / "truncated.jpg").write_bytes((root / "rgb.jpg").read_bytes()[:300])
    (root / "empty.jpg").write_bytes(b"")
    return ["rgb.jpg", "progressive.jpg", "gray.jpg", "cmyk.jpg", "png_named.jpg", "truncated.jpg", "empty.jpg",
            "missing.jpg"]


def _files_manifest(tmp_path: Path, names: list[str]) -> Manifest:
    from mlreassess.datasets.manifest import base_meta, core_table, write_manifest

    ids = [n.removesuffix(".jpg") for n in names]
    table = core_table(ids, names, [0] * len(ids), [[0]] * len(ids))
    write_manifest(tmp_path / "odd.parquet", table, base_meta("imagenet_v1", "odd", tmp_path / "img"))
    return read_manifest(tmp_path / "odd.parquet")


def test_odd_files_decode_as_pil_does_or_fail_with_its_words(tmp_path):
    names = _odd_files(tmp_path / "img")
    manifest = _files_manifest(tmp_path, names)
    pil, dev, errors = both(manifest, Preprocess(24, 32, "bicubic"))  # the images' own size: decode only
    by_name = dict(zip(manifest.table.column("path").to_pylist(), range(len(manifest))))
    for name in ("rgb.jpg", "progressive.jpg", "gray.jpg", "cmyk.jpg", "png_named.jpg"):
        j = by_name[name]
        assert errors[j] == "" and torch.equal(pil[j], dev[j]), name  # same decode and RGB conversion
    gray = dev[by_name["gray.jpg"]]
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    assert "truncated.jpg: corrupt or truncated image" in errors[by_name["truncated.jpg"]]
    assert "empty.jpg: not a readable image" in errors[by_name["empty.jpg"]]
    assert "missing.jpg: image file not found" in errors[by_name["missing.jpg"]]
    for name in ("truncated.jpg", "empty.jpg", "missing.jpg"):
        assert not dev[by_name[name]].any()  # unreadable samples are zeros, as in the PIL path


def test_jpeg_components_reads_the_frame_header(tmp_path):
    _odd_files(tmp_path / "img")
    read = {p.name: p.read_bytes() for p in (tmp_path / "img").iterdir()}
    assert jpeg_components(read["rgb.jpg"]) == 3 and jpeg_components(read["progressive.jpg"]) == 3
    assert jpeg_components(read["gray.jpg"]) == 1 and jpeg_components(read["cmyk.jpg"]) == 4
    assert jpeg_components(read["png_named.jpg"]) is None and jpeg_components(b"") is None
    assert jpeg_components(read["rgb.jpg"][:20]) is None  # cut before the frame header


def test_images_the_device_decoder_refuses_fall_back_to_pil(v1, monkeypatch):
    """A batch decode that raises is retried image by image; the image that fails alone is PIL's."""
    root = Path(v1.root)
    refused = len((root / v1.table.column("path")[4].as_py()).read_bytes())
    calls = []
    real = device_input.decode_jpeg

    def picky(data, **kw):
        calls.append(len(data))
        if any(len(d) == refused for d in data):
            raise RuntimeError("decode_jpeg: unsupported JPEG (test)")
        return real(data, **kw)

    monkeypatch.setattr(device_input, "decode_jpeg", picky)
    prep = Preprocess(28, 36, "nearest")  # nearest: the tensor path is exact, so PIL's pixels show
    pil, dev, errors = both(v1, prep)
    assert errors == [""] * len(v1) and torch.equal(pil, dev)
    assert 1 in calls and max(calls) == 4  # batches of 4 failed once, then one image at a time


# ---- centre crop -------------------------------------------------------------------------------


@pytest.mark.parametrize("crop_pct, crop_mode, size", [(0.875, "center", (32, 32)), (0.9, "center", (32, 40)),
                                                       (1.0, "center", (32, 32)), (1.15, "center", (30, 36)),
                                                       (0.95, "squash", (32, 32)), (0.8, "squash", (28, 36))])
@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear", "nearest"])
def test_center_crop_has_timms_geometry(crop_pct, crop_mode, size, interpolation):
    """`fit` against timm's eval transform (`Preprocess.__call__` with crop='center'): resize to
    floor(size / crop_pct) (shorter side, or both sides for squash), centre crop, zero padding
    where crop_pct > 1."""
    prep = Preprocess(*size, interpolation, "center", crop_pct, crop_mode)
    rng = np.random.default_rng(7)
    for h, w in [(40, 60), (60, 40), (37, 37), (20, 50), (36, 36), (32, 32), (100, 31), (31, 100)]:
        a = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        ref = prep(Image.fromarray(a))
        out = fit(torch.from_numpy(a).permute(2, 0, 1)[None].contiguous(), prep)[0]
        assert ref.shape == out.shape == (3, *size)
        diff = level_diff(ref, out)
        # measured on noise: nearest exact; bicubic <= 1; bilinear <= 2 on a few values
        assert diff.max() <= (0 if interpolation == "nearest" else 2), (h, w, diff.max())
        assert (diff > 1).float().mean() < 0.01


def test_center_crop_through_the_tensor_path(v1):
    pil, dev, _ = both(v1, Preprocess(28, 28, "bicubic", "center", 0.875, "center"))
    assert level_diff(pil, dev).max() <= 2


# ---- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize("prep, named", [(Preprocess(32, 32, "lanczos"), "'lanczos'"),
                                         (Preprocess(32, 32, "bicubic", "center", 0.9, "border"), "'border'")])
def test_preprocessing_without_a_device_version_is_a_one_line_error(v1, prep, named):
    with pytest.raises(InputError) as err:
        check_device_preprocess(prep)
    text = str(err.value)
    assert "\n" not in text and named in text and "use --decode cpu" in text
    with pytest.raises(InputError):  # at once, before any worker starts
        device_batches(v1, [0], prep, "cpu", 4, 0)


# ---- PatchML -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def patchml(tmp_path_factory):
    """Seed 1 with PNGs (DIR/images) and the same manifest alone in another folder (no PNGs)."""
    tmp = tmp_path_factory.mktemp("patchml")
    src = make_sources(tmp / "src")
    generate(src / "boxes.csv", 1, tmp / "png", images=src / "val", workers=1, **PARAMS)
    (tmp / "bare").mkdir()
    shutil.copy(tmp / "png" / "manifest.parquet", tmp / "bare" / "manifest.parquet")
    return {"sources": src / "val", "png": read_manifest(tmp / "png" / "manifest.parquet"),
            "bare": read_manifest(tmp / "bare" / "manifest.parquet")}


CANVAS = Preprocess(96, 96, "bicubic")  # PARAMS' canvas size: no resize, the canvas pixels themselves


def test_painted_canvases_are_bit_identical_to_the_cache(patchml):
    m = patchml["bare"]
    cache = build_cache([m], source_root=patchml["sources"])
    painter = CanvasPainter(cache, 0, "cpu")
    rows = list(range(len(m)))[::-1]
    expected = torch.stack([torch.from_numpy(cache.canvas(0, i)).permute(2, 0, 1) for i in rows])
    assert torch.equal(painter.paint(rows), expected)  # slice copies (a CPU device)
    painter.layered = True  # the CUDA way (one scatter per layer), here on the CPU
    assert torch.equal(painter.paint(rows), expected)


def test_overlapping_patches_are_pasted_in_placement_order(patchml):
    """Layouts never overlap, but `render.paint` defines it: a later patch covers an earlier one."""
    m = patchml["bare"]
    column = m.table.schema.get_field_index("positions")
    moved = [[[3 * n, 2 * n] for n in range(len(pos))] for pos in m.table.column("positions").to_pylist()]
    table = m.table.set_column(column, m.table.schema.field(column), pa.array(moved, m.table.schema.field(column).type))
    shifted = Manifest(table=table, meta=m.meta, source=m.source)
    cache = build_cache([shifted], source_root=patchml["sources"])
    painter = CanvasPainter(cache, 0, "cpu")
    rows = list(range(len(m)))
    expected = torch.stack([torch.from_numpy(cache.canvas(0, i)).permute(2, 0, 1) for i in rows])
    assert torch.equal(painter.paint(rows), expected)
    painter.layered = True
    assert torch.equal(painter.paint(rows), expected)


def test_patchml_canvases_from_pngs_cache_or_render(patchml, monkeypatch):
    """The tensor path's canvases are the PIL path's exactly: PNGs; painted from the cache (by the
    main process, or by the workers when the cache is not copied); rows past the cache rendered."""
    pil, dev, errors = both(patchml["png"], CANVAS)
    assert torch.equal(pil, dev) and errors == [""] * len(patchml["png"])
    bare, sources = patchml["bare"], patchml["sources"]
    pil, dev, _ = both(bare, CANVAS, source_root=sources)  # a cache built for the pass
    assert torch.equal(pil, dev)
    full = build_cache([bare], source_root=sources)
    part = build_cache([bare], source_root=sources, max_bytes=full.nbytes // 3)
    flags = [part.cached(0, i) for i in range(len(bare))]
    assert any(flags) and not all(flags)
    pil, dev, _ = both(bare, CANVAS, source_root=sources, cached=(part, 0))
    rendered = torch.stack([torch.from_numpy(np.array(render_row(bare, i, sources))).permute(2, 0, 1)
                            for i in range(len(bare))])
    assert torch.equal(pil, dev) and torch.equal(dev, rendered)
    monkeypatch.setattr(CanvasPainter, "for_pass", classmethod(lambda cls, cached, device, pixels_of=None: None))
    _, in_workers, _ = collect(device_batches, bare, CANVAS, source_root=sources, cached=(full, 0), workers=2)
    assert torch.equal(in_workers, rendered)


def test_canvas_with_an_unreadable_source_fails_as_in_the_pil_path(patchml, tmp_path):
    bare = patchml["bare"]
    sources = tmp_path / "val"
    shutil.copytree(patchml["sources"], sources)
    first = bare.table.column("src_ids")[0].as_py()[0]
    path = sources / f"{first}.JPEG"
    path.write_bytes(path.read_bytes()[:100])
    cache = build_cache([bare], source_root=sources)
    _, _, errors = both(bare, CANVAS, source_root=sources, cached=(cache, 0))
    assert "corrupt or truncated" in errors[0] and f"{first}.JPEG" in errors[0]
    assert sum(1 for e in errors if e) < len(errors)


# ---- infer and bench end to end ----------------------------------------------------------------


def _infer(*args: str, out: Path) -> int:
    return main(["infer", *args, "--out", str(out), "--device", "cpu", "--workers", "0", "--no-progress",
                 "--batch-size", "4"])


def test_infer_decode_gpu_on_a_cpu_device_records_it_and_a_cpu_rerun_redoes_it(v1, tmp_path, caplog):
    weights = save_weights(tmp_path / "w.pth", "test_resnet", seed=2)
    args = ["--data", str(v1.source), "--model", "test_resnet", "--weights", f"file:{weights}"]
    reference = tmp_path / "reference"
    assert _infer(*args, out=reference) == 0
    out = tmp_path / "out"
    assert _infer(*args, "--decode", "gpu", out=out) == 0
    table, meta = writers.read_predictions(ResultsLayout(out).prediction(v1.name, "test_resnet"))
    assert meta["recipe"]["decode"] == "gpu" and table.num_rows == len(v1)
    cpu_table, cpu_meta = writers.read_predictions(ResultsLayout(reference).prediction(v1.name, "test_resnet"))
    assert cpu_meta["recipe"]["decode"] == "cpu"
    top1 = [t[0] for t in table.column("topk_idx").to_pylist()]
    assert top1 == [t[0] for t in cpu_table.column("topk_idx").to_pylist()]  # +-1 level changes no winner here
    caplog.clear()
    assert _infer(*args, "--decode", "cpu", out=out) == 0
    assert "redoing it: decode gpu -> cpu" in caplog.text
    _, meta = writers.read_predictions(ResultsLayout(out).prediction(v1.name, "test_resnet"))
    assert meta["recipe"]["decode"] == "cpu"


def test_infer_decode_gpu_skips_unreadable_images_or_stops_with_strict(v1, tmp_path, capsys):
    root = tmp_path / "images"
    shutil.copytree(v1.root, root)
    ids = v1.sample_ids
    (root / f"{ids[2]}.jpg").write_bytes((root / f"{ids[2]}.jpg").read_bytes()[:200])
    manifest = make_manifest(tmp_path / "bad.parquet", root, list(ids), name="bad")
    args = ["--data", str(manifest), "--model", "test_resnet", "--weights", "random", "--decode", "gpu"]
    assert _infer(*args, out=tmp_path / "out") == 0
    table, meta = writers.read_predictions(ResultsLayout(tmp_path / "out").prediction("bad", "test_resnet"))
    assert table.column("sample_id").to_pylist() == [s for s in ids if s != ids[2]]
    (failed,) = meta["failed_samples"]
    assert failed["sample_id"] == ids[2] and "corrupt or truncated" in failed["error"]
    capsys.readouterr()
    assert _infer(*args, "--strict", out=tmp_path / "strict") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(rf"sample '{ids[2]}'.*{ids[2]}\.jpg.*corrupt or truncated", err[0])


@pytest.fixture
def refusing_decoder(monkeypatch, v1):
    """A counting stand-in for torchvision's decoder that refuses three of the nine JPEGs (as nvjpeg
    refuses some files PIL reads): a batch holding one fails whole, then each image is tried alone."""
    refused = {(v1.root / f"{sid}.jpg").read_bytes() for sid in v1.sample_ids[2:5]}
    calls = []
    real = device_input.decode_jpeg

    def decode(data, **kwargs):
        calls.append(len(data))
        if any(bytes(d.numpy()) in refused for d in data):
            raise RuntimeError("Error while decoding JPEG images: nvjpegDecode failed: 7")
        return real(data, **kwargs)

    monkeypatch.setattr(device_input, "decode_jpeg", decode)
    return refused, calls


def test_images_the_device_decoder_refuses_are_decoded_by_pil_counted_and_said_once(v1, tmp_path, caplog,
                                                                                    refusing_decoder):
    refused, calls = refusing_decoder
    weights = save_weights(tmp_path / "w.pth", "test_resnet", seed=2)
    args = ["--data", str(v1.source), "--model", "test_resnet", "--weights", f"file:{weights}"]
    assert _infer(*args, "--decode", "gpu", out=tmp_path / "gpu") == 0
    table, meta = writers.read_predictions(ResultsLayout(tmp_path / "gpu").prediction(v1.name, "test_resnet"))
    assert meta["decode_fallbacks"] == len(refused) and table.num_rows == len(v1) and not meta["failed_samples"]
    assert caplog.text.count("the device's JPEG decoder refused") == 1  # a warning, once, with the first image
    assert "nvjpegDecode failed: 7" in caplog.text and max(calls) > 1  # batches tried whole first
    assert _infer(*args, out=tmp_path / "cpu") == 0  # PIL in the workers: nothing falls back
    cpu_table, cpu_meta = writers.read_predictions(ResultsLayout(tmp_path / "cpu").prediction(v1.name, "test_resnet"))
    assert cpu_meta["decode_fallbacks"] is None
    top1 = [t[0] for t in table.column("topk_idx").to_pylist()]
    assert top1 == [t[0] for t in cpu_table.column("topk_idx").to_pylist()]  # the refused ones too: PIL's pixels


def test_bench_says_how_many_images_fell_back_to_pil(v1, capsys, refusing_decoder):
    refused, _ = refusing_decoder
    assert main(["bench", "infer", "--model", "test_resnet", "--data", str(v1.source), "--device", "cpu",
                 "--batch-size", "3", "--batches", "1", "--workers", "0", "--decode", "gpu"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert f", {len(refused)} images decoded by PIL after the device refused them" in first  # 3 batches of 3: all read
    assert main(["bench", "data", "--model", "test_resnet", "--data", str(v1.source), "--device", "cpu",
                 "--workers", "0", "--decode", "gpu", "--min-samples", "0"]) == 0
    assert f"; {len(refused)} decoded by PIL after the device refused them" in capsys.readouterr().out


@pytest.mark.parametrize("error", [torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 MiB"),
                                   RuntimeError("CUDA error: an illegal memory access was encountered")])
def test_out_of_memory_or_a_cuda_error_in_the_decoder_is_not_taken_for_a_bad_image(v1, monkeypatch, error):
    def decode(data, **kwargs):
        raise error

    monkeypatch.setattr(device_input, "decode_jpeg", decode)
    with pytest.raises(type(error), match=str(error)[:20]):
        collect(device_batches, v1, Preprocess(32, 32, "bicubic"))


def test_the_next_batch_is_assembled_one_ahead_on_a_thread_of_its_own():
    """Made in order, on another thread, never more than one ahead of the consumer; an error comes
    at the item that raised it."""
    import threading

    made, main_thread = [], threading.get_ident()

    def make(item):
        made.append((item, threading.get_ident() != main_thread))
        if item == 5:
            raise ValueError("item 5")
        return item * 10

    out = device_input.one_ahead(make, iter(range(8)), "cpu")
    for k in range(5):
        assert next(out) == k * 10
        assert len(made) <= k + 2 and all(other for _, other in made)
    with pytest.raises(ValueError, match="item 5"):
        next(out)
    assert [item for item, _ in made] == list(range(len(made)))


def test_bench_infer_with_decode_gpu(v1, capsys):
    rc = main(["bench", "infer", "--model", "test_resnet", "--data", str(v1.source), "--device", "cpu",
               "--batch-size", "4", "--batches", "2", "--warmup", "1", "--workers", "0", "--decode", "gpu"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert rc == 0 and "decode gpu" in lines[0] and re.fullmatch(r"ratio \d+\.\d\d", lines[-1])


# ---- CUDA --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smooth(tmp_path_factory):
    """Photo-like JPEGs (smooth colour fields, various sizes): what nvjpeg and PIL are compared on
    (on noise, chroma upsampling differences between decoders are at their largest)."""
    base = tmp_path_factory.mktemp("smooth")
    rng = np.random.default_rng(5)
    ids = []
    for i in range(12):
        low = Image.fromarray(rng.integers(0, 256, (5, 7, 3), dtype=np.uint8))
        low.resize((int(rng.integers(60, 400)), int(rng.integers(60, 400))), Image.Resampling.BICUBIC).save(
            base / f"s{i:02d}.jpg", quality=90)
        ids.append(f"s{i:02d}")
    return read_manifest(make_manifest(base / "smooth.parquet", base, ids, name="smooth"))


@pytest.mark.parametrize("crop", ["none", "center"])
def test_photo_like_images_of_many_sizes(smooth, crop):
    prep = Preprocess(224, 224, "bicubic", crop, 0.875 if crop == "center" else None, "center" if crop == "center" else None)
    pil, dev, errors = both(smooth, prep)
    diff = level_diff(pil, dev)
    # measured: at most 2 levels (centre crop; 1 resize-only), on under 0.1% of values
    assert errors == [""] * len(smooth) and diff.max() <= 2 and (diff > 0).float().mean() < 1e-3


@CUDA
@pytest.mark.gpu
def test_nvjpeg_batches_are_close_to_the_pil_path(smooth):
    prep = Preprocess(224, 224, "bicubic")
    pil = collect(pil_batches, smooth, prep)[1]
    _, dev, errors = collect(device_batches, smooth, prep, device="cuda")
    assert errors == [""] * len(smooth)
    diff = level_diff(pil, dev)
    # nvjpeg's IDCT and chroma upsampling are not libjpeg-turbo's: a looser bound than on the CPU.
    # A wrong channel order, geometry or stale memory is tens of levels off on average.
    assert diff.float().mean() < 2 and (diff > 16).float().mean() < 1e-3


@CUDA
@pytest.mark.gpu
def test_odd_files_on_cuda(tmp_path):
    names = _odd_files(tmp_path / "img")
    manifest = _files_manifest(tmp_path, names)
    prep = Preprocess(24, 32, "bicubic")
    _, pil, errors_p = collect(pil_batches, manifest, prep)
    _, dev, errors_d = collect(device_batches, manifest, prep, device="cuda")
    assert errors_p == errors_d
    by_name = dict(zip(manifest.table.column("path").to_pylist(), range(len(manifest))))
    for name in ("cmyk.jpg", "png_named.jpg"):  # decoded by PIL in the workers
        assert torch.equal(pil[by_name[name]], dev[by_name[name]])
    gray = dev[by_name["gray.jpg"]]
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])


@CUDA
@pytest.mark.gpu
def test_canvases_painted_on_the_gpu_are_bit_identical(patchml):
    m = patchml["bare"]
    cache = build_cache([m], source_root=patchml["sources"])
    painter = CanvasPainter(cache, 0, "cuda")
    assert painter.layered and painter.pixels.is_cuda
    rows = list(range(len(m)))
    expected = torch.stack([torch.from_numpy(cache.canvas(0, i)).permute(2, 0, 1) for i in rows])
    assert torch.equal(painter.paint(rows).cpu(), expected)
    _, dev, _ = collect(device_batches, m, CANVAS, source_root=patchml["sources"], cached=(cache, 0), device="cuda")
    assert torch.equal(dev, expected)


@CUDA
@pytest.mark.gpu
def test_on_cuda_an_infer_with_decode_gpu_agrees_with_the_pil_decode(smooth, tmp_path):
    """The sweep with nvjpeg decoding one batch ahead on its own thread (stream handed over, pinned
    index copies) against PIL in the workers: the same winners, nothing fallen back."""
    weights = save_weights(tmp_path / "w.pth", "test_resnet", seed=3)
    args = ["--data", str(smooth.source), "--model", "test_resnet", "--weights", f"file:{weights}", "--device", "cuda",
            "--batch-size", "3", "--workers", "2", "--no-progress"]
    tops = {}
    for decode in ("cpu", "gpu"):
        assert main(["infer", *args, "--decode", decode, "--out", str(tmp_path / decode)]) == 0
        table, meta = writers.read_predictions(ResultsLayout(tmp_path / decode).prediction(smooth.name, "test_resnet"))
        tops[decode] = [t[0] for t in table.column("topk_idx").to_pylist()]
        assert meta["decode_fallbacks"] == (0 if decode == "gpu" else None)
    assert np.mean(np.array(tops["cpu"]) == np.array(tops["gpu"])) >= 0.9
