"""ImageNet V1 (ILSVRC-2012 val) manifests with ReaL multi-labels, from the Kaggle or classic layout.

Layouts, detected in this order (see docs/data.md):
  kaggle           ROOT/ILSVRC/Data/CLS-LOC/val/*.JPEG + ROOT/LOC_val_solution.csv
                   [+ ROOT/LOC_synset_mapping.txt, checked against timm's class order]
  classic-folders  ROOT/val/<wnid>/ILSVRC2012_val_*.JPEG (or ROOT/<wnid>/...): torchvision ImageFolder
  classic-flat     ROOT/val/ILSVRC2012_val_*.JPEG (or ROOT/ILSVRC2012_val_*.JPEG) + a ground-truth file
                   (GROUND_TRUTH_FILES) in ROOT, the image folder or ROOT/ILSVRC2012_devkit_t12/data

Any subset of the 50,000 images works: only images present become rows. The sample id is the
file stem; `root` in the metadata is the image folder and `path` is relative to it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from mlreassess.constants import DEFAULT_MIN_AGREEMENT, DEFAULT_V1_LABEL_SET, NUM_CLASSES, NUM_VAL_IMAGES
from mlreassess.datasets import labels as lab
from mlreassess.datasets import labelsets
from mlreassess.datasets.labelsets import V1Labels
from mlreassess.datasets.labelsets.agreement import v1_meta
from mlreassess.datasets.images import is_image_file
from mlreassess.datasets.kaggle import BadRow, KaggleLine, raise_bad_rows, read_kaggle_lines
from mlreassess.datasets.manifest import Manifest, base_meta, core_table
from mlreassess.datasets.skip import raise_or_skip
from mlreassess.errors import InputError
from mlreassess.io import read_text

DEFAULT_NAME = "imagenet_v1"

KAGGLE_IMAGE_DIR = Path("ILSVRC", "Data", "CLS-LOC", "val")
KAGGLE_SOLUTION = "LOC_val_solution.csv"
SYNSET_MAPPING = "LOC_synset_mapping.txt"

# Classic ground truth, in order of preference.
VAL_LABELS = "val_labels.txt"  # 0-based sorted-wnid index per image
TF_SYNSET_LABELS = "imagenet_2012_validation_synset_labels.txt"  # one wnid per image (TF slim)
DEVKIT_GROUND_TRUTH = "ILSVRC2012_validation_ground_truth.txt"  # 1-based ILSVRC2012_ID per image
# ILSVRC2012_ID -> wnid for the devkit ground truth (text first: meta.mat needs scipy).
ID_MAPPING = "ILSVRC2012_mapping.txt"
DEVKIT_META = "meta.mat"
GROUND_TRUTH_FILES = (VAL_LABELS, TF_SYNSET_LABELS, DEVKIT_GROUND_TRUTH)

_VAL_STEM = re.compile(r"ILSVRC2012_val_(\d{8})")
_WNID = re.compile(r"n\d{8}")


def _image_number(stem: str) -> int | None:
    """1-based image number of an ILSVRC2012 val file stem, None if the name is not one."""
    m = _VAL_STEM.fullmatch(stem)
    if not m or not 1 <= int(m.group(1)) <= NUM_VAL_IMAGES:
        return None
    return int(m.group(1))


def _visible(entries: list[os.DirEntry]) -> list[os.DirEntry]:
    return sorted((e for e in entries if not e.name.startswith(".")), key=lambda e: e.name)


def _scan(folder: Path) -> list[os.DirEntry]:
    with os.scandir(folder) as it:
        return _visible(list(it))


def detect_layout(root: Path) -> tuple[str, Path]:
    """(layout name, image folder) of an ImageNet val copy at `root`."""
    if not root.is_dir():
        raise InputError(f"{root}: no such folder")
    kaggle_dir = root / KAGGLE_IMAGE_DIR
    if kaggle_dir.is_dir():
        if not (root / KAGGLE_SOLUTION).is_file():
            raise InputError(f"{root}: Kaggle layout ({KAGGLE_IMAGE_DIR}/) but {root / KAGGLE_SOLUTION} is missing")
        return "kaggle", kaggle_dir
    for folder in (root / "val", root):
        if not folder.is_dir():
            continue
        entries = _scan(folder)
        has_class_dirs = any(e.is_dir() and _WNID.fullmatch(e.name) for e in entries)
        has_flat = any(e.is_file() and is_image_file(e.name) and _VAL_STEM.fullmatch(Path(e.name).stem) for e in entries)
        if has_class_dirs and has_flat:
            raise InputError(f"{folder}: mixes <wnid>/ class folders and flat ILSVRC2012_val_* images; keep one layout")
        if has_class_dirs:
            return "classic-folders", folder
        if has_flat:
            return "classic-flat", folder
    raise InputError(
        f"{root}: no ImageNet val layout found; looked for {KAGGLE_IMAGE_DIR}/ + {KAGGLE_SOLUTION} (Kaggle), "
        f"val/<wnid>/ILSVRC2012_val_*.JPEG or <wnid>/... (class folders), "
        f"val/ILSVRC2012_val_*.JPEG or ILSVRC2012_val_*.JPEG (flat, with a ground-truth file)"
    )


# ---- ground truth readers: each returns {image number (1-based): class index} -------------------


def check_synset_mapping(path: Path) -> None:
    """A LOC_synset_mapping.txt must list the 1,000 wnids in timm's (sorted-wnid) class order."""
    wnids = _read_wnid_lines(path)
    if len(wnids) != NUM_CLASSES:
        raise InputError(f"{path}: {len(wnids)} classes, expected {NUM_CLASSES}")
    standard = sorted(lab.wnid_to_index(), key=lab.wnid_to_index().__getitem__)
    for i, (line_no, wnid) in enumerate(wnids):
        if wnid != standard[i]:
            raise InputError(
                f"{path}:{line_no}: wnid {wnid} is class {i} here but timm's class {i} is {standard[i]}; "
                "this file's class order differs from the standard one"
            )


def _read_wnid_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, wnid) of each non-blank line `wnid [words...]`."""
    out = []
    for line_no, line in enumerate(read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        wnid = line.split()[0]
        if not _WNID.fullmatch(wnid):
            raise InputError(f"{path}:{line_no}: {wnid!r} is not a wnid (nNNNNNNNN)")
        out.append((line_no, wnid))
    return out


def read_kaggle_solution(path: Path, skip_bad: bool = False) -> tuple[dict[int, int], list[dict[str, str]]]:
    """LOC_val_solution.csv -> ({image number: class}, the bad lines dropped with `skip_bad`).

    Read by the one Kaggle reader (`datasets.kaggle`); V1 also needs each line to name a val
    image and to have boxes of exactly one class (the image's label).
    """
    lines, bad = read_kaggle_lines(path)
    truth: dict[int, int] = {}
    for line in lines:
        problem = _solution_problem(line)
        if problem is not None:
            bad.append(BadRow(line.row, f"{path}: line {line.row}", problem))
            continue
        truth[_image_number(line.image_id)] = line.boxes[0].label  # type: ignore[index]
    return truth, raise_bad_rows(sorted(bad, key=lambda b: b.row), skip_bad)


def _solution_problem(line: KaggleLine) -> str | None:
    """Why a well-formed boxes line cannot give a V1 image its label (None: it can)."""
    if _image_number(line.image_id) is None:
        return f"{line.image_id!r} is not an ILSVRC2012 val image id"
    if not line.boxes:
        return "no boxes: PredictionString must be groups of 'wnid x0 y0 x1 y1'"
    classes = sorted({r.label for r in line.boxes})
    if len(classes) != 1:
        wnids = ", ".join(lab.class_wnid(c) for c in classes)
        return f"image {line.image_id} has boxes of several classes ({wnids})"
    return None


def _positional_or_named(path: Path, parse_value) -> dict[int, int]:
    """Lines `VALUE` (line i = image i, exactly 50,000 lines) or `FILE_NAME VALUE` (any subset)."""
    lines = [(n, line.split()) for n, line in enumerate(read_text(path).splitlines(), 1) if line.strip()]
    truth: dict[int, int] = {}
    if lines and all(len(f) == 1 for _, f in lines):
        if len(lines) != NUM_VAL_IMAGES:
            raise InputError(
                f"{path}: {len(lines)} lines; a one-value-per-line file needs all {NUM_VAL_IMAGES:,} "
                "(line i = ILSVRC2012_val_i); for a subset write 'FILE_NAME VALUE' lines"
            )
        for number, (line_no, fields) in enumerate(lines, 1):
            truth[number] = parse_value(fields[0], f"{path}:{line_no}")
        return truth
    for line_no, fields in lines:
        where = f"{path}:{line_no}"
        if len(fields) != 2:
            raise InputError(f"{where}: expected 'VALUE' or 'FILE_NAME VALUE', got {len(fields)} fields")
        number = _image_number(Path(fields[0]).stem if is_image_file(fields[0]) else fields[0])
        if number is None:
            raise InputError(f"{where}: {fields[0]!r} is not an ILSVRC2012 val image name")
        if number in truth:
            raise InputError(f"{where}: image {fields[0]} listed twice")
        truth[number] = parse_value(fields[1], where)
    return truth


def _parse_index(value: str, where: str) -> int:
    try:
        index = int(value)
    except ValueError:
        raise InputError(f"{where}: {value!r} is not a class index") from None
    if not 0 <= index < NUM_CLASSES:
        raise InputError(f"{where}: class index {index} out of range 0..{NUM_CLASSES - 1}")
    return index


def read_ilsvrc_id_mapping(path: Path) -> dict[int, str]:
    """ILSVRC2012_ID (1..1000) -> wnid, from ILSVRC2012_mapping.txt or the devkit's meta.mat."""
    if path.suffix == ".mat":
        return _read_meta_mat(path)
    mapping: dict[int, str] = {}
    for line_no, line in enumerate(read_text(path).splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        # Either 'ID wnid' lines or 'wnid [words]' lines in ID order.
        if fields[0].isdigit() and len(fields) >= 2:
            ilsvrc_id, wnid = int(fields[0]), fields[1]
        else:
            ilsvrc_id, wnid = len(mapping) + 1, fields[0]
        if not _WNID.fullmatch(wnid):
            raise InputError(f"{path}:{line_no}: {wnid!r} is not a wnid (nNNNNNNNN)")
        mapping[ilsvrc_id] = wnid
    _check_id_mapping(mapping, path)
    return mapping


def _read_meta_mat(path: Path) -> dict[int, str]:
    try:
        from scipy.io import loadmat  # lazy: scipy is optional, only the devkit's meta.mat needs it
    except ImportError:
        raise InputError(f"{path}: reading meta.mat needs scipy (pip install scipy), or provide {ID_MAPPING}") from None
    try:
        synsets = loadmat(str(path), squeeze_me=True, struct_as_record=False)["synsets"]
        mapping = {int(s.ILSVRC2012_ID): str(s.WNID) for s in synsets if int(s.ILSVRC2012_ID) <= NUM_CLASSES}
    except Exception as exc:  # scipy raises many types for a file that is not the devkit's meta.mat
        raise InputError(f"{path}: not the ILSVRC2012 devkit meta.mat ({type(exc).__name__}: {exc})") from None
    _check_id_mapping(mapping, path)
    return mapping


def _check_id_mapping(mapping: dict[int, str], path: Path) -> None:
    if sorted(mapping) != list(range(1, NUM_CLASSES + 1)):
        raise InputError(f"{path}: expected ILSVRC2012_IDs 1..{NUM_CLASSES}, got {len(mapping)} entries")
    for ilsvrc_id, wnid in mapping.items():
        lab.class_index(wnid, f"{path}: ILSVRC2012_ID {ilsvrc_id}")


def _find(name: str, folders: list[Path]) -> Path | None:
    return next((f / name for f in folders if (f / name).is_file()), None)


def read_classic_ground_truth(root: Path, image_dir: Path) -> tuple[dict[int, int], str]:
    """Ground truth of the flat classic layout and a description of the files it came from."""
    folders = list(dict.fromkeys([root, image_dir, root / "ILSVRC2012_devkit_t12" / "data"]))
    if path := _find(VAL_LABELS, folders):
        return _positional_or_named(path, _parse_index), str(path)
    if path := _find(TF_SYNSET_LABELS, folders):
        return _positional_or_named(path, lambda v, where: lab.class_index(v, where)), str(path)
    if path := _find(DEVKIT_GROUND_TRUTH, folders):
        id_file = _find(ID_MAPPING, folders) or _find(DEVKIT_META, folders)
        if id_file is None:
            raise InputError(
                f"{path}: ILSVRC2012_IDs need {ID_MAPPING} or the devkit's {DEVKIT_META} to map them to "
                f"classes; looked in {', '.join(map(str, folders))}"
            )
        id_to_wnid = read_ilsvrc_id_mapping(id_file)

        def parse(value: str, where: str) -> int:
            if not value.isdigit() or int(value) not in id_to_wnid:
                raise InputError(f"{where}: {value!r} is not an ILSVRC2012_ID 1..{NUM_CLASSES}")
            return lab.class_index(id_to_wnid[int(value)], where)

        return _positional_or_named(path, parse), f"{path} + {id_file}"
    raise InputError(
        f"{image_dir}: flat val folder without ground truth; looked for {', '.join(GROUND_TRUTH_FILES)} "
        f"in {', '.join(map(str, folders))}"
    )


# ---- listing ---------------------------------------------------------------------------------------


def _list_flat(image_dir: Path) -> list[str]:
    # Links are listed even when they lead nowhere (a loop, a dangling link): they are bad images,
    # reported as such (or dropped with --skip-bad), never silently left out.
    return [e.name for e in _scan(image_dir) if (e.is_symlink() or e.is_file()) and is_image_file(e.name)]


def _list_class_folders(image_dir: Path, skip_bad: bool, bad: list[dict[str, str]]) -> list[tuple[str, int]]:
    """(relative path, class index) of every image in `image_dir/<wnid>/`; with `skip_bad`, a folder
    of an unknown wnid goes to `bad` instead of raising."""
    out = []
    for entry in _scan(image_dir):
        if not entry.is_dir():
            continue
        if not _WNID.fullmatch(entry.name):
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
    root: Path, layout: str, image_dir: Path, skip_bad: bool
) -> tuple[list[tuple[str, int | None]], dict[int, int], str, list[dict[str, str]]]:
    """(files with their folder label if known, {image number: class}, label source, bad lines dropped)."""
    if layout == "kaggle":
        mapping = root / SYNSET_MAPPING
        if mapping.is_file():
            check_synset_mapping(mapping)
        truth, dropped = read_kaggle_solution(root / KAGGLE_SOLUTION, skip_bad)
        return [(f, None) for f in _list_flat(image_dir)], truth, str(root / KAGGLE_SOLUTION), dropped
    if layout == "classic-flat":
        truth, label_source = read_classic_ground_truth(root, image_dir)
        return [(f, None) for f in _list_flat(image_dir)], truth, label_source, []
    dropped: list[dict[str, str]] = []
    files = _list_class_folders(image_dir, skip_bad, dropped)
    return files, {}, "class folder names (wnids)", [{"file": f, "error": e} for f, e in dropped]


def _label_rows(
    image_dir: Path, files: list[tuple[str, int | None]], truth: dict[int, int], label_source: str, multi: V1Labels,
    left_out: dict[str, int],
) -> tuple[tuple[list, list, list, list], list[tuple[str, str]], set[int]]:
    """(ids, paths, labels, multi-labels) of the usable images, the bad ones, and the image numbers seen;
    images the label set leaves out (not labelled by it, problematic) are counted by reason in `left_out`."""
    ids, paths, singles, multis = [], [], [], []
    bad: list[tuple[str, str]] = []
    seen: dict[int, str] = {}
    for rel, folder_label in files:
        stem = Path(rel).stem
        if not (image_dir / rel).is_file():
            bad.append((str(image_dir / rel), "not a readable file (a symlink loop or a dangling link?)"))
            continue
        number = _image_number(stem)
        if number is None:
            bad.append((str(image_dir / rel), "not an ILSVRC2012 val image name (ILSVRC2012_val_00000001 .. _00050000)"))
            continue
        if number in seen:
            raise InputError(f"{image_dir / rel}: image {stem} is also at {image_dir / seen[number]}")
        seen[number] = rel
        label = folder_label if folder_label is not None else truth.get(number)
        if label is None:
            bad.append((str(image_dir / rel), f"image {stem} has no entry in the ground truth ({label_source})"))
            continue
        found = multi.lookup(number)
        if isinstance(found, str):
            left_out[found] = left_out.get(found, 0) + 1
            continue
        ids.append(stem)
        paths.append(rel)
        singles.append(label)
        multis.append(found)
    return (ids, paths, singles, multis), bad, set(seen)


def build_imagenet_val(
    root: str | os.PathLike,
    real: str | os.PathLike | None = None,
    name: str | None = None,
    skip_bad: bool = False,
    label_set: str = DEFAULT_V1_LABEL_SET,
    label_file: str | os.PathLike | None = None,
    min_agreement: float = DEFAULT_MIN_AGREEMENT,
) -> Manifest:
    """Manifest of the ImageNet val images under `root` (any layout above), with the multi-labels of
    `label_set` (datasets.labelsets; default ReaL).

    `label_file`: the set's published file (`real`: a ReaL-format JSON; default timm's copy; `real`
    is the same for ReaL). A set of some val images (Shankar et al., ImageNet-M) makes rows of those
    only. `skip_bad` drops images that have no ground truth or no val name, and bad lines of a Kaggle
    solution file, instead of raising; the metadata lists them. The build stops when fewer than
    `min_agreement` percent of the images have their original label in their set (labelsets.agreement).
    """
    if real is not None and label_file is not None and Path(real).resolve() != Path(label_file).resolve():
        raise InputError(f"--real {real} and --label-file {label_file}: give the label file once")
    labels_of, label_path = labelsets.resolve(label_set, "imagenet_v1", label_file or real)
    root = Path(root).resolve()  # absolute paths in the metadata and in error messages
    layout, image_dir = detect_layout(root)
    files, truth, label_source, dropped_lines = _ground_truth(root, layout, image_dir, skip_bad)
    multi, left_out = labels_of.read(label_path), {}
    columns, bad, seen = _label_rows(image_dir, files, truth, label_source, multi, left_out)
    skipped = dropped_lines + raise_or_skip(bad, skip_bad)
    if not columns[0]:
        raise InputError(f"{image_dir}: no usable ImageNet val images found" + (
            f" ({', '.join(f'{n:,} {why}' for why, n in left_out.items())})" if left_out else ""))
    meta = base_meta(
        "imagenet_v1",
        name or labelsets.default_dataset(label_set, DEFAULT_NAME),
        image_dir,
        layout=layout,
        dataset_root=str(root),
        label_source=label_source,
        **v1_meta(labels_of, label_path, multi, columns, left_out, min_agreement),
        ground_truth_entries_unused=len(set(truth) - seen) if truth else 0,
        skipped=skipped,
    )
    return Manifest(table=core_table(*columns), meta=meta)
