"""Datasets given as Python objects (`datasets.objects`): a `datasets.Dataset`, a `save_to_disk` folder
(written here with pyarrow as its published layout, and by `datasets` itself where it is installed),
torchvision's own ImageNet and ImageFolder, a plain torch dataset of tensors. Each must become the
manifest its JPEG folder gives (ids, labels, ReaL, pixels), stable for the same content and new for
changed content; every way an object can be wrong is one line."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from test_datasets_formats import IMAGES, hf_name, jpeg_bytes
from test_datasets_imagenet import extract_like_torchvision, make_torchvision_archives, vid

from mlreassess.datasets import labels as lab
from mlreassess.datasets import objects, samples
from mlreassess.datasets.imagenet import build_imagenet_val
from mlreassess.datasets.manifest import read_manifest
from mlreassess.errors import InputError

FEATURES = {"image": {"_type": "Image"}, "label": {"names": None, "_type": "ClassLabel"}}


def flat_folder(root: Path) -> Path:
    """The fixture images as Hugging Face names them (`ILSVRC2012_val_00000001_n01751748.JPEG`)."""
    root.mkdir(parents=True, exist_ok=True)
    for n, c in IMAGES:
        (root / hf_name(n, c)).write_bytes(jpeg_bytes(n))
    return root


def hf_rows(images=IMAGES) -> dict:
    return {"image": [{"bytes": jpeg_bytes(n), "path": hf_name(n, c)} for n, c in images], "label": [c for _, c in images]}


def hf_dataset(images=IMAGES, names=None, rows=None):
    datasets = pytest.importorskip("datasets")
    names = list(lab.hf_class_names()) if names is None else names
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=names)})
    return datasets.Dataset.from_dict(rows or hf_rows(images), features=features)


def save_to_disk_layout(folder: Path, rows: dict, names: list[str]) -> Path:
    """What `Dataset.save_to_disk` writes: an arrow IPC stream (with the `huggingface` schema
    metadata), dataset_info.json with the features, state.json listing the data files."""
    features = {"image": {"_type": "Image"}, "label": {"names": names, "_type": "ClassLabel"}}
    image = pa.StructArray.from_arrays([pa.array([r["bytes"] for r in rows["image"]], pa.binary()),
                                        pa.array([r["path"] for r in rows["image"]], pa.string())], names=["bytes", "path"])
    table = pa.table({"image": image, "label": pa.array(rows["label"], pa.int64())})
    table = table.replace_schema_metadata({"huggingface": json.dumps({"info": {"features": features}})})
    folder.mkdir(parents=True)
    with pa.OSFile(str(folder / "data-00000-of-00001.arrow"), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    (folder / "dataset_info.json").write_text(json.dumps({"citation": "", "description": "", "features": features}))
    (folder / "state.json").write_text(json.dumps({"_data_files": [{"filename": "data-00000-of-00001.arrow"}],
                                                   "_fingerprint": "0123456789abcdef", "_format_columns": None,
                                                   "_format_kwargs": {}, "_format_type": None,
                                                   "_output_all_columns": False, "_split": None}))
    return folder


def columns(path: Path) -> list[dict]:
    return read_manifest(path).table.select(["sample_id", "label", "labels"]).to_pylist()


def pixels(manifest) -> list[np.ndarray]:
    read = samples.reader(manifest)
    return [np.asarray(read.open(i)) for i in range(len(manifest))]


# ---- Hugging Face datasets -------------------------------------------------------------------------


def test_a_datasets_dataset_becomes_its_jpeg_folders_manifest_and_keeps_its_bytes(tmp_path):
    ds = hf_dataset()
    files = build_imagenet_val(flat_folder(tmp_path / "files"))
    path = objects.as_manifest(ds, None, tmp_path / "api_data")
    m = read_manifest(path)
    assert m.name == "imagenet_v1" and path.parent == tmp_path / "api_data" / "imagenet_v1"
    assert columns(path) == files.table.select(["sample_id", "label", "labels"]).to_pylist()
    assert m.meta["label_set"] == "real" == files.meta["label_set"]  # ReaL, timm's copy, as for the folder
    read = samples.reader(m)
    assert [read.read(i) for i in range(len(m))] == [jpeg_bytes(int(s[-8:])) for s in m.sample_ids]  # bytes unchanged
    assert m.meta["given"]["object"] == "datasets.Dataset" and m.meta["given"]["rows"] == len(IMAGES)
    assert "Hugging Face's IMAGENET2012_CLASSES" in m.meta["label_source"]


def test_the_same_content_is_the_same_copy_and_a_change_is_a_new_one(tmp_path):
    base = tmp_path / "api_data"
    first = objects.as_manifest(hf_dataset(), None, base)
    again = objects.as_manifest(hf_dataset(), None, base)
    assert again == first and first.read_bytes() == again.read_bytes()
    rows = hf_rows()
    rows["label"][2] = 8  # its HF name still says class 7: caught where it is, naming the row
    with pytest.raises(InputError, match=r"^data: datasets.Dataset row 2: label 8 but its name .* says n01514668$"):
        objects.as_manifest(hf_dataset(rows=rows), None, base)
    rows = hf_rows()
    rows["image"][0]["bytes"] = jpeg_bytes(77)  # other pixels for one image: only its bytes tell
    changed = objects.as_manifest(hf_dataset(rows=rows), None, base)
    assert changed != first and columns(changed) == columns(first)
    assert read_manifest(changed).meta["shards"] != read_manifest(first).meta["shards"]
    reordered = objects.as_manifest(hf_dataset(list(reversed(IMAGES))), None, base)
    assert reordered not in (first, changed) and columns(reordered) == columns(first)  # another order: another copy
    assert first.is_file() and objects.prune(reordered) == 6  # two older copies: folder, manifest, provenance each
    assert sorted(p.name for p in reordered.parent.iterdir()) == sorted(
        [reordered.name, reordered.stem, f"{reordered.stem}.provenance.json"])


def test_a_dataset_folder_linking_out_of_results_is_refused_and_nothing_is_written_there(tmp_path):
    base, elsewhere = tmp_path / "api_data", tmp_path / "elsewhere"
    elsewhere.mkdir()
    base.mkdir()
    (base / "imagenet_v1").symlink_to(elsewhere)
    with pytest.raises(InputError, match=r"imagenet_v1: a symbolic link to .*elsewhere, outside .*api_data; refusing"):
        objects.as_manifest(hf_dataset(), None, base)
    assert list(elsewhere.iterdir()) == [] and not list(base.glob(".copy-*"))  # nothing there, no staging left


def test_prune_removes_a_link_beside_the_copy_never_its_target(tmp_path):
    manifest = objects.as_manifest(hf_dataset(), None, tmp_path / "api_data")
    target = tmp_path / "mine"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    (manifest.parent / ("0" * 16)).symlink_to(target)  # named like an older copy
    assert objects.prune(manifest) == 1 and (target / "keep.txt").read_text() == "mine"


def test_a_save_to_disk_folder_is_read_with_pyarrow_alone(tmp_path):
    folder = save_to_disk_layout(tmp_path / "saved", hf_rows(), list(lab.hf_class_names()))
    assert objects.is_dataset(folder) and not objects.is_dataset(tmp_path / "m.parquet")
    path = objects.as_manifest(folder, "mini", tmp_path / "api_data")
    files = build_imagenet_val(flat_folder(tmp_path / "files"))
    assert read_manifest(path).name == "mini"
    assert columns(path) == files.table.select(["sample_id", "label", "labels"]).to_pylist()


def test_a_folder_written_by_save_to_disk_is_the_dataset_it_saved(tmp_path):
    ds = hf_dataset()
    ds.save_to_disk(str(tmp_path / "saved"))
    from_object = objects.as_manifest(ds, None, tmp_path / "a")
    from_folder = objects.as_manifest(tmp_path / "saved", None, tmp_path / "b")
    assert from_object.name == from_folder.name  # the same content: the same fingerprint
    assert read_manifest(from_object).table.equals(read_manifest(from_folder).table)


# ---- torch datasets --------------------------------------------------------------------------------


def test_torchvisions_own_imagenet_dataset_is_its_folders_manifest(tmp_path, write_jpeg, monkeypatch):
    from torchvision.datasets import ImageNet

    root = make_torchvision_archives(tmp_path / "tv", write_jpeg)
    extract_like_torchvision(root, monkeypatch)
    ds = ImageNet(str(root), split="val")
    path = objects.as_manifest(ds, None, tmp_path / "api_data")
    folder = build_imagenet_val(root)
    m = read_manifest(path)
    assert columns(path) == folder.table.select(["sample_id", "label", "labels"]).to_pylist()
    assert m.meta["given"]["labels"] == "its classes' wnids"
    assert all(np.array_equal(a, b) for a, b in zip(pixels(m), pixels(folder)))  # PNG: the pixels it yielded


def test_an_image_folder_of_some_classes_maps_its_labels_by_wnid(tmp_path):
    from torchvision.datasets import ImageFolder

    for n, c in IMAGES[:3]:  # classes 65, 970, 7: ImageFolder numbers them 0, 1, 2
        folder = tmp_path / "val" / lab.class_wnid(c)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{vid(n)}.JPEG").write_bytes(jpeg_bytes(n))
    ds = ImageFolder(str(tmp_path / "val"))
    assert sorted(set(ds.targets)) == [0, 1, 2]
    path = objects.as_manifest(ds, None, tmp_path / "api_data")
    assert {r["sample_id"]: r["label"] for r in columns(path)} == {vid(n): c for n, c in IMAGES[:3]}
    from torch.utils.data import Subset

    part = objects.as_manifest(Subset(ds, [2, 0]), "part", tmp_path / "api_data")  # names and classes: its dataset's
    expected = {Path(ds.samples[j][0]).stem: lab.wnid_to_index()[Path(ds.samples[j][0]).parent.name] for j in (2, 0)}
    assert {r["sample_id"]: r["label"] for r in columns(part)} == expected and len(expected) == 2


class Tensors:
    """A torch-style dataset of ToTensor images and labels, with no file names."""

    def __init__(self, arrays: list[np.ndarray], labels: list):
        import torch

        self.items = [(torch.from_numpy(a).permute(2, 0, 1).float() / 255, label) for a, label in zip(arrays, labels)]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def arrays(k: int = 3) -> list[np.ndarray]:
    rng = np.random.default_rng(5)
    return [rng.integers(0, 256, (9 + i, 13, 3), dtype=np.uint8) for i in range(k)]


def test_a_torch_dataset_of_tensors_needs_a_name_and_gets_row_ids_and_its_exact_pixels(tmp_path):
    import torch

    ds = Tensors(arrays(), [torch.tensor(5), 7, np.int64(999)])
    with pytest.raises(InputError, match=r"holds images that are not ImageNet val images: name it, data=\[\('my_set'"):
        objects.as_manifest(ds, None, tmp_path / "api_data")
    path = objects.as_manifest(ds, "tensors", tmp_path / "api_data")
    m = read_manifest(path)
    assert columns(path) == [{"sample_id": f"{i:08d}", "label": c, "labels": [c]} for i, c in enumerate([5, 7, 999])]
    assert all(np.array_equal(a, b) for a, b in zip(pixels(m), arrays()))  # ToTensor's floats back to their bytes


@pytest.mark.parametrize("item, message", [
    ((np.zeros((4, 4, 3), np.float32) - 0.5, 1), r"float pixels outside \[0, 1\] \(normalised\?\): give the images before Normalize"),
    ((np.zeros((4, 4, 4), np.uint8), 1), r"image of shape \(4, 4, 4\), not one RGB or grayscale image"),
    ((np.zeros((4, 4, 3), np.int32), 1), r"pixels of dtype int32"),
    (("a.jpg", 1), r"the image is a str, not a PIL image, tensor or array"),
    ((np.zeros((4, 4, 3), np.uint8), 1000), r"row 0: label 1000 is not a class 0..999"),
    ((np.zeros((4, 4, 3), np.uint8), -1), r"row 0: no label \(null or -1: a test split\?\)"),
    ((np.zeros((4, 4, 3), np.uint8), True), r"label True is not a class index"),
    ((np.zeros((4, 4, 3), np.uint8), "cat"), r"label 'cat' is not a class index"),
    ((np.zeros((4, 4, 3), np.uint8),), r"is a tuple, not \(image, label\)"),
])
def test_a_torch_dataset_item_that_cannot_be_an_image_and_label_is_one_line(tmp_path, item, message):
    class One:
        def __len__(self):
            return 1

        def __getitem__(self, i):
            return item

    with pytest.raises(InputError, match=f"^data: .*One.*{message}"):
        objects.as_manifest(One(), "one", tmp_path / "api_data")
    assert not list((tmp_path / "api_data").glob(".copy-*"))  # the partial copy is gone


def test_objects_that_are_not_one_split_of_images_are_one_line(tmp_path):
    datasets = pytest.importorskip("datasets")
    ds = hf_dataset()
    with pytest.raises(InputError, match=r"a DatasetDict of splits 'validation': give one, e.g. ds\['validation'\]"):
        objects.as_manifest(datasets.DatasetDict({"validation": ds}), None, tmp_path)
    with pytest.raises(InputError, match="streaming datasets.IterableDataset"):
        objects.as_manifest(ds.to_iterable_dataset(), None, tmp_path)
    with pytest.raises(InputError, match=r"no 'label' column \(columns: image\)"):
        objects.as_manifest(ds.remove_columns("label"), None, tmp_path)
    with pytest.raises(InputError, match=r"column 'image' is a Value, not an Image"):
        objects.as_manifest(datasets.Dataset.from_dict({"image": ["a.jpg"], "label": [1]}), None, tmp_path)
    names = list(lab.hf_class_names())
    names[516], names[517] = names[517], names[516]
    with pytest.raises(InputError, match=r"^data: datasets.Dataset: label 516 is 'crane2' here, which is class 517"):
        objects.as_manifest(hf_dataset(names=names), None, tmp_path)
    datasets.DatasetDict({"validation": ds}).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(InputError, match=r"dd: a DatasetDict's folder \(splits validation\); give one split's folder"):
        objects.as_manifest(tmp_path / "dd", None, tmp_path)


def test_an_image_folder_of_other_classes_is_refused(tmp_path):
    from torchvision.datasets import ImageFolder

    for name in ("cats", "dogs"):
        (tmp_path / "f" / name).mkdir(parents=True)
        Image.new("RGB", (4, 4)).save(tmp_path / "f" / name / "a.png")
    with pytest.raises(InputError, match=r"its 2 classes are not wnids, so its labels cannot be mapped"):
        objects.as_manifest(ImageFolder(str(tmp_path / "f")), "pets", tmp_path / "api_data")


def test_encode_is_lossless_for_every_kind_of_image():
    a = arrays(1)[0]
    for image in (Image.fromarray(a), a, a.astype(np.float32) / 255):
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(objects.encode(image, "x")))), a)
    gray = a[:, :, 0]
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(objects.encode(gray, "x")))), gray)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(objects.encode(Image.fromarray(a).convert("CMYK"), "x")))),
                          np.asarray(Image.fromarray(a).convert("CMYK").convert("RGB")))
