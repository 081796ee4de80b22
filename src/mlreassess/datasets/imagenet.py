"""ImageNet V1 (ILSVRC-2012 val) manifests with ReaL multi-labels, from wherever a lab keeps it.

Layouts, detected from ROOT alone in this order (`--format` overrides; see docs/data.md):
  kaggle           ROOT/ILSVRC/Data/CLS-LOC/val/*.JPEG + ROOT/LOC_val_solution.csv
                   [+ ROOT/LOC_synset_mapping.txt, checked against timm's class order]
  classic-folders  ROOT/val/<wnid>/ILSVRC2012_val_*.JPEG (or ROOT/<wnid>/...): torchvision ImageFolder,
                   and torchvision.datasets.ImageNet's root once extracted (its archives and meta.bin
                   beside val/); the archives alone are refused with one line: extract them first
  hf-names         ROOT/val/ILSVRC2012_val_00000001_n01751748.JPEG (or ROOT/...): Hugging Face's names,
                   the label is the wnid in the name
  classic-flat     ROOT/val/ILSVRC2012_val_*.JPEG (or ROOT/ILSVRC2012_val_*.JPEG) + a ground-truth file
                   (`ground_truth.GROUND_TRUTH_FILES`) in ROOT, the image folder or ROOT/ILSVRC2012_devkit_t12/data
  hf-parquet       Hugging Face `imagenet-1k` parquet shards under ROOT (validation split), read in place
  webdataset       WebDataset tar shards under ROOT (`.jpg` + `.cls` per key), read in place

Any subset of the 50,000 images works: only images present become rows. The sample id is the val
stem (`ILSVRC2012_val_00000042`) in every layout, so predictions, ReaL and PatchML boxes match
across copies. Image files: `root` in the metadata is the image folder and `path` is relative to
it. Shards: `root` is ROOT, `path` the shard, plus `row` / `member` (parquet) or `member`, `offset`,
`size` (tar), and `shards` in the metadata: each shard's sha256.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import pyarrow as pa

from mlreassess.constants import DEFAULT_MIN_AGREEMENT, DEFAULT_V1_LABEL_SET
from mlreassess.datasets import ground_truth as gt
from mlreassess.datasets import labels as lab
from mlreassess.datasets import labelsets
from mlreassess.datasets.formats import parquet, webdataset
from mlreassess.datasets.formats.base import WNID, Found, Scan, val_name
from mlreassess.datasets.images import is_image_file
from mlreassess.datasets.labelsets import LabelSet, V1Labels
from mlreassess.datasets.labelsets.agreement import v1_meta
from mlreassess.datasets.manifest import Manifest, base_meta, core_table
from mlreassess.datasets.skip import raise_or_skip
from mlreassess.errors import InputError

DEFAULT_NAME = "imagenet_v1"

KAGGLE_IMAGE_DIR = Path("ILSVRC", "Data", "CLS-LOC", "val")
KAGGLE_SOLUTION = "LOC_val_solution.csv"
SYNSET_MAPPING = "LOC_synset_mapping.txt"
SHARD_FORMATS = (parquet, webdataset)
# What torchvision.datasets.ImageNet wants in its root before it extracts them (`ARCHIVE_META`).
TORCHVISION_ARCHIVES = ("ILSVRC2012_img_val.tar", "ILSVRC2012_devkit_t12.tar.gz", "ILSVRC2012_img_train.tar")


@dataclass(frozen=True)
class Layout:
    name: str  # kaggle | classic-folders | hf-names | classic-flat | hf-parquet | webdataset
    folder: Path  # the manifest's root: the image folder (files) or ROOT (shards)
    shards: tuple[str, ...] = ()  # shards relative to ROOT (shard formats)


def _visible(entries: list[os.DirEntry]) -> list[os.DirEntry]:
    return sorted((e for e in entries if not e.name.startswith(".")), key=lambda e: e.name)


def _scan(folder: Path) -> list[os.DirEntry]:
    with os.scandir(folder) as it:
        return _visible(list(it))


def _file_layout(root: Path) -> Layout | None:
    """The image-file layout at `root`, None when it holds none."""
    kaggle_dir = root / KAGGLE_IMAGE_DIR
    if kaggle_dir.is_dir():
        if not (root / KAGGLE_SOLUTION).is_file():
            raise InputError(f"{root}: Kaggle layout ({KAGGLE_IMAGE_DIR}/) but {root / KAGGLE_SOLUTION} is missing")
        return Layout("kaggle", kaggle_dir)
    for folder in (root / "val", root):
        if not folder.is_dir():
            continue
        entries = _scan(folder)
        has_class_dirs = any(e.is_dir() and WNID.fullmatch(e.name) for e in entries)
        named = [val_name(e.name) for e in entries if e.is_file() and is_image_file(e.name)]
        named = [vn for vn in named if vn is not None]
        if has_class_dirs and named:
            raise InputError(f"{folder}: mixes <wnid>/ class folders and flat ILSVRC2012_val_* images; keep one layout")
        if has_class_dirs:
            return Layout("classic-folders", folder)
        if named:
            return Layout("hf-names" if all(vn.wnid for vn in named) else "classic-flat", folder)
    return None


_LOOKED_FOR = (
    f"{KAGGLE_IMAGE_DIR}/ + {KAGGLE_SOLUTION} (Kaggle), val/<wnid>/ILSVRC2012_val_*.JPEG or <wnid>/... "
    "(class folders), val/ILSVRC2012_val_*.JPEG or ILSVRC2012_val_*.JPEG (flat: HF-style names "
    "ILSVRC2012_val_*_<wnid>.JPEG, or with a ground-truth file), *.parquet (Hugging Face shards), "
    "*.tar (WebDataset shards)"
)


def detect_layout(root: Path, input_format: str | None = None) -> Layout:
    """The layout of an ImageNet val copy at `root`; `input_format` (files, hf-parquet, webdataset)
    limits the search to that format."""
    if not root.is_dir():
        raise InputError(f"{root}: no such folder")
    if input_format in (None, "files"):
        layout = _file_layout(root)
        if layout is not None:
            return layout
        _refuse_archives(root, [])
        if input_format == "files":
            return _no_layout(root, "files")
    _refuse_archives(root, [])
    shards = {fmt.NAME: fmt.detect(root) for fmt in SHARD_FORMATS if input_format in (None, fmt.NAME)}
    found = {name: s for name, s in shards.items() if s}
    if len(found) > 1:
        raise InputError(f"{root}: holds both parquet and tar shards; choose one with --format")
    if found:
        ((name, s),) = found.items()
        _refuse_archives(root, list(s))
        return Layout(name, root, tuple(s))
    return _no_layout(root, input_format)


def _refuse_archives(root: Path, shards: list[str]) -> None:
    """torchvision.datasets.ImageNet's archives, not yet extracted, are one line saying so (the val
    tar holds flat JPEGs without labels: read as WebDataset shards, every sample would be bad)."""
    present = [name for name in TORCHVISION_ARCHIVES if (root / name).is_file()]
    present += [rel for rel in shards if Path(rel).name in TORCHVISION_ARCHIVES and rel not in present]
    if present:
        raise InputError(f"{root}: holds torchvision.datasets.ImageNet's archives ({', '.join(present)}), not their "
                         f"images; extract them first (torchvision.datasets.ImageNet(root, split='val') does it, "
                         f"into {root / 'val'}/<wnid>/), then build from {root}")


def _no_layout(root: Path, what: str | None) -> Layout:
    if what:
        raise InputError(f"{root}: no ImageNet val {what} found (--format {what}); looked for {_LOOKED_FOR}")
    raise InputError(f"{root}: no ImageNet val layout found; looked for {_LOOKED_FOR}")


# ---- image files -------------------------------------------------------------------------------


def _list_flat(image_dir: Path) -> list[str]:
    # Links are listed even when they lead nowhere (a loop, a dangling link): they are bad images,
    # reported as such (or dropped with --skip-bad), never silently left out.
    return [e.name for e in _scan(image_dir) if (e.is_symlink() or e.is_file()) and is_image_file(e.name)]


def _list_class_folders(image_dir: Path, skip_bad: bool, bad: list[tuple[str, str]]) -> list[tuple[str, int]]:
    """(relative path, class index) of every image in `image_dir/<wnid>/`; with `skip_bad`, a folder
    of an unknown wnid goes to `bad` instead of raising."""
    out = []
    for entry in _scan(image_dir):
        if not entry.is_dir():
            continue
        if not WNID.fullmatch(entry.name):
            raise InputError(f"{entry.path}: class folder name must be a wnid (nNNNNNNNN)")
        try:
            index = lab.class_index(entry.name, entry.path)
        except InputError as exc:
            if not skip_bad:
                raise
            bad.append((entry.path, str(exc).removeprefix(f"{entry.path}: ")))
            continue
        out.extend((f"{entry.name}/{e.name}", index) for e in _scan(Path(entry.path))
                   if (e.is_symlink() or e.is_file()) and is_image_file(e.name))
    return out


def _ground_truth(
    root: Path, layout: Layout, skip_bad: bool
) -> tuple[list[tuple[str, int | None]], dict[int, int], str, list[dict[str, str]]]:
    """(files with their folder label if known, {image number: class}, label source, bad lines dropped)."""
    image_dir = layout.folder
    if layout.name == "kaggle":
        mapping = root / SYNSET_MAPPING
        if mapping.is_file():
            gt.check_synset_mapping(mapping)
        truth, dropped = gt.read_kaggle_solution(root / KAGGLE_SOLUTION, skip_bad)
        return [(f, None) for f in _list_flat(image_dir)], truth, str(root / KAGGLE_SOLUTION), dropped
    if layout.name == "hf-names":
        return [(f, None) for f in _list_flat(image_dir)], {}, "the wnids in the file names", []
    if layout.name == "classic-flat":
        truth, label_source = gt.read_classic_ground_truth(root, image_dir)
        return [(f, None) for f in _list_flat(image_dir)], truth, label_source, []
    dropped: list[tuple[str, str]] = []
    files = _list_class_folders(image_dir, skip_bad, dropped)
    return files, {}, "class folder names (wnids)", [{"file": f, "error": e} for f, e in dropped]


def _file_entry(image_dir: Path, rel: str, folder_label: int | None, truth: dict[int, int],
                label_source: str) -> tuple[Found | None, str | None]:
    """(the image at `rel`, None) or (None, why it cannot be used)."""
    path = image_dir / rel
    if not path.is_file():
        return None, "not a readable file (a symlink loop or a dangling link?)"
    vn = val_name(Path(rel).name)
    if vn is None:
        return None, "not an ILSVRC2012 val image name (ILSVRC2012_val_00000001 .. _00050000)"
    label = folder_label
    if vn.wnid is not None:  # an HF-style name says its class
        if vn.wnid not in lab.wnid_to_index():
            return None, f"unknown wnid {vn.wnid!r} in its name (not an ImageNet-1k class)"
        named = lab.wnid_to_index()[vn.wnid]
        if label is not None and label != named:
            return None, f"in the folder of class {label} but its name says {vn.wnid} (class {named})"
        label = named
    if label is None:
        label = truth.get(vn.number)
        if label is None:
            return None, f"image {vn.stem} has no entry in the ground truth ({label_source})"
    return Found(vn.stem, vn.number, str(path), label, {"path": rel}), None


def _scan_files(root: Path, layout: Layout, skip_bad: bool) -> Scan:
    files, truth, label_source, dropped = _ground_truth(root, layout, skip_bad)
    found, bad = [], []
    for rel, folder_label in files:
        entry, problem = _file_entry(layout.folder, rel, folder_label, truth, label_source)
        if entry is None:
            bad.append((str(layout.folder / rel), problem))
        else:
            found.append(entry)
    numbers = {f.number for f in found}
    unused = len(set(truth) - numbers) if truth else 0
    return Scan(found, bad, label_source, {"ground_truth_entries_unused": unused}, skipped=dropped)


def scan_layout(root: Path, layout: Layout, skip_bad: bool) -> Scan:
    """The images of the copy at `root` with their original labels (no ReaL yet)."""
    if layout.shards:
        fmt = parquet if layout.name == parquet.NAME else webdataset
        return fmt.scan(root, list(layout.shards))
    return _scan_files(root, layout, skip_bad)


# ---- rows ----------------------------------------------------------------------------------------


def _check_unique(found: list[Found]) -> None:
    """Two files, rows or members that are one image stop the build, naming both."""
    seen: dict[str, str] = {}
    for f in found:
        if f.sample_id in seen:
            raise InputError(f"{f.where}: image {f.sample_id} is also at {seen[f.sample_id]}")
        seen[f.sample_id] = f.where


def _multi_labels(found: list[Found], labels_of: LabelSet | None, label_path: Path | None,
                  left_out: dict[str, int]) -> tuple[list[Found], list[Sequence[int]], V1Labels | None]:
    """(the images the label set keeps, their multi-labels by image number, the set as read); with
    no set (`--no-real`) every image, labels = [its own label]. Images the set leaves out (not
    labelled by it, problematic) are counted by reason in `left_out`."""
    if labels_of is None:
        return found, [[f.label] for f in found], None
    nameless = next((f for f in found if f.number is None), None)
    if nameless is not None:
        raise InputError(f"{nameless.where}: no name gives its ImageNet val number (ILSVRC2012_val_NNNNNNNN), so "
                         f"its {labels_of.name} labels cannot be found; --no-real builds without them (labels = [label])")
    multi = labels_of.read(label_path)
    kept, lists = [], []
    for f in found:
        got = multi.lookup(f.number)
        if isinstance(got, str):
            left_out[got] = left_out.get(got, 0) + 1
            continue
        kept.append(f)
        lists.append(got)
    return kept, lists, multi


def _label_set(label_set: str, real, label_file, no_real: bool) -> tuple[LabelSet | None, Path | None]:
    if real is not None and label_file is not None and Path(real).resolve() != Path(label_file).resolve():
        raise InputError(f"--real {real} and --label-file {label_file}: give the label file once")
    if no_real:
        return None, None
    return labelsets.resolve(label_set, "imagenet_v1", label_file or real)


def _extra(found: list[Found], columns: tuple[tuple[str, Any], ...]) -> dict[str, pa.Array]:
    return {name: pa.array([f.columns[name] for f in found], type) for name, type in columns}


def build_imagenet_val(
    root: str | os.PathLike,
    real: str | os.PathLike | None = None,
    name: str | None = None,
    skip_bad: bool = False,
    label_set: str = DEFAULT_V1_LABEL_SET,
    label_file: str | os.PathLike | None = None,
    min_agreement: float = DEFAULT_MIN_AGREEMENT,
    input_format: str | None = None,
    no_real: bool = False,
) -> Manifest:
    """Manifest of the ImageNet val images under `root` (any layout above), with the multi-labels of
    `label_set` (datasets.labelsets; default ReaL).

    `label_file`: the set's published file (`real`: a ReaL-format JSON, default timm's copy; `real`
    is the same for ReaL). A set of some val images (Shankar et al., ImageNet-M) makes rows of those
    only; `no_real`: no set, labels = [label]. `skip_bad` drops images that have no ground truth or
    no val name, bad lines of a Kaggle solution file and unusable shard rows / members, instead of
    raising; the metadata lists them. The build stops when fewer than `min_agreement` percent of
    the images have their original label in their set (labelsets.agreement).
    """
    labels_of, label_path = _label_set(label_set, real, label_file, no_real)
    root = Path(root).resolve()  # absolute paths in the metadata and in error messages
    layout = detect_layout(root, input_format)
    scan = scan_layout(root, layout, skip_bad)
    skipped = scan.skipped + raise_or_skip(scan.bad, skip_bad)
    _check_unique(scan.found)
    left_out: dict[str, int] = {}
    found, lists, multi = _multi_labels(scan.found, labels_of, label_path, left_out)
    if not found:
        raise InputError(f"{layout.folder}: no usable ImageNet val images found" + (
            f" ({', '.join(f'{n:,} {why}' for why, n in left_out.items())})" if left_out else ""))
    columns = ([f.sample_id for f in found], [f.columns["path"] for f in found], [f.label for f in found], lists)
    labels_meta = (v1_meta(labels_of, label_path, multi, columns, left_out, min_agreement) if labels_of is not None
                   else {"label_set": None, "label_file": None, "label_sha256": None})  # --no-real: labels = [label]
    meta = base_meta(
        "imagenet_v1",
        name or (DEFAULT_NAME if no_real else labelsets.default_dataset(label_set, DEFAULT_NAME)),
        layout.folder,
        layout=layout.name,
        dataset_root=str(root),
        label_source=scan.label_source,
        **labels_meta,
        ground_truth_entries_unused=scan.meta.pop("ground_truth_entries_unused", 0),
        skipped=skipped,
        **scan.meta,
    )
    return Manifest(table=core_table(*columns, extra=_extra(found, scan.extra_columns)), meta=meta)
