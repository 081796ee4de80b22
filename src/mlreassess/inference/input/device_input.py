"""`--decode gpu`: manifest rows -> uint8 batches decoded and resized on the inference device.

The DataLoader workers do only cheap work: read a JPEG's bytes. What the device decoder is not
given is decoded there by PIL at full size (`open_image`, the PIL path's RGB conversion) and sent
as pixels: files whose bytes are not JPEG (a PNG named .JPEG, an empty file) and 4-component
(CMYK / YCCK) JPEGs, whose colour conversion nvjpeg does not promise to do as PIL does. PatchML
canvases come as PNG pixels when DIR/images holds the PNG of their row (`rendered_png`), are painted
on the device from the sweep's patch cache (`device_canvas`), or, past the cache, are rendered in
the worker.

The main process decodes a batch's JPEGs in one `torchvision.io.decode_jpeg` call on the device
(nvjpeg on CUDA, libjpeg-turbo on a CPU device), one batch ahead on a thread of its own
(`one_ahead`: torchvision's decoder waits for its own stream every batch); if that raises, images
are decoded one by one, an image the device refuses falls back to PIL (counted and said once:
`DecodeStats`, the outputs' `decode_fallbacks`), and only an image PIL cannot read either becomes
that sample's error (the PIL path's text). Out of memory and other CUDA errors are never taken
for bad images. Then everything is resized on the device
(`device_resize`), images of one size together. The output is `data.pil_batches`': (rows, uint8
(B, 3, H, W) on the device, error texts), in order; unreadable samples are zeros.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info
from torchvision.io import ImageReadMode, decode_jpeg

from mlreassess.datasets import samples
from mlreassess.datasets.images import decode_image
from mlreassess.datasets.manifest import Manifest
from mlreassess.errors import InputError, MlreassessError
from mlreassess.inference.input.caches import png_dir
from mlreassess.inference.input.devices import fatal_device_error, host_to_device, out_of_memory
from mlreassess.inference.input.pipeline import InputPipeline, image_opener, one_manifest_batches
from mlreassess.inference.input.device_canvas import CanvasPainter
from mlreassess.inference.input.device_resize import check_device_preprocess, fit
from mlreassess.inference.input.preprocess import Preprocess
from mlreassess.patchml.cache import PatchCache
from mlreassess.patchml.render import rendered_png

log = logging.getLogger(__name__)

# What a worker sends for a sample: JPEG file bytes, HWC uint8 pixels, a canvas to paint on the
# device from the patch cache (no payload), or nothing (the sample's error).
JPEG, PIXELS, CANVAS, ERROR = "jpeg", "pixels", "canvas", "error"
_EMPTY = np.zeros(0, dtype=np.uint8)

# JPEG start-of-frame markers (SOF0-3, 5-7, 9-11, 13-15) and markers without a length field.
_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_NO_LENGTH = frozenset({0x01, *range(0xD0, 0xD8)})


def jpeg_components(data: bytes) -> int | None:
    """Colour components in a JPEG's frame header (1 grey, 3 YCbCr, 4 CMYK / YCCK); None when the
    bytes are not a JPEG or end before the frame header. Reads a few header bytes, no pixels."""
    if data[:3] != b"\xff\xd8\xff":
        return None
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
        elif marker in _NO_LENGTH:
            i += 2
        elif marker in _SOF:
            return data[i + 9] if i + 9 < n else None
        elif marker in (0xD9, 0xDA):  # end of image / start of scan before any frame header
            return None
        else:
            i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    return None


def _pixels(image) -> tuple:
    """An RGB PIL image as a PIXELS item payload: (kind, flat HWC bytes, (h, w), source)."""
    array = np.asarray(image, dtype=np.uint8)
    return PIXELS, array.reshape(-1), array.shape[:2], ""


class EncodedImages(Dataset):
    """Item j -> (row, kind, payload (1-D uint8 array), (h, w) of PIXELS, where the JPEG is from, error text)."""

    def __init__(self, manifest: Manifest, rows: list[int], source_root=None, cache: PatchCache | None = None,
                 cache_index: int = 0, paint_on_device: bool = False):
        """`paint_on_device`: cached PatchML canvases are CANVAS items (painted by the main process);
        else the worker paints them from the memory-mapped cache."""
        self.manifest = manifest
        self.rows = list(rows)
        self.source_root = source_root
        self.cache, self.cache_index = cache, cache_index
        self.paint_on_device = paint_on_device and cache is not None
        self.ids = manifest.sample_ids
        patchml = manifest.kind == "patchml"
        self.png_dir = png_dir(manifest) if patchml else None
        self.samples = None if patchml else samples.reader(manifest)  # opens its files in each worker
        self._open = None  # image_opener, built lazily in each worker

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, j: int) -> tuple:
        return self.item(self.rows[j])

    def item(self, i: int) -> tuple:
        """Manifest row `i` as a worker sends it."""
        try:
            return (i, *self._item(i), "")
        except MlreassessError as exc:
            error = str(exc)
        except Exception as exc:  # a decoder or renderer failure must not kill the worker
            error = f"{type(exc).__name__}: {exc}"
        return i, ERROR, _EMPTY, (0, 0), "", error

    def _item(self, i: int) -> tuple:
        if self.samples is not None:
            data = _read(self.samples, i)
            if jpeg_components(data) in (1, 3):
                return JPEG, np.frombuffer(data, dtype=np.uint8), (0, 0), self.samples.where(i)
        elif self._paint_here(i):
            return CANVAS, _EMPTY, (0, 0), ""
        if self._open is None:
            self._open = image_opener(self.manifest, self.source_root, self.cache, self.cache_index)
        return _pixels(self._open(i))  # PNG, CMYK, not a JPEG at all; PatchML PNG, cache or render

    def _paint_here(self, i: int) -> bool:
        """Whether canvas `i` is painted on the device: no PNG of its row, in the cache; raises the
        cache's error for a canvas with an unreadable source (as `PatchCache.canvas` would)."""
        if not self.paint_on_device or not self.cache.cached(self.cache_index, i):
            return False
        if rendered_png(self.manifest, i, self.png_dir) is not None:
            return False
        rows = self.cache.rows[self.cache_index]
        for s in rows.slots[rows.starts[i] : rows.starts[i + 1]]:
            if int(s) in self.cache.bad:
                raise InputError(self.cache.bad[int(s)])
        return True


def _read(reader, i: int) -> bytes:
    try:
        return reader.read(i)
    except InputError:
        return b""  # not a JPEG: the PIL path's opener then says what is wrong, in its words


@dataclass
class EncodedBatch:
    """A worker's batch: per-item metadata, and the payloads back to back in two flat buffers."""

    rows: torch.Tensor  # int64
    kinds: list[str]
    spans: list[tuple[int, int]]  # [start, end) of each payload in `encoded` (JPEG) or `pixels` (PIXELS)
    shapes: list[tuple[int, int]]  # (h, w) of PIXELS items
    sources: list[str]  # where each JPEG item is from (file, or shard and row / member), for messages
    errors: list[str]
    encoded: torch.Tensor  # uint8 JPEG bytes (stay on the host: the decoder reads them there)
    pixels: torch.Tensor  # uint8 HWC pixels (copied to the device)

    def pin_memory(self) -> "EncodedBatch":
        """Called by the DataLoader's pinning thread: only the pixels are copied to the device."""
        self.pixels = self.pixels.pin_memory()
        return self


def _pack(payloads: tuple, kinds: tuple, kind: str, spans: list) -> torch.Tensor:
    """The `kind` payloads back to back in one uint8 tensor (shared memory in a worker, as torch's
    default collate does); their [start, end) go into `spans`."""
    chosen = [j for j, k in enumerate(kinds) if k == kind]
    sizes = [payloads[j].size for j in chosen]
    flat = torch.empty(sum(sizes), dtype=torch.uint8)
    if get_worker_info() is not None and len(flat):
        flat.share_memory_()
    if chosen:
        np.concatenate([payloads[j] for j in chosen], out=flat.numpy())
    end = 0
    for j, size in zip(chosen, sizes):
        spans[j] = (end, end + size)
        end += size
    return flat


def collate_encoded(items: list) -> EncodedBatch:
    rows, kinds, payloads, shapes, sources, errors = zip(*items)
    spans = [(0, 0)] * len(items)
    encoded = _pack(payloads, kinds, JPEG, spans)
    pixels = _pack(payloads, kinds, PIXELS, spans)
    return EncodedBatch(torch.tensor(rows, dtype=torch.int64), list(kinds), spans, list(shapes), list(sources),
                        list(errors), encoded, pixels)


@dataclass
class DecodeStats:
    """Images a pipeline's device decoder refused and PIL then decoded in the main process, one at a
    time (slow). Counted for the outputs' metadata (`decode_fallbacks`) and said once, as a warning,
    with the first image and why. (One PIL cannot read either is its sample's error, as on the
    PIL path.)"""

    fallbacks: int = 0
    warned: bool = False

    def refused(self, where: str, reason: str) -> None:
        self.fallbacks += 1
        if not self.warned:
            self.warned = True
            log.warning(f"--decode gpu: the device's JPEG decoder refused {where or 'an image'} ({reason}); PIL "
                        "decodes such images in the main process, one at a time (their number is in the "
                        "outputs' metadata, decode_fallbacks)")


class JpegDecoder:
    """Batched `decode_jpeg` on the device; an image the device refuses comes back as the reason (str)."""

    def __init__(self, device: str):
        self.device = torch.device(device)
        # nvjpeg's hardware decoder may write its outputs before work already queued on the
        # caller's stream has run (pytorch/vision#9606, meta-pytorch/torchcodec#1634): memory
        # the caching allocator just recycled from the previous batch could be overwritten.
        # Decoding on a stream of its own keeps its allocations apart (see _decode).
        self.stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None

    def __call__(self, data: list[torch.Tensor]) -> list[torch.Tensor | str]:
        try:
            return list(self._decode(data))
        except RuntimeError as exc:  # one bad image fails the whole call: find it
            _raise_if_device(exc)
            return [self._one(d) for d in data]

    def _one(self, data: torch.Tensor) -> torch.Tensor | str:
        try:
            return self._decode([data])[0]
        except RuntimeError as exc:
            _raise_if_device(exc)
            return str(exc).splitlines()[0][:200] if str(exc).strip() else type(exc).__name__

    def _decode(self, data: list[torch.Tensor]) -> list[torch.Tensor]:
        if self.stream is None:
            return decode_jpeg(data, mode=ImageReadMode.RGB, device=self.device)
        current = torch.cuda.current_stream(self.device)
        with torch.cuda.stream(self.stream):
            images = decode_jpeg(data, mode=ImageReadMode.RGB, device=self.device)
        current.wait_stream(self.stream)
        for image in images:  # freed later, on the compute stream: not reused before it is done
            image.record_stream(current)
        return images


def _raise_if_device(exc: RuntimeError) -> None:
    """Out of memory and CUDA errors are not bad images: the caller must see them."""
    oom = out_of_memory(exc)
    if oom is not None:
        raise oom
    if fatal_device_error(exc):
        raise exc


class DeviceAssembler:
    """An `EncodedBatch` -> (rows, uint8 (B, 3, H, W) on the device, error texts)."""

    def __init__(self, preprocess: Preprocess, device: str, painter: CanvasPainter | None,
                 stats: DecodeStats | None = None):
        self.prep = preprocess
        self.device = torch.device(device)
        self.painter = painter
        self.decoder = JpegDecoder(device)
        self.stats = stats if stats is not None else DecodeStats()

    def __call__(self, batch: EncodedBatch) -> tuple:
        errors = list(batch.errors)
        groups = _same_size({**self._jpegs(batch, errors), **self._pixels(batch)}) + self._canvases(batch)
        return batch.rows, self._fit(groups, len(errors)), errors

    def _jpegs(self, batch: EncodedBatch, errors: list[str]) -> dict[int, torch.Tensor]:
        chosen = [j for j, k in enumerate(batch.kinds) if k == JPEG]
        if not chosen:
            return {}
        decoded = self.decoder([batch.encoded[slice(*batch.spans[j])] for j in chosen])
        out = {}
        for j, image in zip(chosen, decoded):
            if isinstance(image, str):  # refused by the device: why
                reason = image
                image = self._pil_fallback(batch.encoded[slice(*batch.spans[j])], batch.sources[j], j, errors)
                if image is not None:  # (one PIL cannot read either is the sample's error, not a fallback)
                    self.stats.refused(batch.sources[j], reason)
            if image is not None:
                out[j] = image
        return out

    def _pil_fallback(self, data: torch.Tensor, where: str, j: int, errors: list[str]) -> torch.Tensor | None:
        """The image PIL decodes (from its bytes) when the device decoder refused it; None (and its
        error) if PIL cannot."""
        try:
            array = np.array(decode_image(data.numpy().tobytes(), where), dtype=np.uint8)
        except InputError as exc:
            errors[j] = str(exc)
            return None
        return host_to_device(torch.from_numpy(array), self.device).permute(2, 0, 1)

    def _pixels(self, batch: EncodedBatch) -> dict[int, torch.Tensor]:
        chosen = [j for j, k in enumerate(batch.kinds) if k == PIXELS]
        if not chosen:
            return {}
        flat = batch.pixels.to(self.device, non_blocking=True)
        out = {}
        for j in chosen:
            (start, end), (h, w) = batch.spans[j], batch.shapes[j]
            out[j] = flat[start:end].view(h, w, 3).permute(2, 0, 1)
        return out

    def _canvases(self, batch: EncodedBatch) -> list[tuple[list[int], torch.Tensor]]:
        """[(items, their canvases (n, 3, L, L))]: painted together, resized together."""
        chosen = [j for j, k in enumerate(batch.kinds) if k == CANVAS]
        if not chosen:
            return []
        return [(chosen, self.painter.paint([int(batch.rows[j]) for j in chosen]))]

    def _fit(self, groups: list[tuple[list[int], torch.Tensor]], batch_size: int) -> torch.Tensor:
        """The batch: each group of same-size images resized (and cropped) on the device at once;
        samples without an image stay zeros."""
        out = torch.zeros((batch_size, 3, self.prep.height, self.prep.width), dtype=torch.uint8, device=self.device)
        if not groups:
            return out
        order = [j for members, _ in groups for j in members]
        fitted = torch.cat([fit(images, self.prep) for _, images in groups])
        # Pinned, non-blocking index copy: a blocking one (or one from pageable memory) may wait for
        # the forward passes already queued.
        index = host_to_device(torch.from_numpy(np.asarray(order, dtype=np.int64)), self.device)
        return out.index_copy_(0, index, fitted)


def _same_size(images: dict[int, torch.Tensor]) -> list[tuple[list[int], torch.Tensor]]:
    """{item: (3, h, w) image} -> [(items, their images stacked (n, 3, h, w))], one group per size."""
    by_size: dict[tuple, list[int]] = defaultdict(list)
    for j, image in images.items():
        by_size[tuple(image.shape[1:])].append(j)
    return [(members, torch.stack([images[j] for j in members])) for members in by_size.values()]


class DevicePipeline(InputPipeline):
    """`data.InputPipeline` with decode and resize on the device: workers send JPEG bytes (or pixels,
    or nothing for a canvas painted on the device), the main process assembles each batch."""

    collate = staticmethod(collate_encoded)
    uses_slots = False  # payloads of every size: each batch its own shared buffers

    def __init__(self, manifests: dict[int, Manifest], preprocess: Preprocess, device: str, batch_size: int,
                 workers: int, source_root=None, caches: dict | None = None, device_pixels=None):
        """Raises InputError at once (before any worker starts) when the model's preprocessing has no
        device version. `device_pixels(cache)`: the cache's pixels on the device, copied once per
        sweep (default: copied for this pipeline)."""
        check_device_preprocess(preprocess)
        self.painters = {}
        self._device_pixels = device_pixels
        self.assembler = None
        self.stats = DecodeStats()
        super().__init__(manifests, preprocess, device, batch_size, workers, source_root, caches)

    @property
    def decode_fallbacks(self) -> int:
        """Images the device decoder refused so far (`DecodeStats`)."""
        return self.stats.fallbacks

    def dataset_for(self, d: int) -> Dataset:
        cache, index = self.caches[d] or (None, 0)
        self.painters[d] = CanvasPainter.for_pass(self.caches[d], self.device, self._device_pixels)
        return EncodedImages(self.manifests[d], [], self.source_root, cache, index,
                             paint_on_device=self.painters[d] is not None)

    def finish(self, d: int, batches: Iterator) -> Iterator[tuple]:
        assemble = DeviceAssembler(self.preprocess, self.device, self.painters[d], self.stats)
        # An encoded batch carries its rows (and is the caller's to keep).
        return one_ahead(assemble, (batch for _, batch in batches), self.device)


def one_ahead(make: Callable, items: Iterator, device) -> Iterator:
    """`make(item)` of each item, in order, made one item ahead on a thread of its own.

    torchvision's CUDA decoder (decode_jpegs_cuda.cpp) decodes on a stream of its own and waits for
    it (cudaStreamSynchronize) before it returns, every batch: done in the main thread, the host
    would sit in that wait instead of queueing the forward passes. Here batch n + 1 is decoded and
    resized while the main thread queues the models' work on batch n (torch's ops release the GIL).
    The thread queues its kernels on the main thread's current stream and device (both are per
    thread in torch), so they are ordered before the forward passes that use their output."""
    cuda = torch.device(device).type == "cuda"
    stream = torch.cuda.current_stream(device) if cuda else None

    def made(item):
        if not cuda:
            return make(item)
        with torch.cuda.device(device), torch.cuda.stream(stream):
            return make(item)

    with ThreadPoolExecutor(1, thread_name_prefix="mlreassess-decode") as pool:
        pending = None
        for item in items:
            future = pool.submit(made, item)
            if pending is not None:
                yield pending.result()
            pending = future
        if pending is not None:
            yield pending.result()


def device_batches(manifest: Manifest, rows: list[int], preprocess: Preprocess, device: str, batch_size: int,
                   workers: int, source_root=None, cached: tuple[PatchCache, int] | None = None) -> Iterator[tuple]:
    """`data.pil_batches` with decode and resize on `device`: (rows, uint8 images (B, 3, H, W) on
    `device`, error texts) for `rows`, in order. Raises InputError at once (before any worker
    starts) when the model's preprocessing has no device version."""
    check_device_preprocess(preprocess)
    return one_manifest_batches(DevicePipeline, manifest, rows, preprocess, device, batch_size, workers, source_root,
                                cached)


def pipeline_for(decode: str) -> type[InputPipeline]:
    """The input pipeline of `--decode`: `data.InputPipeline` (cpu: PIL in the workers) or
    `DevicePipeline` (gpu); both yield the same batches."""
    return DevicePipeline if decode == "gpu" else InputPipeline
