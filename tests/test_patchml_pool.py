"""PatchML stage 1: reading Kaggle-format boxes files into a pool, and rejecting bad rows."""

from __future__ import annotations

import re

import pytest
from PIL import Image

from mlreassess.datasets import ground_truth, kaggle
from mlreassess.datasets.labels import wnid_to_index
from mlreassess.errors import InputError
from mlreassess.patchml import pool
from mlreassess.patchml.pool import build_pool, read_boxes_csv, read_image_sizes, sizes_from_images

HEADER = "ImageId,PredictionString\n"


def _wnids(n: int) -> list[str]:
    return sorted(wnid_to_index())[:n]


def write_boxes(path, lines: list[str]):
    path.write_text(HEADER + "".join(line + "\n" for line in lines))
    return path


@pytest.fixture
def boxes_file(tmp_path):
    a, b, c = _wnids(3)
    return write_boxes(
        tmp_path / "boxes.csv",
        [
            f"img_b,{b} 0 0 9 19 {c} 5 5 30 30",  # 10x20 (inclusive) and 26x26
            f"img_a,{a} 1 2 40 12",  # 40x11
            "img_c,",  # an image without boxes is fine
        ],
    )


def test_reads_records_with_labels_and_inclusive_boxes(boxes_file):
    records, bad = read_boxes_csv(boxes_file)
    assert bad == []
    idx = wnid_to_index()
    a, b, c = _wnids(3)
    assert [(r.image_id, r.label, r.box, r.row, r.index) for r in records] == [
        ("img_b", idx[b], (0, 0, 9, 19), 2, 0),
        ("img_b", idx[c], (5, 5, 30, 30), 2, 1),
        ("img_a", idx[a], (1, 2, 40, 12), 3, 0),
    ]


def test_pool_sorted_by_image_then_box_order_whatever_the_file_order(boxes_file, tmp_path):
    records, _ = read_boxes_csv(boxes_file)
    pool, _ = build_pool(records, None, min_box_side=1)
    assert pool.image_ids == ["img_a", "img_b", "img_b"]
    assert pool.boxes.tolist() == [[1, 2, 40, 12], [0, 0, 9, 19], [5, 5, 30, 30]]
    lines = boxes_file.read_text().splitlines()[1:]
    shuffled = write_boxes(tmp_path / "shuffled.csv", [lines[2], lines[1], lines[0]])
    pool2, _ = build_pool(read_boxes_csv(shuffled)[0], None, min_box_side=1)
    assert pool2.image_ids == pool.image_ids
    assert pool2.boxes.tolist() == pool.boxes.tolist() and pool2.labels.tolist() == pool.labels.tolist()


@pytest.mark.parametrize(
    ("min_side", "kept"),
    [(10, 3), (11, 2), (26, 1), (27, 0)],  # shorter inclusive sides: 10, 11, 26
)
def test_min_box_side_counts_inclusive_pixels(boxes_file, min_side, kept):
    pool, _ = build_pool(read_boxes_csv(boxes_file)[0], None, min_box_side=min_side)
    assert len(pool) == kept
    assert (pool.widths >= min_side).all() and (pool.heights >= min_side).all()


def _bad_lines():
    a = _wnids(1)[0]
    return [
        ("img_x,n0 1 2", "expected 2 fields", "img_x,a,b"),
        ("tokens", "not groups of 5", f"img_x,{a} 1 2 3"),
        ("non-integer", "not integers", f"img_x,{a} 1 2 3.5 9"),
        ("x1 == x0", "empty or inverted", f"img_x,{a} 5 2 5 9"),
        ("y1 < y0", "empty or inverted", f"img_x,{a} 1 9 5 2"),
        ("negative", "negative coordinate", f"img_x,{a} -1 2 5 9"),
        ("huge", "coordinate 100000000000000000000 beyond any image", f"img_x,{a} 1 2 100000000000000000000 9"),
        ("unknown wnid", "unknown wnid 'n99999999'", "img_x,n99999999 1 2 5 9"),
        ("repeated id", "repeated (first on line 2)", f"img_a,{a} 1 2 5 9"),
    ]


@pytest.mark.parametrize(("case", "message", "line"), _bad_lines(), ids=[c[0] for c in _bad_lines()])
def test_bad_line_is_one_error_naming_file_and_line(tmp_path, case, message, line):
    a = _wnids(1)[0]
    path = write_boxes(tmp_path / "bad.csv", [f"img_a,{a} 1 2 40 12", line, f"img_z,{a} 1 2 40 12"])
    with pytest.raises(InputError) as err:
        read_boxes_csv(path)
    text = str(err.value)
    assert text.startswith(f"{path}: line 3: ") and message in text and "--skip-bad" in text
    assert "\n" not in text


def test_skip_bad_drops_bad_lines_and_reports_them(tmp_path):
    a = _wnids(1)[0]
    path = write_boxes(
        tmp_path / "bad.csv",
        [f"img_a,{a} 1 2 40 12", f"img_b,{a} 5 2 5 9 {a} 1 1 3 3", "img_c,n99999999 1 2 5 9", f"img_d,{a} 0 0 3 3"],
    )
    records, bad = read_boxes_csv(path, skip_bad=True)
    assert [r.image_id for r in records] == ["img_a", "img_d"]  # all of img_b's line dropped
    assert [b.row for b in bad] == [3, 4]


def test_bad_header(tmp_path):
    path = tmp_path / "b.csv"
    path.write_text("id,boxes\nimg,n01440764 1 1 2 2\n")
    with pytest.raises(InputError, match=re.escape(f"{path}: line 1: expected header")):
        read_boxes_csv(path)


def test_missing_boxes_file(tmp_path):
    with pytest.raises(InputError, match="boxes file not found"):
        read_boxes_csv(tmp_path / "nope.csv")


def test_box_outside_image_is_a_bad_row(boxes_file):
    records, _ = read_boxes_csv(boxes_file)
    # x1 = 40 is the last column of a 41-px-wide image (inclusive), outside a 40-px one.
    ok = {"img_a": (41, 13), "img_b": (31, 31), "img_c": (5, 5)}
    assert len(build_pool(records, ok, 1)[0]) == 3
    with pytest.raises(InputError) as err:
        build_pool(records, {**ok, "img_a": (40, 13)}, 1, where="boxes.csv")
    assert str(err.value).startswith("boxes.csv: line 3: box 0 [1, 2, 40, 12] lies outside image img_a (40x13")
    pool, bad = build_pool(records, {**ok, "img_b": (31, 30)}, 1, skip_bad=True)
    assert pool.image_ids == ["img_a"] and [b.row for b in bad] == [2]
    with pytest.raises(InputError, match="no size known for image 'img_b'"):
        build_pool(records, {"img_a": (41, 13)}, 1)


def test_image_sizes_csv(tmp_path):
    path = tmp_path / "image_sizes.csv"
    path.write_text("ImageId,width,height\nimg_a,41,13\nimg_b,31,31\n")
    assert read_image_sizes(path) == {"img_a": (41, 13), "img_b": (31, 31)}
    path.write_text("ImageId,width,height\nimg_a,41,13\nimg_b,31,x\n")
    with pytest.raises(InputError, match=re.escape(f"{path}: line 3:")):
        read_image_sizes(path)


def test_sizes_from_images_reads_headers_and_names_missing_files(boxes_file, tmp_path):
    records, _ = read_boxes_csv(boxes_file)
    Image.new("RGB", (41, 13)).save(tmp_path / "img_a.JPEG", format="JPEG")
    Image.new("RGB", (31, 31)).save(tmp_path / "img_b.JPEG", format="JPEG")
    sizes, bad = sizes_from_images(tmp_path, records)
    assert sizes == {"img_a": (41, 13), "img_b": (31, 31)} and bad == []
    (tmp_path / "img_b.JPEG").write_bytes(b"not a jpeg")
    with pytest.raises(InputError) as err:
        sizes_from_images(tmp_path, records, where=str(boxes_file))
    assert str(err.value).startswith(f"{boxes_file}: line 2: {tmp_path / 'img_b.JPEG'}: ")
    (tmp_path / "img_b.JPEG").unlink()
    sizes, bad = sizes_from_images(tmp_path, records, skip_bad=True)
    assert list(sizes) == ["img_a"] and [b.row for b in bad] == [2] and "not found" in bad[0].problem


def test_images_folder_without_any_source_says_so(boxes_file, tmp_path):
    records, _ = read_boxes_csv(boxes_file)
    with pytest.raises(InputError, match=r"no source images there \(looked for img_a.JPEG and others\)"):
        sizes_from_images(tmp_path, records, skip_bad=True)


def test_binary_garbage_is_one_error(tmp_path):
    path = tmp_path / "b.csv"
    path.write_bytes(HEADER.encode() + b"img,\xff\xfe\x00 1 2 3 4\n")
    with pytest.raises(InputError, match=re.escape(f"{path}: line ") + r"\d+: not a readable CSV text line"):
        read_boxes_csv(path)


def test_one_kaggle_reader_for_patchml_and_imagenet_v1():
    assert pool.read_boxes_csv is kaggle.read_boxes_csv
    assert ground_truth.read_kaggle_lines is kaggle.read_kaggle_lines


def test_a_byte_order_mark_is_read_as_if_it_were_not_there(tmp_path):
    a = _wnids(1)[0]
    plain = write_boxes(tmp_path / "plain.csv", [f"img_a,{a} 1 2 40 12"])
    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes())
    assert read_boxes_csv(bom) == read_boxes_csv(plain)
