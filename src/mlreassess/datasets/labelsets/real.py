"""`real`: the Reassessed Labels of Beyer et al. 2020 ("Are we done with ImageNet?"), the V1 default.

Published as `real.json` (google-research/reassessed-imagenet): a JSON list of 50,000 label
lists, entry i for ILSVRC2012_val_{i+1:08d}; 3,163 are empty (no valid label). timm ships the same
file as `timm/data/_info/imagenet_real_labels.json`, the default copy.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from mlreassess.constants import NUM_CLASSES, NUM_VAL_IMAGES
from mlreassess.datasets.labels import timm_real_labels_path
from mlreassess.datasets.labelsets.base import LabelSet, V1Labels, label_list, read_json
from mlreassess.errors import InputError


@lru_cache(maxsize=4)
def _load_real(path: str, version: tuple[int, int, int]) -> tuple[tuple[int, ...], ...]:
    """`version` (size, mtime, inode) is part of the cache key: a file edited in place is read again."""
    p = Path(path)
    data = read_json(p, "ReaL labels (a JSON list of 50,000 label lists)")
    if not isinstance(data, list) or len(data) != NUM_VAL_IMAGES:
        got = f"a list of {len(data):,}" if isinstance(data, list) else f"a JSON {type(data).__name__}"
        raise InputError(f"{p}: expected a JSON list of {NUM_VAL_IMAGES:,} label lists (ReaL format), got {got}")
    out = []
    for i, ls in enumerate(data):
        # fast path: the published file holds lists of ints in range
        if isinstance(ls, list) and all(type(x) is int and 0 <= x < NUM_CLASSES for x in ls):
            out.append(tuple(sorted(set(ls))))
        else:
            out.append(label_list(ls, f"{p}: entry {i} (ILSVRC2012_val_{i + 1:08d})"))
    return tuple(out)


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


def read(path: Path) -> V1Labels:
    lists = real_labels(path)
    return V1Labels(labels={i + 1: ls for i, ls in enumerate(lists)}, positional=True)


LABEL_SET = LabelSet(
    name="real",
    kind="imagenet_v1",
    title="ReaL (Beyer et al. 2020), all 50,000 val images",
    file_hint="real.json of google-research/reassessed-imagenet (default: the copy timm ships)",
    read=read,
    default_file=timm_real_labels_path,
)
