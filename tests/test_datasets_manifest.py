"""Manifest files: atomic writes (permissions follow the umask, no temp file left), the skip-bad policy."""

from __future__ import annotations

import os
import stat
import threading

import pytest

from mlreassess.datasets.manifest import base_meta, core_table, read_manifest, write_manifest
from mlreassess.datasets.skip import raise_or_skip
from mlreassess.errors import InputError
from mlreassess.io import atomic_path


def _table():
    return core_table(["b", "a"], [None, None], [1, 2], [[1], [2, 3]])


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002])
def test_written_files_follow_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        path = tmp_path / "m.parquet"
        write_manifest(path, _table(), base_meta("imagenet_v1", "x", None))
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    assert stat.S_IMODE((tmp_path / "m.provenance.json").stat().st_mode) == 0o666 & ~umask
    assert read_manifest(path).sample_ids == ["a", "b"]


def test_atomic_path_leaves_the_umask_alone(tmp_path):
    old = os.umask(0o027)
    try:
        with atomic_path(tmp_path / "f.txt") as tmp:
            assert os.umask(0o027) == 0o027  # unchanged while the block runs
            tmp.write_text("x")
        assert os.umask(old) == 0o027  # and after it
    finally:
        os.umask(old)


def test_atomic_path_renames_only_on_success(tmp_path):
    target = tmp_path / "sub" / "f.txt"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert not target.exists() and list(target.parent.iterdir()) == []
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            raise RuntimeError("boom")
    assert target.read_text() == "old" and [p.name for p in target.parent.iterdir()] == ["f.txt"]
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.startswith(".f.txt.") and tmp.name.endswith(".tmp")
        tmp.write_text("new")
    assert target.read_text() == "new" and [p.name for p in target.parent.iterdir()] == ["f.txt"]


def test_atomic_path_from_threads_gives_distinct_temp_files(tmp_path):
    names: list[str] = []

    def write(i: int) -> None:
        with atomic_path(tmp_path / "same.txt") as tmp:
            names.append(tmp.name)
            tmp.write_text(str(i))

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(names)) == 8
    assert [p.name for p in tmp_path.iterdir()] == ["same.txt"]


def test_skip_bad_policy():
    bad = [("a.jpg", "corrupt"), ("b.jpg", "missing")]
    with pytest.raises(InputError, match=r"^a.jpg: corrupt \(and 1 more like it\); use --skip-bad to drop bad rows$"):
        raise_or_skip(bad, False, "bad rows")
    assert raise_or_skip(bad, True) == [{"file": "a.jpg", "error": "corrupt"}, {"file": "b.jpg", "error": "missing"}]
    assert raise_or_skip([], False) == []


def test_an_output_never_replaces_a_file_this_tool_did_not_write(tmp_path):
    import pyarrow as pa

    from mlreassess.io import write_table

    csv = tmp_path / "LOC_val_solution.csv"
    csv.write_text("ImageId,PredictionString\n")
    with pytest.raises(InputError, match=r"LOC_val_solution\.csv: exists and is not an mlreassess output"):
        write_table(csv, pa.table({"a": [1]}), {"kind": "x"})
    assert csv.read_text() == "ImageId,PredictionString\n"
    ours = tmp_path / "ours.parquet"
    write_table(ours, pa.table({"a": [1]}), {"kind": "x"})
    write_table(ours, pa.table({"a": [2]}), {"kind": "x"})  # our own output: replaced


def test_a_full_disk_names_the_file(tmp_path, monkeypatch):
    import errno

    import pyarrow as pa
    import pyarrow.parquet as pq

    from mlreassess.io import write_table

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pq, "write_table", full)
    with pytest.raises(InputError, match=r"out\.parquet: cannot write it \(No space left on device\)"):
        write_table(tmp_path / "out.parquet", pa.table({"a": [1]}))
    assert list(tmp_path.iterdir()) == []  # no temporary file left behind


def test_a_manifest_column_of_the_wrong_type_is_one_line(tmp_path):
    import pyarrow as pa

    from mlreassess.io import write_table

    table = core_table(["a", "b"], ["a.jpg", "b.jpg"], [1, 2], [[1], [2]])
    bad = table.set_column(table.schema.get_field_index("label"), "label", pa.array(["1", "2"]))
    path = tmp_path / "m.parquet"
    write_table(path, bad, base_meta("imagenet_v1", "x", tmp_path))
    with pytest.raises(InputError, match=r"m\.parquet: column 'label' is string, expected int64$"):
        read_manifest(path)


@pytest.mark.parametrize("ids,label,labels,message", [
    (["a", "b", "a"], [1, 2, 3], [[1], [2], [3]], "duplicate sample_id 'a'"),
    (["a", "b", "c"], [1, 1000, 3], [[1], [2], [3]], "sample 'b': label 1000 out of range 0..999"),
    (["a", "b", "c"], [1, None, -1], [[1], [2], [3]], "sample 'c': label -1 out of range 0..999"),
    (["a", "b", "c"], [1, 2, 3], [[1], [], [3, 1000]], r"sample 'c': labels \[3, 1000\] out of range 0..999"),
])
def test_a_bad_manifest_is_named_in_one_line(ids, label, labels, message):
    from mlreassess.datasets.manifest import validate

    with pytest.raises(InputError, match=message):
        validate(core_table(ids, [None] * 3, label, labels), "m.parquet")


def test_validating_a_paper_sized_manifest_is_fast():
    import time

    from mlreassess.datasets.manifest import validate

    n = 420_000
    table = core_table([f"s{i:07d}" for i in range(n)], [None] * n, [i % 1000 for i in range(n)],
                       [[i % 1000, (i + 1) % 1000] for i in range(n)])
    start = time.process_time()
    validate(table, "big.parquet")
    assert time.process_time() - start < 0.5  # a Python loop over the rows took ~1.25 s
