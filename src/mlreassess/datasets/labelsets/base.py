"""What every label set shares: the `LabelSet` record the registry lists, the `V1Labels` a V1 set
reads into, and strict readers for the published files.

A published file is read exactly as published, and anything odd in it stops the build with one
line naming the file and the key: not UTF-8, empty, a key given twice (JSON keeps the last one
silently), NaN or Infinity (Python's JSON accepts them), a label that is not a class index 0..999
written as an integer or an integer string ("356", as Anzaku et al. publish them).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from mlreassess.constants import NUM_CLASSES, NUM_VAL_IMAGES
from mlreassess.errors import InputError, short_repr
from mlreassess.io import read_text

_DIGITS = re.compile(r"[0-9]{1,4}")  # ASCII digits only (str.isdigit takes '³' and '٣'); 4 bound the int()
# A val image as Shankar et al.'s file names it (the ILSVRC2012_img_val.tar member name).
_VAL_FILE = re.compile(r"ILSVRC2012_val_([0-9]{8})\.JPEG")


@dataclass(frozen=True)
class LabelSet:
    """One multi-label set by name: what it labels, how its published file is read."""

    name: str
    kind: str  # the manifest kind it labels: "imagenet_v1" | "imagenet_v2"
    title: str  # who published it, for which images (help and summaries)
    file_hint: str  # the published file --label-file takes, and where it is published
    read: Callable[[Path], Any]  # V1 sets: Path -> V1Labels; V2 sets: Path -> [(key, labels, where)]
    default_file: Callable[[], Path] | None = None  # a copy that ships with a dependency (ReaL: timm's)
    per_class: bool = False  # its authors recommend the mean over classes of the per-class accuracy


@dataclass(frozen=True)
class V1Labels:
    """A V1 label set as read: labels per val image number (1 = ILSVRC2012_val_00000001)."""

    labels: Mapping[int, tuple[int, ...]]
    left_out: Mapping[int, str] = field(default_factory=dict)  # images the set names but excludes, and why
    subset: bool = False  # labels only some val images: the others are no rows of its manifest
    positional: bool = False  # entry i is image i+1 by position (ReaL): a file can be shifted
    other_entries: int = 0  # entries for images that are not ILSVRC-2012 val images (skipped)

    def lookup(self, number: int) -> tuple[int, ...] | str:
        """The labels of val image `number`, or why it is not a row of this set's manifest."""
        if number in self.left_out:
            return self.left_out[number]
        found = self.labels.get(number)
        if found is None:
            return "not labelled by this label set" if self.subset else "no entry in the label file"
        return found


class _DuplicateKey(Exception):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a label (JSON has no {name}; this file was not written as JSON)")


def read_json(path: Path, what: str) -> Any:
    """The JSON value of `path`; InputError naming the file for anything that is not plain JSON."""
    if not path.is_file():
        raise InputError(f"{path}: {what} not found")
    try:
        text = read_text(path)
    except InputError as exc:
        raise InputError(f"{exc}; expected {what} as JSON") from None
    if not text.strip():
        raise InputError(f"{path}: empty file; expected {what}")
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except _DuplicateKey as exc:
        raise InputError(f"{path}: key {short_repr(exc.args[0])} appears twice (JSON would keep only the last)") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON ({exc}); expected {what}") from None
    except (ValueError, RecursionError) as exc:  # NaN / Infinity; nesting deeper than any label file
        raise InputError(f"{path}: not a label file ({str(exc)[:80] or type(exc).__name__})") from None


def class_label(value: Any, where: str) -> int:
    """A class index 0..999 given as an integer or an integer string ("356")."""
    if isinstance(value, int) and not isinstance(value, bool):
        index = value
    elif isinstance(value, str) and _DIGITS.fullmatch(value):
        index = int(value)
    else:
        raise InputError(f"{where}: label {short_repr(value)} is not a class index (an integer or an integer "
                         f"string 0..{NUM_CLASSES - 1})")
    if not 0 <= index < NUM_CLASSES:
        raise InputError(f"{where}: label {index} out of range 0..{NUM_CLASSES - 1}")
    return index


def label_list(value: Any, where: str) -> tuple[int, ...]:
    """A list of class indices (integers or integer strings), sorted, each once; may be empty."""
    if not isinstance(value, list):
        raise InputError(f"{where}: labels must be a list of class indices, got {short_repr(value)}")
    return tuple(sorted({class_label(v, where) for v in value}))


def val_file_number(name: str) -> int | None:
    """1-based image number of a val file name as Shankar et al. publish it
    (`ILSVRC2012_val_00000001.JPEG`); None if `name` is not one."""
    m = _VAL_FILE.fullmatch(name)
    if not m or not 1 <= int(m.group(1)) <= NUM_VAL_IMAGES:
        return None
    return int(m.group(1))
