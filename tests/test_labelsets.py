"""Label sets by name: each read from a small fixture in its published format, every bad input, the
builds they make (rows, labels, provenance), and the agreement check that stops a wrong file."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import pytest

from mlreassess.cli import main
from mlreassess.constants import LABEL_SETS
from mlreassess.datasets import labelsets
from mlreassess.datasets.imagenet import build_imagenet_val
from mlreassess.datasets.labels import class_wnid
from mlreassess.datasets.labelsets import agreement, anzaku_v2, imagenet_m, real, shankar
from mlreassess.errors import InputError
from mlreassess.options import ImagenetValOptions

N = 50_000
# The fixture's val images: number -> original class (12 images: enough for the agreement check).
IMAGES = {n: (7 * n) % 1000 for n in (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 42)}


def vid(n: int) -> str:
    return f"ILSVRC2012_val_{n:08d}"


def make_kaggle(root: Path, write_jpeg, images: dict[int, int] = IMAGES) -> Path:
    lines = ["ImageId,PredictionString"]
    for n, c in images.items():
        write_jpeg(root / "ILSVRC/Data/CLS-LOC/val" / f"{vid(n)}.JPEG")
        lines.append(f"{vid(n)},{class_wnid(c)} 1 1 5 5")
    (root / "LOC_val_solution.csv").write_text("\n".join(lines) + "\n")
    return root


def write_real(path: Path, labels: dict[int, list]) -> Path:
    path.write_text(json.dumps([labels.get(i + 1, []) for i in range(N)]))
    return path


def shankar_data() -> dict:
    """A human_accuracy_v3.0.0.json in miniature, laid out as published: per val file name the wnids
    marked correct / wrong / unclear (a state absent when empty), problematic images with their
    review record, the ImageNet-M list; plus an ImageNetV2 image of the same study (skipped)."""
    w = class_wnid
    annots = {f"{vid(n)}.JPEG": {"wrong": [w((c + 1) % 1000)], "correct": [w(c)]} for n, c in IMAGES.items()}
    annots[f"{vid(2)}.JPEG"] = {"correct": [w(IMAGES[2]), w(500)], "unclear": [w(501)]}
    annots[f"{vid(3)}.JPEG"] = {"wrong": [w(IMAGES[3])]}  # original label wrong, nothing correct: labels []
    annots[f"{vid(999)}.JPEG"] = {"correct": [w(9)]}  # annotated, but no such image in the fixture tree
    annots["2f1a4d0e9c33aa5d6f4b8e21c7d09e1f55aa0b12"] = {"correct": [w(0)]}  # an ImageNetV2 image
    del annots[f"{vid(11)}.JPEG"]  # image 11 is not annotated: no row
    record = {"reason": "wnid is marked wrong", "reviewer": "x", "time_marked": "2019-03-28T21:19:20+00:00"}
    return {"initial_annots": annots, "problematic_images": {f"{vid(4)}.JPEG": record},
            "imagenet_m": [f"{vid(2)}.JPEG", f"{vid(3)}.JPEG", f"{vid(5)}.JPEG"]}


@pytest.fixture
def shankar_file(tmp_path) -> Path:
    path = tmp_path / "human_accuracy_v3.0.0.json"
    path.write_text(json.dumps(shankar_data(), indent=2))
    return path


def by_id(manifest) -> dict[str, dict]:
    return {r["sample_id"]: r for r in manifest.table.to_pylist()}


# ---- the registry ------------------------------------------------------------------------------


def test_registry_lists_every_set_of_constants():
    sets = labelsets.label_sets()
    assert {n: s.kind for n, s in sets.items()} == {n: kind for n, (kind, _) in LABEL_SETS.items()}
    assert list(sets) == sorted(sets)
    assert sets["shankar"].per_class and not sets["real"].per_class
    with pytest.raises(InputError, match=r"--label-set anzaku-v2: not a label set for an ImageNet V1 build "
                                         r"\(choose from imagenet-m, real, shankar\)"):
        labelsets.get("anzaku-v2", "imagenet_v1")


# ---- each set in its published format ----------------------------------------------------------


def test_real_reads_the_published_list(tmp_path):
    labels = real.read(write_real(tmp_path / "real.json", {1: [5, 3], 42: [0, 999, 0], 50_000: ["12"]}))
    assert labels.labels[1] == (3, 5) and labels.labels[42] == (0, 999) and labels.labels[2] == ()
    assert labels.labels[50_000] == (12,) and labels.positional and not labels.subset
    assert len(labels.labels) == N


def test_shankar_reads_the_published_json(shankar_file):
    labels = shankar.read(shankar_file)
    assert labels.subset and not labels.positional and labels.other_entries == 1
    assert labels.labels[1] == (IMAGES[1],)  # correct only; wrong is no label
    assert labels.labels[2] == tuple(sorted({IMAGES[2], 500, 501}))  # correct and unclear
    assert labels.labels[3] == ()
    assert 4 not in labels.labels and labels.left_out == {4: "problematic (wnid is marked wrong)"}
    assert labels.lookup(4) == "problematic (wnid is marked wrong)"
    assert labels.lookup(11) == "not labelled by this label set"


def test_imagenet_m_reads_its_slice(shankar_file):
    labels = imagenet_m.read(shankar_file)
    assert sorted(labels.labels) == [2, 3, 5] and labels.subset
    assert labels.labels[2] == tuple(sorted({IMAGES[2], 500, 501})) and labels.labels[3] == ()


def test_anzaku_reads_the_published_json_and_csv(tmp_path):
    path = tmp_path / "imagenetv2_refined_labels.json"
    path.write_text(json.dumps({"f4603db3.jpeg": ["370"], "3e7c39f1.jpeg": ["356", "359"], "0abf52d0.jpeg": []}))
    assert [(k, ls) for k, ls, _ in anzaku_v2.read(path)] == [
        ("f4603db3.jpeg", (370,)), ("3e7c39f1.jpeg", (356, 359)), ("0abf52d0.jpeg", ())]
    csv_path = tmp_path / "v2.csv"
    csv_path.write_text("path,labels\n3/f4603db3.jpeg,370 1\nn01440764/abc.jpeg,\n")
    assert [(k, ls) for k, ls, _ in anzaku_v2.read(csv_path)] == [("3/f4603db3.jpeg", (1, 370)), ("n01440764/abc.jpeg", ())]


# ---- bad input: one line naming the file and the problem ----------------------------------------

NAN = '{"a.jpeg": [NaN]}'
BAD_V2 = [
    ("", r"empty file"),
    ("   \n", r"empty file"),
    ('{"a.jpeg": ["1"], "a.jpeg": ["2"]}', r"key 'a.jpeg' appears twice"),
    (NAN, r"not a label file \(NaN is not a label"),
    ('{"a.jpeg": [Infinity]}', r"Infinity is not a label"),
    ('{"a.jpeg": "5"}', r"key 'a.jpeg': labels must be a list of class indices, got '5'"),
    ('{"a.jpeg": [3.0]}', r"label 3.0 is not a class index"),
    ('{"a.jpeg": [true]}', r"label True is not a class index"),
    ('{"a.jpeg": ["١٢"]}', r"label '١٢' is not a class index"),  # Arabic-Indic digits are not ASCII integers
    ('{"a.jpeg": [" 5"]}', r"label ' 5' is not a class index"),
    ('{"a.jpeg": ["1000"]}', r"label 1000 out of range 0..999"),
    ('{"a.jpeg": [-1]}', r"label -1 out of range 0..999"),
    ('{"a.jpeg": ["99999999999999999999"]}', r"is not a class index"),
    ('["a.jpeg"]', r"expected a JSON object \{key: \[labels\]\}, got a JSON list"),
    ("{}", r"no entries"),
    ('{"": [1]}', r"empty key"),
    ("[" * 100_000, r"not (valid JSON|a label file)"),
]


@pytest.mark.parametrize("text, message", BAD_V2)
def test_bad_v2_label_files(tmp_path, text, message):
    path = tmp_path / "labels.json"
    path.write_text(text)
    with pytest.raises(InputError, match=f"^{path}: .*{message}"):
        anzaku_v2.read(path)


def test_non_utf8_files_are_refused(tmp_path):
    for name, reader in (("v2.json", anzaku_v2.read), ("v2.csv", anzaku_v2.read), ("h.json", shankar.read),
                         ("real.json", real.read)):
        path = tmp_path / name
        path.write_bytes(b'{"a.jpeg": ["1"], "\xff\xfe": []}' if name.endswith("json") else b"a.jpeg,1\n\xe9.jpeg,2\n")
        with pytest.raises(InputError, match=rf"^{path}: not UTF-8 text \(byte 0x[0-9a-f]{{2}} at offset \d+\)"):
            reader(path)


@pytest.mark.parametrize("labels, message", [
    ({1: [1000]}, r"entry 0 \(ILSVRC2012_val_00000001\): label 1000 out of range"),
    ({2: ["x"]}, r"entry 1 \(ILSVRC2012_val_00000002\): label 'x' is not a class index"),
    ({3: 5}, r"entry 2 \(ILSVRC2012_val_00000003\): labels must be a list"),
])
def test_bad_real_files(tmp_path, labels, message):
    with pytest.raises(InputError, match=message):
        real.read(write_real(tmp_path / "real.json", labels))
    short = tmp_path / "short.json"
    short.write_text(json.dumps([[1]] * 49_999))
    with pytest.raises(InputError, match=r"expected a JSON list of 50,000 label lists \(ReaL format\), got a list of 49,999"):
        real.read(short)


def _shankar_with(change) -> dict:
    data = shankar_data()
    change(data)
    return data


BAD_SHANKAR = [
    (lambda d: d.pop("imagenet_m"), r"not Shankar et al.'s human_accuracy JSON .*: missing imagenet_m"),
    (lambda d: d["initial_annots"][f"{vid(1)}.JPEG"].update(maybe=["n01440764"]), r"unknown annotation state 'maybe'"),
    (lambda d: d["initial_annots"][f"{vid(1)}.JPEG"].update(correct="n01440764"), r"'correct' must be a list of wnids"),
    (lambda d: d["initial_annots"][f"{vid(1)}.JPEG"].update(correct=[7]), r"'correct' must be a list of wnids"),
    (lambda d: d["initial_annots"].update({f"{vid(1)}.JPEG": []}), r"expected an object of correct, wrong, unclear"),
    (lambda d: d["initial_annots"][f"{vid(1)}.JPEG"].update(correct=["n00000000"]), r"unknown wnid 'n00000000'"),
    (lambda d: d["initial_annots"][f"{vid(1)}.JPEG"].update(unclear=[class_wnid(IMAGES[1] + 1)]),
     r"is both 'wrong' and 'unclear'"),
    (lambda d: d["initial_annots"].update({"ILSVRC2012_val_1.JPEG": {}}), r"'ILSVRC2012_val_1.JPEG' is not a val file name"),
    (lambda d: d["initial_annots"].update({f"{vid(50_001)}.JPEG": {}}), r"is not a val file name"),
    (lambda d: d.update(initial_annots={"abc": {"correct": []}}), r"'initial_annots' names no ILSVRC-2012 val image"),
    (lambda d: d.update(initial_annots=[]), r"'initial_annots' must be a non-empty object"),
    (lambda d: d.update(problematic_images="x"), r"'problematic_images' must be an object or a list"),
    (lambda d: d.update(problematic_images=["nope.jpg"]), r"problematic_images: 'nope.jpg' is not a val file name"),
    (lambda d: d["imagenet_m"].append(f"{vid(2)}.JPEG"), r"imagenet_m: ILSVRC2012_val_00000002.JPEG listed twice"),
    (lambda d: d["imagenet_m"].append(f"{vid(11)}.JPEG"), r"ILSVRC2012_val_00000011.JPEG has no initial_annots entry"),
    (lambda d: d.update(imagenet_m={}), r"'imagenet_m' must be a list"),
]


def test_shankar_keys_beyond_the_three_are_noted_not_refused(tmp_path, caplog):
    path = tmp_path / "human_accuracy_v3.0.0.json"
    path.write_text(json.dumps({**shankar_data(), "version": "3.0.0", "notes": {"x": 1}}))
    with caplog.at_level(logging.INFO, logger="mlreassess"):
        labels = shankar.read(path)
    assert labels.labels == shankar.read(_write(tmp_path / "plain.json", shankar_data())).labels
    assert f"{path}: not read: its keys 'notes', 'version' (the labels come from initial_annots" in caplog.text
    path.write_text(json.dumps({k: v for k, v in shankar_data().items() if k != "problematic_images"} | {"v": 1}))
    with pytest.raises(InputError, match=r"missing problematic_images"):
        shankar.read(path)


def _write(path: Path, data) -> Path:
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("change, message", BAD_SHANKAR)
def test_bad_shankar_files(tmp_path, change, message):
    path = tmp_path / "human_accuracy_v3.0.0.json"
    path.write_text(json.dumps(_shankar_with(change)))
    for reader in (shankar.read, imagenet_m.read):
        with pytest.raises(InputError, match=f"^{path}: .*{message}"):
            reader(path)


def test_shankar_duplicate_keys_nan_and_empty(tmp_path):
    path = tmp_path / "h.json"
    for text, message in (("", "empty file"), ('{"initial_annots": {}, "initial_annots": {}}', "appears twice"),
                          ('{"initial_annots": NaN}', "NaN is not a label"), ("[1, 2]", "got a JSON list")):
        path.write_text(text)
        with pytest.raises(InputError, match=message):
            shankar.read(path)


# ---- builds --------------------------------------------------------------------------------------


def test_shankar_build_keeps_annotated_images_minus_problematic(tmp_path, write_jpeg, shankar_file):
    root = make_kaggle(tmp_path / "val", write_jpeg)
    m = build_imagenet_val(root, label_set="shankar", label_file=shankar_file)
    rows = by_id(m)
    # 12 images: 11 is not annotated, 4 is problematic; the annotated image 999 is not in the tree
    assert sorted(rows) == [vid(n) for n in sorted(IMAGES) if n not in (4, 11)]
    assert rows[vid(2)]["labels"] == sorted({IMAGES[2], 500, 501}) and rows[vid(2)]["label"] == IMAGES[2]
    assert rows[vid(3)]["labels"] == [] and rows[vid(3)]["label_count"] == 0
    meta = m.meta
    assert meta["dataset"] == "imagenet_v1_shankar" and meta["label_set"] == "shankar"
    assert meta["label_sha256"] == hashlib.sha256(shankar_file.read_bytes()).hexdigest()
    assert meta["label_file"] == str(shankar_file.resolve()) and meta["per_class_metric"] is True
    assert meta["label_set_left_out"] == {"not labelled by this label set": 1, "problematic (wnid is marked wrong)": 1}
    assert meta["label_entries_other_images"] == 1
    assert meta["label_agreement"]["pct"] == 100.0 and meta["label_agreement"]["no_label"] == 1


def test_imagenet_m_build_is_its_own_dataset(tmp_path, write_jpeg, shankar_file):
    m = build_imagenet_val(make_kaggle(tmp_path / "val", write_jpeg), label_set="imagenet-m", label_file=shankar_file)
    assert m.sample_ids == [vid(2), vid(3), vid(5)] and m.meta["dataset"] == "imagenet_m"
    assert m.meta["label_set"] == "imagenet-m" and m.meta["per_class_metric"] is False


def test_a_set_that_names_none_of_the_images(tmp_path, write_jpeg, shankar_file):
    root = make_kaggle(tmp_path / "val", write_jpeg, {11: 5, 12: 6})
    with pytest.raises(InputError, match=r"no usable ImageNet val images found \(2 not labelled by this label set\)"):
        build_imagenet_val(root, label_set="shankar", label_file=shankar_file)


def test_cli_label_set_flags(tmp_path, write_jpeg, shankar_file, capsys):
    root = make_kaggle(tmp_path / "val", write_jpeg)
    out = tmp_path / "s.parquet"
    assert main(["data", "imagenet-val", "--root", str(root), "--label-set", "shankar", "--label-file",
                 str(shankar_file), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "label set shankar: " in printed and "original label in the label set: 100.00% of 9 images" in printed
    assert "left out, problematic (wnid is marked wrong): 1" in printed
    for argv, message in (
        (["--label-set", "shankar"], "--label-set shankar needs --label-file: human_accuracy_v3.0.0.json"),
        (["--label-set", "shankar", "--real", str(shankar_file)], "--real is the ReaL labels file; with --label-set shankar"),
        (["--real", str(shankar_file), "--label-file", str(root / "LOC_val_solution.csv")], "give the label file once"),
    ):
        assert main(["data", "imagenet-val", "--root", str(root), "--out", str(out), *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err


def test_options_name_their_default_dataset(tmp_path):
    assert ImagenetValOptions(root=str(tmp_path)).dataset == "imagenet_v1"
    assert ImagenetValOptions(root=str(tmp_path), label_set="shankar").dataset == "imagenet_v1_shankar"
    assert ImagenetValOptions(root=str(tmp_path), label_set="imagenet-m", name="m68").dataset == "m68"


# ---- agreement with the original labels ---------------------------------------------------------


def test_agreement_measure_and_describe():
    a = agreement.measure([1, 2, 3, 4, None, 5, 6], [(1,), (1, 2), (9,), (), (7,), tuple(range(6)), (0, 6, 7, 8, 9, 10, 11)])
    assert a == {"pct": 80.0, "n": 5, "agree": 4, "by_count": {"1": [1, 2], "2": [1, 1], ">5": [2, 2]}, "no_label": 1}
    assert agreement.describe(a) == "80.00% of 5 images (1 label: 50.0% of 2; 2: 100.0% of 1; >5: 100.0% of 2); 1 with no label"
    agreement.check(agreement.measure([1] * 9, [(2,)] * 9), "f.json", 50.0)  # 9 images: too few to judge
    with pytest.raises(InputError, match=r"^f.json: only 0.00% of 10 images have their original label"):
        agreement.check(agreement.measure([1] * 10, [(2,)] * 10), "f.json", 50.0)
    agreement.check(agreement.measure([1] * 10, [(2,)] * 10), "f.json", 0.0)  # --min-agreement 0


def test_a_shifted_real_file_stops_the_build_with_one_line(tmp_path, write_jpeg, capsys):
    root = make_kaggle(tmp_path / "val", write_jpeg)
    good = write_real(tmp_path / "real.json", {n: [c] for n, c in IMAGES.items()})
    shifted = write_real(tmp_path / "shifted.json", {n + 1: [c] for n, c in IMAGES.items()})
    out = tmp_path / "v1.parquet"
    assert main(["data", "imagenet-val", "--root", str(root), "--real", str(good), "--out", str(out)]) == 0
    assert "original label in the label set: 100.00% of 12 images" in capsys.readouterr().out
    assert main(["data", "imagenet-val", "--root", str(root), "--real", str(shifted), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"mlreassess: error: {shifted}: only 0.00% of 10 images")
    assert "read one entry later, it agrees for 100.0%: this file is shifted by one image" in err
    assert main(["data", "imagenet-val", "--root", str(root), "--real", str(shifted), "--min-agreement", "0",
                 "--out", str(out)]) == 0


def test_the_real_mini_set_agrees_and_its_shifted_file_stops(mini_root, tmp_path, capsys):
    lists = json.loads((mini_root / "real.json").read_text())
    m = build_imagenet_val(mini_root, real=mini_root / "real.json")
    assert m.meta["label_agreement"]["pct"] > 90 and m.meta["label_agreement"]["no_label"] == 57
    for name, shifted in (("later.json", [[]] + lists[:-1]), ("earlier.json", lists[1:] + [[]])):
        path = tmp_path / name
        path.write_text(json.dumps(shifted))
        with pytest.raises(InputError, match=rf"^{path}: only 0\.\d\d% of 1,2\d\d images .*this file is shifted by one image"):
            build_imagenet_val(mini_root, real=path)


def test_v2_label_set_without_a_file_is_an_error(tmp_path):
    from mlreassess.options import ImagenetV2Options

    with pytest.raises(InputError, match=r"--label-set anzaku-v2 needs --label-file"):
        ImagenetV2Options(root=str(tmp_path), label_set="anzaku-v2")
    assert ImagenetV2Options(root=str(tmp_path)).label_set is None  # no file: labels = [label]


def test_study_config_takes_the_label_set_keys(tmp_path, shankar_file):
    import yaml

    from mlreassess.config import load_config

    (tmp_path / "val").mkdir()
    cfg = {"out": "o", "models": ["resnet18"], "datasets": {"imagenet_v1": {
        "root": "val", "label_set": "shankar", "label_file": shankar_file.name, "min_agreement": 80}}}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(cfg))
    v1 = load_config(path).v1
    assert (v1.label_set, Path(v1.label_file), v1.min_agreement, v1.dataset) == (
        "shankar", shankar_file, 80.0, "imagenet_v1_shankar")
    cfg["datasets"]["imagenet_v1"]["label_set"] = "nope"
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(InputError, match=r"study.yaml: datasets.imagenet_v1.label_set: 'nope' is not one of real, shankar, imagenet-m"):
        load_config(path)


def test_the_report_does_not_take_a_shankar_set_for_the_papers_v1(tmp_path, write_dataset, write_predictions, shankar_file):
    from mlreassess.metrics.evaluate import evaluate_results
    from mlreassess.report.inputs import ReportInputs

    samples = {"s1": (1, [1]), "s2": (2, [2])}
    write_dataset(tmp_path, "imagenet_m", "imagenet_v1", samples, label_set="imagenet-m")
    write_dataset(tmp_path, "imagenet_v1_mini", "imagenet_v1", samples, label_set="real")
    for name in ("imagenet_m", "imagenet_v1_mini"):
        write_predictions(tmp_path, name, "imagenet_v1", "m", {"s1": [1, 0], "s2": [2, 0]})
    evaluate_results(tmp_path, n_boot=10)
    assert ReportInputs(tmp_path).v1_name == "imagenet_v1_mini"  # though "imagenet_m" sorts first
    assert ReportInputs(tmp_path, v1="imagenet_m").v1_name == "imagenet_m"
