"""ImageNet V1 manifests: every layout on generated fixtures, every error path, the mini set, Table 1."""

from __future__ import annotations

import csv
import json
from functools import cache
from pathlib import Path

import pytest

from mlreassess.cli import main
from mlreassess.datasets import labels as lab
from mlreassess.datasets.imagenet import build_imagenet_val
from mlreassess.datasets.labelsets.real import real_labels
from mlreassess.datasets.manifest import core_table, label_count_distribution, read_manifest
from mlreassess.errors import InputError

N = 50_000
# Fake ReaL labels for the images the fixtures use (every other entry is empty).
REAL = {1: [5, 3], 2: [], 3: [7], 42: [0, 1, 999], 50_000: [12]}


@cache
def _wnids() -> list[str]:
    return sorted(lab.wnid_to_index(), key=lab.wnid_to_index().__getitem__)


def wnid(index: int) -> str:
    """wnid of a class in the standard order."""
    return _wnids()[index]


def vid(n: int) -> str:
    return f"ILSVRC2012_val_{n:08d}"


@pytest.fixture(scope="module")
def real_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("real") / "real.json"
    path.write_text(json.dumps([REAL.get(i + 1, []) for i in range(N)]))
    return path


def by_id(manifest) -> dict[str, dict]:
    return {r["sample_id"]: r for r in manifest.table.to_pylist()}


# ---- Kaggle layout ----------------------------------------------------------------------------------


def make_kaggle(root: Path, write_jpeg, rows: dict[int, list[str]], images: list[int], mapping: bool = True) -> Path:
    """rows: image number -> wnid of each box (the CSV); images: numbers of the JPEGs present."""
    for n in images:
        write_jpeg(root / "ILSVRC/Data/CLS-LOC/val" / f"{vid(n)}.JPEG")
    lines = ["ImageId,PredictionString"]
    lines += [f"{vid(n)}," + " ".join(f"{w} 1 2 3 4" for w in wnids) for n, wnids in rows.items()]
    (root / "LOC_val_solution.csv").write_text("\n".join(lines) + "\n")
    if mapping:
        (root / "LOC_synset_mapping.txt").write_text(
            "".join(f"{wnid(i)} some words, more words\n" for i in range(1000))
        )
    return root


def test_kaggle_layout(tmp_path, write_jpeg, real_file):
    # Image 99 is in the CSV but absent (ignored); 3 has two boxes of the same class.
    rows = {1: ["n01440764"], 2: ["n04592741"], 3: ["n02123045", "n02123045"], 42: ["n15075141"], 99: ["n01443537"]}
    root = make_kaggle(tmp_path, write_jpeg, rows, [42, 3, 1, 2])
    m = build_imagenet_val(root, real=real_file)
    assert m.sample_ids == [vid(1), vid(2), vid(3), vid(42)]
    rows_by_id = by_id(m)
    # wnid -> index from the synset mapping file's line order (written above from timm; n01440764 is line 0)
    assert rows_by_id[vid(1)]["label"] == 0
    assert rows_by_id[vid(42)]["label"] == 999  # n15075141 (toilet tissue) is the last class
    for n, wnids in rows.items():
        if n != 99:
            assert rows_by_id[vid(n)]["label"] == lab.wnid_to_index()[wnids[0]]
            assert rows_by_id[vid(n)]["labels"] == sorted(REAL[n])
            assert rows_by_id[vid(n)]["label_count"] == len(REAL[n])
            assert rows_by_id[vid(n)]["path"] == f"{vid(n)}.JPEG"
    assert rows_by_id[vid(2)]["labels"] == []
    assert m.meta["kind"] == "imagenet_v1" and m.meta["dataset"] == "imagenet_v1"
    assert m.meta["layout"] == "kaggle"
    assert m.meta["root"] == str((root / "ILSVRC/Data/CLS-LOC/val").resolve())
    assert m.meta["ground_truth_entries_unused"] == 1
    assert m.meta["label_file"] == str(real_file.resolve()) and m.meta["label_set"] == "real"
    assert (Path(m.meta["root"]) / rows_by_id[vid(3)]["path"]).is_file()


def test_kaggle_errors(tmp_path, write_jpeg, real_file):
    cases = {
        "mixed": ({1: ["n01440764", "n01443537"]}, "has boxes of several classes"),
        "unknown": ({1: ["n99999999"]}, "unknown wnid 'n99999999'"),
    }
    for name, (rows, msg) in cases.items():
        root = make_kaggle(tmp_path / name, write_jpeg, rows, [1])
        with pytest.raises(InputError, match=rf"LOC_val_solution.csv: line 2: .*{msg}"):
            build_imagenet_val(root, real=real_file)

    root = make_kaggle(tmp_path / "short", write_jpeg, {1: ["n01440764"]}, [1])
    (root / "LOC_val_solution.csv").write_text("ImageId,PredictionString\nILSVRC2012_val_00000001,n01440764 1 2 3\n")
    with pytest.raises(InputError, match=r"LOC_val_solution.csv: line 2: PredictionString has 4 tokens, not groups of 5"):
        build_imagenet_val(root, real=real_file)

    (root / "LOC_val_solution.csv").unlink()
    with pytest.raises(InputError, match="LOC_val_solution.csv is missing"):
        build_imagenet_val(root, real=real_file)


def test_kaggle_solution_gets_the_box_checks_patchml_gets(tmp_path, write_jpeg, real_file):
    """One reader for LOC_val_solution.csv: V1 rejects what PatchML rejects, plus V1's own checks."""
    cases = {
        "inverted": ("ILSVRC2012_val_00000001,n01440764 5 2 5 9", "empty or inverted box"),
        "negative": ("ILSVRC2012_val_00000001,n01440764 -1 2 5 9", "negative coordinate"),
        "not-int": ("ILSVRC2012_val_00000001,n01440764 1 2 3.5 9", "are not integers"),
        "no-boxes": ("ILSVRC2012_val_00000001,", "no boxes"),
        "not-val": ("holiday,n01440764 1 2 3 4", "'holiday' is not an ILSVRC2012 val image id"),
        "repeated": (
            "ILSVRC2012_val_00000001,n01440764 1 2 3 4\nILSVRC2012_val_00000001,n01440764 1 2 3 4",
            "repeated \\(first on line 2\\)",
        ),
    }
    for name, (line, msg) in cases.items():
        root = make_kaggle(tmp_path / name, write_jpeg, {1: ["n01440764"]}, [1])
        (root / "LOC_val_solution.csv").write_text(f"ImageId,PredictionString\n{line}\n")
        with pytest.raises(InputError, match=rf"LOC_val_solution.csv: line \d: .*{msg}.*; use --skip-bad"):
            build_imagenet_val(root, real=real_file)


def test_kaggle_skip_bad_drops_bad_solution_lines_and_lists_them(tmp_path, write_jpeg, real_file):
    rows = {1: ["n01440764"], 2: ["n01440764", "n01443537"], 3: ["n99999999"]}
    root = make_kaggle(tmp_path, write_jpeg, rows, [1, 2])
    with pytest.raises(InputError, match=r"line 3: .*several classes .*\(and 1 more like it\); use --skip-bad"):
        build_imagenet_val(root, real=real_file)
    m = build_imagenet_val(root, real=real_file, skip_bad=True)
    assert m.sample_ids == [vid(1)]
    files = [s["file"] for s in m.meta["skipped"]]
    solution = str(root.resolve() / "LOC_val_solution.csv")
    assert files[:2] == [f"{solution}: line 3", f"{solution}: line 4"]  # the bad lines, in file order
    assert Path(files[2]).name == f"{vid(2)}.JPEG"  # then the image whose line was dropped
    assert m.meta["ground_truth_entries_unused"] == 0


def test_kaggle_synset_mapping_must_match_timm_order(tmp_path, write_jpeg, real_file):
    root = make_kaggle(tmp_path, write_jpeg, {1: ["n01440764"]}, [1])
    lines = (root / "LOC_synset_mapping.txt").read_text().splitlines()
    lines[0], lines[1] = lines[1], lines[0]
    (root / "LOC_synset_mapping.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=r"LOC_synset_mapping.txt:1: wnid n01443537 is class 0 here"):
        build_imagenet_val(root, real=real_file)


def test_image_without_ground_truth_errors_or_is_skipped(tmp_path, write_jpeg, real_file):
    root = make_kaggle(tmp_path, write_jpeg, {1: ["n01440764"]}, [1, 3])
    write_jpeg(root / "ILSVRC/Data/CLS-LOC/val/holiday.jpg")
    with pytest.raises(InputError, match=r"val_00000003.JPEG: image .* has no entry in the ground truth .*\(and 1 more like it\); use --skip-bad"):
        build_imagenet_val(root, real=real_file)
    m = build_imagenet_val(root, real=real_file, skip_bad=True)
    assert m.sample_ids == [vid(1)]
    assert sorted(Path(s["file"]).name for s in m.meta["skipped"]) == [f"{vid(3)}.JPEG", "holiday.jpg"]


# ---- classic layouts --------------------------------------------------------------------------------


def test_flat_with_positional_val_labels(tmp_path, write_jpeg, real_file):
    for n in (1, 42, 50_000):
        write_jpeg(tmp_path / "val" / f"{vid(n)}.JPEG")
    (tmp_path / "val_labels.txt").write_text("".join(f"{(n * 7) % 1000}\n" for n in range(1, N + 1)))
    m = build_imagenet_val(tmp_path, real=real_file, name="mine")
    assert m.meta["layout"] == "classic-flat" and m.meta["dataset"] == "mine"
    rows = by_id(m)
    for n in (1, 42, 50_000):
        assert rows[vid(n)]["label"] == (n * 7) % 1000
        assert rows[vid(n)]["labels"] == sorted(REAL[n])
    assert m.meta["ground_truth_entries_unused"] == N - 3


def test_flat_named_val_labels_subset_and_errors(tmp_path, write_jpeg, real_file):
    for n in (5, 6):
        write_jpeg(tmp_path / f"{vid(n)}.JPEG")  # images directly in ROOT
    gt = tmp_path / "val_labels.txt"
    gt.write_text(f"{vid(6)}.JPEG 17\n{vid(5)} 3\n")
    rows = by_id(build_imagenet_val(tmp_path, real=real_file))
    assert (rows[vid(5)]["label"], rows[vid(6)]["label"]) == (3, 17)
    gt.write_text(f"{vid(5)} 3\n{vid(6)} 1000\n")
    with pytest.raises(InputError, match=r"val_labels.txt:2: class index 1000 out of range"):
        build_imagenet_val(tmp_path, real=real_file)
    gt.write_text("3\n17\n")
    with pytest.raises(InputError, match=r"val_labels.txt: 2 lines; .* needs all 50,000"):
        build_imagenet_val(tmp_path, real=real_file)


# ILSVRC2012_ID order differs from sorted-wnid order; this fake one reverses it: ID i <-> class 1000 - i.
def reversed_id_mapping() -> dict[int, str]:
    return {i: wnid(1000 - i) for i in range(1, 1001)}


def test_flat_devkit_ground_truth_with_text_mapping(tmp_path, write_jpeg, real_file):
    for n in (1, 2, 3):
        write_jpeg(tmp_path / "val" / f"{vid(n)}.JPEG")
    devkit = tmp_path / "ILSVRC2012_devkit_t12" / "data"
    devkit.mkdir(parents=True)
    ids = [(n * 13) % 1000 + 1 for n in range(1, N + 1)]
    (devkit / "ILSVRC2012_validation_ground_truth.txt").write_text("".join(f"{i}\n" for i in ids))
    with pytest.raises(InputError, match=r"ILSVRC2012_IDs need ILSVRC2012_mapping.txt or the devkit's meta.mat"):
        build_imagenet_val(tmp_path, real=real_file)
    (tmp_path / "ILSVRC2012_mapping.txt").write_text("".join(f"{i} {w}\n" for i, w in reversed_id_mapping().items()))
    m = build_imagenet_val(tmp_path, real=real_file)
    for n in (1, 2, 3):
        assert by_id(m)[vid(n)]["label"] == 1000 - ids[n - 1]
    assert "ILSVRC2012_validation_ground_truth.txt + " in m.meta["label_source"]


def test_flat_devkit_ground_truth_with_meta_mat(tmp_path, write_jpeg, real_file):
    np = pytest.importorskip("numpy")
    sio = pytest.importorskip("scipy.io", reason="meta.mat needs scipy")
    write_jpeg(tmp_path / "val" / f"{vid(42)}.JPEG")
    mapping = reversed_id_mapping()
    # Like the devkit: 1,000 leaf synsets then higher-level ones with IDs > 1000 (ignored).
    synsets = np.zeros(1002, dtype=[("ILSVRC2012_ID", "O"), ("WNID", "O"), ("num_children", "O")])
    for row, (i, w) in enumerate(mapping.items()):
        synsets[row] = (i, w, 0)
    synsets[1000] = (1001, "n00001740", 3)
    synsets[1001] = (1002, "n00002137", 2)
    data = tmp_path / "ILSVRC2012_devkit_t12" / "data"
    data.mkdir(parents=True)
    sio.savemat(data / "meta.mat", {"synsets": synsets.reshape(-1, 1)})
    (data / "ILSVRC2012_validation_ground_truth.txt").write_text("".join(f"{(n % 1000) + 1}\n" for n in range(1, N + 1)))
    m = build_imagenet_val(tmp_path, real=real_file)
    assert by_id(m)[vid(42)]["label"] == 1000 - 43


def test_flat_tf_synset_labels(tmp_path, write_jpeg, real_file):
    write_jpeg(tmp_path / "val" / f"{vid(3)}.JPEG")
    (tmp_path / "imagenet_2012_validation_synset_labels.txt").write_text(
        "".join(f"{wnid(n % 1000)}\n" for n in range(1, N + 1))
    )
    assert by_id(build_imagenet_val(tmp_path, real=real_file))[vid(3)]["label"] == 3


def test_flat_without_ground_truth_names_what_it_looked_for(tmp_path, write_jpeg, real_file):
    write_jpeg(tmp_path / "val" / f"{vid(1)}.JPEG")
    with pytest.raises(InputError, match=r"looked for val_labels.txt, .*ILSVRC2012_validation_ground_truth.txt"):
        build_imagenet_val(tmp_path, real=real_file)


def test_class_folders(tmp_path, write_jpeg, real_file):
    write_jpeg(tmp_path / "val" / "n01443537" / f"{vid(42)}.JPEG")
    write_jpeg(tmp_path / "val" / "n15075141" / f"{vid(1)}.JPEG")
    m = build_imagenet_val(tmp_path, real=real_file)
    assert m.meta["layout"] == "classic-folders"
    rows = by_id(m)
    assert (rows[vid(42)]["label"], rows[vid(1)]["label"]) == (1, 999)
    assert rows[vid(42)]["path"] == f"n01443537/{vid(42)}.JPEG"
    assert rows[vid(42)]["labels"] == REAL[42]

    write_jpeg(tmp_path / "val" / "n01440764" / f"{vid(42)}.JPEG")
    with pytest.raises(InputError, match=f"image {vid(42)} is also at"):
        build_imagenet_val(tmp_path, real=real_file)
    write_jpeg(tmp_path / "val" / f"{vid(7)}.JPEG")
    with pytest.raises(InputError, match=r"val: mixes <wnid>/ class folders and flat"):
        build_imagenet_val(tmp_path, real=real_file)


def test_class_folder_with_unknown_wnid(tmp_path, write_jpeg, real_file):
    write_jpeg(tmp_path / "n99999999" / f"{vid(1)}.JPEG")
    with pytest.raises(InputError, match=r"n99999999: unknown wnid"):
        build_imagenet_val(tmp_path, real=real_file)


def test_missing_root_and_wrong_layout(tmp_path, write_jpeg, real_file):
    with pytest.raises(InputError, match="nowhere: no such folder"):
        build_imagenet_val(tmp_path / "nowhere", real=real_file)
    write_jpeg(tmp_path / "stuff" / "cat.jpg")
    with pytest.raises(InputError, match=r"stuff: no ImageNet val layout found; looked for .*Kaggle"):
        build_imagenet_val(tmp_path / "stuff", real=real_file)


# ---- torchvision.datasets.ImageNet's root ----------------------------------------------------------

TV_IMAGES = [(1, 65), (2, 970), (3, 65), (42, 0)]  # (val image number, class)


def make_torchvision_archives(root: Path, write_jpeg) -> Path:
    """What torchvision.datasets.ImageNet wants in its root before it extracts anything: the val tar
    (flat JPEGs, no labels), the devkit tar.gz (its ground truth) and, once the devkit is parsed,
    meta.bin ({wnid: class names}, the val images' wnids in file order)."""
    import tarfile

    import torch

    flat = root / "flat"
    root.mkdir(parents=True, exist_ok=True)
    with tarfile.open(root / "ILSVRC2012_img_val.tar", "w") as tar:
        for n, _ in TV_IMAGES:
            tar.add(write_jpeg(flat / f"{vid(n)}.JPEG"), arcname=f"{vid(n)}.JPEG")
    gt = root / "devkit" / "ILSVRC2012_devkit_t12" / "data" / "ILSVRC2012_validation_ground_truth.txt"
    gt.parent.mkdir(parents=True)
    gt.write_text("".join(f"{c + 1}\n" for _, c in TV_IMAGES))
    with tarfile.open(root / "ILSVRC2012_devkit_t12.tar.gz", "w:gz") as tar:
        tar.add(root / "devkit" / "ILSVRC2012_devkit_t12", arcname="ILSVRC2012_devkit_t12")
    for folder in (flat, root / "devkit"):
        for path in sorted(folder.rglob("*"), reverse=True):
            path.rmdir() if path.is_dir() else path.unlink()
        folder.rmdir()
    classes = {wnid(c): (lab.class_description(c).split(", ")[0],) for c in range(1000)}
    torch.save((classes, [wnid(c) for _, c in TV_IMAGES]), root / "meta.bin")
    return root


def extract_like_torchvision(root: Path, monkeypatch) -> None:
    """torchvision's own `parse_val_archive` (val/<wnid>/ILSVRC2012_val_*.JPEG beside the archives);
    only its md5 check of the real 6.7 GB archive is skipped."""
    from torchvision.datasets import imagenet as tv

    monkeypatch.setattr(tv, "_verify_archive", lambda *args: None)
    tv.parse_val_archive(str(root))


def test_torchvision_imagenet_archives_not_extracted_are_one_line_saying_extract(tmp_path, write_jpeg, real_file, capsys):
    root = make_torchvision_archives(tmp_path, write_jpeg)
    expected = (f"{root}: holds torchvision.datasets.ImageNet's archives (ILSVRC2012_img_val.tar, "
                "ILSVRC2012_devkit_t12.tar.gz), not their images; extract them first "
                f"(torchvision.datasets.ImageNet(root, split='val') does it, into {root / 'val'}/<wnid>/), then build from {root}")
    for input_format in (None, "webdataset", "files"):
        with pytest.raises(InputError) as err:
            build_imagenet_val(root, real=real_file, input_format=input_format)
        assert str(err.value) == expected
    assert main(["data", "imagenet-val", "--root", str(root), "--out", str(tmp_path / "m.parquet")]) == 2
    assert capsys.readouterr().err.strip() == f"mlreassess: error: {expected}"


def test_torchvision_imagenet_root_once_extracted_is_read_as_class_folders(tmp_path, write_jpeg, real_file, monkeypatch):
    root = make_torchvision_archives(tmp_path, write_jpeg)
    extract_like_torchvision(root, monkeypatch)
    m = build_imagenet_val(root, real=real_file)
    assert m.meta["layout"] == "classic-folders" and m.root == root / "val"
    assert {r["sample_id"]: r["label"] for r in m.table.to_pylist()} == {vid(n): c for n, c in TV_IMAGES}
    assert by_id(m)[vid(42)]["labels"] == REAL[42]


# ---- CLI --------------------------------------------------------------------------------------------


def test_cli_writes_manifest_and_summary_deterministically(tmp_path, write_jpeg, real_file, capsys):
    root = make_kaggle(tmp_path / "root", write_jpeg, {1: ["n01440764"], 2: ["n01443537"], 42: ["n01484850"]}, [1, 2, 42])
    out = tmp_path / "out" / "v1.parquet"
    argv = ["data", "imagenet-val", "--root", str(root), "--real", str(real_file), "--out", str(out), "--name", "v1_tiny"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "v1_tiny (imagenet_v1, kaggle): 3 samples" in printed
    assert "label counts: 0: 1, 2: 1, 3: 1" in printed  # images 2, 1 and 42 have 0, 2 and 3 ReaL labels
    assert str(out) in printed
    m = read_manifest(out)
    assert m.name == "v1_tiny" and m.sample_ids == [vid(1), vid(2), vid(42)]
    first = out.read_bytes()
    assert main(argv) == 0
    assert out.read_bytes() == first
    assert (tmp_path / "out" / "v1.provenance.json").is_file()


def test_cli_error_is_one_line(tmp_path, capsys):
    assert main(["data", "imagenet-val", "--root", str(tmp_path / "missing"), "--out", str(tmp_path / "x.parquet")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("mlreassess: error:") and "missing: no such folder" in err
    assert not (tmp_path / "x.parquet").exists()


# ---- real data --------------------------------------------------------------------------------------


@pytest.mark.shared_data
def test_mini_set(mini_root):
    m = build_imagenet_val(mini_root, real=mini_root / "real.json", name="imagenet_v1_mini")
    assert len(m) == 1300 and m.meta["layout"] == "kaggle"
    # Independent reading: wnid index from the line order of the set's own synset mapping.
    wnid_index = {line.split()[0]: i for i, line in enumerate((mini_root / "LOC_synset_mapping.txt").read_text().splitlines())}
    with (mini_root / "LOC_val_solution.csv").open() as f:
        expected = {r["ImageId"]: wnid_index[r["PredictionString"].split()[0]] for r in csv.DictReader(f)}
    real = json.loads((mini_root / "real.json").read_text())
    rows = by_id(m)
    assert set(rows) == set(expected)
    for sid, row in rows.items():
        assert row["label"] == expected[sid]
        assert row["labels"] == sorted(real[int(sid[-8:]) - 1])
        assert (Path(m.meta["root"]) / row["path"]).is_file()


@pytest.mark.slow  # timm's default ReaL path imports timm (and torch): seconds
def test_real_label_count_distribution_matches_paper_table1():
    real = real_labels()
    n = len(real)
    table = core_table([vid(i + 1) for i in range(n)], [None] * n, [None] * n, list(real))
    dist = label_count_distribution(table)
    over5 = sum(v for k, v in dist.items() if k > 5)
    # Paper Table 1, ImageNetV1 row.
    assert [dist[1], dist[2], dist[3], dist[4], dist[5], over5] == [39_394, 5_408, 1_319, 411, 161, 144]


@pytest.mark.parametrize("target", ["LOC_val_solution.csv", "LOC_synset_mapping.txt"])
def test_data_never_writes_over_its_own_inputs(tmp_path, write_jpeg, real_file, capsys, target):
    root = make_kaggle(tmp_path / "root", write_jpeg, {1: ["n01440764"]}, [1])
    before = (root / target).read_bytes()
    argv = ["data", "imagenet-val", "--root", str(root), "--real", str(real_file), "--out", str(root / target)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "exists and is not an mlreassess output; refusing to replace it" in err[0]
    assert (root / target).read_bytes() == before


def test_names_that_would_escape_the_results_folder_are_refused(tmp_path, write_jpeg, real_file, capsys):
    root = make_kaggle(tmp_path / "root", write_jpeg, {1: ["n01440764"]}, [1])
    for name in ("../../x", "..", "/abs", "a/b"):
        argv = ["data", "imagenet-val", "--root", str(root), "--out", str(tmp_path / "m.parquet"), "--name", name]
        assert main(argv) == 2
        assert "must be one plain name" in capsys.readouterr().err


def test_skip_bad_drops_an_unknown_wnid_folder_and_says_so(tmp_path, write_jpeg, real_file):
    write_jpeg(tmp_path / "n99999999" / f"{vid(1)}.JPEG")
    write_jpeg(tmp_path / "n01440764" / f"{vid(2)}.JPEG")
    m = build_imagenet_val(tmp_path, real=real_file, skip_bad=True)
    assert m.sample_ids == [vid(2)]
    (dropped,) = m.meta["skipped"]
    assert dropped["file"].endswith("n99999999") and "unknown wnid" in dropped["error"]


def test_a_symlink_loop_is_a_bad_image_not_a_silent_gap(tmp_path, write_jpeg, real_file):
    root = make_kaggle(tmp_path / "root", write_jpeg, {1: ["n01440764"], 2: ["n01443537"]}, [1])
    loop = root / "ILSVRC/Data/CLS-LOC/val" / f"{vid(2)}.JPEG"
    loop.symlink_to(loop)
    with pytest.raises(InputError, match=r"ILSVRC2012_val_00000002\.JPEG: not a readable file .*--skip-bad"):
        build_imagenet_val(root, real=real_file)
    m = build_imagenet_val(root, real=real_file, skip_bad=True)
    assert m.sample_ids == [vid(1)] and "symlink loop" in m.meta["skipped"][0]["error"]
