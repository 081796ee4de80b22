"""ImageNet val from where labs keep it: Hugging Face parquet shards, WebDataset tars, HF-style flat
names; one fixture per layout (written here with pyarrow / tarfile directly, not with our own
writer), one test per bad input, the readers' bytes and pixels against the files they came from."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from test_datasets_imagenet import REAL, real_file, vid  # noqa: F401  (real_file: a fixture)

from mlreassess.cli import main
from mlreassess.datasets import labels as lab
from mlreassess.datasets import samples
from mlreassess.datasets.imagenet import build_imagenet_val
from mlreassess.datasets.manifest import Manifest, read_manifest, write_manifest
from mlreassess.errors import InputError

# (val image number, class index) of the fixture images; their ReaL labels are test_datasets_imagenet's.
IMAGES = [(1, 65), (2, 970), (3, 7), (42, 0), (50_000, 65)]


def hf_name(n: int, label: int) -> str:
    return f"{vid(n)}_{lab.class_wnid(label)}.JPEG"


def jpeg_bytes(seed: int, size=(20, 14)) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def class_names_meta() -> bytes:
    """The `huggingface` schema metadata of the imagenet-1k shards: ClassLabel names in class order."""
    names = [lab.class_name(i) + ", more words" for i in range(1000)]
    return json.dumps({"info": {"features": {"image": {"_type": "Image"},
                                             "label": {"names": names, "_type": "ClassLabel"}}}}).encode()


def write_hf_shard(path: Path, rows: list[tuple], row_group: int = 2, meta: bytes | None = None) -> Path:
    """rows: (image bytes or None, name or None, label or None)."""
    image = pa.StructArray.from_arrays(
        [pa.array([r[0] for r in rows], pa.binary()), pa.array([r[1] for r in rows], pa.string())], names=["bytes", "path"])
    table = pa.table({"image": image, "label": pa.array([r[2] for r in rows], pa.int64())})
    table = table.replace_schema_metadata({b"huggingface": meta or class_names_meta()})
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, row_group_size=row_group)
    return path


def make_hf(root: Path, images=IMAGES) -> dict[str, bytes]:
    """Two validation shards (and a train shard the build must ignore); {sample id: JPEG bytes}."""
    data = {vid(n): jpeg_bytes(n) for n, _ in images}
    rows = [(data[vid(n)], hf_name(n, c), c) for n, c in images]
    write_hf_shard(root / "data" / "validation-00000-of-00002.parquet", rows[:3])
    write_hf_shard(root / "data" / "validation-00001-of-00002.parquet", rows[3:])
    write_hf_shard(root / "data" / "train-00000-of-00001.parquet", [(jpeg_bytes(99), "n01440764_10026.JPEG", 0)])
    return data


def add_member(tar: tarfile.TarFile, name: str, data: bytes, kind=tarfile.REGTYPE) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.type = len(data), kind
    tar.addfile(info, io.BytesIO(data))


def write_tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            add_member(tar, name, data)
    return path


def make_wds(root: Path, images=IMAGES, json_names: bool = False) -> dict[str, bytes]:
    """Two shards of (key.jpg, key.cls, key.json) as timm's imagenet-1k-wds; {sample id: JPEG bytes}."""
    data = {vid(n): jpeg_bytes(n) for n, _ in images}

    def members(part):
        out = []
        for n, c in part:
            key = f"s{n:07d}" if json_names else vid(n)
            out += [(f"{key}.jpg", data[vid(n)]), (f"{key}.cls", str(c).encode()),
                    (f"{key}.json", json.dumps({"filename": f"{vid(n)}.JPEG", "label": c}).encode())]
        return out

    write_tar(root / "imagenet1k-validation-0000.tar", members(images[:2]))
    write_tar(root / "imagenet1k-validation-0001.tar", members(images[2:]))
    return data


def rows_of(m: Manifest) -> dict[str, dict]:
    return {r["sample_id"]: r for r in m.table.to_pylist()}


def check_manifest(m: Manifest, data: dict[str, bytes]) -> None:
    """Labels, ReaL and the reader's bytes and pixels are those of the fixture images."""
    rows = rows_of(m)
    assert sorted(rows) == sorted(vid(n) for n, _ in IMAGES)
    for n, c in IMAGES:
        assert rows[vid(n)]["label"] == c and rows[vid(n)]["labels"] == sorted(REAL.get(n, []))
    read = samples.reader(m)
    for i, sid in enumerate(m.sample_ids):
        assert read.read(i) == data[sid]
        expected = np.asarray(Image.open(io.BytesIO(data[sid])).convert("RGB"))
        assert np.array_equal(np.asarray(read.open(i)), expected)


# ---- layouts -----------------------------------------------------------------------------------


def test_hf_parquet_shards_are_found_by_root_alone_and_read_in_place(tmp_path, real_file):
    data = make_hf(tmp_path)
    m = build_imagenet_val(tmp_path, real=real_file)
    assert m.meta["layout"] == "hf-parquet" and m.meta["format"] == "hf-parquet"
    assert sorted(m.meta["shards"]) == ["data/validation-00000-of-00002.parquet", "data/validation-00001-of-00002.parquet"]
    assert "ClassLabel names checked" in m.meta["label_source"]
    check_manifest(m, data)
    row = rows_of(m)[vid(42)]
    assert (row["path"], row["row"], row["member"]) == ("data/validation-00001-of-00002.parquet", 0, hf_name(42, 0))
    assert not any(p.suffix == ".JPEG" for p in tmp_path.rglob("*"))  # nothing extracted


def test_webdataset_shards_are_found_by_root_alone_and_read_in_place(tmp_path, real_file):
    data = make_wds(tmp_path)
    m = build_imagenet_val(tmp_path, real=real_file)
    assert m.meta["layout"] == "webdataset" and sorted(m.meta["shards"]) == [
        "imagenet1k-validation-0000.tar", "imagenet1k-validation-0001.tar"]
    check_manifest(m, data)
    row = rows_of(m)[vid(3)]
    assert row["path"] == "imagenet1k-validation-0001.tar" and row["member"] == f"{vid(3)}.jpg"
    with tarfile.open(tmp_path / row["path"]) as tar:
        assert tar.getmember(row["member"]).offset_data == row["offset"]


def test_webdataset_keys_without_val_names_take_the_name_from_the_json(tmp_path, real_file):
    data = make_wds(tmp_path, json_names=True)
    check_manifest(build_imagenet_val(tmp_path, real=real_file), data)


def test_hf_style_names_in_a_flat_folder_carry_their_labels(tmp_path, real_file):
    data = {}
    for n, c in IMAGES:
        data[vid(n)] = jpeg_bytes(n)
        (tmp_path / "val").mkdir(exist_ok=True)
        (tmp_path / "val" / hf_name(n, c)).write_bytes(data[vid(n)])
    m = build_imagenet_val(tmp_path, real=real_file)
    assert m.meta["layout"] == "hf-names" and "format" not in m.meta
    assert m.meta["label_source"] == "the wnids in the file names"
    check_manifest(m, data)


def test_flat_names_with_and_without_wnids_need_the_ground_truth_and_must_agree(tmp_path, real_file):
    (tmp_path / hf_name(1, 65)).write_bytes(jpeg_bytes(1))
    (tmp_path / f"{vid(2)}.JPEG").write_bytes(jpeg_bytes(2))
    with pytest.raises(InputError, match="flat val folder without ground truth"):
        build_imagenet_val(tmp_path, real=real_file)
    (tmp_path / "val_labels.txt").write_text(f"{vid(1)}.JPEG 65\n{vid(2)}.JPEG 970\n")
    assert {r["sample_id"]: r["label"] for r in build_imagenet_val(tmp_path, real=real_file).table.to_pylist()} == {
        vid(1): 65, vid(2): 970}
    (tmp_path / "n01440764").mkdir()
    (tmp_path / "n01440764" / hf_name(3, 7)).write_bytes(jpeg_bytes(3))
    (tmp_path / hf_name(1, 65)).unlink()
    (tmp_path / f"{vid(2)}.JPEG").unlink()
    with pytest.raises(InputError, match=rf"in the folder of class 0 but its name says {lab.class_wnid(7)} \(class 7\)"):
        build_imagenet_val(tmp_path, real=real_file)


def test_format_flag_overrides_the_detection(tmp_path, real_file):
    make_hf(tmp_path)
    with pytest.raises(InputError, match=r"no ImageNet val webdataset found \(--format webdataset\)"):
        build_imagenet_val(tmp_path, real=real_file, input_format="webdataset")
    assert build_imagenet_val(tmp_path, real=real_file, input_format="hf-parquet").meta["layout"] == "hf-parquet"
    make_wds(tmp_path)
    with pytest.raises(InputError, match="holds both parquet and tar shards; choose one with --format"):
        build_imagenet_val(tmp_path, real=real_file)
    assert build_imagenet_val(tmp_path, real=real_file, input_format="webdataset").meta["layout"] == "webdataset"


def test_train_shards_only_are_refused(tmp_path, real_file):
    write_hf_shard(tmp_path / "data" / "train-00000-of-00001.parquet", [(jpeg_bytes(1), hf_name(1, 65), 65)])
    with pytest.raises(InputError, match=r"no validation shards among its \.parquet files \(splits named: train\)"):
        build_imagenet_val(tmp_path, real=real_file)


def test_cli_builds_from_shards_and_prints_the_layout(tmp_path, real_file, capsys):
    make_wds(tmp_path / "wds")
    out = tmp_path / "m.parquet"
    assert main(["data", "imagenet-val", "--root", str(tmp_path / "wds"), "--real", str(real_file), "--out", str(out)]) == 0
    assert "(imagenet_v1, webdataset): 5 samples" in capsys.readouterr().out
    assert read_manifest(out).meta["format"] == "webdataset"


# ---- no val names: ReaL cannot be matched --------------------------------------------------------


def test_images_without_val_names_stop_the_build_unless_real_is_skipped(tmp_path, real_file, capsys):
    rows = [(jpeg_bytes(1), "a.jpg", 65), (jpeg_bytes(2), None, 970)]
    write_hf_shard(tmp_path / "validation.parquet", rows)
    argv = ["data", "imagenet-val", "--root", str(tmp_path), "--real", str(real_file), "--out", str(tmp_path / "m.parquet")]
    assert main(argv) == 2
    (err,) = capsys.readouterr().err.strip().splitlines()
    assert "validation.parquet row 0: no name gives its ImageNet val number" in err and "--no-real" in err
    m = build_imagenet_val(tmp_path, real=real_file, no_real=True)
    assert {r["sample_id"]: (r["label"], r["labels"]) for r in m.table.to_pylist()} == {
        "a": (65, [65]), "validation.parquet:1": (970, [970])}
    assert (m.meta["label_set"], m.meta["label_file"]) == (None, None)  # --no-real: no label set


# ---- bad inputs --------------------------------------------------------------------------------


def test_a_truncated_parquet_shard_is_one_error_naming_it(tmp_path, real_file):
    make_hf(tmp_path)
    shard = tmp_path / "data" / "validation-00001-of-00002.parquet"
    shard.write_bytes(shard.read_bytes()[:-100])
    with pytest.raises(InputError, match=r"validation-00001-of-00002\.parquet: not a readable parquet file"):
        build_imagenet_val(tmp_path, real=real_file)


def test_a_truncated_tar_shard_is_one_error_naming_it(tmp_path, real_file):
    make_wds(tmp_path)
    shard = tmp_path / "imagenet1k-validation-0001.tar"
    data = shard.read_bytes()
    shard.write_bytes(data[: 512 * 3])  # inside the second member's data: no end-of-archive marker
    with pytest.raises(InputError, match=r"imagenet1k-validation-0001\.tar: .*cut short"):
        build_imagenet_val(tmp_path, real=real_file)


def test_a_compressed_tar_is_refused_with_what_to_do(tmp_path, real_file):
    import gzip

    make_wds(tmp_path)
    shard = tmp_path / "imagenet1k-validation-0000.tar"
    shard.write_bytes(gzip.compress(shard.read_bytes()))
    with pytest.raises(InputError, match=r"a gzip-compressed tar; .*uncompressed"):
        build_imagenet_val(tmp_path, real=real_file)


def test_a_row_whose_bytes_are_not_an_image_fails_alone_naming_shard_and_row(tmp_path, real_file):
    make_hf(tmp_path, IMAGES[:2])
    write_hf_shard(tmp_path / "data" / "validation-00001-of-00002.parquet", [(b"not a jpeg", hf_name(3, 7), 7)])
    m = build_imagenet_val(tmp_path, real=real_file)  # names and labels are fine: the build does not decode
    read = samples.reader(m)
    i = m.sample_ids.index(vid(3))
    with pytest.raises(InputError, match=r"validation-00001-of-00002\.parquet row 0 \(ILSVRC2012_val_00000003_"
                                         rf"{lab.class_wnid(7)}\.JPEG\): not a readable image"):
        read.open(i)
    assert read.open(0).size == (20, 14)  # the others still read
    with pytest.raises(InputError, match="sample ILSVRC2012_val_00000003: .*row 0"):
        samples.verify_manifest_images(m, progress=False)
    assert samples.verify_manifest_images(m, skip_bad=True, progress=False).sample_ids == [vid(1), vid(2)]


def test_null_image_bytes_and_the_test_splits_labels_are_bad_rows(tmp_path, real_file):
    write_hf_shard(tmp_path / "validation.parquet", [(None, hf_name(1, 65), 65), (jpeg_bytes(2), f"{vid(2)}.JPEG", -1),
                                                    (jpeg_bytes(3), hf_name(3, 7), 7)])
    with pytest.raises(InputError, match=r"row 0: no image bytes .*\(and 1 more like it\); use --skip-bad"):
        build_imagenet_val(tmp_path, real=real_file)
    m = build_imagenet_val(tmp_path, real=real_file, skip_bad=True)
    assert m.sample_ids == [vid(3)]
    assert "no label (label is -1" in m.meta["skipped"][1]["error"]


def test_names_with_an_unknown_wnid_are_bad_images(tmp_path, real_file):
    write_hf_shard(tmp_path / "shards" / "validation.parquet", [(jpeg_bytes(1), f"{vid(1)}_n99999999.JPEG", 65),
                                                               (jpeg_bytes(2), hf_name(2, 970), 970)])
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / f"{vid(1)}_n99999999.JPEG").write_bytes(jpeg_bytes(1))
    (tmp_path / "flat" / hf_name(2, 970)).write_bytes(jpeg_bytes(2))
    for root in ("shards", "flat"):
        with pytest.raises(InputError, match=r"unknown wnid 'n99999999' in its name .*--skip-bad"):
            build_imagenet_val(tmp_path / root, real=real_file)
        assert build_imagenet_val(tmp_path / root, real=real_file, skip_bad=True).sample_ids == [vid(2)]


def test_a_shard_without_image_names_reads_with_no_real(tmp_path, real_file):
    image = pa.StructArray.from_arrays([pa.array([jpeg_bytes(1)], pa.binary())], names=["bytes"])
    pq.write_table(pa.table({"image": image, "label": pa.array([65], pa.int64())}), tmp_path / "validation.parquet")
    with pytest.raises(InputError, match="no name gives its ImageNet val number"):
        build_imagenet_val(tmp_path, real=real_file)
    m = build_imagenet_val(tmp_path, real=real_file, no_real=True)
    assert m.sample_ids == ["validation.parquet:0"] and samples.reader(m).read(0) == jpeg_bytes(1)
    assert "sorted-wnid order assumed" in m.meta["label_source"]


def test_a_label_column_in_another_class_order_is_caught(tmp_path, real_file):
    write_hf_shard(tmp_path / "validation.parquet", [(jpeg_bytes(1), hf_name(1, 65), 66)])
    with pytest.raises(InputError, match=r"row 0: label 66 but its name's wnid n01751748 is class 65"):
        build_imagenet_val(tmp_path, real=real_file)
    names = json.loads(class_names_meta())
    labels = names["info"]["features"]["label"]["names"]
    labels[3], labels[4] = labels[4], labels[3]
    write_hf_shard(tmp_path / "validation.parquet", [(jpeg_bytes(1), "a.jpg", 65)], meta=json.dumps(names).encode())
    with pytest.raises(InputError, match=r"validation\.parquet: label 3 is 'hammerhead, more words' here, which is class 4, "
                                         r"but class 3 is 'tiger shark, Galeocerdo cuvieri' \(n01491361\)"):
        build_imagenet_val(tmp_path, real=real_file, no_real=True)


def hf_features(names: list[str], old_datasets: bool = False) -> bytes:
    """The `huggingface` schema metadata as `datasets` writes it into a parquet shard (older releases
    add `num_classes` and `id` to the ClassLabel and `decode`, `id` to the Image)."""
    label = {"names": names, "_type": "ClassLabel"}
    image = {"_type": "Image"}
    if old_datasets:
        label, image = {"num_classes": len(names), "names": names, "id": None, "_type": "ClassLabel"}, {
            "decode": True, "id": None, "_type": "Image"}
    return json.dumps({"info": {"features": {"image": image, "label": label}}}).encode()


CRANES = [(11, 134), (12, 517), (13, 639)]  # the bird, the machine ('crane2' at HF), maillot


def test_hugging_faces_class_list_is_timms_but_for_crane2():
    names = lab.hf_class_names()
    assert len(set(names)) == 1000  # datasets.ClassLabel refuses duplicate names
    assert {i: n for i, n in enumerate(names) if n != lab.class_description(i)} == {517: "crane2"}
    assert (names[134], lab.class_wnid(134), lab.class_wnid(517)) == ("crane", "n02012849", "n03126707")


@pytest.mark.parametrize("old_datasets", [False, True])
def test_shards_with_hugging_faces_own_class_names_are_read(tmp_path, real_file, old_datasets):
    rows = [(jpeg_bytes(n), hf_name(n, c), c) for n, c in CRANES]
    write_hf_shard(tmp_path / "data" / "validation-00000-of-00001.parquet", rows,
                   meta=hf_features(list(lab.hf_class_names()), old_datasets))
    m = build_imagenet_val(tmp_path, real=real_file)
    assert [r["label"] for r in m.table.to_pylist()] == [134, 517, 639]
    assert "Hugging Face's IMAGENET2012_CLASSES" in m.meta["label_source"]


def test_shards_written_by_the_datasets_library_with_hugging_faces_names_are_read(tmp_path, real_file):
    datasets = pytest.importorskip("datasets")
    with pytest.raises(ValueError, match="duplicated"):  # why HF's list says 'crane2'
        datasets.ClassLabel(names=[lab.class_description(i) for i in range(1000)])
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=list(lab.hf_class_names()))})
    data = {vid(n): jpeg_bytes(n) for n, _ in CRANES}
    ds = datasets.Dataset.from_dict({"image": [{"bytes": data[vid(n)], "path": hf_name(n, c)} for n, c in CRANES],
                                     "label": [c for _, c in CRANES]}, features=features)
    ds.to_parquet(str(tmp_path / "data" / "validation-00000-of-00001.parquet"))
    m = build_imagenet_val(tmp_path, real=real_file)
    assert [(r["sample_id"], r["label"]) for r in m.table.to_pylist()] == [(vid(n), c) for n, c in CRANES]
    read = samples.reader(m)
    assert [read.read(i) for i in range(len(m))] == [data[s] for s in m.sample_ids]


def test_hugging_faces_names_in_another_order_are_refused_naming_the_shard_and_label(tmp_path, real_file):
    names = list(lab.hf_class_names())
    names[516], names[517] = names[517], names[516]
    shard = write_hf_shard(tmp_path / "data" / "validation-00003-of-00004.parquet",
                           [(jpeg_bytes(1), hf_name(1, 65), 65)], meta=hf_features(names))
    with pytest.raises(InputError) as err:
        build_imagenet_val(tmp_path, real=real_file)
    assert str(err.value) == (f"{shard}: label 516 is 'crane2' here, which is class 517, but class 516 is 'cradle' "
                              "(n03125729) in the sorted-wnid order; this copy's class order differs")
    write_hf_shard(shard, [(jpeg_bytes(1), hf_name(1, 65), 65)], meta=hf_features(names[:999]))
    with pytest.raises(InputError, match="ClassLabel has 999 names, expected 1000"):
        build_imagenet_val(tmp_path, real=real_file)


def test_a_sample_without_cls_is_a_bad_sample(tmp_path, real_file):
    write_tar(tmp_path / "val.tar", [(f"{vid(1)}.jpg", jpeg_bytes(1)), (f"{vid(1)}.cls", b"65"),
                                     (f"{vid(2)}.jpg", jpeg_bytes(2)), (f"{vid(3)}.cls", b"12"),
                                     (f"{vid(7)}.jpg", jpeg_bytes(7)), (f"{vid(7)}.cls", b"tench")])
    with pytest.raises(InputError, match=r"val\.tar: ILSVRC2012_val_00000002: no \.cls member .*\(and 2 more like it\)"):
        build_imagenet_val(tmp_path, real=real_file)
    m = build_imagenet_val(tmp_path, real=real_file, skip_bad=True)
    assert m.sample_ids == [vid(1)]
    assert [s["error"] for s in m.meta["skipped"]] == [
        "no .cls member (the sample's class index)", "no image member (.jpg, .jpeg, .png, .webp)",
        "'tench' is not a class index 0..999"]


def test_two_shards_claiming_one_image_stop_the_build_naming_both(tmp_path, real_file):
    make_wds(tmp_path)
    write_tar(tmp_path / "imagenet1k-validation-0002.tar", [(f"x/{vid(3)}.jpg", jpeg_bytes(3)), (f"x/{vid(3)}.cls", b"7")])
    with pytest.raises(InputError, match=r"validation-0002\.tar: x/ILSVRC2012_val_00000003\.jpg: image "
                                         r"ILSVRC2012_val_00000003 is also at .*validation-0001\.tar: ILSVRC2012_val_00000003\.jpg"):
        build_imagenet_val(tmp_path, real=real_file, skip_bad=True)


@pytest.mark.parametrize("name", ["../" + vid(9), "/abs/" + vid(9), "a/./" + vid(9)])
def test_member_names_that_leave_their_folder_are_bad_samples(tmp_path, real_file, name):
    write_tar(tmp_path / "val.tar", [(f"{vid(1)}.jpg", jpeg_bytes(1)), (f"{vid(1)}.cls", b"65"),
                                     (f"{name}.jpg", jpeg_bytes(9)), (f"{name}.cls", b"1")])
    with pytest.raises(InputError, match=r"val\.tar: member: .* (has a '..' part|is an absolute path|has a backslash or an empty)"):
        build_imagenet_val(tmp_path, real=real_file)
    m = build_imagenet_val(tmp_path, real=real_file, skip_bad=True)
    assert m.sample_ids == [vid(1)] and len(m.meta["skipped"]) == 2


def test_hf_names_count_by_their_last_part(tmp_path, real_file):
    """`datasets` records the path a local image was read from; the name is never opened as a file."""
    rows = [(jpeg_bytes(1), "/data/imagenet/val/" + hf_name(1, 65), 65), (jpeg_bytes(2), "../" + hf_name(2, 970), 970)]
    write_hf_shard(tmp_path / "validation.parquet", rows)
    m = build_imagenet_val(tmp_path, real=real_file)
    assert m.sample_ids == [vid(1), vid(2)] and m.table.column("member").to_pylist() == [r[1] for r in rows]
    assert samples.reader(m).read(1) == rows[1][0]


@pytest.mark.parametrize("fmt", ["hf-parquet", "webdataset"])
def test_a_manifest_whose_shard_path_leaves_its_root_is_refused(tmp_path, real_file, fmt):
    (make_hf if fmt == "hf-parquet" else make_wds)(tmp_path / "root")
    m = build_imagenet_val(tmp_path / "root", real=real_file)
    paths = ["../" + p for p in m.table.column("path").to_pylist()]
    edited = Manifest(m.table.set_column(1, "path", pa.array(paths, pa.string())), m.meta)
    with pytest.raises(InputError, match=r"(has a '..' part|is an absolute path|has a backslash or an empty)"):
        samples.reader(edited).read(0)


def test_a_link_member_is_not_an_image(tmp_path, real_file):
    path = tmp_path / "val.tar"
    with tarfile.open(path, "w") as tar:
        add_member(tar, f"{vid(1)}.cls", b"65")
        info = tarfile.TarInfo(f"{vid(1)}.jpg")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(info)
    with pytest.raises(InputError, match=r"ILSVRC2012_val_00000001\.jpg: a link, sparse or special member"):
        build_imagenet_val(tmp_path, real=real_file)


# ---- shards changed after the manifest was built ------------------------------------------------


@pytest.mark.parametrize("fmt", ["hf-parquet", "webdataset"])
def test_a_shard_changed_after_the_build_is_caught_before_any_work(tmp_path, real_file, fmt):
    (make_hf if fmt == "hf-parquet" else make_wds)(tmp_path)
    path = tmp_path / "m.parquet"
    m = build_imagenet_val(tmp_path, real=real_file)
    write_manifest(path, m.table, m.meta)
    samples.check_sources(read_manifest(path))
    shard = tmp_path / sorted(m.meta["shards"])[0]
    data = bytearray(shard.read_bytes())
    i = data.index(jpeg_bytes(1)[600:640])  # one byte of one image, same size, same names
    data[i] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(InputError, match=rf"shard .*{shard.name} changed since the manifest was built; rebuild"):
        samples.check_sources(read_manifest(path))


def test_a_reordered_parquet_shard_is_caught_by_each_read(tmp_path, real_file):
    make_hf(tmp_path)
    m = build_imagenet_val(tmp_path, real=real_file)
    shard = tmp_path / "data" / "validation-00001-of-00002.parquet"
    table = pq.read_table(shard)
    pq.write_table(table.take([1, 0]).replace_schema_metadata(table.schema.metadata), shard, row_group_size=2)
    i = m.sample_ids.index(vid(42))
    with pytest.raises(InputError, match=r"row 0 \(ILSVRC2012_val_00000042_n01440764\.JPEG\): the shard holds "
                                         r"'ILSVRC2012_val_00050000_n01751748\.JPEG' there now; .*rebuild it"):
        samples.reader(m).read(i)


def test_a_rewritten_tar_shard_is_caught_by_each_read(tmp_path, real_file):
    make_wds(tmp_path)
    m = build_imagenet_val(tmp_path, real=real_file)
    write_tar(tmp_path / "imagenet1k-validation-0000.tar", [(f"{vid(2)}.jpg", jpeg_bytes(2)), (f"{vid(2)}.cls", b"970")])
    with pytest.raises(InputError, match=r"ILSVRC2012_val_00000001\.jpg: not at offset 512 of the shard any more"):
        samples.reader(m).read(m.sample_ids.index(vid(1)))


def test_shard_fingerprints_change_the_samples_digest_and_file_manifests_keep_theirs(tmp_path, real_file):
    import hashlib

    from mlreassess.inference.sweep.writers import LABEL_COLUMNS, PIXEL_META, pixels_sha256

    make_wds(tmp_path)
    m = build_imagenet_val(tmp_path, real=real_file)
    other = Manifest(m.table, {**m.meta, "shards": {k: "0" * 64 for k in m.meta["shards"]}})
    assert pixels_sha256(m) != pixels_sha256(other)
    files = Manifest(m.table.drop_columns(["member", "offset", "size"]), {k: v for k, v in m.meta.items() if k != "shards"})
    # The digest of a manifest of image files, as every output before shards existed recorded it.
    table = files.table.replace_schema_metadata(None).drop_columns([c for c in LABEL_COLUMNS if c in files.table.column_names])
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table.combine_chunks())
    old = hashlib.sha256(sink.getvalue().to_pybytes())
    old.update(json.dumps({k: files.meta.get(k) for k in PIXEL_META}, sort_keys=True).encode())
    assert pixels_sha256(files) == old.hexdigest()


def test_rows_out_of_val_order_read_right_and_say_they_are_slower(tmp_path, real_file, caplog):
    rows = [(jpeg_bytes(n), hf_name(n, n), n) for n in range(1, 13)]
    write_hf_shard(tmp_path / "validation.parquet", rows[0::4] + rows[1::4] + rows[2::4] + rows[3::4], row_group=3)
    with caplog.at_level("WARNING"):
        m = build_imagenet_val(tmp_path, real=real_file)
    assert "rows are not in val-image order: reading in sample order reads each row group ~3 times" in caplog.text
    read = samples.reader(m)
    assert [read.read(i) for i in range(12)] == [r[0] for r in rows] and m.table.column("label").to_pylist() == list(range(1, 13))
    caplog.clear()
    write_hf_shard(tmp_path / "validation.parquet", rows, row_group=3)
    with caplog.at_level("WARNING"):
        build_imagenet_val(tmp_path, real=real_file)
    assert "val-image order" not in caplog.text


@pytest.mark.parametrize("name, problem", [("validation.parquet", "not a readable parquet file"),
                                           ("validation.tar", "not a readable tar file")])
def test_an_empty_shard_file_is_one_error_naming_it(tmp_path, real_file, name, problem):
    (tmp_path / name).write_bytes(b"")
    with pytest.raises(InputError, match=rf"{name}: {problem}"):
        build_imagenet_val(tmp_path, real=real_file)


@pytest.mark.parametrize("fmt, column, value, problem", [
    ("hf-parquet", "row", 10**12, "the shard has 3 rows now"),
    ("hf-parquet", "row", -1, "the shard has 3 rows now"),
    ("webdataset", "offset", 10**12, "not at offset 1000000000000 of the shard any more"),
    ("webdataset", "size", -5, "cannot be a member's bytes"),
    ("webdataset", "offset", 3, "cannot be a member's bytes"),
])
def test_hand_edited_shard_references_are_one_error_naming_the_sample(tmp_path, real_file, fmt, column, value, problem):
    (make_hf if fmt == "hf-parquet" else make_wds)(tmp_path)
    m = build_imagenet_val(tmp_path, real=real_file)
    values = m.table.column(column).to_pylist()
    values[0] = value
    edited = Manifest(m.table.set_column(m.table.column_names.index(column), column, pa.array(values, pa.int64())), m.meta)
    with pytest.raises(InputError, match=problem):
        samples.reader(edited).read(0)


@pytest.mark.parametrize("fmt", ["hf-parquet", "webdataset"])
def test_a_shard_manifest_without_its_columns_is_refused(tmp_path, real_file, fmt):
    (make_hf if fmt == "hf-parquet" else make_wds)(tmp_path)
    m = build_imagenet_val(tmp_path, real=real_file)
    edited = Manifest(m.table.drop_columns(["member"]), m.meta, source=tmp_path / "m.parquet")
    with pytest.raises(InputError, match=r"m\.parquet: no string column 'member', which finds each image"):
        samples.reader(edited)


def test_the_format_choices_are_the_format_modules():
    from mlreassess.constants import INPUT_FORMATS

    assert tuple(samples.FORMATS) == INPUT_FORMATS
