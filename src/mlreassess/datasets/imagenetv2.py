"""ImageNetV2 manifests: `imagenetv2-<variant>-format-val/<class 0..999>/<sha1>.jpeg` + optional multi-labels.

The label of an image is its class folder's number (folders are sorted numerically: 2 before 10);
the sample id is `<class>/<stem>`. Multi-labels come from a user file (the paper used Anzaku et
al.'s refined labels), JSON `{key: [labels]}` or CSV `key,labels` (labels space-separated), where a
key is `<class>/<stem>.jpeg`, `<class>/<stem>`, or the bare stem if it names one image. Leading
folders of a key are ignored (`imagenetv2-matched-frequency-format-val/3/abc.jpeg` works).
Without a file, labels = [label].
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

from mlreassess.constants import IMAGENETV2_VARIANTS, NUM_CLASSES
from mlreassess.datasets.images import is_image_file
from mlreassess.datasets.manifest import Manifest, base_meta, core_table
from mlreassess.datasets.paths import NOT_UTF8, decoded_name, printable
from mlreassess.datasets.skip import raise_or_skip
from mlreassess.errors import InputError
from mlreassess.io import read_text

VARIANTS = IMAGENETV2_VARIANTS


def default_name(variant: str) -> str:
    return f"imagenet_v2_{variant}"


def variant_folder_names(variant: str) -> tuple[str, ...]:
    """Folder names of a variant; the released threshold-0.7 tarball spells it `threshold0.7`."""
    names = [f"imagenetv2-{variant}-format-val"]
    if variant == "threshold-0.7":
        names.append("imagenetv2-threshold0.7-format-val")
    return tuple(names)


def find_variant_folder(root: Path, variant: str) -> Path:
    """The `imagenetv2-<variant>-format-val` folder at or under `root`."""
    if variant not in VARIANTS:
        raise InputError(f"unknown ImageNetV2 variant {variant!r} (choose from {', '.join(VARIANTS)})")
    if not root.is_dir():
        raise InputError(f"{root}: no such folder")
    names = variant_folder_names(variant)
    for name in names:
        if (root / name).is_dir():
            return root / name
    if root.name in names:
        return root
    if root.name.startswith("imagenetv2-") and root.name.endswith("-format-val"):
        raise InputError(f"{root}: this is another variant's folder, not {names[0]} (--variant {variant})")
    others = sorted(p.name for p in root.glob("imagenetv2-*-format-val") if p.is_dir())
    if others:
        raise InputError(f"{root}: has {', '.join(others)} but not {names[0]} (--variant {variant})")
    # A renamed variant folder: accept it if it holds numeric class folders.
    if any(p.is_dir() and p.name.isdigit() for p in root.iterdir()):
        return root
    raise InputError(f"{root}: no ImageNetV2 folder; looked for {' or '.join(names)}/<class 0..999>/*.jpeg")


def list_images(folder: Path, bad: list[tuple[str, str]] | None = None) -> list[tuple[str, str, int]]:
    """(sample_id, relative path, label) of every image, class folders in numeric order. An image
    whose file name is not UTF-8 goes to `bad` as (where, problem) (raises when `bad` is None)."""
    classes: list[tuple[int, Path]] = []
    for p in folder.iterdir():
        if p.name.startswith(".") or not p.is_dir():
            continue
        if not p.name.isdigit() or not 0 <= int(p.name) < NUM_CLASSES:
            raise InputError(f"{p}: class folder name must be a class number 0..{NUM_CLASSES - 1}")
        classes.append((int(p.name), p))
    if not classes:
        raise InputError(f"{folder}: no class folders 0..{NUM_CLASSES - 1}")
    out = []
    for label, p in sorted(classes):
        for f in sorted(p.iterdir()):
            if f.is_file() and not f.name.startswith(".") and is_image_file(f.name):
                if decoded_name(f.name) is None:  # no manifest can store it (parquet strings are UTF-8)
                    if bad is None:
                        raise InputError(f"{printable(f)}: {NOT_UTF8}")
                    bad.append((printable(f), NOT_UTF8))
                    continue
                out.append((f"{label}/{f.stem}", f"{p.name}/{f.name}", label))
    return out


# ---- multi-label files ---------------------------------------------------------------------------


def _labels_list(value: Any, where: str) -> list[int]:
    if not isinstance(value, list) or any(isinstance(x, bool) or not isinstance(x, int) for x in value):
        raise InputError(f"{where}: labels must be a list of integers, got {value!r}")
    bad = [x for x in value if not 0 <= x < NUM_CLASSES]
    if bad:
        raise InputError(f"{where}: label {bad[0]} out of range 0..{NUM_CLASSES - 1}")
    return value


def read_label_file(path: Path) -> list[tuple[str, list[int], str]]:
    """(key, labels, where) entries of a JSON or CSV multi-label file, in file order."""
    if not path.is_file():
        raise InputError(f"{path}: labels file not found")
    text = read_text(path)
    if path.suffix.lower() == ".json" or text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}: not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise InputError(f"{path}: expected a JSON object {{key: [labels]}}")
        return [(k, _labels_list(v, f"{path}: key {k!r}"), f"{path}: key {k!r}") for k, v in data.items()]
    entries = []
    for i, row in enumerate(csv.reader(text.splitlines())):
        where = f"{path}:{i + 1}"
        if not row or not "".join(row).strip():
            continue
        if len(row) != 2:
            raise InputError(f"{where}: expected 2 fields 'path,labels', got {len(row)}")
        key, tokens = row[0].strip(), row[1].split()
        if not all(t.lstrip("-").isdigit() for t in tokens):
            if i == 0:
                continue  # header row
            raise InputError(f"{where}: labels {row[1]!r} are not space-separated integers")
        entries.append((key, _labels_list([int(t) for t in tokens], f"{where}: key {key!r}"), where))
    return entries


def _key_to_sample(key: str, by_stem: dict[str, list[str]], where: str) -> str | None:
    """The sample id a key names (None: no such image here)."""
    parts = [p for p in key.replace("\\", "/").split("/") if p and p != "."]
    if not parts:
        raise InputError(f"{where}: empty key")
    name = parts[-1]
    stem = Path(name).stem if is_image_file(name) else name
    if len(parts) >= 2:
        if not parts[-2].isdigit():
            raise InputError(f"{where}: key's folder {parts[-2]!r} is not a class number")
        return f"{int(parts[-2])}/{stem}"
    matches = by_stem.get(stem, [])
    if len(matches) > 1:
        raise InputError(f"{where}: bare stem {stem!r} names several images ({', '.join(matches)}); use <class>/<stem>")
    return matches[0] if matches else None


def attach_labels(
    samples: list[tuple[str, str, int]], entries: list[tuple[str, list[int], str]]
) -> tuple[dict[str, list[int]], int]:
    """{sample_id: labels} for the samples the entries name, and the number of entries naming none."""
    by_stem: dict[str, list[str]] = {}
    for sid, _, _ in samples:
        by_stem.setdefault(sid.split("/", 1)[1], []).append(sid)
    present = {sid for sid, _, _ in samples}
    found: dict[str, tuple[list[int], str]] = {}
    unmatched = 0
    for key, ls, where in entries:
        sid = _key_to_sample(key, by_stem, where)
        if sid is None or sid not in present:
            unmatched += 1
            continue
        if sid in found and sorted(set(found[sid][0])) != sorted(set(ls)):
            raise InputError(f"{where}: conflicting labels for {sid} (also given at {found[sid][1]})")
        found[sid] = (ls, where)
    return {sid: ls for sid, (ls, _) in found.items()}, unmatched


def build_imagenetv2(
    root: str | os.PathLike,
    variant: str,
    labels_file: str | os.PathLike | None = None,
    name: str | None = None,
    skip_bad: bool = False,
    keep_original: bool = False,
) -> Manifest:
    """Manifest of an ImageNetV2 variant. Images missing from `labels_file` raise, unless `skip_bad`
    (drop them) or `keep_original` (labels = [folder label])."""
    if skip_bad and keep_original:
        raise InputError("--skip-bad and --keep-original are exclusive: drop or keep images missing from the labels file")
    folder = find_variant_folder(Path(root).resolve(), variant)
    bad: list[tuple[str, str]] = []
    samples = list_images(folder, bad)
    if not samples:
        raise_or_skip(bad, skip_bad)
        raise InputError(f"{folder}: no images (*.jpeg, *.jpg, *.png) in its class folders")
    unmatched = 0
    kept = 0
    if labels_file is None:
        multi = {sid: [label] for sid, _, label in samples}
        label_source = "class folders (labels = [label])"
    else:
        labels_file = Path(labels_file)
        multi, unmatched = attach_labels(samples, read_label_file(labels_file))
        label_source = str(labels_file.resolve())
        for sid, rel, label in samples:
            if sid in multi:
                continue
            if keep_original:
                multi[sid] = [label]
                kept += 1
            else:
                bad.append((str(folder / rel), f"no entry in the labels file {labels_file} (--keep-original gives it [label])"))
    skipped = raise_or_skip(bad, skip_bad)
    rows = [s for s in samples if s[0] in multi]
    if not rows:
        raise InputError(f"{folder}: no images left after dropping those missing from {labels_file}")
    meta = base_meta(
        "imagenet_v2",
        name or default_name(variant),
        folder,
        variant=variant,
        label_source=label_source,
        label_entries_unmatched=unmatched,
        kept_original_label=kept,
        skipped=skipped,
    )
    table = core_table(
        [sid for sid, _, _ in rows], [rel for _, rel, _ in rows], [lb for _, _, lb in rows], [multi[sid] for sid, _, _ in rows]
    )
    return Manifest(table=table, meta=meta)
