"""ImageNetV2 manifests: `imagenetv2-<variant>-format-val/<class>/<sha1>.jpeg` + optional multi-labels.

Folders, as ImageNetV2 is shipped (docs/data.md):
  imagenetv2-<variant>-format-val/<class 0..999>/   the authors' tarballs (threshold-0.7 spelled
                                                   `threshold0.7`), class folders numbered by
                                                   the sorted wnids; numbers sort numerically
  ImageNetV2-<variant>/<class 0..999>/             what `imagenetv2_pytorch` extracts them to
  imagenet-<variant>-format-val/<wnid>/            copies re-foldered by wnid (ImageFolder order)
The label of an image is its class folder's class; the sample id is `<class number>/<stem>` in
every layout. Multi-labels come from a label set (`--label-set`, default `anzaku-v2`, the refined
labels of Anzaku et al. the paper used) read from its file (`--label-file`, alias `--labels`):
JSON `{key: [labels]}` (labels integers or integer strings) or CSV `key,labels`. A key is
`<sha1>.jpeg` or `<sha1>` if it names one image, `<class>/<sha1>.jpeg` with the class as its number
or wnid, or a longer relative path (leading folders are ignored). An image whose label list is
empty stays, with `labels = []`. Without a file, labels = [label].
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from mlreassess.constants import DEFAULT_MIN_AGREEMENT, DEFAULT_V2_LABEL_SET, IMAGENETV2_VARIANTS, NUM_CLASSES
from mlreassess.datasets import labelsets
from mlreassess.datasets.images import is_image_file
from mlreassess.datasets.labels import class_index
from mlreassess.datasets.labelsets import agreement
from mlreassess.datasets.manifest import Manifest, base_meta, core_table
from mlreassess.datasets.paths import NOT_UTF8, decoded_name, printable
from mlreassess.datasets.skip import raise_or_skip
from mlreassess.errors import InputError, short_repr

VARIANTS = IMAGENETV2_VARIANTS
_NUMBER = re.compile(r"[0-9]{1,4}")  # ASCII digits only: int() also reads '٣' as 3
_WNID = re.compile(r"n[0-9]{8}")
_ANY_VARIANT = re.compile(r"(imagenetv2-.+-format-val|imagenet-.+-format-val|ImageNetV2-.+)")

Sample = tuple[str, str, int]  # (sample_id, path relative to the variant folder, label)


def default_name(variant: str) -> str:
    return f"imagenet_v2_{variant}"


def variant_folder_names(variant: str) -> tuple[str, ...]:
    """Folder names of a variant: the authors' (threshold-0.7 spelled `threshold0.7` in the released
    tarball), imagenetv2_pytorch's `ImageNetV2-<variant>`, and the wnid-folder copies' name."""
    names = [f"imagenetv2-{variant}-format-val"]
    if variant == "threshold-0.7":
        names.append("imagenetv2-threshold0.7-format-val")
    return (*names, f"ImageNetV2-{variant}", f"imagenet-{variant}-format-val")


def _is_class_folder(name: str) -> bool:
    return bool(_NUMBER.fullmatch(name) or _WNID.fullmatch(name))


def find_variant_folder(root: Path, variant: str) -> Path:
    """The variant's folder at or under `root` (any name of `variant_folder_names`)."""
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
    if _ANY_VARIANT.fullmatch(root.name):
        raise InputError(f"{root}: this is another variant's folder, not {names[0]} (--variant {variant})")
    others = sorted(p.name for p in root.iterdir() if p.is_dir() and _ANY_VARIANT.fullmatch(p.name))
    if others:
        raise InputError(f"{root}: has {', '.join(others)} but not {names[0]} (--variant {variant})")
    # A renamed variant folder: accept it if it holds class folders.
    if any(p.is_dir() and _is_class_folder(p.name) for p in root.iterdir()):
        return root
    raise InputError(f"{root}: no ImageNetV2 folder; looked for {' or '.join(names)}/<class>/*.jpeg")


def _folder_class(p: Path) -> int:
    if _NUMBER.fullmatch(p.name) and int(p.name) < NUM_CLASSES:
        return int(p.name)
    if _WNID.fullmatch(p.name):
        return class_index(p.name, str(p))
    raise InputError(f"{p}: class folder name must be a class number 0..{NUM_CLASSES - 1} or a wnid (nNNNNNNNN)")


def list_images(folder: Path, bad: list[tuple[str, str]] | None = None) -> list[Sample]:
    """(sample_id, relative path, label) of every image, in class order (numbers sort numerically). An
    image whose file name is not UTF-8 goes to `bad` as (where, problem) (raises when `bad` is None)."""
    classes: dict[int, Path] = {}
    for p in folder.iterdir():
        if p.name.startswith(".") or not p.is_dir():
            continue
        label = _folder_class(p)
        if label in classes:
            raise InputError(f"{p}: class {label} has two folders ({classes[label].name} and {p.name})")
        classes[label] = p
    if not classes:
        raise InputError(f"{folder}: no class folders (0..{NUM_CLASSES - 1} or wnids)")
    kinds = {bool(_WNID.fullmatch(p.name)) for p in classes.values()}
    if len(kinds) > 1:
        raise InputError(f"{folder}: mixes numbered and wnid class folders; keep one layout")
    out = []
    for label, p in sorted(classes.items()):
        for f in sorted(p.iterdir()):
            if f.is_file() and not f.name.startswith(".") and is_image_file(f.name):
                if decoded_name(f.name) is None:  # no manifest can store it (parquet strings are UTF-8)
                    if bad is None:
                        raise InputError(f"{printable(f)}: {NOT_UTF8}")
                    bad.append((printable(f), NOT_UTF8))
                    continue
                out.append((f"{label}/{f.stem}", f"{p.name}/{f.name}", label))
    return out


# ---- matching a label file's keys to the images ---------------------------------------------------


def _key_class(folder: str, where: str) -> int:
    if _NUMBER.fullmatch(folder) and int(folder) < NUM_CLASSES:
        return int(folder)
    if _WNID.fullmatch(folder):
        return class_index(folder, where)
    raise InputError(f"{where}: key's folder {short_repr(folder)} is not a class (a number 0..{NUM_CLASSES - 1} or a wnid)")


def _key_to_sample(key: str, by_stem: dict[str, list[str]], where: str) -> str | None:
    """The sample id a key names (None: no such image here)."""
    parts = [p for p in key.replace("\\", "/").split("/") if p and p != "."]
    if not parts:
        raise InputError(f"{where}: empty key")
    stem = Path(parts[-1]).stem if is_image_file(parts[-1]) else parts[-1]
    matches = by_stem.get(stem, [])
    if len(parts) >= 2:
        sid = f"{_key_class(parts[-2], where)}/{stem}"
        if matches and sid not in matches:
            raise InputError(f"{where}: the key puts image {stem} in class {sid.split('/')[0]}, but it is in "
                             f"class folder {matches[0].split('/')[0]}")
        return sid if matches else None
    if len(matches) > 1:
        raise InputError(f"{where}: bare stem {stem!r} names several images ({', '.join(matches)}); use <class>/<stem>")
    return matches[0] if matches else None


def attach_labels(samples: list[Sample], entries: list[tuple[str, tuple[int, ...], str]]
                  ) -> tuple[dict[str, tuple[int, ...]], int]:
    """{sample_id: labels} for the samples the entries name, and the number of entries naming none."""
    by_stem: dict[str, list[str]] = {}
    for sid, _, _ in samples:
        by_stem.setdefault(sid.split("/", 1)[1], []).append(sid)
    found: dict[str, tuple[tuple[int, ...], str]] = {}
    unmatched = 0
    for key, ls, where in entries:
        sid = _key_to_sample(key, by_stem, where)
        if sid is None:
            unmatched += 1
            continue
        if sid in found and found[sid][0] != ls:
            raise InputError(f"{where}: conflicting labels for {sid} (also given at {found[sid][1]})")
        found[sid] = (ls, where)
    return {sid: ls for sid, (ls, _) in found.items()}, unmatched


def _file_labels(samples: list[Sample], folder: Path, label_set: str, path: Path, keep_original: bool
                 ) -> tuple[dict[str, tuple[int, ...]], list[tuple[str, str]], dict]:
    """The file's labels per sample, the samples it misses (bad, unless kept), and what the manifest records."""
    labels_of, path = labelsets.resolve(label_set, "imagenet_v2", path)
    multi, unmatched = attach_labels(samples, labels_of.read(path))
    if not multi:
        raise InputError(f"{path}: none of its {unmatched:,} keys names an image in {folder} (a label file for "
                         "another ImageNetV2 variant, or other images?)")
    bad, kept = [], set()
    for sid, rel, label in samples:
        if sid in multi:
            continue
        if keep_original:
            multi[sid] = (label,)
            kept.add(sid)
        else:
            bad.append((str(folder / rel), f"no entry in the labels file {path} (--keep-original gives it [label])"))
    labelled = [(label, multi[sid]) for sid, _, label in samples if sid in multi and sid not in kept]
    meta = {**labelsets.provenance(labels_of, path), "label_source": str(path), "label_entries_unmatched": unmatched,
            "kept_original_label": len(kept),
            # over the images the file labels (not those --keep-original gave [label])
            "label_agreement": agreement.measure([o for o, _ in labelled], [ls for _, ls in labelled])}
    return multi, bad, meta


def build_imagenetv2(
    root: str | os.PathLike,
    variant: str,
    labels_file: str | os.PathLike | None = None,
    name: str | None = None,
    skip_bad: bool = False,
    keep_original: bool = False,
    label_set: str = DEFAULT_V2_LABEL_SET,
    min_agreement: float = DEFAULT_MIN_AGREEMENT,
) -> Manifest:
    """Manifest of an ImageNetV2 variant. Images missing from `labels_file` raise, unless `skip_bad`
    (drop them) or `keep_original` (labels = [folder label]). The build stops when fewer than
    `min_agreement` percent of the images have their folder's class in their labels."""
    if skip_bad and keep_original:
        raise InputError("--skip-bad and --keep-original are exclusive: drop or keep images missing from the labels file")
    folder = find_variant_folder(Path(root).resolve(), variant)
    bad: list[tuple[str, str]] = []
    samples = list_images(folder, bad)
    if not samples:
        raise_or_skip(bad, skip_bad)
        raise InputError(f"{folder}: no images (*.jpeg, *.jpg, *.png) in its class folders")
    if labels_file is None:
        multi, label_meta = {sid: (label,) for sid, _, label in samples}, {
            "label_source": "class folders (labels = [label])", "label_set": None}
    else:
        multi, file_bad, label_meta = _file_labels(samples, folder, label_set, Path(labels_file), keep_original)
        bad += file_bad
    skipped = raise_or_skip(bad, skip_bad)
    rows = [s for s in samples if s[0] in multi]
    if not rows:
        raise InputError(f"{folder}: no images left after dropping those missing from {labels_file}")
    columns = ([sid for sid, _, _ in rows], [rel for _, rel, _ in rows], [lb for _, _, lb in rows], [multi[sid] for sid, _, _ in rows])
    if labels_file is not None:
        agreement.check(label_meta["label_agreement"], str(Path(labels_file).resolve()), min_agreement)
    meta = base_meta("imagenet_v2", name or default_name(variant), folder, variant=variant, **label_meta, skipped=skipped)
    return Manifest(table=core_table(*columns), meta=meta)
