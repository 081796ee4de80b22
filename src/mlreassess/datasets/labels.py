"""ImageNet-1k class vocabulary, from the copy timm ships (and where timm keeps its ReaL labels:
reading them is the `real` label set, `datasets.labelsets.real`), and the class names other copies
give the same classes (Hugging Face's `IMAGENET2012_CLASSES`, shipped in
`mlreassess/resources/hf_imagenet_classes/`)."""

from __future__ import annotations

import importlib.util
import json
from functools import lru_cache
from importlib import resources
from pathlib import Path

from mlreassess.errors import InputError, MlreassessError

HF_CLASSES_FILE = ("resources", "hf_imagenet_classes", "imagenet2012_classes.json")


def _timm_info_dir() -> Path:
    """timm's bundled `data/_info` folder, found without importing timm (that imports torch: seconds)."""
    spec = importlib.util.find_spec("timm")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("timm is not installed: it ships the ImageNet class list")
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "_info"


@lru_cache(maxsize=1)
def wnid_to_index() -> dict[str, int]:
    """wnid (e.g. 'n01440764') -> class index 0..999, in the standard sorted-synset order.

    Read from the synset list timm's ImageNetInfo('imagenet-1k') uses, without importing timm
    (that imports torch), so label-only commands stay fast.
    """
    return {wnid: i for i, wnid in enumerate(_wnids())}


@lru_cache(maxsize=1)
def _wnids() -> tuple[str, ...]:
    return tuple((_timm_info_dir() / "imagenet_synsets.txt").read_text().split())


@lru_cache(maxsize=1)
def _lemmas() -> dict[str, str]:
    lines = (_timm_info_dir() / "imagenet_synset_to_lemma.txt").read_text().splitlines()
    return dict(line.split("\t", 1) for line in lines if "\t" in line)


def class_wnid(index: int) -> str:
    return _wnids()[index]


def class_name(index: int) -> str:
    """Short human name of a class: the first lemma of its description ('tench')."""
    return _lemmas()[class_wnid(index)].split(",")[0]


def class_description(index: int) -> str:
    """All the lemmas of a class, as timm's synset file gives them ('tench, Tinca tinca')."""
    return _lemmas()[class_wnid(index)]


@lru_cache(maxsize=1)
def hf_class_names() -> tuple[str, ...]:
    """Hugging Face's ClassLabel names of imagenet-1k, in class order (`IMAGENET2012_CLASSES`: timm's
    descriptions, but class 517 is 'crane2', since `datasets` refuses two classes named 'crane')."""
    path = resources.files("mlreassess").joinpath(*HF_CLASSES_FILE)
    classes = json.loads(path.read_text(encoding="utf-8"))
    if list(classes) != list(_wnids()):
        raise MlreassessError(f"{path}: its wnids are not the 1,000 ImageNet-1k classes in order (damaged install?)")
    return tuple(classes.values())


def _name_form(text: str) -> str:
    return " ".join(str(text).replace("_", " ").split()).casefold()


@lru_cache(maxsize=1)
def _name_forms() -> tuple[frozenset[str], ...]:
    """Per class, the names a copy may give it: Hugging Face's, timm's description, and the first
    lemma of either ('crane2', 'crane'; 'tench, Tinca tinca', 'tench'), compared without case."""
    forms = []
    for i, hf in enumerate(hf_class_names()):
        whole = {hf, class_description(i)}
        forms.append(frozenset(_name_form(n) for n in whole | {n.split(",")[0] for n in whole}))
    return tuple(forms)


def names_class(name: str, index: int) -> bool:
    """Whether `name` (a ClassLabel name of some copy), whole or its first lemma, names class `index`."""
    forms = _name_forms()[index]
    return _name_form(name) in forms or _name_form(name.split(",")[0]) in forms


def classes_named(name: str) -> list[int]:
    """The classes `name` names (two for 'crane' and 'maillot'; none for a name of no class)."""
    return [i for i in range(len(_name_forms())) if names_class(name, i)]


def class_index(wnid: str, where: str) -> int:
    try:
        return wnid_to_index()[wnid]
    except KeyError:
        raise InputError(f"{where}: unknown wnid {wnid!r} (not an ImageNet-1k class)") from None


def timm_real_labels_path() -> Path:
    return _timm_info_dir() / "imagenet_real_labels.json"
