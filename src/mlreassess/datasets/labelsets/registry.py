"""The label sets by name: every module of this package that defines `LABEL_SET` is one.

A new set is one file here (its reader, its `LabelSet`) plus its name in `constants.LABEL_SETS`,
which the options schema offers as choices (a test checks that the two agree).
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import lru_cache
from pathlib import Path

from mlreassess.constants import LABEL_SETS
from mlreassess.datasets.labelsets.base import LabelSet
from mlreassess.errors import InputError
from mlreassess.provenance import file_sha256


@lru_cache(maxsize=1)
def label_sets() -> dict[str, LabelSet]:
    """name -> LabelSet, sorted by name."""
    package = __name__.rsplit(".", 1)[0]
    found = {}
    for info in sorted(pkgutil.iter_modules([str(Path(__file__).parent)]), key=lambda i: i.name):
        module = importlib.import_module(f"{package}.{info.name}")
        label_set = getattr(module, "LABEL_SET", None)
        if isinstance(label_set, LabelSet):
            found[label_set.name] = label_set
    return dict(sorted(found.items()))


def get(name: str, kind: str) -> LabelSet:
    """The label set `name` for a manifest of `kind`; InputError naming the choices otherwise."""
    sets = label_sets()
    ok = sorted(n for n, s in sets.items() if s.kind == kind)
    if name not in sets or sets[name].kind != kind:
        what = "an ImageNet V1" if kind == "imagenet_v1" else "an ImageNetV2"
        raise InputError(f"--label-set {name}: not a label set for {what} build (choose from {', '.join(ok)})")
    return sets[name]


def label_file(label_set: LabelSet, given: str | Path | None) -> Path:
    """The file to read: the one given, else the set's default copy (InputError when it has none)."""
    if given is not None:
        return Path(given).resolve()
    if label_set.default_file is None:
        raise InputError(f"--label-set {label_set.name} needs --label-file: {label_set.file_hint}")
    return label_set.default_file()


def provenance(label_set: LabelSet, path: Path) -> dict[str, str | bool]:
    """What a manifest records about its labels: the set's name, the file and its sha256, and whether
    `evaluate` also reports the per-class mean accuracy its authors recommend (`real_per_class`)."""
    return {"label_set": label_set.name, "label_file": str(path), "label_sha256": file_sha256(path),
            "per_class_metric": label_set.per_class}


def resolve(name: str, kind: str, given: str | Path | None) -> tuple[LabelSet, Path]:
    """(the label set `name` for `kind`, the file to read it from)."""
    label_set = get(name, kind)
    return label_set, label_file(label_set, given)


def default_dataset(name: str, fallback: str) -> str:
    """The dataset name a build with label set `name` gets unless named (`constants.LABEL_SETS`)."""
    return LABEL_SETS.get(name, (None, None))[1] or fallback
