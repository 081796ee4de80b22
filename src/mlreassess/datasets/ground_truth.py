"""The ground truth of the ImageNet val layouts that do not carry labels in their names or folders:
Kaggle's `LOC_val_solution.csv`, and the classic flat folder's files (see docs/data.md). Each reader
returns {image number (1-based): class index}.
"""

from __future__ import annotations

from pathlib import Path

from mlreassess.constants import NUM_CLASSES, NUM_VAL_IMAGES
from mlreassess.datasets import labels as lab
from mlreassess.datasets.formats.base import WNID, val_name
from mlreassess.datasets.images import is_image_file
from mlreassess.datasets.kaggle import BadRow, KaggleLine, raise_bad_rows, read_kaggle_lines
from mlreassess.errors import InputError
from mlreassess.io import read_text

# Classic ground truth, in order of preference.
VAL_LABELS = "val_labels.txt"  # 0-based sorted-wnid index per image
TF_SYNSET_LABELS = "imagenet_2012_validation_synset_labels.txt"  # one wnid per image (TF slim)
DEVKIT_GROUND_TRUTH = "ILSVRC2012_validation_ground_truth.txt"  # 1-based ILSVRC2012_ID per image
# ILSVRC2012_ID -> wnid for the devkit ground truth (text first: meta.mat needs scipy).
ID_MAPPING = "ILSVRC2012_mapping.txt"
DEVKIT_META = "meta.mat"
GROUND_TRUTH_FILES = (VAL_LABELS, TF_SYNSET_LABELS, DEVKIT_GROUND_TRUTH)


def _image_number(stem: str) -> int | None:
    """1-based image number of an ILSVRC2012 val file stem, None if the name is not one."""
    vn = val_name(stem)
    return vn.number if vn is not None else None


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
        if not WNID.fullmatch(wnid):
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
        if not WNID.fullmatch(wnid):
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
