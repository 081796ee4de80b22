"""A patch cache for PatchML canvases: every source decoded once, every patch resized once.

`render_row` decodes each source JPEG of a canvas again for every canvas. For inference over
PatchML manifests without PNGs, `PatchCache.build` instead decodes each source image once, cuts
and resizes each distinct (source, box, size) once (`render.make_patch`, the same PIL calls), and
stores the uint8 patches in one memory-mapped file in a temporary folder. A patch's size depends
only on its box and its cell size (manifest `sizes`), not on the seed, so one cache serves every
seed's manifest built from the same boxes. Canvases are then pasted from the cache (`render.paint`):
bit-identical to `render_row` and to the PNGs.

DataLoader workers share the file's pages (MAP_SHARED, the page cache), nothing is copied: a
pickled cache carries the file name and small index arrays and maps the file again. Size: the sum
of w*h*3 of the distinct patches; the full ImageNet val pool (53,563 patches, default parameters,
cells of 224 and 149 px) needs 7.8 GiB for any number of seeds. The cache is bounded (`max_bytes`,
and the temporary folder's free space): canvases past the bound are not cached, and callers render
them on the fly. The file is removed when the cache that built it is garbage-collected (or at exit).
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import tempfile
import weakref
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from PIL import Image

from mlreassess.datasets.samples import Sources, manifest_sources
from mlreassess.errors import InputError
from mlreassess.patchml.render import make_patch, paint, resample_filter, resize_painted

# Default bound on the cache file: the full val pool needs 7.8 GiB (module docstring).
PATCH_CACHE_BYTES = 10 << 30
# Free space left in the temporary folder's file system.
FREE_SPACE_MARGIN = 1 << 30


@dataclass
class _Rows:
    """One manifest's canvases as flat arrays: patches of row i are starts[i]:starts[i + 1]."""

    starts: np.ndarray  # (n + 1,) int64
    slots: np.ndarray  # (patches,) int64, index into the cache's slots, -1: not cached
    positions: np.ndarray  # (patches, 2) int64, x, y


def _flat_patches(table: Any) -> tuple[np.ndarray, list[str], np.ndarray, np.ndarray, np.ndarray]:
    """(starts, src ids, boxes (p, 4), sizes (p, 2), positions (p, 2)) of a PatchML manifest table."""
    ids = table.column("src_ids").combine_chunks()
    starts = np.asarray(ids.offsets, dtype=np.int64)
    starts = starts - starts[0]
    src = ids.flatten().to_pylist()

    def pairs(name: str, width: int) -> np.ndarray:
        values = table.column(name).combine_chunks().flatten().flatten()
        return np.asarray(values, dtype=np.int64).reshape(-1, width)

    return starts, src, pairs("src_boxes", 4), pairs("sizes", 2), pairs("positions", 2)


def source_key(manifest: Any, source_root: str | os.PathLike | None) -> tuple[str, ...]:
    """(where the sources are: folder and file pattern, or V1 manifest; filter): manifests with equal
    keys can share one cache."""
    return (*manifest_sources(manifest, source_root).key, manifest.meta["resample"])


def _budget(folder: str, max_bytes: int) -> int:
    return max(0, min(max_bytes, shutil.disk_usage(folder).free - FREE_SPACE_MARGIN))


def _remove(folder: str, owner: int) -> None:
    if os.getpid() == owner:  # a forked worker's copy must not delete the parent's file
        shutil.rmtree(folder, ignore_errors=True)


def _fill_source(task: tuple[str, Sources, str, list[tuple[tuple, tuple, int]], str]) -> list[tuple[int, str]]:
    """Worker: decode one source, write its resized patches into the cache file at their offsets.

    Returns the offsets that could not be filled, with render_row's error for them (a source that
    does not decode fails all its patches; a box outside its image only its own)."""
    src, sources, cache_file, wanted, resample = task
    try:
        image = sources.open(src)
        path = sources.where(src)
    except InputError as exc:
        return [(off, str(exc)) for _, _, off in wanted]
    filt = resample_filter(resample)
    lo = min(off for _, _, off in wanted)
    hi = max(off + 3 * w * h for _, (w, h), off in wanted)
    mm = np.memmap(cache_file, dtype=np.uint8, mode="r+", offset=lo, shape=(hi - lo,))
    failed = []
    for box, (w, h), off in wanted:
        try:
            mm[off - lo : off - lo + 3 * w * h] = make_patch(image, box, (w, h), filt, path).reshape(-1)
        except InputError as exc:
            failed.append((off, str(exc)))
    del mm  # no flush: other mappings of the file see the pages at once (MAP_SHARED); no disk write needed
    return failed


@dataclass
class _Plan:
    """Which patches go where in the cache file."""

    sources: list[str]  # source ids, sorted
    slot_src: np.ndarray  # (slots,) int64 index into `sources`
    boxes: np.ndarray  # (slots, 4) int64
    sizes: np.ndarray  # (slots, 2) int64 w, h
    offsets: np.ndarray  # (slots,) int64 byte offsets; a source's patches are contiguous
    rows: list[_Rows]
    total: int  # bytes


def _plan(manifests: Sequence[Any], rows: Sequence[Sequence[int]] | None, budget: int) -> _Plan:
    """Slots for the distinct (source, box, size) of the chosen rows, canvases in order while they fit."""
    index: dict[tuple, int] = {}
    keys: list[tuple] = []
    per_manifest: list[_Rows] = []
    used, full = 0, False
    for m, manifest in enumerate(manifests):
        starts, src, boxes, sizes, positions = _flat_patches(manifest.table)
        slots = np.full(len(src), -1, dtype=np.int64)
        chosen = range(len(starts) - 1) if rows is None else rows[m]
        for i in chosen if not full else ():
            lo, hi = int(starts[i]), int(starts[i + 1])
            row_keys = [(src[j], tuple(boxes[j]), tuple(sizes[j])) for j in range(lo, hi)]
            new = {k for k in row_keys if k not in index}
            cost = sum(3 * int(k[2][0]) * int(k[2][1]) for k in new)
            if used + cost > budget:
                full = True
                break
            used += cost
            for k in sorted(new):
                index[k] = len(keys)
                keys.append(k)
            slots[lo:hi] = [index[k] for k in row_keys]
        per_manifest.append(_Rows(starts, slots, positions))
    sources = sorted({k[0] for k in keys})
    number = {s: n for n, s in enumerate(sources)}
    slot_src = np.array([number[k[0]] for k in keys], dtype=np.int64)
    box_arr = np.array([k[1] for k in keys], dtype=np.int64).reshape(-1, 4)
    size_arr = np.array([k[2] for k in keys], dtype=np.int64).reshape(-1, 2)
    order = np.argsort(slot_src, kind="stable")
    nbytes = 3 * size_arr[:, 0] * size_arr[:, 1]
    offsets = np.empty(len(keys), dtype=np.int64)
    offsets[order] = np.cumsum(nbytes[order]) - nbytes[order]
    return _Plan(sources, slot_src, box_arr, size_arr, offsets, per_manifest, int(nbytes.sum()))


def _fill(plan: _Plan, sources: Sources, resample: str, cache_file: str, workers: int) -> dict[int, str]:
    """Decode each source once (in `workers` processes if > 1) into the file; {bad slot: error}."""
    wanted: list[list[tuple]] = [[] for _ in plan.sources]
    for s, n in enumerate(plan.slot_src):
        wanted[n].append((tuple(int(v) for v in plan.boxes[s]), tuple(int(v) for v in plan.sizes[s]),
                          int(plan.offsets[s])))
    tasks = [(src, sources, cache_file, wanted[n], resample) for n, src in enumerate(plan.sources)]
    if workers > 1 and len(tasks) > 1:
        with multiprocessing.get_context().Pool(min(workers, len(tasks))) as pool:
            results = list(pool.imap_unordered(_fill_source, tasks, chunksize=8))
    else:
        results = [_fill_source(t) for t in tasks]
    slot_at = {int(off): s for s, off in enumerate(plan.offsets)}
    return {slot_at[off]: error for failed in results for off, error in failed}


class PatchCache:
    """Resized patches of one or more PatchML manifests (same sources and filter), memory-mapped.

    Manifests are numbered in the order given to `build_cache`; rows are manifest row indices.
    """

    def __init__(self, file: str, plan: _Plan, canvas_sizes: list[int], bad: dict[int, str]):
        self.file = file
        self.offsets = plan.offsets
        self.sizes = plan.sizes
        self.rows = plan.rows
        self.canvas_sizes = canvas_sizes
        self.bad = bad  # {slot: error}: patches whose source failed to decode (or box to fit)
        self._map: np.ndarray | None = None

    @property
    def nbytes(self) -> int:
        return int((3 * self.sizes[:, 0] * self.sizes[:, 1]).sum()) if len(self.sizes) else 0

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_map": None}  # workers map the file again: no copy of the pixels

    def _pixels(self) -> np.ndarray:
        if self._map is None:
            self._map = np.memmap(self.file, dtype=np.uint8, mode="r")
        return self._map

    def cached(self, m: int, i: int) -> bool:
        """Whether row `i` of manifest `m` can be painted from the cache (all its patches are here)."""
        rows = self.rows[m]
        return bool((rows.slots[rows.starts[i] : rows.starts[i + 1]] >= 0).all())

    def canvas(self, m: int, i: int) -> np.ndarray:
        """Row `i` of manifest `m` as an (L, L, 3) uint8 array; InputError if a source was unreadable."""
        rows = self.rows[m]
        lo, hi = rows.starts[i], rows.starts[i + 1]
        slots = rows.slots[lo:hi]
        if (slots < 0).any():
            raise KeyError(f"row {i} of manifest {m} is not in the patch cache")
        if self.bad:
            for s in slots:
                if int(s) in self.bad:
                    raise InputError(self.bad[int(s)])
        pixels = self._pixels()
        patches = []
        for s in slots:
            w, h = self.sizes[s]
            off = self.offsets[s]
            patches.append(pixels[off : off + 3 * w * h].reshape(h, w, 3))
        return paint(self.canvas_sizes[m], patches, rows.positions[lo:hi])

    def resized(self, m: int, i: int, size: tuple[int, int], resample: Image.Resampling) -> np.ndarray:
        """Row `i` of manifest `m` resized to `size` (w, h) as an (h, w, 3) uint8 array: the pixels of
        `image(m, i).resize(size, resample)`, computed only where its patches reach when the scale is
        a whole number (`render.resize_painted`)."""
        canvas = self.canvas(m, i)
        rows = self.rows[m]
        lo, hi = rows.starts[i], rows.starts[i + 1]
        rects = [(int(x), int(y), int(w), int(h)) for (x, y), (w, h)
                 in zip(rows.positions[lo:hi], self.sizes[rows.slots[lo:hi]])]
        out = resize_painted(canvas, rects, size, resample)
        return out if out is not None else np.asarray(Image.fromarray(canvas).resize(size, resample))

    def image(self, m: int, i: int) -> Image.Image:
        """Row `i` of manifest `m` as an RGB PIL image (what `render_row` returns)."""
        return Image.fromarray(self.canvas(m, i))


def build_cache(manifests: Sequence[Any], rows: Sequence[Sequence[int]] | None = None,
                source_root: str | os.PathLike | None = None, workers: int = 0,
                max_bytes: int = PATCH_CACHE_BYTES, folder: str | os.PathLike | None = None) -> PatchCache:
    """Decode each source of `rows` of `manifests` once and cache their resized patches.

    All manifests must share source folder, file pattern and filter (InputError otherwise).
    Canvases are taken in order (manifest, row) while their new patches fit the bound; the rest
    are left out (`cached` is False for them). A source that fails to decode does not stop the
    build: its canvases raise InputError naming the file when painted. `workers` > 1: a process pool.
    """
    keys = {source_key(m, source_root) for m in manifests}
    if len(keys) != 1:
        raise InputError("a patch cache needs PatchML manifests sharing one source folder, pattern and filter")
    sources, resample = manifest_sources(manifests[0], source_root), manifests[0].meta["resample"]
    resample_filter(resample)
    tmp = tempfile.mkdtemp(prefix="mlreassess-patches-", dir=folder)
    try:
        plan = _plan(manifests, rows, _budget(tmp, max_bytes))
        cache_file = os.path.join(tmp, "patches.u8")
        with open(cache_file, "wb") as f:
            f.truncate(max(1, plan.total))
        bad = _fill(plan, sources, resample, cache_file, workers)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    cache = PatchCache(cache_file, plan, [int(m.meta["canvas_size"]) for m in manifests], bad)
    weakref.finalize(cache, _remove, tmp, os.getpid())
    return cache
