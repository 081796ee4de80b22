"""ImageNetV2 manifests on generated class folders: numeric sort, JSON/CSV labels, every error path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlreassess.cli import main
from mlreassess.datasets.imagenetv2 import build_imagenetv2, list_images
from mlreassess.datasets.manifest import read_manifest
from mlreassess.errors import InputError

MF = "imagenetv2-matched-frequency-format-val"
# class folder -> image stems (sha1-like); folders 2 and 10 check numeric vs string order.
IMAGES = {0: ["aa01", "aa02"], 2: ["bb01"], 10: ["cc01", "cc02"]}


@pytest.fixture
def v2_root(tmp_path, write_jpeg) -> Path:
    for cls, stems in IMAGES.items():
        for stem in stems:
            write_jpeg(tmp_path / MF / str(cls) / f"{stem}.jpeg")
    return tmp_path


def by_id(manifest) -> dict[str, dict]:
    return {r["sample_id"]: r for r in manifest.table.to_pylist()}


def test_folders_sort_numerically_and_label_is_folder_number(v2_root):
    assert [label for _, _, label in list_images(v2_root / MF)] == [0, 0, 2, 10, 10]
    m = build_imagenetv2(v2_root, "matched-frequency")
    rows = by_id(m)
    for cls, stems in IMAGES.items():
        for stem in stems:
            row = rows[f"{cls}/{stem}"]
            assert row["label"] == cls and row["labels"] == [cls]
            assert row["path"] == f"{cls}/{stem}.jpeg"
            assert (Path(m.meta["root"]) / row["path"]).is_file()
    assert m.meta["kind"] == "imagenet_v2" and m.meta["dataset"] == "imagenet_v2_matched-frequency"
    assert m.meta["variant"] == "matched-frequency"
    assert m.sample_ids == sorted(m.sample_ids)


def test_root_may_be_the_variant_folder_and_threshold_spelling(tmp_path, write_jpeg):
    write_jpeg(tmp_path / "imagenetv2-threshold0.7-format-val" / "5" / "x.jpeg")
    assert build_imagenetv2(tmp_path, "threshold-0.7").sample_ids == ["5/x"]
    m = build_imagenetv2(tmp_path / "imagenetv2-threshold0.7-format-val", "threshold-0.7", name="t07")
    assert m.sample_ids == ["5/x"] and m.meta["dataset"] == "t07"


def test_json_labels_with_every_key_form(v2_root, tmp_path):
    labels = {
        "0/aa01.jpeg": [0, 5],
        "0/aa02": [0],
        "bb01": [2, 7, 999],  # bare stem, unique
        f"{MF}/10/cc01.jpeg": [10, 11],  # leading folders are ignored
        "./10/cc02.jpeg": [],
        "3/not_here.jpeg": [3],  # image not present: ignored, counted
        "ffff": [1],
    }
    path = tmp_path / "v2.json"
    path.write_text(json.dumps(labels))
    m = build_imagenetv2(v2_root, "matched-frequency", labels_file=path)
    rows = by_id(m)
    assert rows["0/aa01"]["labels"] == [0, 5] and rows["0/aa01"]["label"] == 0
    assert rows["2/bb01"]["labels"] == [2, 7, 999] and rows["2/bb01"]["label_count"] == 3
    assert rows["10/cc01"]["labels"] == [10, 11]
    assert rows["10/cc02"]["labels"] == [] and rows["10/cc02"]["label"] == 10
    assert m.meta["label_entries_unmatched"] == 2
    assert m.meta["label_source"] == str(path.resolve())


def test_csv_labels_with_and_without_header(v2_root, tmp_path):
    body = "0/aa01.jpeg,0 5\n0/aa02.jpeg,0\n2/bb01.jpeg,7 2\n10/cc01.jpeg,10\n10/cc02,3 10 3\n"
    for text in ("path,labels\n" + body, body):
        path = tmp_path / "v2.csv"
        path.write_text(text)
        rows = by_id(build_imagenetv2(v2_root, "matched-frequency", labels_file=path))
        assert rows["2/bb01"]["labels"] == [2, 7]
        assert rows["10/cc02"]["labels"] == [3, 10] and rows["10/cc02"]["label_count"] == 2


def test_missing_from_labels_file_errors_skips_or_keeps(v2_root, tmp_path):
    path = tmp_path / "v2.json"
    path.write_text(json.dumps({"0/aa01": [0, 1], "10/cc01": [10]}))
    with pytest.raises(InputError, match=r"0/aa02.jpeg: no entry in the labels file .*\(and 2 more like it\)"):
        build_imagenetv2(v2_root, "matched-frequency", labels_file=path)
    skipped = build_imagenetv2(v2_root, "matched-frequency", labels_file=path, skip_bad=True)
    assert skipped.sample_ids == ["0/aa01", "10/cc01"] and len(skipped.meta["skipped"]) == 3
    kept = build_imagenetv2(v2_root, "matched-frequency", labels_file=path, keep_original=True)
    rows = by_id(kept)
    assert len(kept) == 5 and rows["2/bb01"]["labels"] == [2] and rows["0/aa01"]["labels"] == [0, 1]
    assert kept.meta["kept_original_label"] == 3


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("a.json", json.dumps({"0/aa01": [0, 1000]}), r"a.json: key '0/aa01': label 1000 out of range"),
        ("b.json", json.dumps({"0/aa01": "5"}), r"b.json: key '0/aa01': labels must be a list of class indices, got '5'"),
        ("c.json", "{not json", r"c.json: not valid JSON"),
        ("d.csv", "path,labels\n0/aa01.jpeg,0\n0/aa02.jpeg,0,1\n", r"d.csv:3: expected 2 fields"),
        ("e.csv", "0/aa01.jpeg,0\n0/aa02.jpeg,zero\n", r"e.csv:2: key '0/aa02.jpeg': label 'zero' is not a class index"),
        ("f.csv", "0/aa01.jpeg,-1\n", r"f.csv:1: key '0/aa01.jpeg': label '-1' is not a class index"),
        ("g.csv", "0/aa01.jpeg,1\n0/aa01,2\n", r"g.csv:2: conflicting labels for 0/aa01"),
        ("h.csv", "x/aa01.jpeg,1\n", r"h.csv:1: key's folder 'x' is not a class \(a number 0..999 or a wnid\)"),
    ],
)
def test_bad_label_files(v2_root, tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(InputError, match=message):
        build_imagenetv2(v2_root, "matched-frequency", labels_file=path)


def test_ambiguous_bare_stem(v2_root, tmp_path, write_jpeg):
    write_jpeg(v2_root / MF / "2" / "aa01.jpeg")  # same stem in classes 0 and 2
    path = tmp_path / "v2.json"
    path.write_text(json.dumps({"aa01": [1]}))
    with pytest.raises(InputError, match=r"bare stem 'aa01' names several images \(0/aa01, 2/aa01\)"):
        build_imagenetv2(v2_root, "matched-frequency", labels_file=path)


def test_layout_errors(tmp_path, v2_root, write_jpeg):
    with pytest.raises(InputError, match="nowhere: no such folder"):
        build_imagenetv2(tmp_path / "nowhere", "matched-frequency")
    with pytest.raises(InputError, match="unknown ImageNetV2 variant 'matched'"):
        build_imagenetv2(v2_root, "matched")
    with pytest.raises(InputError, match=rf"has {MF} but not imagenetv2-top-images-format-val"):
        build_imagenetv2(v2_root, "top-images")
    with pytest.raises(InputError, match=r"another variant's folder"):
        build_imagenetv2(v2_root / MF, "top-images")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"empty: no ImageNetV2 folder; looked for imagenetv2-top-images-format-val"):
        build_imagenetv2(tmp_path / "empty", "top-images")
    write_jpeg(v2_root / MF / "1000" / "z.jpeg")
    with pytest.raises(InputError, match=r"1000: class folder name must be a class number 0..999"):
        build_imagenetv2(v2_root, "matched-frequency")
    write_jpeg(tmp_path / "odd" / MF / "cats" / "z.jpeg")
    with pytest.raises(InputError, match=r"cats: class folder name must be a class number"):
        build_imagenetv2(tmp_path / "odd", "matched-frequency")


def test_cli(v2_root, tmp_path, capsys):
    labels = tmp_path / "v2.csv"
    labels.write_text("0/aa01.jpeg,0 1\n0/aa02.jpeg,0\n2/bb01.jpeg,2 3 4\n10/cc01.jpeg,10\n10/cc02.jpeg,10\n9/gone.jpeg,9\n")
    out = tmp_path / "v2.parquet"
    argv = ["data", "imagenetv2", "--root", str(v2_root), "--variant", "matched-frequency", "--labels", str(labels), "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "imagenet_v2_matched-frequency (imagenet_v2, matched-frequency): 5 samples" in printed
    assert "label counts: 1: 3, 2: 1, 3: 1" in printed
    assert "label-file entries for images not present (ignored): 1" in printed
    m = read_manifest(out)
    assert by_id(m)["2/bb01"]["labels"] == [2, 3, 4]
    assert main(argv[:-2] + ["--out", str(out), "--keep-original", "--skip-bad"]) == 2
    assert "exclusive" in capsys.readouterr().err


# ---- V2 as published: wnid folders, imagenetv2_pytorch's folder, every key form --------------------


def test_wnid_folders_and_the_other_folder_names(tmp_path, write_jpeg):
    from mlreassess.datasets.labels import class_wnid

    for name in ("imagenet-matched-frequency-format-val", "ImageNetV2-matched-frequency"):
        root = tmp_path / name.lower()
        for cls, stems in IMAGES.items():
            folder = class_wnid(cls) if name.startswith("imagenet-") else str(cls)
            for stem in stems:
                write_jpeg(root / name / folder / f"{stem}.jpeg")
        m = build_imagenetv2(root, "matched-frequency")
        rows = by_id(m)
        assert sorted(rows) == sorted(f"{c}/{s}" for c, ss in IMAGES.items() for s in ss)  # ids: class numbers
        assert all(r["label"] == int(sid.split("/")[0]) == r["labels"][0] for sid, r in rows.items())
        if name.startswith("imagenet-"):
            assert rows["10/cc01"]["path"] == f"{class_wnid(10)}/cc01.jpeg"
        assert build_imagenetv2(root / name, "matched-frequency").sample_ids == m.sample_ids
        with pytest.raises(InputError, match="another variant's folder"):
            build_imagenetv2(root / name, "top-images")


def test_wnid_keys_and_a_key_in_the_wrong_class(v2_root, tmp_path):
    from mlreassess.datasets.labels import class_wnid

    path = tmp_path / "v2.json"
    path.write_text(json.dumps({f"{class_wnid(0)}/aa01.jpeg": ["0", "5"], "aa02.jpeg": ["0"], "bb01.jpeg": [],
                                f"x/{MF}/10/cc01.jpeg": [10], "cc02": ["10"]}))
    rows = by_id(build_imagenetv2(v2_root, "matched-frequency", labels_file=path))
    assert rows["0/aa01"]["labels"] == [0, 5] and rows["2/bb01"]["labels"] == [] and rows["10/cc02"]["labels"] == [10]
    path.write_text(json.dumps({"3/aa01.jpeg": [3]}))
    with pytest.raises(InputError, match=r"key '3/aa01.jpeg': the key puts image aa01 in class 3, but it is in class folder 0"):
        build_imagenetv2(v2_root, "matched-frequency", labels_file=path)
    path.write_text(json.dumps({f"{class_wnid(0)[:-1]}x/aa01.jpeg": [3]}))
    with pytest.raises(InputError, match=r"key's folder 'n0144076x' is not a class"):
        build_imagenetv2(v2_root, "matched-frequency", labels_file=path)


def test_a_file_that_names_no_image_here(v2_root, tmp_path):
    path = tmp_path / "v2.json"
    path.write_text(json.dumps({"f4603db3.jpeg": ["370"], "3/abc.jpeg": [3]}))
    with pytest.raises(InputError, match=r"v2.json: none of its 2 keys names an image in .*another ImageNetV2 variant"):
        build_imagenetv2(v2_root, "matched-frequency", labels_file=path)


def test_folder_oddities(tmp_path, write_jpeg):
    write_jpeg(tmp_path / "a" / MF / "7" / "x.jpeg")
    write_jpeg(tmp_path / "a" / MF / "007" / "y.jpeg")
    with pytest.raises(InputError, match=r"class 7 has two folders \((7 and 007|007 and 7)\)"):
        build_imagenetv2(tmp_path / "a", "matched-frequency")
    write_jpeg(tmp_path / "b" / MF / "3" / "x.jpeg")
    write_jpeg(tmp_path / "b" / MF / "n01440764" / "y.jpeg")
    with pytest.raises(InputError, match="mixes numbered and wnid class folders"):
        build_imagenetv2(tmp_path / "b", "matched-frequency")
    write_jpeg(tmp_path / "c" / MF / "٣" / "x.jpeg")  # a digit, but not an ASCII one
    with pytest.raises(InputError, match="class folder name must be a class number 0..999 or a wnid"):
        build_imagenetv2(tmp_path / "c", "matched-frequency")


def test_a_label_file_that_disagrees_with_the_folders_stops_the_build(tmp_path, write_jpeg, capsys):
    for i in range(12):
        write_jpeg(tmp_path / MF / str(i) / f"s{i:02d}.jpeg")
    path = tmp_path / "v2.json"
    path.write_text(json.dumps({f"s{i:02d}.jpeg": [str((i + 1) % 12)] for i in range(12)}))  # each one class off
    argv = ["data", "imagenetv2", "--root", str(tmp_path), "--label-file", str(path), "--out", str(tmp_path / "o.parquet")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{path}: only 0.00% of 12 images have their original label" in err
    assert main([*argv, "--min-agreement", "0"]) == 0
    assert "original label in the label set: 0.00% of 12 images" in capsys.readouterr().out
    assert main([*argv, "--labels", str(tmp_path / "other.json")]) == 2
    assert "give the label file once" in capsys.readouterr().err


@pytest.fixture(scope="module")
def published_v2(tmp_path_factory, v2_refined_labels):
    """The published refined labels, unchanged, beside a V2 tree of one tiny placeholder JPEG per key.

    The file names each image by `<sha1>.jpeg` only; the published tree puts it in
    `imagenetv2-matched-frequency-format-val/<class>/` with class = the index of its wnid among the
    sorted wnids (modestyachts/ImageNetV2 `data/datasets/imagenetv2-b-33.json` lists each sha1's
    wnid; that file is not here). So this fixture assigns the folders: the image's first listed
    label, or a class from its sha1 when its list is empty. The real agreement (89.1%, measured with
    b-33) is in docs/data.md; here every labelled image agrees by construction.
    """
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (2, 2), (90, 90, 90)).save(buf, "JPEG")
    root = tmp_path_factory.mktemp("v2")
    source = v2_refined_labels
    for key, labels in json.loads(source.read_text()).items():
        folder = root / MF / str(int(labels[0]) if labels else int(key[:-5], 16) % 1000)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / key).write_bytes(buf.getvalue())
    return root, source


def test_the_published_refined_labels_load_unchanged_and_give_table1s_v2_row(published_v2, tmp_path, capsys):
    root, source = published_v2
    out = tmp_path / "v2.parquet"
    assert main(["data", "imagenetv2", "--root", str(root), "--label-set", "anzaku-v2", "--label-file", str(source),
                 "--out", str(out)]) == 0
    m = read_manifest(out)
    assert len(m) == 10_000 and m.meta["label_set"] == "anzaku-v2" and m.meta["label_entries_unmatched"] == 0
    empty = [r for r in m.table.to_pylist() if not r["labels"]]
    assert len(empty) == 129 and all(r["label"] is not None for r in empty)  # kept, labels = []: top-1 still counts them
    capsys.readouterr()
    assert main(["report", "table1", "--data", str(out), "--out", str(tmp_path / "t")]) == 0
    row = (tmp_path / "t" / "table1.md").read_text().splitlines()[4]
    assert row == "| imagenet_v2_matched-frequency | 129 | 5,083 | 2,385 | 1,306 | 628 | 237 | 232 | 10,000 |"


def test_agreement_is_over_the_images_the_file_labels(tmp_path, write_jpeg):
    for i in range(12):
        write_jpeg(tmp_path / MF / str(i) / f"s{i:02d}.jpeg")
    path = tmp_path / "v2.json"
    path.write_text(json.dumps({f"s{i:02d}.jpeg": [str(i + 1)] for i in range(10)}))  # 10 images, every one wrong
    with pytest.raises(InputError, match=r"only 0.00% of 10 images"):  # the 2 given [label] do not hide it
        build_imagenetv2(tmp_path, "matched-frequency", labels_file=path, keep_original=True)
    m = build_imagenetv2(tmp_path, "matched-frequency", labels_file=path, keep_original=True, min_agreement=0)
    assert m.meta["label_agreement"]["n"] == 10 and m.meta["kept_original_label"] == 2


def test_images_with_no_label_count_for_top1_only(tmp_path, write_dataset, write_predictions):
    """The paper's convention (docs/metrics.md): an empty label list is out of Table 1, ReaL and ASMA,
    and in top-1 with its folder's label."""
    import pandas as pd

    from mlreassess.metrics.evaluate import evaluate_results

    samples = {"1/a": (1, [1]), "2/b": (2, [2, 3]), "3/c": (3, []), "4/d": (4, [])}
    write_dataset(tmp_path, "v2", "imagenet_v2", samples)
    write_predictions(tmp_path, "v2", "imagenet_v2", "m", {"1/a": [1, 0], "2/b": [3, 2], "3/c": [3, 0], "4/d": [0, 4]})
    evaluate_results(tmp_path, n_boot=10, min_group_n=1)
    m = pd.read_parquet(tmp_path / "metrics.parquet").set_index("metric")
    whole = m[m.label_count.isna()]
    assert (whole.loc["top1", "value_pct"], whole.loc["top1", "n"]) == (50.0, 4)  # 1/a and 3/c right, of all 4
    assert (whole.loc["real", "n"], whole.loc["real_1to5", "n"], whole.loc["asma", "n"]) == (2, 2, 2)
    assert whole.loc["asma", "groups"] == "1,2"
