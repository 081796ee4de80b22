"""open_image / image_size / verify_manifest_images on generated files of every awkward kind."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mlreassess.datasets.images import image_size, open_image
from mlreassess.datasets.samples import verify_manifest_images
from mlreassess.datasets.manifest import Manifest, base_meta, core_table
from mlreassess.errors import InputError


def _gradient(w: int = 12, h: int = 10) -> np.ndarray:
    x = np.arange(w, dtype=np.uint8)[None, :, None] * 20
    y = np.arange(h, dtype=np.uint8)[:, None, None] * 25
    return np.concatenate([np.broadcast_to(x, (h, w, 1)), np.broadcast_to(y, (h, w, 1)), np.full((h, w, 1), 7, np.uint8)], 2)


def test_rgb_jpeg_decodes_to_rgb(tmp_path, write_jpeg):
    p = write_jpeg(tmp_path / "a.JPEG", color=(200, 10, 10), size=(12, 10))
    im = open_image(p)
    assert im.mode == "RGB" and im.size == (12, 10)
    r, g, b = im.getpixel((5, 5))
    assert r > 180 and g < 40 and b < 40


def test_grayscale_jpeg_becomes_rgb_with_equal_channels(tmp_path):
    p = tmp_path / "gray.JPEG"
    Image.new("L", (9, 7), 90).save(p, "JPEG")
    im = open_image(p)
    assert im.mode == "RGB" and im.size == (9, 7)
    r, g, b = im.getpixel((3, 3))
    assert r == g == b and abs(r - 90) <= 2


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    p = tmp_path / "cmyk.JPEG"
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(p, "JPEG")  # pure red in CMYK
    im = open_image(p)
    assert im.mode == "RGB"
    r, g, b = im.getpixel((4, 4))
    assert r > 200 and g < 60 and b < 60


def test_png_disguised_as_jpeg_is_decoded_losslessly(tmp_path):
    arr = _gradient()
    p = tmp_path / "ILSVRC2012_val_00000001.JPEG"
    Image.fromarray(arr).save(p, "PNG")  # PNG bytes under a .JPEG name, as in ImageNet val
    im = open_image(p)
    assert im.mode == "RGB"
    assert np.array_equal(np.asarray(im), arr)


@pytest.mark.parametrize("mode", ["RGBA", "P", "LA"])
def test_other_modes_become_rgb(tmp_path, mode):
    p = tmp_path / f"x_{mode}.png"
    im = Image.fromarray(_gradient()).convert(mode)
    if mode == "P":
        im.info["transparency"] = 0
    im.save(p)
    assert open_image(p).mode == "RGB"


def test_truncated_jpeg_is_an_input_error_naming_the_file(tmp_path):
    good = tmp_path / "good.JPEG"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(good, "JPEG")
    data = good.read_bytes()
    bad = tmp_path / "trunc.JPEG"
    bad.write_bytes(data[: len(data) // 2])
    with Image.open(bad) as im:  # the header alone looks fine: only a full decode finds the damage
        im.verify()
    assert image_size(bad) == (64, 64)
    with pytest.raises(InputError, match="trunc.JPEG"):
        open_image(bad)


def test_garbage_and_missing_files(tmp_path):
    junk = tmp_path / "junk.JPEG"
    junk.write_bytes(b"not an image at all")
    for fn in (open_image, image_size):
        with pytest.raises(InputError, match="junk.JPEG: not a readable image"):
            fn(junk)
        with pytest.raises(InputError, match="nope.JPEG: image file not found"):
            fn(tmp_path / "nope.JPEG")


def test_image_size_reads_header(tmp_path, write_jpeg):
    assert image_size(write_jpeg(tmp_path / "a.jpg", size=(31, 17))) == (31, 17)


def _manifest(tmp_path, names):
    table = core_table(list(names), [f"{n}.JPEG" for n in names], [1] * len(names), [[1]] * len(names))
    return Manifest(table=table, meta=base_meta("imagenet_v1", "t", tmp_path))


def test_verify_manifest_images_raises_or_drops(tmp_path, write_jpeg):
    write_jpeg(tmp_path / "a.JPEG")
    write_jpeg(tmp_path / "c.JPEG")
    (tmp_path / "b.JPEG").write_bytes(b"\xff\xd8\xff garbage")
    m = _manifest(tmp_path, ["a", "b", "c"])
    with pytest.raises(InputError, match=r"sample b: .*b\.JPEG"):
        verify_manifest_images(m, progress=False)
    kept = verify_manifest_images(m, skip_bad=True, progress=False)
    assert kept.sample_ids == ["a", "c"]
    assert [s["file"] for s in kept.meta["skipped"]] == ["sample b"]
    assert kept.meta["images_verified"] is True
