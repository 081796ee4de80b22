"""ImageNet-1k class vocabulary and ReaL labels, from the copies timm ships."""

from __future__ import annotations

import importlib.util
import json
import os
from functools import lru_cache
from pathlib import Path

from mlreassess.constants import NUM_CLASSES
from mlreassess.errors import InputError
from mlreassess.io import read_text


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


@lru_cache(maxsize=4)
def _load_real(path: str, version: tuple[int, int, int]) -> tuple[tuple[int, ...], ...]:
    """`version` (size, mtime, inode) is part of the cache key: a file edited in place is read again."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: ReaL labels file not found")
    try:
        data = json.loads(read_text(p))
    except json.JSONDecodeError as exc:
        raise InputError(f"{p}: not valid JSON ({exc})") from None
    if not isinstance(data, list) or len(data) != 50_000:
        raise InputError(f"{p}: expected a JSON list of 50,000 label lists (ReaL format)")
    for i, ls in enumerate(data):
        if not isinstance(ls, list) or any(not isinstance(x, int) or not 0 <= x < NUM_CLASSES for x in ls):
            raise InputError(f"{p}: entry {i} (ILSVRC2012_val_{i + 1:08d}): {ls!r} is not a list of labels 0..999")
    return tuple(tuple(ls) for ls in data)


def real_labels(path: str | os.PathLike | None = None) -> tuple[tuple[int, ...], ...]:
    """The 50,000 ReaL label lists; entry i belongs to ILSVRC2012_val_{i+1:08d}.

    Default source: timm's bundled copy (google-research/reassessed-imagenet).
    """
    p = Path(path) if path else timm_real_labels_path()
    try:
        st = p.stat()
    except OSError:
        raise InputError(f"{p}: ReaL labels file not found") from None
    return _load_real(str(p), (st.st_size, st.st_mtime_ns, st.st_ino))
