"""PatchML pixels: render canvases from a manifest, one at a time or all of them to PNG.

One function paints a canvas (`paint`), so `render_row` (on the fly, e.g. for inference) and the
PNG files are the same pixels. A patch = `src.crop((x0, y0, x1 + 1, y1 + 1))` (inclusive boxes)
resized with the manifest's `resample` filter to its recorded size; Pillow's resampling is
integer fixed-point on RGB uint8, so the pixels depend only on the decoded source (never on
`draft()` JPEG downscaling, which would change them).

Rendering to files is fast because each source image is decoded once per block of canvases (all
of them at once unless the patches would exceed `PATCH_MEMORY_BYTES`) and each distinct
(patch, size) is resized once; workers then paste and save PNGs in parallel.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import struct
import time
import zlib
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
from PIL import Image

from mlreassess.constants import PATCHML_DEFAULT_RESAMPLE
from mlreassess.cpus import available_cpus, capped_workers
from mlreassess.datasets.samples import Sources, manifest_sources
from mlreassess.errors import InputError
from mlreassess.io import atomic_path, remove_stale_tmp
from mlreassess.patchml.pool import DEFAULT_SOURCE_PATTERN, source_path
from mlreassess.progress import bar

RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}
DEFAULT_RESAMPLE = PATCHML_DEFAULT_RESAMPLE
# PNG encoding dominates rendering time. PIL's encoder tries five filters on every row; we use
# the "Up" filter for every row and zlib's Z_RLE strategy: ~5x faster than PIL's default on these
# mostly-black canvases, files ~10% larger, still lossless (see docs/patchml.md).
PNG_ZLIB_LEVEL = 1
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the IEND chunk every complete PNG ends with
# Resized patches held in memory per block; above it, sources are decoded once per block.
PATCH_MEMORY_BYTES = 1 << 30

Box = tuple[int, int, int, int]
Size = tuple[int, int]


@dataclass(frozen=True)
class Canvas:
    """The placements of one manifest row, as plain tuples."""

    sample_id: str
    src_ids: tuple[str, ...]
    boxes: tuple[Box, ...]
    sizes: tuple[Size, ...]
    positions: tuple[Size, ...]


def canvases(table: Any, rows: Iterable[int] | None = None) -> list[Canvas]:
    """Canvas records of `rows` (default all) of a PatchML manifest table."""
    idx = list(range(table.num_rows)) if rows is None else list(rows)
    sub = table.select(["sample_id", "src_ids", "src_boxes", "sizes", "positions"]).take(idx).to_pydict()
    return [
        Canvas(
            sid,
            tuple(ids),
            tuple(tuple(b) for b in boxes),
            tuple(tuple(s) for s in sizes),
            tuple(tuple(p) for p in pos),
        )
        for sid, ids, boxes, sizes, pos in zip(
            sub["sample_id"], sub["src_ids"], sub["src_boxes"], sub["sizes"], sub["positions"]
        )
    ]


def resample_filter(name: str) -> Image.Resampling:
    try:
        return RESAMPLE[name]
    except KeyError:
        raise InputError(f"resample {name!r}: expected one of {', '.join(RESAMPLE)}") from None


def crop_box(image: Image.Image, box: Box, where: str) -> Image.Image:
    x0, y0, x1, y1 = box
    if x1 >= image.width or y1 >= image.height:
        raise InputError(f"{where}: box {list(box)} lies outside the {image.width}x{image.height} image")
    return image.crop((x0, y0, x1 + 1, y1 + 1))


def make_patch(image: Image.Image, box: Box, size: Size, resample: Image.Resampling, where: str) -> np.ndarray:
    """The box cut from `image` and resized to `size` (w, h): an (h, w, 3) uint8 array."""
    return np.asarray(crop_box(image, box, where).resize(size, resample))


def paint(canvas_size: int, patches: Sequence[np.ndarray], positions: Sequence[Size]) -> np.ndarray:
    """Resized patches on a black canvas: an (L, L, 3) uint8 array (numpy: no PIL copies)."""
    canvas = np.zeros((canvas_size, canvas_size, 3), dtype=np.uint8)
    for patch, (x, y) in zip(patches, positions):
        canvas[y : y + patch.shape[0], x : x + patch.shape[1]] = patch
    return canvas


# Pillow's resampling filters and their support (input pixels each side of an output pixel's centre,
# before scaling): what `resize_painted` needs to know which output pixels a patch can reach.
_SUPPORT = {Image.Resampling.BILINEAR: 1.0, Image.Resampling.BICUBIC: 2.0, Image.Resampling.LANCZOS: 3.0,
            Image.Resampling.HAMMING: 1.0, Image.Resampling.BOX: 0.5}


def resize_painted(canvas: np.ndarray, rects: Sequence[tuple[int, int, int, int]], size: Size,
                   resample: Image.Resampling) -> np.ndarray | None:
    """`Image.fromarray(canvas).resize(size, resample)` as an (h, w, 3) uint8 array, computed only
    where the patches (`rects`: x, y, w, h on the canvas) can reach; None when that shortcut does not
    apply (a scale that is not a whole number, or a filter without a support), and the caller
    resizes the whole canvas.

    Bit-identical to the whole resize: at a whole-number scale s, Pillow's coefficients for the
    output box [X0, X1) of a `box=(s*X0, ...)` resize are the whole resize's (same centres, windows
    clipped at the image's edges, not the box's), and an output pixel whose window holds only black
    pixels is 0. The black gaps between patches are most of the canvas; its resize was the largest
    cost of a PatchML sample (tests compare it with the whole resize)."""
    height, width = canvas.shape[:2]
    (w_out, h_out), support = size, _SUPPORT.get(resample)
    if support is None or width % w_out or height % h_out or not w_out or not h_out:
        return None
    sx, sy = width // w_out, height // h_out
    image, out = Image.fromarray(canvas), np.zeros((h_out, w_out, 3), dtype=np.uint8)
    for x, y, w, h in rects:
        # outputs whose window (centre +- support * s, rounded) can meet [x, x + w): one spare each side
        x0 = max(0, int((x - support * sx) // sx) - 1)
        x1 = min(w_out, -int(-(x + w + support * sx) // sx) + 1)
        y0 = max(0, int((y - support * sy) // sy) - 1)
        y1 = min(h_out, -int(-(y + h + support * sy) // sy) + 1)
        part = image.resize((x1 - x0, y1 - y0), resample, box=(x0 * sx, y0 * sy, x1 * sx, y1 * sy))
        out[y0:y1, x0:x1] = np.asarray(part)
    return out


def render_row(manifest: Any, i: int, source_root: str | os.PathLike | None = None) -> Image.Image:
    """Canvas of row `i` of a PatchML `Manifest`, from its source images (RGB, L x L): those it
    records (`datasets.samples.manifest_sources`), or `source_root` (a folder or a V1 manifest).

    Bit-identical to the PNG that `render_to_dir` writes for that row.
    """
    meta = manifest.meta
    sources = manifest_sources(manifest, source_root)
    resample = resample_filter(meta["resample"])
    (c,) = canvases(manifest.table, [i])
    images: dict[str, Image.Image] = {}
    patches = []
    for src, box, size in zip(c.src_ids, c.boxes, c.sizes):
        if src not in images:
            images[src] = sources.open(src)
        patches.append(make_patch(images[src], box, size, resample, sources.where(src)))
    return Image.fromarray(paint(meta["canvas_size"], patches, c.positions))


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


# ---- what a PNG was rendered from -----------------------------------------------------------
# A canvas PNG names the manifest row it was rendered from: a tEXt chunk right after IHDR holds the
# sha256 of the row's placements and of the set's pixel parameters (`canvas_digest`). Readers trust a
# PNG only when that digest is the one of the row they want (`rendered_png`): a PNG of another seed,
# another manifest or an older render is re-rendered (or, without sources, that canvas fails).
PNG_DIGEST_KEY = b"mlreassess-canvas-sha256"
_IHDR_END = 8 + 25  # signature + IHDR chunk (13 data bytes)
_DIGEST_CHUNK = 12 + len(PNG_DIGEST_KEY) + 1 + 64  # length, type, keyword NUL hex digest, crc


def canvas_digest(meta: dict[str, Any], canvas: Canvas) -> str:
    """sha256 (hex) of what a canvas's pixels are made from: its source ids, boxes, sizes and
    positions, and the set's canvas size, resize filter and source pattern. Not the source folder
    (the same files anywhere give the same pixels) and not the source files' bytes (too slow to read)."""
    record = [int(meta["canvas_size"]), meta.get("resample"), meta.get("source_pattern", DEFAULT_SOURCE_PATTERN),
              canvas.src_ids, canvas.boxes, canvas.sizes, canvas.positions]
    return hashlib.sha256(json.dumps(record, separators=(",", ":")).encode()).hexdigest()


def _digest_chunk(digest: str) -> bytes:
    return _png_chunk(b"tEXt", PNG_DIGEST_KEY + b"\0" + digest.encode("ascii"))


def png_matches(path: Path, digest: str) -> bool:
    """Whether `path` is a whole PNG rendered from the canvas with `digest`: its signature, IHDR and
    digest chunk at the start, IEND at the end. Reads ~130 bytes, not the image (cheap enough for
    every canvas in every DataLoader worker). A truncated file (a full disk, a copy cut short), a
    PNG without the digest (an older render) or with another one does not count as rendered."""
    want = _digest_chunk(digest)
    try:
        with open(path, "rb") as f:
            head = f.read(_IHDR_END + _DIGEST_CHUNK)
            f.seek(-len(PNG_END), os.SEEK_END)
            return head[:8] == _PNG_SIGNATURE and head[12:16] == b"IHDR" and head[_IHDR_END:] == want and f.read() == PNG_END
    except OSError:  # missing, or shorter than the marks together
        return False


def rendered_png(manifest: Any, i: int, folder: Path | None) -> Path | None:
    """`folder/<sample_id>.png` when it holds the canvas of row `i` of `manifest` (`png_matches`),
    else None: the one check every reader of rendered canvases uses."""
    if folder is None:
        return None
    (c,) = canvases(manifest.table, [i])
    png = Path(folder) / f"{c.sample_id}.png"
    return png if png_matches(png, canvas_digest(manifest.meta, c)) else None


def encode_png(rgb: np.ndarray, digest: str | None = None) -> bytes:
    """An (h, w, 3) uint8 array as an 8-bit RGB PNG: IHDR, the canvas digest (a tEXt chunk, when
    given), one IDAT, IEND."""
    height, width = rgb.shape[:2]
    rows = rgb.reshape(height, width * 3)
    filtered = np.empty((height, width * 3 + 1), dtype=np.uint8)
    filtered[:, 0] = 2  # filter type "Up": each byte minus the byte above it (mod 256)
    filtered[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])
    deflate = zlib.compressobj(PNG_ZLIB_LEVEL, zlib.DEFLATED, 15, 9, zlib.Z_RLE)
    idat = deflate.compress(filtered.tobytes()) + deflate.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    text = _digest_chunk(digest) if digest is not None else b""
    return _PNG_SIGNATURE + _png_chunk(b"IHDR", header) + text + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def save_png(rgb: np.ndarray, path: Path, digest: str | None = None) -> None:
    """Lossless PNG (`encode_png`), written atomically (tmp file + rename)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(encode_png(rgb, digest))


# ---- rendering many canvases to files -------------------------------------------------------


@dataclass
class RenderSummary:
    rendered: int = 0
    existing: int = 0  # PNGs already there, rendered from the same rows (resumed run)
    stale: int = 0  # PNGs there rendered from other rows (another manifest, an older render): rendered again
    failed: list[dict[str, str]] = field(default_factory=list)  # {sample_id, error}, with skip_bad
    sources_decoded: int = 0
    elapsed_s: float = 0.0

    @property
    def canvases_per_s(self) -> float:
        return self.rendered / self.elapsed_s if self.elapsed_s > 0 else 0.0


def _decode_source(task: tuple[str, Sources, list[tuple[Box, Size]], str]) -> tuple[str, dict | str]:
    """Worker: decode one source, cut and resize all patches it gives; (src, patches or error)."""
    src, sources, wanted, resample = task
    try:
        image = sources.open(src)
        filt = resample_filter(resample)
        where = sources.where(src)
        return src, {(box, size): make_patch(image, box, size, filt, where) for box, size in wanted}
    except InputError as exc:
        return src, str(exc)


def _paint_and_save(task: tuple[str, int, list[np.ndarray], Sequence[Size], str]) -> None:
    out, canvas_size, patches, positions, digest = task
    save_png(paint(canvas_size, patches, positions), Path(out), digest)


def _blocks(todo: list[Canvas]) -> Iterator[list[Canvas]]:
    """Consecutive runs of canvases whose distinct resized patches fit PATCH_MEMORY_BYTES."""
    block: list[Canvas] = []
    seen: set[tuple] = set()
    used = 0
    for c in todo:
        keys = [(s, b, z) for s, b, z in zip(c.src_ids, c.boxes, c.sizes) if (s, b, z) not in seen]
        cost = sum(3 * z[0] * z[1] for _, _, z in keys)
        if block and used + cost > PATCH_MEMORY_BYTES:
            yield block
            block, seen, used = [], set(), 0
            keys = list(zip(c.src_ids, c.boxes, c.sizes))
            cost = sum(3 * z[0] * z[1] for _, _, z in keys)
        block.append(c)
        seen.update(keys)
        used += cost
    if block:
        yield block


def render_workers() -> int:
    """Default number of rendering processes: the CPU cores this process may use."""
    return available_cpus()


def _map(pool: Any, fn: Any, tasks: Iterable, chunksize: int) -> Iterator:
    return pool.imap_unordered(fn, tasks, chunksize=chunksize) if pool is not None else map(fn, tasks)


@dataclass
class _Job:
    """What every block of a `render_to_dir` call shares."""

    sources: Sources
    resample: str
    canvas_size: int
    out_dir: Path
    skip_bad: bool
    progress: bool
    pool: Any  # multiprocessing pool, None: this process
    digests: dict[str, str] = field(default_factory=dict)  # sample id -> canvas_digest


def render_to_dir(
    manifest: Any,
    out_dir: str | os.PathLike,
    source_root: str | os.PathLike | None = None,
    workers: int | None = None,
    skip_bad: bool = False,
    progress: bool = True,
) -> RenderSummary:
    """Render every row of a PatchML manifest to `out_dir/<sample_id>.png`, skipping the PNGs already
    rendered from the same row (`png_matches`); a PNG of another row (another seed's manifest
    copied in, an older render) is rendered again. Temporary files an interrupted render left are
    removed first, so the caller must hold the folder (`generate_from` does).

    A source that cannot be decoded raises InputError naming the file, or with `skip_bad` its
    canvases are left out and listed in `summary.failed`.
    """
    start = time.perf_counter()
    meta = manifest.meta
    job = _Job(
        sources=manifest_sources(manifest, source_root),
        resample=meta["resample"],
        canvas_size=int(meta["canvas_size"]),
        out_dir=Path(out_dir),
        skip_bad=skip_bad,
        progress=progress,
        pool=None,
    )
    resample_filter(job.resample)
    job.out_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_tmp(job.out_dir)
    summary = RenderSummary()
    all_rows = canvases(manifest.table)
    job.digests = {c.sample_id: canvas_digest(meta, c) for c in all_rows}
    todo = [c for c in all_rows if not png_matches(job.out_dir / f"{c.sample_id}.png", job.digests[c.sample_id])]
    summary.existing = len(all_rows) - len(todo)
    summary.stale = sum((job.out_dir / f"{c.sample_id}.png").exists() for c in todo)
    workers = max(1, capped_workers(workers) if workers else render_workers())
    if workers > 1 and todo:
        job.pool = multiprocessing.get_context().Pool(workers)
    try:
        canvas_bar = bar(total=len(todo), desc="rendering canvases", unit="canvas", enabled=progress)
        for block in _blocks(todo):
            _render_block(job, block, summary, canvas_bar)
        canvas_bar.close()
    finally:
        if job.pool is not None:
            job.pool.terminate()
            job.pool.join()
    summary.elapsed_s = time.perf_counter() - start
    return summary


def _decode_block(job: _Job, block: list[Canvas], summary: RenderSummary) -> tuple[dict[tuple, np.ndarray], dict[str, str]]:
    """Decode each source of `block` once: ({(src, box, size): resized patch}, {bad src: error})."""
    wanted: dict[str, set[tuple[Box, Size]]] = defaultdict(set)
    for c in block:
        for src, box, size in zip(c.src_ids, c.boxes, c.sizes):
            wanted[src].add((box, size))
    tasks = [
        (src, job.sources, sorted(wanted[src]), job.resample) for src in sorted(wanted)
    ]
    patches: dict[tuple, np.ndarray] = {}
    bad_sources: dict[str, str] = {}
    decode_bar = bar(_map(job.pool, _decode_source, tasks, chunksize=16), total=len(tasks),
                     desc="decoding sources", unit="image", enabled=job.progress)
    decode_bar.leave = False  # one per block: the bar goes once its block is decoded
    for src, result in decode_bar:
        summary.sources_decoded += 1
        if isinstance(result, str):
            bad_sources[src] = result
        else:
            patches.update({(src, *key): p for key, p in result.items()})
    if bad_sources and not job.skip_bad:
        first = bad_sources[min(bad_sources)]
        more = f" (and {len(bad_sources) - 1} more sources)" if len(bad_sources) > 1 else ""
        raise InputError(f"{first}{more}; use --skip-bad to leave out the canvases that use it")
    return patches, bad_sources


def _render_block(job: _Job, block: list[Canvas], summary: RenderSummary, canvas_bar: Any) -> None:
    """Paint and save the canvases of one block; those using a bad source go to `summary.failed`."""
    patches, bad_sources = _decode_block(job, block, summary)
    paint_tasks = []
    for c in block:
        bad = next((s for s in c.src_ids if s in bad_sources), None)
        if bad is not None:
            summary.failed.append({"sample_id": c.sample_id, "error": bad_sources[bad]})
            canvas_bar.update(1)
            continue
        ps = [patches[key] for key in zip(c.src_ids, c.boxes, c.sizes)]
        paint_tasks.append((str(job.out_dir / f"{c.sample_id}.png"), job.canvas_size, ps, c.positions,
                            job.digests[c.sample_id]))
    del patches  # the painting tasks hold the patches they need
    for _ in _map(job.pool, _paint_and_save, paint_tasks, chunksize=4):
        summary.rendered += 1
        canvas_bar.update(1)
