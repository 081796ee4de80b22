"""PatchML stage 2 (paper Algorithm 1): compose canvases from the pool, seed-controlled.

For each patch count k, independently and with the whole pool restored: a grid of c = ceil(sqrt(k))
columns and rows with square cells of side s = L // c; while at least k patches remain, k are taken
at random without replacement (equivalently: one random permutation of the pool, cut into runs of
k; the < k left over are unused); patch j goes to cell j (row-major), resized proportionally so its
longer side is s, at a uniformly random integer offset inside its cell. Cells are disjoint, so
patches never overlap.

Determinism on any machine and numpy version: every random number comes from the raw 64-bit
output of PCG64 (a stable stream), seeded by SeedSequence(seed, spawn_key=(k,)) so each k depends
only on (seed, k); the permutation is a stable argsort of raw keys and bounded integers use
rejection sampling, so no numpy distribution code (which may change between versions) is involved.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from mlreassess.constants import PATCHML_DEFAULT_CANVAS, PATCHML_DEFAULT_COUNTS
from mlreassess.datasets.manifest import base_meta, core_table
from mlreassess.datasets.placements import PATCHML_COLUMNS, Grid, grid_for
from mlreassess.errors import InputError
from mlreassess.patchml.pool import Pool

# Grid and grid_for live with the manifest checks (datasets.placements), which need them too.
__all__ = ["PATCHML_COLUMNS", "Batch", "Grid", "compose", "compose_k", "fit_sizes", "grid_for", "manifest_table",
           "patchml_meta"]


def fit_sizes(widths: np.ndarray, heights: np.ndarray, cell: int) -> tuple[np.ndarray, np.ndarray]:
    """Proportional resize so the longer side is `cell`; the shorter is rounded half up, >= 1 px.

    Integer arithmetic only, so the sizes are the same on every machine.
    """
    w = np.asarray(widths, dtype=np.int64)
    h = np.asarray(heights, dtype=np.int64)
    long_side = np.maximum(w, h)
    short = np.maximum(1, (2 * np.minimum(w, h) * cell + long_side) // (2 * long_side))
    full = np.full_like(short, cell)
    return np.where(w >= h, full, short), np.where(w >= h, short, full)


def _bounded(bitgen: np.random.PCG64, bounds: np.ndarray) -> np.ndarray:
    """Uniform integers in [0, bounds) from raw 64-bit draws, exactly unbiased (rejection)."""
    shape = np.shape(bounds)
    bounds = np.asarray(bounds, dtype=np.uint64).reshape(-1)
    out = np.empty(bounds.shape, dtype=np.uint64)
    todo = np.arange(bounds.size)
    # Reject the lowest 2**64 mod b raw values so the remaining count is a multiple of b.
    threshold = (np.uint64(0) - bounds) % bounds
    while todo.size:
        raw = bitgen.random_raw(todo.size)
        ok = raw >= threshold[todo]
        out[todo[ok]] = raw[ok] % bounds[todo[ok]]
        todo = todo[~ok]
    return out.astype(np.int64).reshape(shape)


@dataclass
class Batch:
    """The canvases of one patch count k: row n of each array is canvas `k{k}_{n:06d}`."""

    k: int
    grid: Grid
    patches: np.ndarray  # (m, k) pool indices, placement order
    sizes: np.ndarray  # (m, k, 2) w, h after resize
    positions: np.ndarray  # (m, k, 2) x, y of the top-left corner on the canvas


def compose_k(pool: Pool, seed: int, k: int, canvas_size: int = PATCHML_DEFAULT_CANVAS) -> Batch:
    """Algorithm 1 for one k: floor(len(pool) / k) canvases."""
    if seed < 0:
        raise InputError(f"seed {seed}: must be a non-negative integer")
    grid = grid_for(k, canvas_size)
    bitgen = np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(k,)))
    n = len(pool)
    m = n // k
    # Random permutation: stable argsort of raw keys (ties, ~n^2/2^65, break by pool order).
    order = np.argsort(bitgen.random_raw(n), kind="stable")
    patches = order[: m * k].reshape(m, k)
    w, h = fit_sizes(pool.widths[patches], pool.heights[patches], grid.cell)
    offsets = _bounded(bitgen, np.stack([grid.cell - w + 1, grid.cell - h + 1], axis=-1))
    j = np.arange(k)
    cell_xy = np.stack([(j % grid.columns) * grid.cell, (j // grid.columns) * grid.cell], axis=-1)
    return Batch(
        k=k,
        grid=grid,
        patches=patches.astype(np.int64),
        sizes=np.stack([w, h], axis=-1),
        positions=cell_xy[None, :, :] + offsets,
    )


def _lists(flat: pa.Array, step: int) -> pa.Array:
    """Cut `flat` into consecutive lists of `step` items."""
    return pa.ListArray.from_arrays(pa.array(np.arange(0, len(flat) + 1, step, dtype=np.int32)), flat)


def _nested(values: np.ndarray, k: int, inner: int | None = None) -> pa.Array:
    """(m, k[, inner]) int64 array -> list<int64> (or list<list<int64>>) per row."""
    flat = pa.array(values.reshape(-1), pa.int64())
    return _lists(flat if inner is None else _lists(flat, inner), k)


def manifest_table(pool: Pool, batches: Sequence[Batch]) -> pa.Table:
    """The PatchML manifest table (core columns + placements) of >= 1 batch, sorted by sample_id."""
    sample_ids: list[str] = []
    labels_multi: list[list[int]] = []
    extra: dict[str, list[pa.Array]] = {c: [] for c in PATCHML_COLUMNS}
    ids = pa.array(pool.image_ids, pa.string())
    for b in batches:
        m, k = b.patches.shape
        sample_ids += [f"k{k}_{n:06d}" for n in range(m)]
        plabels = pool.labels[b.patches]
        labels_multi += [sorted(set(row)) for row in plabels.tolist()]
        flat_ids = ids.take(pa.array(b.patches.reshape(-1)))
        extra["k"].append(pa.array(np.full(m, k, dtype=np.int64)))
        extra["src_ids"].append(_lists(flat_ids, k))
        extra["src_boxes"].append(_nested(pool.boxes[b.patches], k, 4))
        extra["patch_labels"].append(_nested(plabels, k))
        extra["sizes"].append(_nested(b.sizes, k, 2))
        extra["positions"].append(_nested(b.positions, k, 2))
    n = len(sample_ids)
    columns = {c: pa.concat_arrays(v) for c, v in extra.items()}
    return core_table(sample_ids, [None] * n, [None] * n, labels_multi, extra=columns)


def compose(
    pool: Pool, seed: int, counts: Sequence[int] = PATCHML_DEFAULT_COUNTS, canvas_size: int = PATCHML_DEFAULT_CANVAS
) -> pa.Table:
    """All canvases for every k in `counts` (duplicates rejected), as a manifest table."""
    if not counts:
        raise InputError("no patch counts given")
    if len(set(counts)) != len(counts):
        raise InputError(f"--counts {','.join(map(str, counts))}: a patch count is repeated")
    if len(pool) < min(counts):
        raise InputError(
            f"the pool has {len(pool)} patches, too few for a canvas of {min(counts)} (lower --min-box-side?)"
        )
    return manifest_table(pool, [compose_k(pool, seed, k, canvas_size) for k in sorted(counts)])


def patchml_meta(
    *,
    dataset: str,
    seed: int,
    counts: Sequence[int],
    canvas_size: int,
    min_box_side: int,
    resample: str,
    source_root: str | None,
    source_pattern: str,
    boxes_file: str,
    boxes_sha256: str,
    pool_size: int,
    bad_rows: Sequence[dict[str, str]] = (),
    source_manifest: str | None = None,
    source_shards: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Manifest metadata: everything that, with the boxes file, determines the canvases. Sources
    found by id in a V1 manifest add its path (`source_manifest`) and its shards' sha256."""
    sources = {k: v for k, v in (("source_manifest", source_manifest), ("source_shards", source_shards)) if v}
    return base_meta(
        "patchml",
        dataset,
        source_root,
        seed=seed,
        counts=sorted(counts),
        canvas_size=canvas_size,
        min_box_side=min_box_side,
        resample=resample,
        source_root=None if source_root is None else str(source_root),
        source_pattern=source_pattern,
        boxes_file=boxes_file,
        boxes_sha256=boxes_sha256,
        pool_size=pool_size,
        bad_rows=list(bad_rows),
        **sources,
    )
