"""`shankar`: the expert multi-labels of Shankar et al. 2020 ("Evaluating machine accuracy on
ImageNet", ICML), 20,000 val images, as TFDS `imagenet2012_multilabel` reads them.

Published as `human_accuracy_v3.0.0.json` (storage.googleapis.com/brain-car-datasets/imagenet-mistakes/,
the file TFDS downloads; v3.0.0 adds the corrections of Vasudevan et al. 2022). One JSON object:
  initial_annots      {val file name: {"correct": [wnid, ...], "wrong": [...], "unclear": [...]}}
                      (a state is absent when it has no wnid; names that are not ILSVRC2012_val_*
                      are the ImageNetV2 images of the same study, skipped here)
  problematic_images  {val file name: {"reason": ..., ...}}: images the experts found problematic
                      (wrong or unclear original label, drawings, heavy edits, ...)
  imagenet_m          [val file name, ...]: the 68-image ImageNet-M slice (`imagenet_m`)
Other top-level keys are not read (a log line names them); a missing one of these three stops the build.
Its authors' recommendations (TFDS README): a prediction is correct if it is marked correct or
unclear, so both count as labels here; problematic images are left out; and since the 20,000 are
class-balanced but the problematic ones are not, report the mean over classes of the per-class
accuracy (metrics.parquet `real_per_class`, beside the usual per-image metrics).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlreassess.datasets.labels import class_index
from mlreassess.datasets.labelsets.base import LabelSet, V1Labels, read_json, val_file_number
from mlreassess.errors import InputError, short_repr

WHAT = "Shankar et al.'s human_accuracy JSON (initial_annots, problematic_images, imagenet_m)"
KEYS = ("initial_annots", "problematic_images", "imagenet_m")
STATES = ("correct", "wrong", "unclear")
LABEL_STATES = ("correct", "unclear")  # the authors count unclear as correct (lenient)
_VAL_PREFIX = "ILSVRC2012_val_"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HumanAccuracy:
    """The file as read: per val image number, its wnids' class indices by state."""

    annots: dict[int, dict[str, tuple[int, ...]]]
    problematic: dict[int, str]  # image number -> reason
    imagenet_m: tuple[int, ...]
    other_entries: int  # initial_annots entries of non-val (ImageNetV2) images


def _number(name: Any, where: str) -> int:
    number = val_file_number(name) if isinstance(name, str) else None
    if number is None:
        raise InputError(f"{where}: {short_repr(name)} is not a val file name (ILSVRC2012_val_00000001.JPEG "
                         "... ILSVRC2012_val_00050000.JPEG)")
    return number


def _states(value: Any, where: str) -> dict[str, tuple[int, ...]]:
    if not isinstance(value, dict):
        raise InputError(f"{where}: expected an object of {', '.join(STATES)} wnid lists, got {short_repr(value)}")
    unknown = sorted(set(value) - set(STATES))
    if unknown:
        raise InputError(f"{where}: unknown annotation state {short_repr(unknown[0])} (expected {', '.join(STATES)})")
    out, seen = {}, {}
    for state in STATES:
        wnids = value.get(state, [])
        if not isinstance(wnids, list) or not all(isinstance(w, str) for w in wnids):
            raise InputError(f"{where}: {state!r} must be a list of wnids, got {short_repr(wnids)}")
        for w in wnids:
            if seen.get(w, state) != state:
                raise InputError(f"{where}: wnid {short_repr(w)} is both {seen[w]!r} and {state!r}")
            seen[w] = state
        out[state] = tuple(sorted({class_index(w, f"{where}: {state!r}") for w in wnids}))
    return out


def _annots(value: Any, path: Path) -> tuple[dict[int, dict[str, tuple[int, ...]]], int]:
    if not isinstance(value, dict) or not value:
        raise InputError(f"{path}: 'initial_annots' must be a non-empty object {{val file name: annotations}}")
    out, other = {}, 0
    for name, states in value.items():
        if not name.startswith(_VAL_PREFIX):
            other += 1  # an ImageNetV2 image of the same study
            continue
        where = f"{path}: initial_annots[{short_repr(name)}]"
        out[_number(name, where)] = _states(states, where)
    if not out:
        raise InputError(f"{path}: 'initial_annots' names no ILSVRC-2012 val image")
    return out, other


def _problematic(value: Any, path: Path) -> dict[int, str]:
    """{number: reason}; published as an object of reason records (a plain list of names is taken too)."""
    if not isinstance(value, (dict, list)):
        raise InputError(f"{path}: 'problematic_images' must be an object or a list of val file names")
    out = {}
    for name in value:
        info = value[name] if isinstance(value, dict) else None
        reason = info.get("reason") if isinstance(info, dict) else None
        number = _number(name, f"{path}: problematic_images")
        if number in out:
            raise InputError(f"{path}: problematic_images: {name} listed twice")
        out[number] = f"problematic ({reason})" if isinstance(reason, str) and reason else "problematic"
    return out


def _imagenet_m(value: Any, path: Path, annots: dict[int, Any]) -> tuple[int, ...]:
    if not isinstance(value, list):
        raise InputError(f"{path}: 'imagenet_m' must be a list of val file names, got {short_repr(value)}")
    numbers = [_number(name, f"{path}: imagenet_m") for name in value]
    dup = next((n for i, n in enumerate(numbers) if n in numbers[:i]), None)
    if dup is not None:
        raise InputError(f"{path}: imagenet_m: ILSVRC2012_val_{dup:08d}.JPEG listed twice")
    missing = next((n for n in numbers if n not in annots), None)
    if missing is not None:
        raise InputError(f"{path}: imagenet_m: ILSVRC2012_val_{missing:08d}.JPEG has no initial_annots entry")
    return tuple(numbers)


def read_human_accuracy(path: Path) -> HumanAccuracy:
    data = read_json(path, WHAT)
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object with {', '.join(KEYS)}, got a JSON {type(data).__name__}")
    missing = [k for k in KEYS if k not in data]
    if missing:
        raise InputError(f"{path}: not {WHAT}: missing {', '.join(missing)}")
    unknown = sorted(set(data) - set(KEYS))
    if unknown:  # the published file may carry more than the three keys the labels come from
        log.info(f"{path}: not read: its key{'s' * (len(unknown) > 1)} {', '.join(short_repr(k) for k in unknown[:5])}"
                 f"{' ...' * (len(unknown) > 5)} (the labels come from {', '.join(KEYS)})")
    annots, other = _annots(data["initial_annots"], path)
    return HumanAccuracy(annots, _problematic(data["problematic_images"], path),
                         _imagenet_m(data["imagenet_m"], path, annots), other)


def multi_labels(states: dict[str, tuple[int, ...]]) -> tuple[int, ...]:
    """The labels of an image: its correct and unclear classes."""
    return tuple(sorted({c for s in LABEL_STATES for c in states[s]}))


def read(path: Path) -> V1Labels:
    ha = read_human_accuracy(path)
    left_out = {n: why for n, why in ha.problematic.items() if n in ha.annots}
    labels = {n: multi_labels(s) for n, s in ha.annots.items() if n not in left_out}
    return V1Labels(labels=labels, left_out=left_out, subset=True, other_entries=ha.other_entries)


LABEL_SET = LabelSet(
    name="shankar",
    kind="imagenet_v1",
    title="Shankar et al. 2020 expert multi-labels, 20,000 val images (problematic ones left out)",
    file_hint="human_accuracy_v3.0.0.json (TFDS imagenet2012_multilabel; "
              "storage.googleapis.com/brain-car-datasets/imagenet-mistakes/)",
    read=read,
    per_class=True,
)
