"""ImageNet-1k class vocabulary, from the copy timm ships (and where timm keeps its ReaL labels:
reading them is the `real` label set, `datasets.labelsets.real`)."""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

from mlreassess.errors import InputError


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


def class_index(wnid: str, where: str) -> int:
    try:
        return wnid_to_index()[wnid]
    except KeyError:
        raise InputError(f"{where}: unknown wnid {wnid!r} (not an ImageNet-1k class)") from None


def timm_real_labels_path() -> Path:
    return _timm_info_dir() / "imagenet_real_labels.json"
