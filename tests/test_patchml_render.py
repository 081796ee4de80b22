"""PatchML end to end on small generated JPEGs: generate(), rendering, determinism, resume, CLI errors."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mlreassess.cli import main
from mlreassess.datasets.labels import wnid_to_index
from mlreassess.datasets.manifest import read_manifest
from mlreassess.errors import InputError
from mlreassess.patchml import generate
from mlreassess.patchml.render import render_row, render_to_dir

PARAMS = dict(counts=[2, 3, 4], canvas_size=96, min_box_side=4, progress=False)


def make_sources(root: Path, n_images: int = 14, seed: int = 0) -> Path:
    """Random-texture JPEGs `<id>.JPEG` and a Kaggle-format boxes CSV beside them."""
    rng = np.random.default_rng(seed)
    wnids = sorted(wnid_to_index())[:5]
    images = root / "val"
    images.mkdir(parents=True)
    lines = ["ImageId,PredictionString"]
    for i in range(n_images):
        w, h = int(rng.integers(30, 70)), int(rng.integers(30, 70))
        pixels = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        image_id = f"src_{i:03d}"
        Image.fromarray(pixels).save(images / f"{image_id}.JPEG", format="JPEG", quality=90)
        groups = []
        for _ in range(int(rng.integers(1, 4))):
            x0, y0 = int(rng.integers(0, w - 8)), int(rng.integers(0, h - 8))
            x1, y1 = int(rng.integers(x0 + 4, w)), int(rng.integers(y0 + 4, h))  # x1 <= w - 1: inclusive
            groups.append(f"{wnids[int(rng.integers(0, 5))]} {x0} {y0} {x1} {y1}")
        lines.append(f"{image_id},{' '.join(groups)}")
    (root / "boxes.csv").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture
def src(tmp_path):
    return make_sources(tmp_path / "src")


def files_digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_generate_writes_manifest_and_pngs(src, tmp_path):
    res = generate(src / "boxes.csv", 3, tmp_path / "out", images=src / "val", workers=1, **PARAMS)
    m = read_manifest(tmp_path / "out" / "manifest.parquet")
    n = res.pool_size
    assert len(m) == n // 2 + n // 3 + n // 4 and res.render.rendered == len(m)
    assert m.meta["kind"] == "patchml" and m.meta["dataset"] == "patchml_seed3" and m.meta["seed"] == 3
    assert m.meta["counts"] == [2, 3, 4] and m.meta["canvas_size"] == 96 and m.meta["resample"] == "bicubic"
    assert m.meta["source_root"] == str((src / "val").resolve()) and m.meta["source_pattern"] == "{id}.JPEG"
    assert m.meta["boxes_file"] == "boxes.csv"
    assert m.meta["boxes_sha256"] == hashlib.sha256((src / "boxes.csv").read_bytes()).hexdigest()
    pngs = sorted(p.stem for p in (tmp_path / "out" / "images").iterdir())
    assert pngs == sorted(m.sample_ids)


def test_pixels_are_the_cropped_resized_patches_on_black(src, tmp_path):
    generate(src / "boxes.csv", 1, tmp_path / "out", images=src / "val", workers=1, **PARAMS)
    m = read_manifest(tmp_path / "out" / "manifest.parquet")
    for row in m.table.to_pylist()[::5]:
        png = np.asarray(Image.open(tmp_path / "out" / "images" / f"{row['sample_id']}.png"))
        assert png.shape == (96, 96, 3)
        covered = np.zeros((96, 96), bool)
        for sid, (x0, y0, x1, y1), (w, h), (x, y) in zip(row["src_ids"], row["src_boxes"], row["sizes"], row["positions"]):
            # Independent reference: numpy slicing of the decoded source, then PIL's bicubic resize.
            source = np.asarray(Image.open(src / "val" / f"{sid}.JPEG").convert("RGB"))
            crop = Image.fromarray(source[y0 : y1 + 1, x0 : x1 + 1])
            expected = np.asarray(crop.resize((w, h), Image.Resampling.BICUBIC))
            assert np.array_equal(png[y : y + h, x : x + w], expected)
            covered[y : y + h, x : x + w] = True
        assert (png[~covered] == 0).all()  # black canvas elsewhere


def test_render_row_matches_the_png_files(src, tmp_path):
    generate(src / "boxes.csv", 2, tmp_path / "out", images=src / "val", workers=1, **PARAMS)
    m = read_manifest(tmp_path / "out" / "manifest.parquet")
    for i, sid in enumerate(m.sample_ids):
        png = np.asarray(Image.open(tmp_path / "out" / "images" / f"{sid}.png"))
        img = render_row(m, i)
        assert img.mode == "RGB" and img.size == (96, 96)
        assert np.array_equal(np.asarray(img), png), sid


def test_same_seed_byte_identical_other_seed_different(src, tmp_path):
    for name, seed, workers in (("a", 5, 1), ("b", 5, 2), ("c", 6, 2)):
        generate(src / "boxes.csv", seed, tmp_path / name, images=src / "val", workers=workers, **PARAMS)
    a, b, c = (files_digest(tmp_path / x / "images") for x in "abc")
    assert a == b  # also: 1 worker and 2 workers write the same bytes
    manifest = lambda x: (tmp_path / x / "manifest.parquet").read_bytes()  # noqa: E731
    assert manifest("a") == manifest("b")
    assert manifest("a") != manifest("c")
    assert a.keys() == c.keys() and a != c


def test_rerun_skips_identical_manifest_and_renders_only_missing(src, tmp_path):
    out = tmp_path / "out"
    first = generate(src / "boxes.csv", 1, out, images=src / "val", workers=1, **PARAMS)
    before = files_digest(out / "images")
    victim = sorted(before)[3]
    (out / "images" / victim).unlink()
    again = generate(src / "boxes.csv", 1, out, images=src / "val", workers=1, **PARAMS)
    assert first.status == "written" and again.status == "unchanged"
    assert again.render.rendered == 1 and again.render.existing == len(before) - 1
    assert files_digest(out / "images") == before


def test_compose_only_then_render_into_the_same_folder(src, tmp_path):
    out = tmp_path / "out"
    first = generate(src / "boxes.csv", 1, out, **PARAMS)
    assert first.render is None and first.bounds_source is None
    assert read_manifest(out / "manifest.parquet").meta["source_root"] is None
    second = generate(src / "boxes.csv", 1, out, images=src / "val", workers=1, **PARAMS)
    assert second.status == "updated source_root" and second.render.rendered == len(second.manifest)


def test_no_render_records_the_source_folder_and_writes_no_png(src, tmp_path):
    out = tmp_path / "out"
    res = generate(src / "boxes.csv", 1, out, images=src / "val", render=False, **PARAMS)
    assert res.render is None and not (out / "images").exists()
    assert res.bounds_source is not None  # boxes still checked against the images
    manifest = read_manifest(out / "manifest.parquet")
    assert manifest.meta["source_root"] == str((src / "val").resolve())
    # The recorded folder is enough to render a canvas later, identical to the PNG renderer's.
    rendered = generate(src / "boxes.csv", 1, tmp_path / "png", images=src / "val", workers=1, **PARAMS)
    png = Image.open(tmp_path / "png" / "images" / f"{manifest.sample_ids[0]}.png")
    assert np.array_equal(np.asarray(render_row(manifest, 0)), np.asarray(png.convert("RGB")))
    assert rendered.manifest.table.equals(manifest.table)


def test_a_folder_with_another_build_is_redone_saying_why(src, tmp_path, caplog):
    caplog.set_level("INFO")
    out = tmp_path / "out"
    generate(src / "boxes.csv", 1, out, **PARAMS)
    assert generate(src / "boxes.csv", 2, out, **PARAMS).status == "redone"
    assert f"{out / 'manifest.parquet'}: redoing it: " in caplog.text and "seed 1 there vs 2 now" in caplog.text
    assert read_manifest(out / "manifest.parquet").meta["seed"] == 2
    generate(src / "boxes.csv", 2, out, **{**PARAMS, "min_box_side": 5})
    assert "min_box_side 4 there vs 5 now" in caplog.text


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_corrupt_source_fails_at_render_naming_it_or_is_skipped(src, tmp_path):
    bad = src / "val" / "src_004.JPEG"
    _truncate(bad)  # header still readable: only the full decode fails
    with pytest.raises(InputError) as err:
        generate(src / "boxes.csv", 1, tmp_path / "a", images=src / "val", workers=1, **PARAMS)
    assert str(err.value).startswith(f"{bad.resolve()}: corrupt or truncated image") and "--skip-bad" in str(err.value)
    res = generate(src / "boxes.csv", 1, tmp_path / "b", images=src / "val", workers=2, skip_bad=True, **PARAMS)
    using_bad = [r["sample_id"] for r in res.manifest.table.to_pylist() if "src_004" in r["src_ids"]]
    assert using_bad and sorted(f["sample_id"] for f in res.render.failed) == sorted(using_bad)
    assert res.render.rendered == len(res.manifest) - len(using_bad)


def test_missing_source_is_a_bad_row_at_compose(src, tmp_path):
    (src / "val" / "src_002.JPEG").unlink()
    with pytest.raises(InputError) as err:
        generate(src / "boxes.csv", 1, tmp_path / "a", images=src / "val", **PARAMS)
    assert str(err.value).startswith(f"{src / 'boxes.csv'}: line 4: ") and "src_002.JPEG: image file not found" in str(err.value)
    res = generate(src / "boxes.csv", 1, tmp_path / "b", images=src / "val", workers=1, skip_bad=True, **PARAMS)
    assert res.rows_dropped == 1 and "src_002" not in {s for ids in res.manifest.table.column("src_ids").to_pylist() for s in ids}
    assert res.manifest.meta["bad_rows"][0]["file"] == "boxes.csv: line 4"


def test_box_outside_the_image_found_from_the_images(src, tmp_path):
    boxes = src / "boxes.csv"
    lines = boxes.read_text().splitlines()
    w, h = Image.open(src / "val" / "src_000.JPEG").size
    wnid = lines[1].split(",")[1].split()[0]
    lines[1] = f"src_000,{wnid} 0 0 {w} {h - 1}"  # x1 = width: one past the last column
    boxes.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=rf"line 2: box 0 \[0, 0, {w}, {h - 1}\] lies outside image src_000"):
        generate(boxes, 1, tmp_path / "a", images=src / "val", **PARAMS)
    res = generate(boxes, 1, tmp_path / "b", **PARAMS)  # boxes only, no sizes: bounds unchecked
    assert res.bounds_source is None


def test_image_sizes_file_beside_the_boxes_is_used(src, tmp_path):
    sizes = ["ImageId,width,height"] + [
        f"{p.stem},{Image.open(p).size[0]},{Image.open(p).size[1]}" for p in sorted((src / "val").iterdir())
    ]
    (src / "image_sizes.csv").write_text("\n".join(sizes) + "\n")
    res = generate(src / "boxes.csv", 1, tmp_path / "a", **PARAMS)
    assert res.bounds_source == str(src / "image_sizes.csv")


def test_render_row_needs_a_source_root(src, tmp_path):
    res = generate(src / "boxes.csv", 1, tmp_path / "a", **PARAMS)
    with pytest.raises(InputError, match="no source_root"):
        render_row(res.manifest, 0)
    assert render_row(res.manifest, 0, source_root=src / "val").size == (96, 96)
    summary = render_to_dir(res.manifest, tmp_path / "png", src / "val", workers=1, progress=False)
    assert summary.rendered == len(res.manifest) and summary.sources_decoded <= 14


def test_cli_prints_label_count_table(src, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["patchml", "--boxes", str(src / "boxes.csv"), "--seed", "4", "--out", str(out), "--images",
               str(src / "val"), "--counts", "2,3", "--canvas", "64", "--min-box-side", "4", "--workers", "2"])
    printed = capsys.readouterr().out
    assert rc == 0
    m = read_manifest(out / "manifest.parquet")
    counts = {}
    for c in m.table.column("label_count").to_pylist():
        counts[c] = counts.get(c, 0) + 1
    table = printed.split("label count -> images\n")[1]
    for c, n in counts.items():
        assert f"  {c:>3} {n:>9,}" in table
    assert f"rendered {len(m)} PNGs" in printed
    assert len(list((out / "images").iterdir())) == len(m)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--boxes", "nope.csv"], "nope.csv: boxes file not found"),
        (["--counts", "2,x"], None),  # argparse usage error, exit 2
        (["--source-pattern", "x.JPEG"], "must contain '{id}'"),
        (["--counts", "2,2"], "--counts: duplicate values in [2, 2]"),
    ],
)
def test_cli_errors_are_one_line(src, tmp_path, capsys, args, message):
    base = ["patchml", "--boxes", str(src / "boxes.csv"), "--seed", "1", "--out", str(tmp_path / "o")]
    try:
        rc = main(base + args)
    except SystemExit as exc:  # argparse rejects bad values itself
        rc = exc.code
    err = capsys.readouterr().err
    assert rc == 2
    if message:
        assert message in err and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize("size", [(1, 1), (5, 3), (448, 448)])
def test_encode_png_is_lossless_and_valid(size, tmp_path):
    from io import BytesIO

    from mlreassess.patchml.render import encode_png

    rng = np.random.default_rng(size[0])
    pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    pixels[: size[1] // 2] = 0  # black rows, as on a canvas
    data = encode_png(pixels)
    with Image.open(BytesIO(data)) as im:
        im.verify()  # checks chunk CRCs
    with Image.open(BytesIO(data)) as im:
        assert im.format == "PNG" and im.mode == "RGB" and im.size == size
        assert np.array_equal(np.asarray(im), pixels)
        assert im.info == {}  # no metadata chunks at all


def test_cli_bad_rows_error_then_skip_bad_reports_them(src, tmp_path, capsys):
    boxes = src / "boxes.csv"
    boxes.write_text(boxes.read_text() + "src_999,n01440764 5 5 3 9\n")  # x1 < x0
    line = len(boxes.read_text().splitlines())
    base = ["patchml", "--boxes", str(boxes), "--seed", "1", "--out", str(tmp_path / "o"), "--min-box-side", "4"]
    assert main(base) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"mlreassess: error: {boxes}: line {line}: box 0: empty or inverted box") and err.count("\n") == 1
    assert main(base + ["--skip-bad"]) == 0
    out = capsys.readouterr().out
    assert "skipped 1 bad rows (--skip-bad)" in out and "box bounds: UNCHECKED" in out
    assert main(base[:4] + ["2"] + base[5:] + ["--skip-bad"]) == 0  # seed 2 into seed 1's folder: redone
    err = capsys.readouterr().err
    assert f"{tmp_path / 'o' / 'manifest.parquet'}: redoing it: " in err and "seed 1 there vs 2 now" in err


def test_small_patch_memory_renders_in_blocks_with_the_same_bytes(src, tmp_path, monkeypatch):
    import mlreassess.patchml.render as render

    res = generate(src / "boxes.csv", 1, tmp_path / "set", **PARAMS)
    one = render_to_dir(res.manifest, tmp_path / "one", src / "val", workers=1, progress=False)
    monkeypatch.setattr(render, "PATCH_MEMORY_BYTES", 3 * 96 * 96 * 2)  # ~ one canvas of patches
    many = render_to_dir(res.manifest, tmp_path / "many", src / "val", workers=2, progress=False)
    assert one.sources_decoded <= 14 < many.sources_decoded  # decoded again in later blocks
    assert files_digest(tmp_path / "one") == files_digest(tmp_path / "many")


def test_pngs_without_their_manifest_are_not_reused(src, tmp_path):
    out = tmp_path / "out"
    generate(src / "boxes.csv", 1, out, images=src / "val", workers=1, **PARAMS)
    (out / "manifest.parquet").unlink()
    with pytest.raises(InputError, match="holds PNGs but .*manifest.parquet is missing"):
        generate(src / "boxes.csv", 2, out, images=src / "val", workers=1, **PARAMS)


# ---- outputs that are never stale ------------------------------------------------------------------


def test_empty_or_truncated_pngs_are_rendered_again(src, tmp_path):
    out = tmp_path / "out"
    generate(src / "boxes.csv", 3, out, images=src / "val", workers=1, **PARAMS)
    before = files_digest(out / "images")
    first, second = sorted(before)[:2]
    (out / "images" / first).write_bytes(b"")  # a full disk's leftover
    data = (out / "images" / second).read_bytes()
    (out / "images" / second).write_bytes(data[: len(data) // 2])  # a copy cut short
    res = generate(src / "boxes.csv", 3, out, images=src / "val", workers=1, **PARAMS)
    assert res.render.rendered == 2 and files_digest(out / "images") == before


def test_an_edited_boxes_file_redoes_the_set_and_says_why(src, tmp_path, caplog):
    caplog.set_level("INFO")
    out = tmp_path / "out"
    generate(src / "boxes.csv", 3, out, images=src / "val", workers=1, **PARAMS)
    lines = (src / "boxes.csv").read_text().splitlines()
    (src / "boxes.csv").write_text("\n".join(lines[:-3]) + "\n")  # edited in place: three images fewer
    res = generate(src / "boxes.csv", 3, out, images=src / "val", workers=1, **PARAMS)
    assert res.status == "redone" and "manifest.parquet: redoing it: boxes_sha256" in caplog.text
    m = read_manifest(out / "manifest.parquet")
    assert sorted(p.stem for p in (out / "images").iterdir()) == sorted(m.sample_ids)  # no stale canvas left


def test_a_second_patchml_into_a_folder_in_use_stops_at_once(src, tmp_path, capsys):
    import subprocess
    import sys

    out = tmp_path / "out"
    hold = ("import sys, time\nfrom mlreassess.locks import folder_lock\n"
            "with folder_lock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", hold, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        assert main(["patchml", "--boxes", str(src / "boxes.csv"), "--seed", "2", "--out", str(out)]) == 2
        assert "in use by mlreassess (pid" in capsys.readouterr().err
        assert not (out / "manifest.parquet").exists()
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("flag, value, message", [
    ("--canvas", "1000000000", "--canvas: must be at most 4096"),
    ("--name", "../x", "dataset name '../x': must be one plain name"),
    ("--counts", "2,0", "--counts: must be at least 1"),
    ("--workers", "-1", "--workers: must be at least 0"),
])
def test_impossible_patchml_options_are_one_line(src, tmp_path, capsys, flag, value, message):
    assert main(["patchml", "--boxes", str(src / "boxes.csv"), "--seed", "1", "--out", str(tmp_path / "o"),
                 flag, value]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


# ---- a PNG names the manifest row it was rendered from (issue 15) ---------------------------------


def test_pngs_carry_the_digest_of_their_row_and_readers_check_it(src, tmp_path):
    from mlreassess.patchml.render import PNG_DIGEST_KEY, canvas_digest, canvases, png_matches, rendered_png

    out = tmp_path / "out"
    generate(src / "boxes.csv", 3, out, images=src / "val", workers=1, **PARAMS)
    m = read_manifest(out / "manifest.parquet")
    rows = canvases(m.table)
    png = out / "images" / f"{rows[0].sample_id}.png"
    with Image.open(png) as im:  # an ordinary tEXt chunk: any PNG reader sees it
        assert im.text[PNG_DIGEST_KEY.decode()] == canvas_digest(m.meta, rows[0])
    assert rendered_png(m, 0, out / "images") == png
    assert not png_matches(png, canvas_digest(m.meta, rows[1]))  # another row's digest
    assert rendered_png(m, 0, tmp_path / "nowhere") is None and rendered_png(m, 0, None) is None
    # a PNG of the right pixels but without the digest (an older render, or saved by another tool)
    Image.open(png).save(png)
    assert rendered_png(m, 0, out / "images") is None


def test_another_seeds_manifest_copied_in_gets_its_own_pixels(src, tmp_path):
    """The seed swap: seed 2's manifest over seed 1's PNGs must not reuse them (ReaL 0.0 in the issue)."""
    one, two = tmp_path / "one", tmp_path / "two"
    generate(src / "boxes.csv", 1, one, images=src / "val", workers=1, **PARAMS)
    generate(src / "boxes.csv", 2, two, images=src / "val", workers=1, **PARAMS)
    (one / "manifest.parquet").write_bytes((two / "manifest.parquet").read_bytes())
    swapped = read_manifest(one / "manifest.parquet")
    summary = render_to_dir(swapped, one / "images", src / "val", workers=1, progress=False)
    assert summary.rendered == len(swapped)  # none of seed 1's PNGs was taken for seed 2's rows
    assert summary.stale == len(swapped) and summary.existing == 0
    assert files_digest(one / "images") == {k: v for k, v in files_digest(two / "images").items()
                                            if k in files_digest(one / "images")}
    for i in range(len(swapped)):
        sid = swapped.sample_ids[i]
        with Image.open(one / "images" / f"{sid}.png") as im:
            np.testing.assert_array_equal(np.asarray(im.convert("RGB")), np.asarray(render_row(swapped, i)))


def test_an_interrupted_render_leaves_nothing_behind_after_the_next_run(src, tmp_path):
    out = tmp_path / "out"
    generate(src / "boxes.csv", 3, out, images=src / "val", workers=1, **PARAMS)
    stale = [out / "images" / ".k2_000000.png.0123456789abcdef0123456789abcdef.tmp",
             out / ".manifest.parquet.fedcba9876543210fedcba9876543210.tmp"]
    for p in stale:
        p.write_bytes(b"half a file")  # what kill -9 during atomic_path leaves
    keep = out / "images" / ".notes.tmp"  # not one of ours: left alone
    keep.write_text("mine")
    assert main(["patchml", "--boxes", str(src / "boxes.csv"), "--seed", "3", "--out", str(out), "--images",
                 str(src / "val"), "--counts", "2,3,4", "--canvas", "96", "--min-box-side", "4", "--workers", "1"]) == 0
    assert not any(p.exists() for p in stale) and keep.exists()
