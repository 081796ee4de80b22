"""PatchML manifests checked when read: every canvas's placements are ones Algorithm 1 can make.

A PatchML manifest is a small file meant to be shared; the pixels are made from it. So `read_manifest`
checks, for every canvas, before anything is rendered or scored (one line names the manifest, the
canvas and the problem):
- the placement columns exist with their types, and each holds k entries (`k` a patch count of the
  set, whose grid fits the canvas);
- boxes are `[x0, y0, x1, y1]` with 0 <= x0 <= x1 and 0 <= y0 <= y1; sizes `[w, h]` are at least 1 and
  at most the cell side; positions `[x, y]` are non-negative and put patch j inside cell j (row-major),
  so it lies inside the canvas and never overlaps another patch (cells are disjoint);
- `labels` is the set of `patch_labels`, and the sample id is one plain file name (it names
  `images/<sample_id>.png`); the source pattern has one `{id}` field and every source file it names
  stays inside the source root (`datasets.paths`).
A negative position would otherwise wrap around in numpy and hide a patch under its neighbour.
"""

from __future__ import annotations

import math
import string
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mlreassess.datasets.paths import bad_names, bad_relative, relative_problem
from mlreassess.errors import InputError, short_repr
from mlreassess.results import check_name

PATCHML_COLUMNS = ("k", "src_ids", "src_boxes", "patch_labels", "sizes", "positions")
# column -> (nesting depth of lists, inner length or None, leaf type check)
_COLUMNS = {
    "src_ids": (1, None, lambda t: pa.types.is_string(t) or pa.types.is_large_string(t)),
    "src_boxes": (2, 4, pa.types.is_integer),
    "patch_labels": (1, None, pa.types.is_integer),
    "sizes": (2, 2, pa.types.is_integer),
    "positions": (2, 2, pa.types.is_integer),
}


@dataclass(frozen=True)
class Grid:
    k: int
    columns: int  # = rows
    cell: int  # side s of a square cell, px


def grid_for(k: int, canvas_size: int) -> Grid:
    """The grid for k patches on an L x L canvas; InputError if the patches cannot fit."""
    if k < 1:
        raise InputError(f"patch count {k}: must be at least 1")
    columns = math.isqrt(k)
    if columns * columns < k:
        columns += 1
    cell = canvas_size // columns
    if cell < 1 or k * cell * cell > canvas_size * canvas_size or k > columns * columns:
        raise InputError(f"patch count {k}: {columns}x{columns} cells do not fit a {canvas_size} px canvas")
    return Grid(k, columns, cell)


def check_source_pattern(pattern: Any, where: str) -> str:
    """A source pattern with exactly the field `{id}` (no attribute, index, conversion or format
    spec: `str.format` would evaluate them)."""
    if not isinstance(pattern, str):
        raise InputError(f"{where}: source_pattern {short_repr(pattern)} is not a string")
    try:
        fields = [(name, spec, conv) for _, name, spec, conv in string.Formatter().parse(pattern) if name is not None]
    except ValueError as exc:
        raise InputError(f"{where}: source_pattern {short_repr(pattern)}: {exc}") from None
    if not fields or any(f != ("id", "", None) for f in fields):
        raise InputError(f"{where}: source_pattern {short_repr(pattern)} must hold '{{id}}' and no other field")
    return pattern


def validate_patchml(table: pa.Table, meta: dict[str, Any], where: str) -> None:
    """Raise InputError naming `where` and the canvas if the manifest's placements are not valid."""
    canvas = _canvas_size(meta, where)
    counts = meta.get("counts")
    if counts is not None and (not isinstance(counts, list) or not all(_is_int(c) and c >= 1 for c in counts)):
        raise InputError(f"{where}: counts {short_repr(counts)} is not a list of patch counts")
    pattern = check_source_pattern(meta.get("source_pattern", "{id}.JPEG"), where)
    _check_columns(table, where)
    ids = table.column("sample_id").to_pylist()
    k = table.column("k").to_numpy(zero_copy_only=False)
    patches = _Patches(table, k, ids, where)
    patches.check_grid(canvas, counts)
    patches.check_geometry(canvas)
    _check_labels(table, ids, where)
    _check_names(table, ids, pattern, where)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _canvas_size(meta: dict[str, Any], where: str) -> int:
    size = meta.get("canvas_size")
    if not _is_int(size) or size < 1:
        raise InputError(f"{where}: canvas_size {short_repr(size)} is not a positive integer")
    return size


def _depth_type(t: pa.DataType, depth: int):
    for _ in range(depth):
        if not (pa.types.is_list(t) or pa.types.is_large_list(t)):
            return None
        t = t.value_type
    return t


def _check_columns(table: pa.Table, where: str) -> None:
    missing = [c for c in PATCHML_COLUMNS if c not in table.column_names]
    if missing:
        raise InputError(f"{where}: a PatchML manifest without its placement columns ({', '.join(missing)})")
    if not pa.types.is_integer(table.schema.field("k").type) or table.column("k").null_count:
        raise InputError(f"{where}: column 'k' is {table.schema.field('k').type} with "
                         f"{table.column('k').null_count} nulls, expected int64 patch counts")
    for name, (depth, _, leaf_ok) in _COLUMNS.items():
        leaf = _depth_type(table.schema.field(name).type, depth)
        if leaf is None or not leaf_ok(leaf):
            raise InputError(f"{where}: column {name!r} is {table.schema.field(name).type}, "
                             f"expected {'list<' * depth}{'string' if name == 'src_ids' else 'int64'}{'>' * depth}")


class _Patches:
    """The placements of every canvas, flattened to one row per patch (vectorised checks)."""

    def __init__(self, table: pa.Table, k: np.ndarray, ids: list, where: str):
        self.ids, self.where, self.k = ids, where, k.astype(np.int64)
        for name, (depth, inner, _) in _COLUMNS.items():
            self._check_lengths(table.column(name).combine_chunks(), name, depth, inner)
        self.row = np.repeat(np.arange(len(k)), self.k)
        self.j = np.arange(len(self.row)) - np.repeat(np.cumsum(self.k) - self.k, self.k)
        self.boxes = _ints(table, "src_boxes", 4)
        self.sizes = _ints(table, "sizes", 2)
        self.positions = _ints(table, "positions", 2)

    def fail(self, row: int, problem: str) -> None:
        raise InputError(f"{self.where}: canvas {short_repr(self.ids[row])}: {problem}")

    def _check_lengths(self, arr: pa.Array, name: str, depth: int, inner: int | None) -> None:
        if arr.null_count:
            self.fail(int(np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))[0]), f"{name} is null")
        lengths = arr.value_lengths().to_numpy()
        bad = np.flatnonzero(lengths != self.k)
        if bad.size:
            r = int(bad[0])
            self.fail(r, f"{name} has {lengths[r]} entries, but k = {self.k[r]}")
        row_of_patch = np.repeat(np.arange(len(self.k)), self.k)
        items = arr.flatten()
        if depth == 2:
            item_len = items.value_lengths().fill_null(0).to_numpy()
            bad = np.flatnonzero((item_len != inner) | items.is_null().to_numpy(zero_copy_only=False))
            if bad.size:
                self.fail(int(row_of_patch[bad[0]]), f"{name} entry is not {inner} integers")
        leaf = items.flatten() if depth == 2 else items
        if leaf.null_count:
            first = int(np.flatnonzero(leaf.is_null().to_numpy(zero_copy_only=False))[0])
            self.fail(int(row_of_patch[first // (inner or 1)]), f"{name} holds a null")

    def check_grid(self, canvas: int, counts: list | None) -> None:
        self.cell = np.zeros(len(self.k), dtype=np.int64)
        self.columns = np.zeros(len(self.k), dtype=np.int64)
        for k in np.unique(self.k):
            r = int(np.flatnonzero(self.k == k)[0])
            if counts is not None and int(k) not in counts:
                self.fail(r, f"k = {k} is not one of the set's patch counts {counts}")
            try:
                grid = grid_for(int(k), canvas)
            except InputError as exc:
                self.fail(r, str(exc))
            self.cell[self.k == k], self.columns[self.k == k] = grid.cell, grid.columns

    def check_geometry(self, canvas: int) -> None:
        b, (w, h), (x, y) = self.boxes, self.sizes.T, self.positions.T
        s = self.cell[self.row]
        cx, cy = (self.j % self.columns[self.row]) * s, (self.j // self.columns[self.row]) * s
        checks = [
            ((b[:, :2] < 0).any(axis=1), lambda p: f"box {b[p].tolist()} has a negative coordinate"),
            ((b[:, 2] < b[:, 0]) | (b[:, 3] < b[:, 1]), lambda p: f"box {b[p].tolist()} is empty (x1 < x0 or y1 < y0)"),
            ((w < 1) | (h < 1), lambda p: f"patch {self.j[p]} has size {[int(w[p]), int(h[p])]}: sizes must be at least 1"),
            ((x < 0) | (y < 0), lambda p: f"patch {self.j[p]} has position {[int(x[p]), int(y[p])]}: positions must be non-negative"),
            ((x + w > canvas) | (y + h > canvas),
             lambda p: f"patch {self.j[p]} at {[int(x[p]), int(y[p])]} with size {[int(w[p]), int(h[p])]} lies outside "
                       f"the {canvas}x{canvas} canvas"),
            ((x < cx) | (y < cy) | (x + w > cx + s) | (y + h > cy + s),
             lambda p: f"patch {self.j[p]} at {[int(x[p]), int(y[p])]} with size {[int(w[p]), int(h[p])]} lies outside "
                       f"its cell {[int(cx[p]), int(cy[p]), int(cx[p] + s[p]), int(cy[p] + s[p])]} (so it would leave the "
                       "canvas or overlap another patch)"),
        ]
        for bad, why in checks:
            if bad.any():
                p = int(np.flatnonzero(bad)[0])
                self.fail(int(self.row[p]), why(p))


def _ints(table: pa.Table, name: str, inner: int) -> np.ndarray:
    """(patches, inner) int64 of a list<list<int>> column whose lengths were checked."""
    leaf = table.column(name).combine_chunks().flatten().flatten()
    return leaf.to_numpy(zero_copy_only=False).astype(np.int64).reshape(-1, inner)


def _check_labels(table: pa.Table, ids: list, where: str) -> None:
    """`labels` is the sorted set of `patch_labels`, every canvas (vectorised; a loop names the
    first bad canvas only on failure)."""
    if _label_sets_match(table):
        return
    for sid, labels, patch_labels in zip(ids, table.column("labels").to_pylist(), table.column("patch_labels").to_pylist()):
        if labels != sorted(set(patch_labels)):
            raise InputError(f"{where}: canvas {short_repr(sid)}: labels {short_repr(labels)} are not the set of its "
                             f"patch_labels {short_repr(patch_labels)}")


def _label_sets_match(table: pa.Table) -> bool:
    def keyed(name: str) -> np.ndarray:
        col = table.column(name).combine_chunks()
        rows = pc.list_parent_indices(col).to_numpy(zero_copy_only=False).astype(np.int64)
        values = pc.list_flatten(col).to_numpy(zero_copy_only=False).astype(np.int64)
        return rows * (1 << 32) + values  # (canvas, class) as one sortable key

    labels = keyed("labels")
    return bool(np.array_equal(labels, np.unique(keyed("patch_labels"))) and (np.diff(labels) > 0).all())


def _check_names(table: pa.Table, ids: list, pattern: str, where: str) -> None:
    """Sample ids name PNG files; source ids name files under the source root (vectorised checks;
    the loops below run only to name the first offender)."""
    prefix, suffix = pattern.split("{id}", 1)
    sources = pc.unique(table.column("src_ids").combine_chunks().flatten())
    files = pc.binary_join_element_wise(prefix, sources, suffix, "")
    if not (pc.any(bad_names(table.column("sample_id"))).as_py() or pc.any(bad_relative(files)).as_py()
            or pc.any(pc.equal(pc.utf8_length(sources), 0)).as_py()):
        return
    for sid in ids:
        try:
            check_name(sid, "sample id")
        except InputError as exc:
            raise InputError(f"{where}: canvas {short_repr(sid)}: {exc} (it names images/<sample_id>.png)") from None
    for src in pc.unique(table.column("src_ids").combine_chunks().flatten()).to_pylist():
        if not src:
            raise InputError(f"{where}: a source id is empty (it names no source image)")
        problem = relative_problem(pattern.format(id=src))
        if problem is not None:
            raise InputError(f"{where}: source id {short_repr(src)}: its file {short_repr(pattern.format(id=src))} "
                             f"{problem}")
