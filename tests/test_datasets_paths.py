"""Paths a manifest names stay inside the dataset root (datasets.paths), checked when it is read and
again where images are opened; file names that are not UTF-8 are one line."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pytest

from mlreassess.datasets.manifest import base_meta, core_table, read_manifest
from mlreassess.datasets.paths import check_path_column, decoded_name, inside_root, relative_problem
from mlreassess.errors import InputError
from mlreassess.io import write_table


@pytest.mark.parametrize("relative", ["../x.JPEG", "/abs/x.JPEG", "a/../../x", "a/..", "..", "", "x\0y", "C:/x.JPEG"])
def test_paths_that_leave_the_root_are_refused(tmp_path, relative):
    assert relative_problem(relative) is not None
    with pytest.raises(InputError, match="sample s1: path"):
        inside_root(tmp_path, relative, "m.parquet: sample s1")


@pytest.mark.parametrize("relative", ["x.JPEG", "3/abc.jpeg", "a/b/c.png", "..x.JPEG", "x..", "./x.JPEG"])
def test_paths_inside_the_root_are_kept(tmp_path, relative):
    assert inside_root(tmp_path, relative, "where") == tmp_path / relative


def test_a_symlink_inside_the_root_is_followed(tmp_path):
    """The documented policy (docs/data.md): links in the data folder are the folder owner's."""
    outside = tmp_path / "elsewhere" / "x.JPEG"
    outside.parent.mkdir()
    outside.write_bytes(b"jpeg")
    root = tmp_path / "root"
    root.mkdir()
    (root / "link.JPEG").symlink_to(outside)
    assert inside_root(root, "link.JPEG", "w").read_bytes() == b"jpeg"


def image_manifest(tmp_path: Path, paths: list[str]) -> Path:
    ids = [f"s{i}" for i in range(len(paths))]
    table = core_table(ids, paths, [1] * len(ids), [[1]] * len(ids))
    path = tmp_path / "m.parquet"
    write_table(path, table, base_meta("imagenet_v1", "m", tmp_path))  # not write_manifest: a hand-made file
    return path


@pytest.mark.parametrize("bad", ["../x.JPEG", "/etc/passwd", "ok/../../x.JPEG"])
def test_read_manifest_refuses_a_path_outside_the_root_naming_the_sample(tmp_path, bad):
    path = image_manifest(tmp_path, ["a.JPEG", bad, "b.JPEG"])
    with pytest.raises(InputError) as exc:
        read_manifest(path)
    assert str(path) in str(exc.value) and "sample 's1'" in str(exc.value) and "\n" not in str(exc.value)


def test_the_path_column_check_is_vectorised_and_quiet_on_good_paths():
    table = pa.table({"sample_id": [f"s{i}" for i in range(50_000)], "path": [f"{i % 1000}/{i}.jpeg" for i in range(50_000)]})
    check_path_column(table, "w")  # no error; 50k paths in one pyarrow pass


def test_undecodable_file_names_are_recognised(tmp_path):
    name = os.fsdecode(b"b\xff.jpeg")
    assert decoded_name(name) is None and decoded_name("b.jpeg") == "b.jpeg"


def v2_tree(tmp_path: Path) -> Path:
    from PIL import Image

    folder = tmp_path / "imagenetv2-matched-frequency-format-val" / "3"
    folder.mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(folder / "a.jpeg")
    Image.new("RGB", (8, 8)).save(os.path.join(os.fsencode(folder), b"b\xff.jpeg"))
    return tmp_path


def test_a_v2_file_name_that_is_not_utf8_is_one_line_or_skipped(tmp_path):
    from mlreassess.datasets.imagenetv2 import build_imagenetv2

    root = v2_tree(tmp_path)
    with pytest.raises(InputError, match=r"b\\xff\.jpeg: file name is not valid UTF-8.*--skip-bad"):
        build_imagenetv2(root, "matched-frequency")
    manifest = build_imagenetv2(root, "matched-frequency", skip_bad=True)
    assert manifest.sample_ids == ["3/a"] and "not valid UTF-8" in manifest.meta["skipped"][0]["error"]


@pytest.mark.parametrize("reader", ["v2_labels", "real", "models", "config"])
def test_text_inputs_that_are_not_utf8_name_the_file(tmp_path, reader):
    from mlreassess.config import load_config
    from mlreassess.datasets.labelsets.anzaku_v2 import read as read_label_file
    from mlreassess.datasets.labelsets.real import real_labels
    from mlreassess.inference.models.registry import read_models_file

    bad = tmp_path / "bad.json"
    bad.write_bytes(b'{"a.jpeg": [1], "\xff": [2]}')
    read = {"v2_labels": read_label_file, "real": real_labels, "models": lambda p: read_models_file(p, "hub"),
            "config": load_config}[reader]
    with pytest.raises(InputError, match=r"bad.json: not UTF-8 text \(byte 0xff at offset 17\)"):
        read(bad)
