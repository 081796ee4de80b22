"""Datasets given as Python objects (the Python API's `data=`): a Hugging Face `datasets.Dataset` with
`image` and `label` columns, a folder its `save_to_disk` wrote, or a torch `Dataset` whose items are
(image, label) with the image a PIL image, a uint8 tensor / array or a float one in [0, 1].

Each becomes a manifest like any other, so everything downstream (the sweep's readers, ReaL, reruns)
is the one tested path: its samples are copied once, in order, into Hugging Face parquet shards
(`formats.parquet`: the encoded bytes unchanged where the dataset holds them, PNG where it yields
pixels, lossless either way), in a folder named by the sha256 of what was copied, and that folder
is built as an ImageNet val copy (`imagenet.build_imagenet_val`). The same data gives the same
folder and a byte-identical manifest (a rerun skips); any change to an image, a label or the order
gives another (its predictions are redone). Sample ids: the val image's stem where a sample's file
name is an ImageNet val name (the HF copy's `image.path`, a torchvision dataset's `samples`), else
its row number (`00000042`); ReaL labels when every sample is a val image.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any, Callable, Iterator

import numpy as np
import pyarrow as pa
from PIL import Image

from mlreassess.constants import NUM_CLASSES
from mlreassess.datasets import labels as lab
from mlreassess.datasets.formats import parquet
from mlreassess.datasets.formats.base import WNID, val_name
from mlreassess.datasets.imagenet import DEFAULT_NAME, build_imagenet_val
from mlreassess.datasets.manifest import write_manifest
from mlreassess.errors import InputError, short_repr
from mlreassess.locks import folder_lock
from mlreassess.results import check_name, inside

SHARD_ROWS = 1000  # images per shard (~130 MB of ImageNet JPEGs): what one shard's writing holds in memory
ROW_GROUP = 100  # as `datasets` writes image datasets
BATCH = 256  # rows read at a time from an arrow table
COPY_VERSION = "1"  # part of the fingerprint: a change to how samples are copied makes new copies
_COPY = re.compile(r"[0-9a-f]{16}")
_PNG, _JPEG = b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff"

Row = tuple[bytes, "str | None", "int | None"]  # (encoded image, its file name, label)


@dataclass
class Source:
    """A dataset object as rows: what it is (for messages), its length, its ClassLabel names (None:
    labels are class indices already), how its labels were read, and the rows themselves."""

    what: str
    n: int
    names: list[str] | None
    labels: str
    rows: Callable[[], Iterator[Row]]


def is_dataset(obj: Any) -> bool:
    """Whether `obj` is a dataset object (or a `save_to_disk` folder) rather than a manifest path."""
    if isinstance(obj, (str, os.PathLike)):
        folder = Path(obj)
        return folder.is_dir() and any((folder / f).is_file() for f in ("state.json", "dataset_dict.json"))
    plain = (list, tuple, dict, set, bytes, np.ndarray)  # containers, not datasets
    return _is_hf(obj) or (hasattr(obj, "__getitem__") and hasattr(obj, "__len__") and not isinstance(obj, plain))


def _is_hf(obj: Any) -> bool:
    return type(obj).__module__.split(".")[0] == "datasets"


def source_of(obj: Any) -> Source:
    """The rows of a dataset object; one InputError line for an object that cannot be one."""
    if isinstance(obj, (str, os.PathLike)):
        return _saved(Path(obj))
    kind = type(obj).__name__
    if _is_hf(obj) and kind in ("DatasetDict", "IterableDatasetDict"):
        raise InputError(f"data: a {kind} of splits {', '.join(map(repr, obj))}: give one, e.g. ds['validation']")
    if _is_hf(obj) and kind == "IterableDataset":
        raise InputError("data: a streaming datasets.IterableDataset has no length or order to copy; load it "
                         "without streaming=True")
    if _is_hf(obj):
        return _hf_dataset(obj)
    return _torch_dataset(obj)


# --- Hugging Face datasets -------------------------------------------------------------------------


def _features_problem(features: dict) -> str | None:
    """Why `datasets` features (as JSON: `{"_type": ...}` per column) are not an image classification set."""
    missing = [c for c in (parquet.IMAGE, parquet.LABEL) if c not in features]
    if missing:
        return f"no {' or '.join(map(repr, missing))} column (columns: {', '.join(features)})"
    if features[parquet.IMAGE].get("_type") != "Image":
        return f"column 'image' is a {features[parquet.IMAGE].get('_type')}, not an Image"
    return None


def _hf_dataset(ds: Any) -> Source:
    features = ds.features.to_dict()
    problem = _features_problem(features)
    if problem:
        raise InputError(f"data: datasets.Dataset: {problem}")
    names = features[parquet.LABEL].get("names")
    columns = ds.select_columns([parquet.IMAGE, parquet.LABEL]).with_format("arrow")  # the stored bytes, undecoded
    return Source("datasets.Dataset", len(ds), names, _labels_of(names),
                  lambda: _table_rows(batch for batch in columns.iter(batch_size=BATCH)))


def _saved(folder: Path) -> Source:
    """A `save_to_disk` folder, read with pyarrow alone: state.json lists its arrow files (IPC
    streams), dataset_info.json its features."""
    if (folder / "dataset_dict.json").is_file():
        splits = sorted(p.name for p in folder.iterdir() if (p / "state.json").is_file())
        raise InputError(f"{folder}: a DatasetDict's folder (splits {', '.join(splits)}); give one split's folder")
    try:
        state = json.loads((folder / "state.json").read_text())
        features = json.loads((folder / "dataset_info.json").read_text())["features"]
        files = [folder / entry["filename"] for entry in state["_data_files"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{folder}: not a folder datasets' save_to_disk wrote ({type(exc).__name__}: {exc})") from None
    if state.get("_indices_data_files"):
        raise InputError(f"{folder}: saved with an indices mapping; save ds.flatten_indices() instead")
    problem = _features_problem(features)
    if problem:
        raise InputError(f"{folder}: {problem}")
    names = features[parquet.LABEL].get("names")
    n = sum(_stream(f).num_rows for f in files)
    return Source(f"{folder}", n, names, _labels_of(names), lambda: _table_rows(
        batch for f in files for batch in _stream(f).select([parquet.IMAGE, parquet.LABEL]).to_batches(BATCH)))


def _stream(path: Path) -> pa.Table:
    try:
        return pa.ipc.open_stream(pa.memory_map(str(path))).read_all()  # memory-mapped: nothing is read yet
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"{path}: not a readable arrow file ({exc})") from None


def _table_rows(batches: Iterator[Any]) -> Iterator[Row]:
    """Rows of arrow batches of an Image column (bytes, path; bytes null: the image is the file at
    path) and a label column."""
    for batch in batches:
        image = batch.column(parquet.IMAGE)
        image = image.combine_chunks() if isinstance(image, pa.ChunkedArray) else image
        for data, path, label in zip(image.field("bytes").to_pylist(), image.field("path").to_pylist(),
                                     batch.column(parquet.LABEL).to_pylist()):
            if data is None and path is not None and Path(path).is_file():
                data = Path(path).read_bytes()
            yield data, PurePath(path).name if path else None, label


def _labels_of(names: list[str] | None) -> str:
    return "its ClassLabel names, checked against the standard classes" if names else "class indices as given"


# --- torch datasets --------------------------------------------------------------------------------


def _torch_dataset(ds: Any) -> Source:
    what = f"{type(ds).__module__}.{type(ds).__qualname__}"
    try:
        n = len(ds)
    except TypeError:
        raise InputError(f"data: a {what} has no length (an IterableDataset?): give a map-style dataset") from None
    inner, indices = (ds.dataset, list(ds.indices)) if hasattr(ds, "dataset") and hasattr(ds, "indices") else (ds, None)
    samples = getattr(inner, "samples", None) or getattr(inner, "imgs", None)  # torch's Subset: its dataset's
    if isinstance(samples, list) and indices is not None:
        samples = [samples[j] for j in indices]
    files = [str(s[0]) for s in samples] if isinstance(samples, list) and len(samples) == n else None
    remap, names, how = _class_map(inner, what)

    def rows() -> Iterator[Row]:
        for i in range(n):
            image, label = _pair(ds[i], f"{what}[{i}]")
            label = _label(label, f"{what}[{i}]")
            if remap is not None and label is not None:
                label = _remapped(remap, label, f"{what}[{i}]")
            yield encode(image, f"{what}[{i}]"), (PurePath(files[i]).name if files else None), label

    return Source(what, n, names, how, rows)


def _class_map(ds: Any, what: str) -> tuple[list[int] | None, list[str] | None, str]:
    """(its class i -> ImageNet class, ClassLabel-like names to check, how labels were read). wnids
    (`wnids`, or `classes` of an ImageFolder of wnid folders) are mapped by name: an ImageFolder
    numbers only the folders it finds."""
    wnids = getattr(ds, "wnids", None) or getattr(ds, "classes", None)
    if not wnids:
        return None, None, "class indices as given (the sorted-wnid order)"
    if all(isinstance(w, str) and WNID.fullmatch(w) for w in wnids):
        return [lab.class_index(w, f"{what}: classes") for w in wnids], None, "its classes' wnids"
    names = [", ".join(c) if isinstance(c, (tuple, list)) else str(c) for c in wnids]
    if len(names) != NUM_CLASSES:
        raise InputError(f"data: {what}: its {len(names)} classes are not wnids, so its labels cannot be mapped to "
                         f"ImageNet-1k's {NUM_CLASSES} classes (first: {short_repr(names[0])})")
    return None, names, "its class names, checked against the standard classes"


def _remapped(remap: list[int], label: int, where: str) -> int:
    if not 0 <= label < len(remap):
        raise InputError(f"data: {where}: label {label} is not one of its {len(remap)} classes")
    return remap[label]


def _pair(item: Any, where: str) -> tuple[Any, Any]:
    if isinstance(item, dict) and parquet.IMAGE in item and parquet.LABEL in item:
        return item[parquet.IMAGE], item[parquet.LABEL]
    if isinstance(item, (tuple, list)) and len(item) == 2:
        return item[0], item[1]
    raise InputError(f"data: {where} is a {type(item).__name__}, not (image, label)")


def _label(value: Any, where: str) -> int | None:
    value = value.item() if hasattr(value, "item") and getattr(value, "ndim", 0) == 0 else value
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise InputError(f"data: {where}: label {short_repr(value)} is not a class index")
    return int(value) if value >= 0 else None


def encode(image: Any, where: str) -> bytes:
    """A yielded image as lossless PNG bytes: a PIL image, a torch tensor (C, H, W) or a numpy array
    (H, W, C) or (H, W), uint8, or float in [0, 1] (ToTensor's, rounded back to its bytes)."""
    if not isinstance(image, Image.Image):
        image = Image.fromarray(_pixels(image, where))
    if image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    buf = io.BytesIO()
    image.save(buf, "PNG", compress_level=1)  # fast, and lossless at any level
    return buf.getvalue()


def _pixels(image: Any, where: str) -> np.ndarray:
    torch_tensor = hasattr(image, "detach")
    if not torch_tensor and not isinstance(image, np.ndarray):
        raise InputError(f"data: {where}: the image is a {type(image).__name__}, not a PIL image, tensor or array")
    array = np.asarray(image.detach().cpu()) if torch_tensor else image
    if torch_tensor and array.ndim == 3:
        array = array.transpose(1, 2, 0)  # torch's (C, H, W) -> (H, W, C)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] != 3):
        raise InputError(f"data: {where}: image of shape {tuple(np.shape(image))}, not one RGB or grayscale image")
    if np.issubdtype(array.dtype, np.floating):
        if not (np.isfinite(array).all() and array.min() >= 0 and array.max() <= 1):
            raise InputError(f"data: {where}: float pixels outside [0, 1] (normalised?): give the images before "
                             "Normalize; mlreassess normalises them per model")
        array = np.rint(array * 255)
    elif array.dtype != np.uint8:
        raise InputError(f"data: {where}: pixels of dtype {array.dtype}, not uint8 or float in [0, 1]")
    return np.ascontiguousarray(array.astype(np.uint8))


# --- the copy -------------------------------------------------------------------------------------


def _checked(rows: Iterator[Row], source: Source) -> Iterator[tuple[bytes, str, int]]:
    """Each row with the file name its copy gets (its own when it is a val image's, else its row
    number), checked here, where the message can name the dataset's row rather than the copy's."""
    for i, (data, name, label) in enumerate(rows):
        where = f"data: {source.what} row {i}"
        if i >= source.n:
            raise InputError(f"{where}: more rows than its length {source.n}")
        if not data:
            raise InputError(f"{where}: no image bytes" + (f" (and {name!r} is not a file here)" if name else ""))
        if label is None:
            raise InputError(f"{where}: no label (null or -1: a test split?)")
        if not 0 <= label < NUM_CLASSES:
            raise InputError(f"{where}: label {label} is not a class 0..{NUM_CLASSES - 1}")
        vn = val_name(name)
        if vn is not None and vn.wnid is not None and lab.wnid_to_index().get(vn.wnid) != label:
            raise InputError(f"{where}: label {label} but its name {name} says {vn.wnid}")
        suffix = ".png" if data.startswith(_PNG) else ".JPEG" if data.startswith(_JPEG) else ".img"
        yield data, (name if vn is not None else f"{i:08d}{suffix}"), label


def _write(source: Source, folder: Path) -> tuple[str, bool]:
    """The rows as shards under `folder/data/`; (sha256 of what was written, whether every row is a
    val image)."""
    digest = hashlib.sha256(json.dumps([COPY_VERSION, source.names]).encode())
    shards = max(1, -(-source.n // SHARD_ROWS))
    part, k, count, all_val = [], 0, 0, True
    for data, name, label in _checked(source.rows(), source):
        digest.update(f"{name}\0{label}\0{hashlib.sha256(data).hexdigest()}\n".encode())
        all_val &= val_name(name) is not None
        part.append((data, name, label))
        count += 1
        if len(part) == SHARD_ROWS:
            parquet.write_shard(folder / "data" / f"validation-{k:05d}-of-{shards:05d}.parquet", part, source.names, ROW_GROUP)
            part, k = [], k + 1
    if count != source.n or count == 0:
        raise InputError(f"data: {source.what}: {count} rows, but its length is {source.n}")
    if part:
        parquet.write_shard(folder / "data" / f"validation-{k:05d}-of-{shards:05d}.parquet", part, source.names, ROW_GROUP)
    return digest.hexdigest(), all_val


def as_manifest(obj: Any, name: str | None, base: Path) -> Path:
    """The manifest of a dataset object, its copy kept under `base/<name>/<sha256[:16]>/` (the
    manifest beside it: `<sha256[:16]>.parquet`). `name`: the dataset's name in the outputs
    (default `imagenet_v1` for ImageNet val images; other images need one). Older copies stay until
    `prune(manifest)`. `base/<name>` must resolve inside `base` (RESULTS is a boundary: a link
    leading out is one line, before anything is written)."""
    source = source_of(obj)
    if name is not None:
        check_name(name)
    if source.n == 0:
        raise InputError(f"data: {source.what} is empty")
    problem = parquet.class_order_problem(source.names) if source.names is not None else None
    if problem:
        raise InputError(f"data: {source.what}: {problem}")
    base.mkdir(parents=True, exist_ok=True)
    with folder_lock(base):
        staging = Path(tempfile.mkdtemp(prefix=".copy-", dir=base))
        try:
            digest, all_val = _write(source, staging)
            if name is None and not all_val:
                raise InputError(f"data: {source.what} holds images that are not ImageNet val images: name it, "
                                 "data=[('my_set', dataset)]")
            name = check_name(name or DEFAULT_NAME)
            return _kept(source, staging, inside(base, base / name), digest, all_val, name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def _kept(source: Source, staging: Path, folder: Path, digest: str, all_val: bool, name: str) -> Path:
    """The manifest of the copy named by `digest`, made from `staging` unless it is there already."""
    copy, manifest = folder / digest[:16], folder / f"{digest[:16]}.parquet"
    if not manifest.is_file():
        shutil.rmtree(copy, ignore_errors=True)  # a copy whose manifest was never written: incomplete
        folder.mkdir(parents=True, exist_ok=True)
        staging.rename(copy)
        m = build_imagenet_val(copy, name=name, no_real=not all_val)
        m.meta["given"] = {"object": source.what, "rows": source.n, "sha256": digest, "labels": source.labels}
        write_manifest(manifest, m.table, m.meta)
    return manifest


def prune(manifest: Path) -> int:
    """Remove the older copies beside `manifest` (a dataset's earlier contents: their predictions are
    redone from this one); returns how many."""
    keep, gone = manifest.name.split(".")[0], 0
    for old in manifest.parent.iterdir():
        stem = old.name.split(".")[0]
        if _COPY.fullmatch(stem) and stem != keep:
            shutil.rmtree(old) if old.is_dir() and not old.is_symlink() else old.unlink()  # a link: never its target
            gone += 1
    return gone
