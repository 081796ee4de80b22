"""Manifest rows -> preprocessed uint8 batches, decoded in DataLoader workers.

PatchML canvases without PNGs are pasted from a patch cache (`caches`); rows the cache could not
hold (its size bound) are rendered on the fly by `render_row`. Same pixels either way.

A sample that cannot be read does not stop the batch: its slot holds zeros and its error text,
and the runner leaves it out of the predictions (or stops, with --strict).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from mlreassess.cpus import available_cpus
from mlreassess.datasets import samples
from mlreassess.datasets.images import open_image
from mlreassess.datasets.manifest import Manifest
from mlreassess.datasets.paths import check_path_column
from mlreassess.errors import InputError, MlreassessError
from mlreassess.inference.input.caches import NO_CACHE, pass_cache, patch_cache_for, png_dir
from mlreassess.inference.input.preprocess import Preprocess, SharedDecode
from mlreassess.inference.input.slots import HELD, Slots, local_ranks, prefetch_that_fits, shared_memory_free
from mlreassess.patchml.cache import PatchCache
from mlreassess.patchml.render import render_row, rendered_png


def check_readable(manifest: Manifest) -> None:
    """Fail before any work when a manifest has no samples or cannot say where its pixels come from."""
    if len(manifest) == 0:
        raise InputError(f"{manifest.source}: the manifest has no samples: nothing to predict")
    samples.check_sources(manifest)  # the shards it was built from are still the same bytes
    if manifest.kind == "patchml":
        return  # rendered from the manifest (or read from DIR/images/*.png): checked per sample
    if manifest.root is None:
        raise InputError(f"{manifest.source}: manifest has no image root in its metadata (rebuild it with `mlreassess data`)")
    paths = manifest.table.column("path")
    if paths.null_count:
        sid = manifest.sample_ids[paths.to_pylist().index(None)]
        raise InputError(f"{manifest.source}: sample {sid!r} has no image path")
    check_path_column(manifest.table, str(manifest.source))  # a manifest made in memory, not read


def image_opener(manifest: Manifest, source_root: str | os.PathLike | None = None,
                 cache: PatchCache | None = None, cache_index: int = 0) -> Callable[[int], object]:
    """Row index -> RGB PIL image. PatchML canvases come from `cache` (manifest number `cache_index`
    in it) when it holds the row, else from DIR/images/<id>.png when it was rendered from that row
    (`render.rendered_png`), else are rendered from the manifest and its source images (same
    pixels, SPEC 2)."""
    if manifest.kind == "patchml":
        pngs = png_dir(manifest)

        def open_canvas(i: int):
            # The cache holds only rows that had no PNG rendered from them when it was built (and its
            # pixels are the PNG's): asked first, it spares each cached canvas the PNG's digest check.
            if cache is not None and cache.cached(cache_index, i):
                return cache.image(cache_index, i)
            png = rendered_png(manifest, i, pngs)  # rendered from this very row, else not used
            if png is not None:
                return open_image(png)
            return render_row(manifest, i, source_root=source_root)

        return open_canvas
    return samples.reader(manifest).open  # image files, or parquet / tar shards (datasets.formats)


class ManifestImages(Dataset):
    """Item j -> (row index, uint8 tensor (3, H, W), error text or ''); `item(row)` takes a manifest
    row directly (what a group's pipeline asks for)."""

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
        return self.item(self.rows[j])

    def item(self, i: int):
        if self._open is None:
            self._open = image_opener(self.manifest, self.source_root, self.patch_cache, self.cache_index)
        try:
            return i, self._pixels(i), ""
        except MlreassessError as exc:
            error = str(exc)
        except Exception as exc:  # a decoder or renderer failure must not kill the worker
            error = f"{type(exc).__name__}: {exc}"
        blank = torch.zeros((3, self.preprocess.height, self.preprocess.width), dtype=torch.uint8)
        return i, blank, error

    def _pixels(self, i: int) -> torch.Tensor:
        """Row `i` preprocessed. A cached PatchML canvas is resized from the cache only where its
        patches are (the same pixels as resizing the whole canvas: `PatchCache.resized`)."""
        image = functools.cache(lambda: self._open(i))  # opened once for all parts of a shared decode
        if isinstance(self.preprocess, SharedDecode):
            return self.preprocess.join(self._resized(part, i, image) for part in self.preprocess.parts)
        return self._resized(self.preprocess, i, image)

    def _resized(self, prep: Preprocess, i: int, image: Callable) -> torch.Tensor:
        cache = self.patch_cache
        if cache is not None and prep.crop == "none" and cache.cached(self.cache_index, i):
            return prep.tensor(cache.resized(self.cache_index, i, (prep.width, prep.height), prep.pil_filter))
        return prep(image())


def default_workers() -> int:
    """Decode workers per process: the CPUs this process may use, split among local ranks, max 16."""
    return max(1, min(16, available_cpus() // local_ranks() - 1))


def uses_pinned_memory(device: str) -> bool:
    """Pinned host batches (for async host-to-device copies) pay off only when copying to a GPU."""
    return torch.device(device).type == "cuda"


@dataclass
class Keys:
    """What a worker is sent for one batch: the dataset, its rows, and (with batch slots) where to
    write it. A numpy array of rows pickles in microseconds; a list of 256 (dataset, row) keys did not."""

    d: int
    rows: np.ndarray
    slot: int | None = None


class _GroupItems(Dataset):
    """A batch's `Keys` -> its items from that dataset's `item(row)`: one Dataset for all datasets of a
    preprocessing group, so one set of workers serves them all. With `slots`, the worker writes the
    batch's pixels into its slot and returns only (slot, count, errors or None)."""

    def __init__(self, datasets: dict[int, Dataset], slots: Slots | None):
        self.datasets, self.slots = datasets, slots

    def __getitems__(self, keys: Keys):
        items = [self.datasets[keys.d].item(r) for r in keys.rows.tolist()]
        if self.slots is None:
            return items
        out = self.slots.view(keys.slot, len(items)).numpy()
        for j, (_, image, _) in enumerate(items):
            # numpy, on this one thread: torch.stack of uint8 with several intra-op threads took
            # ~100 ms of CPU per 128-image batch on a busy 2-core machine, 30x more (measured).
            np.copyto(out[j], image.numpy())
        errors = [e for _, _, e in items]
        return keys.slot, len(items), (errors if any(errors) else None)

    def __getitem__(self, key):
        raise TypeError("batches only: use __getitems__ with Keys")

    def __len__(self) -> int:
        return sum(len(ds.manifest) for ds in self.datasets.values())


def _as_is(batch):
    """The collate of slot batches: the worker already wrote the batch (picklable, unlike a lambda)."""
    return batch


class _RowBatches(Sampler):
    """`Keys` for the rows set before each iteration, in order. The main process draws them, so a
    persistent DataLoader serves every dataset and pass of its group in turn."""

    def __init__(self, batch_size: int, slots: Slots | None):
        self.batch_size, self.slots = batch_size, slots
        self.d, self.rows = 0, np.zeros(0, dtype=np.int64)

    def set(self, d: int, rows) -> None:
        self.d, self.rows = d, np.asarray(rows, dtype=np.int64)

    def __iter__(self):
        for i in range(0, len(self.rows), self.batch_size):
            yield Keys(self.d, self.rows[i : i + self.batch_size], self.slots.take() if self.slots else None)

    def chunks(self) -> list[torch.Tensor]:
        """The rows of each batch `__iter__` gives, as int64 tensors, in order."""
        t = torch.from_numpy(self.rows)
        return list(t.split(self.batch_size)) if len(t) else []

    def __len__(self) -> int:
        return -(-len(self.rows) // self.batch_size)


PREFETCH = 2  # batches each worker prepares ahead (with 15 workers: 30 batches in flight)


class InputPipeline:
    """Batches of one preprocessing group's datasets, decoded by DataLoader workers that live as long
    as the pipeline (every pass and dataset of the group), not one pass. Workers write the pixels into
    shared batch slots (`slots`); the main process yields views of them, copied to the device on a
    side stream. Subclasses say what a worker makes of a row (`dataset_for`), how it batches
    (`collate`), and what the main process does with a batch (`finish`): in order, (rows, uint8
    images (B, 3, H, W) on the device, error texts). A batch on a CPU device is a view of its slot:
    valid while the consumer takes the next `slots.HELD` - 1 batches (`one_manifest_batches` copies)."""

    collate: Callable | None = staticmethod(_as_is)
    uses_slots = True
    decode_fallbacks: int | None = None  # PIL decodes every image: nothing falls back (`device_input`)

    def __init__(self, manifests: dict[int, Manifest], preprocess: Preprocess, device: str, batch_size: int,
                 workers: int, source_root=None, caches: dict[int, tuple[PatchCache, int] | None] | None = None):
        """`caches`: {dataset number: `cached`} for PatchML datasets (see `pass_cache`; None: build one)."""
        self.manifests, self.preprocess, self.device = manifests, preprocess, device
        self.source_root = source_root
        self.caches = {d: pass_cache(m, range(len(m)), source_root, workers, (caches or {}).get(d))
                       for d, m in manifests.items()}
        batch_bytes = batch_size * 3 * preprocess.height * preprocess.width
        prefetch = prefetch_that_fits(PREFETCH, workers, batch_bytes, shared_memory_free()) if self.uses_slots else PREFETCH
        self.in_flight = prefetch * workers  # batches the workers may have made before the consumer asks
        self.slots = (Slots.for_loader(prefetch, workers, batch_size, preprocess.height, preprocess.width)
                      if self.uses_slots else None)
        self._pin = self.slots is not None and uses_pinned_memory(device)  # once the workers run (`slots`)
        self.sampler = _RowBatches(batch_size, self.slots)
        items = _GroupItems({d: self.dataset_for(d) for d in manifests}, self.slots)
        self.loader = DataLoader(items, batch_sampler=self.sampler, num_workers=workers, collate_fn=self.collate,
                                 pin_memory=self.slots is None and uses_pinned_memory(device),
                                 prefetch_factor=prefetch if workers > 0 else None, persistent_workers=workers > 0)

    def dataset_for(self, d: int) -> Dataset:
        cache, index = self.caches[d] or (None, 0)
        return ManifestImages(self.manifests[d], self.preprocess, [], source_root=self.source_root,
                              patch_cache=cache or False, cache_index=index)

    def batches(self, d: int, rows) -> Iterator[tuple]:
        """Dataset `d`'s `rows`, in order, in batches."""
        self.sampler.set(d, rows)
        loaded = iter(self.loader)  # the first time: forks the (persistent) workers
        if self._pin:  # after the fork: pinned pages may be do-not-fork (`slots`)
            self.slots.pin()
            self._pin = False
        return self.finish(d, zip(self.sampler.chunks(), loaded))

    def finish(self, d: int, batches: Iterator[tuple]) -> Iterator[tuple]:
        """(rows, (slot, count, errors)) -> (rows, images on the device, error texts)."""
        views = ((rows, self.slots.view(slot, n), errors or [""] * n) for rows, (slot, n, errors) in batches)
        return to_device(views, self.device)

    def close(self) -> None:
        """Stop the workers now (they also stop when the pipeline is garbage collected)."""
        iterator = getattr(self.loader, "_iterator", None)
        if iterator is not None and hasattr(iterator, "_shutdown_workers"):
            iterator._shutdown_workers()
        self.loader = None
        if self.slots is not None:
            self.slots.unpin()


def to_device(batches: Iterator[tuple], device: str) -> Iterator[tuple]:
    """(rows, uint8 images, errors) batches with the images on `device`. On CUDA each batch is
    copied on a side stream as soon as it arrives, so batch n+1 is copied while batch n's forward
    runs on the compute stream, which waits for the copy's event only when it uses the batch; the
    host waits for a copy (long done) only before its slot can be written again (`slots.HELD`)."""
    if torch.device(device).type != "cuda":
        for rows, images, errors in batches:
            yield rows, images.to(device), errors
        return
    stream, pending, copies = torch.cuda.Stream(device), None, []
    for rows, images, errors in batches:
        with torch.cuda.stream(stream):
            on_device = images.to(device, non_blocking=True)
            copied = torch.cuda.Event()
            copied.record(stream)
        copies.append(copied)
        if len(copies) >= HELD - 1:  # the oldest batch's slot may be rewritten after the next take
            copies.pop(0).synchronize()
        if pending is not None:
            yield _ready(pending, device)
        pending = (rows, on_device, errors, copied)
    if pending is not None:
        yield _ready(pending, device)


def _ready(pending: tuple, device: str) -> tuple:
    rows, images, errors, copied = pending
    current = torch.cuda.current_stream(device)
    current.wait_event(copied)
    images.record_stream(current)  # made on the side stream, used (and freed) on this one
    return rows, images, errors


def one_manifest_batches(pipeline: type, manifest: Manifest, rows: list[int], preprocess: Preprocess, device: str,
                         batch_size: int, workers: int, source_root=None,
                         cached: tuple[PatchCache, int] | None = None, owned: bool = True) -> Iterator[tuple]:
    """`pipeline`'s batches of `rows` of one manifest (a pipeline made for them alone); each the
    caller's to keep, unless not `owned` (then as the sweep gets them: a CPU batch is valid while the
    next `slots.HELD` - 1 are taken)."""
    cached = pass_cache(manifest, rows, source_root, workers, cached) or NO_CACHE  # a cache for these rows only
    p = pipeline({0: manifest}, preprocess, device, batch_size, workers, source_root, {0: cached})
    try:
        for rows_, images, errors in p.batches(0, rows):
            # The caller may keep every batch: it gets its own copy, not a view of a reused slot.
            yield rows_, (images.clone() if owned and images.device.type == "cpu" else images), errors
    finally:
        p.close()


def pil_batches(manifest: Manifest, rows: list[int], preprocess: Preprocess, device: str, batch_size: int,
                workers: int, source_root=None, cached: tuple[PatchCache, int] | None = None) -> Iterator[tuple]:
    """(rows, uint8 images (B, 3, H, W) on `device`, error texts) for `rows`, in order: decoded and
    resized by PIL in `workers` processes. `cached`: see `pass_cache`."""
    return one_manifest_batches(InputPipeline, manifest, rows, preprocess, device, batch_size, workers, source_root,
                                cached)
