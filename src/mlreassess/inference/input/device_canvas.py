"""PatchML canvases painted on the inference device from the sweep's patch cache (`--decode gpu`).

The cache (`patchml.cache.PatchCache`) is one file of resized uint8 patches. On CUDA its bytes are
copied to the device once per pass (if they fit a quarter of the free device memory; else the
DataLoader workers paint the canvases from the memory-mapped file, as `--decode cpu` does); a CPU
device reads the memory-mapped file directly, nothing is copied. A canvas is `render.paint`'s:
a black L x L canvas with the patches pasted in placement order (a later patch covers an earlier
one), bit-identical to `PatchCache.canvas` (tested).

On CUDA the canvases of a batch are painted in layers: layer t pastes the t-th patch of every
canvas with one scatter (a handful of kernels, whatever the batch size), layers in placement
order. On a CPU device a plain loop of slice copies is faster.
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import torch

from mlreassess.inference.input.devices import host_to_device
from mlreassess.patchml.cache import PatchCache

log = logging.getLogger(__name__)

# Share of the free device memory a patch cache may take on CUDA (the models need the rest).
DEVICE_CACHE_SHARE = 0.25


def cache_pixels(cache: PatchCache) -> torch.Tensor:
    """The cache file as a flat uint8 CPU tensor on its memory map (nothing read yet). The mapping is
    copy-on-write only because torch wants a writable array; nothing is ever written to it."""
    return torch.from_numpy(np.memmap(cache.file, dtype=np.uint8, mode="c"))[: cache.nbytes]


def device_pixels(cache: PatchCache, device: str) -> torch.Tensor:
    """The cache's bytes on `device` (a CPU device reads the memory-mapped file: nothing copied)."""
    flat = cache_pixels(cache)
    return flat if torch.device(device).type == "cpu" else flat.to(device)


def device_budget(device: str) -> int | None:
    """Bytes of patch cache that may be copied to `device`; None for a CPU device (nothing copied)."""
    dev = torch.device(device)
    if dev.type != "cuda":
        return None
    free, _ = torch.cuda.mem_get_info(dev)
    return int(free * DEVICE_CACHE_SHARE)


class CanvasPainter:
    """Rows of manifest number `index` of `cache` -> uint8 (n, 3, L, L) canvases on `device`."""

    def __init__(self, cache: PatchCache, index: int, device: str, pixels: torch.Tensor | None = None):
        """`pixels`: the cache file's bytes already on `device` (`device_pixels`), else copied here."""
        self.pixels = (pixels if pixels is not None else device_pixels(cache, device)).view(-1, 3)  # a row per pixel
        rows = cache.rows[index]
        self.starts, self.slots, self.positions = rows.starts, rows.slots, rows.positions
        self.size = int(cache.canvas_sizes[index])
        self.pixel_offsets = cache.offsets // 3  # patches start on pixel boundaries (3 bytes each)
        self.sizes = cache.sizes
        self.layered = torch.device(device).type == "cuda"

    @classmethod
    def for_pass(cls, cached: tuple[PatchCache, int] | None, device: str,
                 pixels_of=None) -> "CanvasPainter | None":
        """A painter for the pass's cache; None when there is none, or it is bigger than the device
        budget (the workers then paint the canvases from the memory-mapped file). `pixels_of(cache,
        device)`: where the cache's device copy comes from (default `device_pixels`: a new copy)."""
        if cached is None or not isinstance(cached[0], PatchCache) or cached[0].nbytes == 0:
            return None
        cache, index = cached
        budget = device_budget(device)
        if budget is not None and cache.nbytes > budget:
            log.info(f"patch cache of {cache.nbytes / 2**30:.2f} GiB is over the device budget "
                     f"({budget / 2**30:.2f} GiB): canvases are painted by the decode workers")
            return None
        return cls(cache, index, device, (pixels_of or device_pixels)(cache, device))

    def paint(self, rows: Sequence[int]) -> torch.Tensor:
        """Canvases of `rows` (all cached, none with an unreadable source) as uint8 (n, 3, L, L)."""
        hwc = self._paint_layers(rows) if self.layered else self._paint_loop(rows)
        return hwc.permute(0, 3, 1, 2)

    def _paint_loop(self, rows: Sequence[int]) -> torch.Tensor:
        L = self.size
        out = torch.zeros((len(rows), L, L, 3), dtype=torch.uint8, device=self.pixels.device)
        for n, i in enumerate(rows):
            for j in range(int(self.starts[i]), int(self.starts[i + 1])):
                s = int(self.slots[j])
                (w, h), (x, y), off = self.sizes[s].tolist(), self.positions[j].tolist(), int(self.pixel_offsets[s])
                out[n, y : y + h, x : x + w] = self.pixels[off : off + w * h].view(h, w, 3)
        return out

    def _paint_layers(self, rows: Sequence[int]) -> torch.Tensor:
        L = self.size
        idx = np.asarray(rows, dtype=np.int64)
        first, counts = self.starts[idx], self.starts[idx + 1] - self.starts[idx]
        out = torch.zeros((len(idx) * L * L, 3), dtype=torch.uint8, device=self.pixels.device)
        for t in range(int(counts.max()) if len(idx) else 0):
            canvas = np.flatnonzero(counts > t)
            j = first[canvas] + t  # the t-th patch of each canvas that has one
            s = self.slots[j]
            x, y = self.positions[j, 0], self.positions[j, 1]
            self._scatter(out, canvas * L * L + y * L + x, self.sizes[s, 0], self.sizes[s, 1], self.pixel_offsets[s])
        return out.view(len(idx), L, L, 3)

    def _scatter(self, out: torch.Tensor, base, w, h, src) -> None:
        """Paste patches (one per canvas: their pixels never collide) whose top-left pixel goes to
        `base` in `out` (canvas pixels, flat), w x h each, from pixel `src` of the cache."""
        counts = w * h
        starts = np.cumsum(counts) - counts
        total = int(counts.sum())
        device = out.device
        # One small host-to-device copy, pinned and non-blocking: never a wait for the queued forward passes.
        meta = host_to_device(torch.from_numpy(np.stack([counts, starts, w, base, src]).astype(np.int64)), device)
        counts_t, starts_t, w_t, base_t, src_t = meta
        patch = torch.repeat_interleave(torch.arange(len(counts), device=device), counts_t, output_size=total)
        local = torch.arange(total, device=device) - starts_t[patch]  # pixel index inside its patch
        width = w_t[patch]
        row = torch.div(local, width, rounding_mode="floor")
        dest = base_t[patch] + row * self.size + (local - row * width)
        out.index_copy_(0, dest, self.pixels[src_t[patch] + local])
