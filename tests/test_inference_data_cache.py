"""The inference data path paints PatchML canvases without PNGs from the patch cache, same pixels."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from mlreassess.datasets.manifest import read_manifest
from mlreassess.inference.input.caches import rows_to_render
from mlreassess.inference.input.pipeline import ManifestImages, pil_batches
from mlreassess.inference.input.preprocess import Preprocess, decode_of
from mlreassess.patchml import generate
from mlreassess.patchml.render import render_row
from test_patchml_render import PARAMS, make_sources

PREP = Preprocess(height=40, width=48, interpolation="bicubic")


@pytest.fixture(scope="module")
def patchml(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("data_cache")
    src = make_sources(tmp / "src")
    generate(src / "boxes.csv", 4, tmp / "set", images=src / "val", workers=1, **PARAMS)
    bare = tmp / "bare"  # the manifest alone: no PNGs
    bare.mkdir()
    shutil.copy(tmp / "set" / "manifest.parquet", bare / "manifest.parquet")
    return tmp, read_manifest(tmp / "set" / "manifest.parquet"), read_manifest(bare / "manifest.parquet")


def expected(manifest, i):
    return PREP(render_row(manifest, i))


def test_without_pngs_every_row_comes_from_the_cache_with_render_row_pixels(patchml):
    _, _, bare = patchml
    rows = list(range(len(bare)))
    data = ManifestImages(bare, PREP, rows, cache_workers=0)
    assert data.patch_cache is not None and all(data.patch_cache.cached(0, i) for i in rows)
    for j, i in enumerate(rows):
        row, tensor, error = data[j]
        assert row == i and error == "" and torch.equal(tensor, expected(bare, i))
    old = ManifestImages(bare, PREP, rows, patch_cache=False)  # the on-the-fly path stays available
    assert old.patch_cache is None and torch.equal(old[3][1], data[3][1])


def test_a_shared_decode_of_cached_canvases_gives_each_group_its_own_pixels(patchml):
    _, _, bare = patchml
    decode = decode_of([PREP, Preprocess(24, 24, "bilinear"), Preprocess(32, 32, "bicubic", "center", 0.875, "center")])
    rows = list(range(len(bare)))
    shared = ManifestImages(bare, decode, rows, cache_workers=0)
    for part in decode.parts:  # the cache's patch-only resize and the centre crop's whole canvas alike
        own = ManifestImages(bare, part, rows, cache_workers=0)
        for j in range(len(rows)):
            _, pixels, error = shared[j]
            assert error == "" and torch.equal(decode.part(pixels[None], part)[0], own[j][1])


def test_cache_only_for_rows_without_png(patchml):
    tmp, with_png, _ = patchml
    assert rows_to_render(with_png, [0, 1, 2]) == [] and ManifestImages(with_png, PREP, [0, 1]).patch_cache is None
    png = tmp / "set" / "images" / f"{with_png.sample_ids[1]}.png"
    saved = png.read_bytes()
    png.unlink()
    try:
        assert rows_to_render(with_png, [0, 1, 2, 1]) == [1]
        data = ManifestImages(with_png, PREP, [0, 1, 2], cache_workers=0)
        assert data.patch_cache.cached(0, 1) and not data.patch_cache.cached(0, 0)
        assert all(torch.equal(data[j][1], expected(with_png, j)) for j in range(3))
    finally:
        png.write_bytes(saved)


def test_loader_workers_share_the_cache(patchml):
    _, _, bare = patchml
    rows = list(range(len(bare)))[::-1]
    data = ManifestImages(bare, PREP, rows, cache_workers=2)
    batches = list(pil_batches(bare, rows, PREP, "cpu", 4, 2, cached=(data.patch_cache, 0)))
    got = torch.cat([b[1] for b in batches])
    assert [int(i) for b in batches for i in b[0]] == rows
    assert torch.equal(got, torch.stack([expected(bare, i) for i in rows]))


def test_missing_source_fails_its_samples_only(patchml, tmp_path):
    _, _, bare = patchml
    src_root = tmp_path / "val"
    shutil.copytree(bare.meta["source_root"], src_root)
    gone = bare.table.column("src_ids").to_pylist()[0][0]
    (src_root / f"{gone}.JPEG").unlink()
    rows = list(range(len(bare)))
    data = ManifestImages(bare, PREP, rows, source_root=src_root, cache_workers=0)
    uses = [gone in ids for ids in bare.table.column("src_ids").to_pylist()]
    for j in rows:
        _, tensor, error = data[j]
        assert bool(error) == uses[j]
        if error:
            assert "image file not found" in error and f"{gone}.JPEG" in error and not tensor.any()




# ---- a cached canvas is resized only where its patches are (issue 26: PatchML input speed) ----

def _random_canvas(rng, side: int, k: int):
    from mlreassess.patchml.render import paint

    c = int(np.ceil(np.sqrt(k)))
    cell = side // c
    patches, positions, rects = [], [], []
    for j in range(k):
        w, h = int(rng.integers(1, cell + 1)), int(rng.integers(1, cell + 1))
        x = (j % c) * cell + int(rng.integers(0, cell - w + 1))
        y = (j // c) * cell + int(rng.integers(0, cell - h + 1))
        patches.append(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        positions.append((x, y))
        rects.append((x, y, w, h))
    return paint(side, patches, positions), rects


@pytest.mark.parametrize("filter_name", ["bicubic", "bilinear", "lanczos", "box", "hamming"])
def test_resizing_only_the_patches_gives_the_whole_resizes_pixels(filter_name):
    from PIL import Image

    from mlreassess.patchml.render import resize_painted

    rng = np.random.default_rng(7)
    f = Image.Resampling[filter_name.upper()]
    for side, out in [(448, 224), (448, 112), (448, 448), (336, 48), (96, 48)]:
        for k in (1, 2, 3, 4, 6, 9):
            canvas, rects = _random_canvas(rng, side, k)
            got = resize_painted(canvas, rects, (out, out), f)
            assert np.array_equal(got, np.asarray(Image.fromarray(canvas).resize((out, out), f))), (side, out, k)
    canvas, rects = _random_canvas(rng, 448, 4)
    assert resize_painted(canvas, rects, (240, 240), f) is None  # not a whole-number scale: the caller resizes it all
    assert resize_painted(canvas, rects, (224, 224), Image.Resampling.NEAREST) is None


def test_a_cached_canvas_costs_no_png_check_and_no_whole_canvas_resize(patchml, monkeypatch):
    """The per-canvas work the input path must not do again: a PNG digest per cached canvas, a
    resize of the whole canvas (cached rows come out exactly as the render would)."""
    import mlreassess.patchml.render as render
    from PIL import Image

    _, _, bare = patchml
    side = int(bare.meta["canvas_size"])
    prep = Preprocess(height=side // 2, width=side // 2, interpolation="bicubic")
    rows = list(range(len(bare)))
    data = ManifestImages(bare, prep, rows, cache_workers=0)
    digests, whole = [], []
    real_digest, real_resize = render.canvas_digest, Image.Image.resize
    monkeypatch.setattr(render, "canvas_digest", lambda *a: digests.append(a) or real_digest(*a))
    monkeypatch.setattr(Image.Image, "resize", lambda im, size, *a, **k: (
        whole.append(size) if im.size == (side, side) and k.get("box") is None else None) or real_resize(im, size, *a, **k))
    got = [data[j][1] for j in range(len(rows))]
    assert not digests and not whole
    monkeypatch.undo()
    assert all(torch.equal(t, prep(render_row(bare, i))) for t, i in zip(got, rows))
