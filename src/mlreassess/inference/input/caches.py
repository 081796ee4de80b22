"""The patch caches of a sweep's PatchML datasets (`mlreassess.patchml.cache`): each source image
decoded once, before the decode workers start, into a memory-mapped file they share, for every
seed, pass and model of the sweep; and which canvases need one (those without a PNG rendered from
their row).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import torch

from mlreassess.datasets.manifest import Manifest
from mlreassess.errors import InputError
from mlreassess.inference.input.device_canvas import device_pixels
from mlreassess.patchml.cache import PatchCache, build_cache, source_key
from mlreassess.patchml.render import rendered_png
from mlreassess.results import PATCHML_IMAGES


def png_dir(manifest: Manifest) -> Path | None:
    return manifest.source.parent / PATCHML_IMAGES if manifest.source is not None else None


def rows_to_render(manifest: Manifest, rows: list[int]) -> list[int]:
    """The PatchML `rows` without a PNG in DIR/images rendered from that row (all of them when there
    is no such folder)."""
    pngs = png_dir(manifest)
    if pngs is None or not pngs.is_dir():
        return sorted(set(rows))
    return sorted(i for i in set(rows) if rendered_png(manifest, i, pngs) is None)


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
        self._on_device: dict[tuple[int, str], torch.Tensor] = {}

    def device_pixels(self, cache: PatchCache, device: str) -> torch.Tensor:
        """A cache's pixels on `device`, copied once per sweep whatever the passes (--decode gpu)."""
        key = (id(cache), str(device))
        if key not in self._on_device:
            self._on_device[key] = device_pixels(cache, device)
        return self._on_device[key]

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
