"""PatchML manifests are checked when read (datasets.placements): each bad canvas is one line naming
the manifest and the canvas, whatever reads it (infer, evaluate, report, render)."""

from __future__ import annotations

import pyarrow as pa
import pytest

from mlreassess.datasets.manifest import read_manifest
from mlreassess.errors import InputError
from mlreassess.io import read_meta, read_table, write_table
from mlreassess.patchml.layout import compose, patchml_meta
from test_patchml_layout import make_pool

CANVAS = 64  # k=2, 3, 4: a 2x2 grid of 32 px cells


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    pool = make_pool([(20 + i % 9, 14 + i % 5) for i in range(24)], [i % 6 for i in range(24)])
    table = compose(pool, 1, (2, 3, 4), CANVAS)
    meta = patchml_meta(dataset="p", seed=1, counts=[2, 3, 4], canvas_size=CANVAS, min_box_side=1, resample="bicubic",
                        source_root=None, source_pattern="{id}.JPEG", boxes_file="b.csv", boxes_sha256="0" * 64,
                        pool_size=len(pool))
    path = tmp_path_factory.mktemp("good") / "manifest.parquet"
    write_table(path, table, meta)
    return path


def edited(good, tmp_path, column: str | None = None, fn=None, **meta_changes):
    """A copy of the good manifest with row 0's `column` (a Python list) replaced by fn(value), and/or
    metadata keys changed; written without the writer's checks (a hand-edited file)."""
    table, meta = read_table(good), {**read_meta(good), **meta_changes}
    if column is not None:
        values = table.column(column).to_pylist()
        values[0] = fn(values[0])
        i = table.column_names.index(column)
        table = table.set_column(i, column, pa.array(values, table.schema.field(column).type))
    path = tmp_path / "bad.parquet"
    write_table(path, table, meta)
    return path


def refused(path) -> str:
    with pytest.raises(InputError) as exc:
        read_manifest(path)
    message = str(exc.value)
    assert "\n" not in message and str(path) in message
    return message


def test_a_manifest_as_composed_passes(good):
    assert len(read_manifest(good)) > 0


def test_a_negative_position_is_refused_not_wrapped(good, tmp_path):
    msg = refused(edited(good, tmp_path, "positions", lambda p: [[-5, p[0][1]]] + p[1:]))
    assert "k2_000000" in msg and "positions must be non-negative" in msg


def test_two_patches_at_one_position_are_refused(good, tmp_path):
    msg = refused(edited(good, tmp_path, "positions", lambda p: [p[0], p[0]] + p[2:]))
    assert "patch 1" in msg and "outside its cell" in msg


def test_labels_must_be_the_set_of_patch_labels(good, tmp_path):
    msg = refused(edited(good, tmp_path, "patch_labels", lambda ls: [(ls[0] + 1) % 1000] + ls[1:]))
    assert "are not the set of its patch_labels" in msg


def test_a_size_of_zero_is_refused(good, tmp_path):
    msg = refused(edited(good, tmp_path, "sizes", lambda s: [[0, s[0][1]]] + s[1:]))
    assert "sizes must be at least 1" in msg


def test_an_off_canvas_placement_is_named_not_an_unreadable_image(good, tmp_path):
    msg = refused(edited(good, tmp_path, "positions", lambda p: [[CANVAS - 3, 0]] + p[1:]))
    assert "lies outside the 64x64 canvas" in msg and "k2_000000" in msg


def test_list_lengths_must_match_k(good, tmp_path):
    assert "has 1 entries, but k = 2" in refused(edited(good, tmp_path, "src_ids", lambda s: s[:1]))
    assert "entry is not 4 integers" in refused(edited(good, tmp_path, "src_boxes", lambda b: [b[0][:3]] + b[1:]))


def test_a_k_outside_the_sets_counts_is_refused(good, tmp_path):
    assert "is not one of the set's patch counts" in refused(edited(good, tmp_path, counts=[3, 4]))


def test_an_empty_box_is_refused(good, tmp_path):
    assert "is empty" in refused(edited(good, tmp_path, "src_boxes", lambda b: [[5, 5, 4, 9]] + b[1:]))


@pytest.mark.parametrize("value, message", [(0, "not a positive integer"), ("64", "not a positive integer"),
                                            (None, "not a positive integer")])
def test_a_bad_canvas_size_is_refused(good, tmp_path, value, message):
    assert message in refused(edited(good, tmp_path, canvas_size=value))


@pytest.mark.parametrize("pattern", ["{id.__class__}.JPEG", "{0}.JPEG", "x.JPEG", "{id!r}", 3])
def test_a_source_pattern_is_one_id_field(good, tmp_path, pattern):
    assert "source_pattern" in refused(edited(good, tmp_path, source_pattern=pattern))


@pytest.mark.parametrize("src", ["../../x", "/etc/passwd", "a/../../b", ""])
def test_source_ids_stay_inside_the_source_root(good, tmp_path, src):
    msg = refused(edited(good, tmp_path, "src_ids", lambda s: [src] + s[1:]))
    assert "source id" in msg


def test_a_pattern_that_leaves_the_root_is_refused(good, tmp_path):
    assert "'..' part" in refused(edited(good, tmp_path, source_pattern="../{id}.JPEG"))


@pytest.mark.parametrize("sid", ["../escape", "a/b", "..", "."])
def test_sample_ids_name_one_png_file(good, tmp_path, sid):
    assert "images/<sample_id>.png" in refused(edited(good, tmp_path, "sample_id", lambda s: sid))


def test_wrong_column_types_are_one_line(good, tmp_path):
    table, meta = read_table(good), read_meta(good)
    i = table.column_names.index("positions")
    as_text = pa.array([str(p) for p in table.column("positions").to_pylist()])
    path = tmp_path / "typed.parquet"
    write_table(path, table.set_column(i, "positions", as_text), meta)
    assert "column 'positions' is string" in refused(path)
    write_table(path, table.drop_columns(["sizes"]), meta)
    assert "without its placement columns (sizes)" in refused(path)


def test_a_null_placement_is_one_line(good, tmp_path):
    assert "holds a null" in refused(edited(good, tmp_path, "src_ids", lambda s: [None] + s[1:]))
