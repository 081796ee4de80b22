"""Manifest rows -> preprocessed uint8 batches, decoded in DataLoader workers.

PatchML canvases without PNGs are pasted from a patch cache (`mlreassess.patchml.cache`: each
source decoded once, before the workers start, into a memory-mapped file they share); rows the
cache could not hold (its size bound) are rendered on the fly by `render_row`. Same pixels either way.

A sample that cannot be read does not stop the batch: its slot holds zeros and its error text,
and the runner leaves it out of the predictions (or stops, with --strict).
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info

from mlreassess.cpus import available_cpus
from mlreassess.datasets import samples
from mlreassess.datasets.images import open_image
from mlreassess.datasets.manifest import Manifest
from mlreassess.errors import InputError, MlreassessError
from mlreassess.inference.preprocess import Preprocess
from mlreassess.patchml.cache import PatchCache, build_cache, source_key
from mlreassess.patchml.render import is_whole_png, render_row
from mlreassess.results import PATCHML_IMAGES


def check_readable(manifest: Manifest) -> None:
    """Fail before any work when a manifest cannot say where its pixels come from."""
    samples.check_sources(manifest)  # the shards it was built from are still the same bytes
    if manifest.kind == "patchml":
        return  # rendered from the manifest (or read from DIR/images/*.png): checked per sample
    if manifest.root is None:
        raise InputError(f"{manifest.source}: manifest has no image root in its metadata (rebuild it with `mlreassess data`)")
    paths = manifest.table.column("path")
    if paths.null_count:
        sid = manifest.sample_ids[paths.to_pylist().index(None)]
        raise InputError(f"{manifest.source}: sample {sid!r} has no image path")


def png_dir(manifest: Manifest) -> Path | None:
    return manifest.source.parent / PATCHML_IMAGES if manifest.source is not None else None


def image_opener(manifest: Manifest, source_root: str | os.PathLike | None = None,
                 cache: PatchCache | None = None, cache_index: int = 0) -> Callable[[int], object]:
    """Row index -> RGB PIL image. PatchML canvases come from DIR/images/<id>.png when it is whole,
    else from `cache` (manifest number `cache_index` in it) when it holds the row, else are rendered
    from the manifest and its source images (same pixels, SPEC 2)."""
    ids = manifest.sample_ids
    if manifest.kind == "patchml":
        pngs = png_dir(manifest)

        def open_canvas(i: int):
            if pngs is not None:
                png = pngs / f"{ids[i]}.png"
                if is_whole_png(png):
                    return open_image(png)
            if cache is not None and cache.cached(cache_index, i):
                return cache.image(cache_index, i)
            return render_row(manifest, i, source_root=source_root)

        return open_canvas
    return samples.reader(manifest).open  # image files, or parquet / tar shards (datasets.formats)


def rows_to_render(manifest: Manifest, rows: list[int]) -> list[int]:
    """The PatchML `rows` without a whole PNG in DIR/images (all of them when there is no such folder)."""
    pngs = png_dir(manifest)
    if pngs is None or not pngs.is_dir():
        return sorted(set(rows))
    ids = manifest.sample_ids
    return sorted(i for i in set(rows) if not is_whole_png(pngs / f"{ids[i]}.png"))


def patch_cache_for(manifests: list[Manifest], rows: list[list[int]], source_root=None,
                    workers: int = 0) -> PatchCache | None:
    """A patch cache for the PatchML `rows` (per manifest) that have no PNG; None when none need
    one or the manifests do not say where their sources are (each canvas then fails on its own)."""
    todo = [rows_to_render(m, r) for m, r in zip(manifests, rows)]
    if not any(todo):
        return None
    try:
        return build_cache(manifests, todo, source_root=source_root, workers=workers)
    except InputError:
        return None


# `cached` of a pass that must use no patch cache (PatchML canvases rendered on the fly).
NO_CACHE = (None, 0)


def pass_cache(manifest: Manifest, rows: list[int], source_root, workers: int,
               cached: tuple | None) -> tuple[PatchCache, int] | None:
    """The patch cache (and the manifest's index in it) a pass over `rows` uses: `cached` as given
    (`NO_CACHE`: none), or, with None, one built here for these rows of a PatchML manifest."""
    if cached is not None:
        return cached if cached[0] is not None else None
    if manifest.kind != "patchml":
        return None
    cache = patch_cache_for([manifest], [list(rows)], source_root, workers)
    return (cache, 0) if cache is not None else None


def shared_caches(manifests: list[Manifest], rows: list[list[int]], source_root,
                  workers: int) -> dict[int, tuple[PatchCache, int]]:
    """One patch cache per group of PatchML manifests sharing sources, for their `rows` (per
    manifest): {manifest number: (cache, its index in the cache)}. Each source image of a group is
    decoded once, however many seeds, passes and models use it."""
    groups: dict[tuple, list[int]] = defaultdict(list)
    for n, m in enumerate(manifests):
        if m.kind != "patchml" or not rows[n]:
            continue
        try:
            groups[source_key(m, source_root)].append(n)
        except InputError:  # no source folder known: its canvases fail one by one
            continue
    out = {}
    for members in groups.values():
        cache = patch_cache_for([manifests[n] for n in members], [rows[n] for n in members], source_root, workers)
        if cache is not None:
            out.update({n: (cache, j) for j, n in enumerate(members)})
    return out


class SweepCaches:
    """The patch caches of a sweep's PatchML datasets, built when first asked for: each source image
    is decoded once for all the seeds, passes and models of the sweep."""

    def __init__(self, manifests: list[Manifest], rows: dict[int, list[int]], source_root, workers: int):
        """`rows`: {manifest number: the rows this process will predict} for the PatchML manifests."""
        self.manifests = manifests
        self.rows = rows
        self.source_root = source_root
        self.workers = workers
        self._built: dict[int, tuple[PatchCache, int]] | None = None
        self._to_render: dict[int, list[int]] = {}

    def _build(self) -> dict[int, tuple[PatchCache, int]]:
        if self._built is None:
            order = sorted(self.rows)
            self._to_render = {d: rows_to_render(self.manifests[d], self.rows[d]) for d in order}
            built = shared_caches([self.manifests[d] for d in order], [self._to_render[d] for d in order],
                                  self.source_root, self.workers)
            self._built = {order[j]: entry for j, entry in built.items()}
        return self._built

    def get(self, d: int) -> tuple[PatchCache | None, int] | None:
        """(cache, manifest index in it) for PatchML manifest `d`, `NO_CACHE` when nothing could be
        cached for it (its passes need not try again), None for other manifests."""
        return self._build().get(d, NO_CACHE) if d in self.rows else None

    def decodes_per_image(self, d: int, passes: int) -> int | None:
        """How many times the sweep decodes each image file behind manifest `d`: images and PNG canvases
        once per pass over it, the sources of cached canvases once. None: some canvases are rendered on
        the fly (each source decoded again for every patch)."""
        if d not in self.rows:
            return passes
        (cache, index), todo = self.get(d), self._to_render.get(d, [])
        if todo and (cache is None or not all(cache.cached(index, i) for i in todo)):
            return None
        return passes if len(todo) < len(self.rows[d]) else 1


class ManifestImages(Dataset):
    """Item j -> (row index, uint8 tensor (3, H, W), error text or '')."""

    def __init__(self, manifest: Manifest, preprocess: Preprocess, rows: list[int], source_root=None,
                 patch_cache: PatchCache | bool = True, cache_index: int = 0, cache_workers: int | None = None):
        """`patch_cache`: a cache built for this manifest (as number `cache_index`), True: build one
        here for PatchML rows without PNGs (with `cache_workers` processes, default
        `default_workers()`), False: render every canvas on the fly (the old path)."""
        self.manifest = manifest
        self.preprocess = preprocess
        self.rows = list(rows)
        self.source_root = source_root
        self.cache_index = cache_index
        if patch_cache is True and manifest.kind == "patchml":
            workers = default_workers() if cache_workers is None else cache_workers
            patch_cache = patch_cache_for([manifest], [self.rows], source_root, workers)
            self.cache_index = 0
        self.patch_cache = patch_cache if isinstance(patch_cache, PatchCache) else None
        self._open = None  # built lazily, in each worker

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, j: int):
        i = self.rows[j]
        if self._open is None:
            self._open = image_opener(self.manifest, self.source_root, self.patch_cache, self.cache_index)
        try:
            return i, self.preprocess(self._open(i)), ""
        except MlreassessError as exc:
            error = str(exc)
        except Exception as exc:  # a decoder or renderer failure must not kill the worker
            error = f"{type(exc).__name__}: {exc}"
        blank = torch.zeros((3, self.preprocess.height, self.preprocess.width), dtype=torch.uint8)
        return i, blank, error


def default_workers() -> int:
    """Decode workers per process: the CPUs this process may use, split among local ranks, max 16."""
    cpus = available_cpus()
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(1, min(16, cpus // max(1, local) - 1))


def collate(items: list) -> tuple:
    """(rows int64 tensor, uint8 images (B, 3, H, W), error texts): what torch's default collate gives,
    but the images are copied by numpy on one thread. torch.stack of uint8 with several intra-op
    threads took ~100 ms of CPU per 128-image batch on a busy 2-core machine, 30x more (measured)."""
    rows, images, errors = zip(*items)
    out = torch.empty((len(images), *images[0].shape), dtype=torch.uint8)
    if get_worker_info() is not None:  # as default_collate: a worker's batch goes to shared memory
        out.share_memory_()
    np.stack([t.numpy() for t in images], out=out.numpy())
    return torch.tensor(rows, dtype=torch.int64), out, list(errors)


def uses_pinned_memory(device: str) -> bool:
    """Pinned host batches (for async host-to-device copies) pay off only when copying to a GPU."""
    return torch.device(device).type == "cuda"


def pil_batches(manifest: Manifest, rows: list[int], preprocess: Preprocess, device: str, batch_size: int,
                workers: int, source_root=None, cached: tuple[PatchCache, int] | None = None) -> Iterator[tuple]:
    """(rows, uint8 images (B, 3, H, W) on `device`, error texts) for `rows`, in order: decoded and
    resized by PIL in `workers` processes. `cached`: see `pass_cache`."""
    cache, index = pass_cache(manifest, rows, source_root, workers, cached) or (False, 0)
    dataset = ManifestImages(manifest, preprocess, rows, source_root=source_root, patch_cache=cache,
                             cache_index=index)
    for idx, images, errors in make_loader(dataset, batch_size, workers, uses_pinned_memory(device)):
        yield idx, images.to(device, non_blocking=True), errors


def make_loader(dataset: Dataset, batch_size: int, workers: int, pin_memory: bool,
                collate_fn: Callable = collate) -> DataLoader:
    """In-order batches (sample order is the manifest's), prefetched by `workers` processes."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        pin_memory=pin_memory,
        collate_fn=collate_fn,
        prefetch_factor=4 if workers > 0 else None,
        persistent_workers=False,
    )
