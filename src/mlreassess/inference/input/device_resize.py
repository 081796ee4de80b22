"""Resize (and timm's centre crop) of uint8 image tensors on the inference device, close to PIL.

`--decode gpu` resizes decoded images where the model runs. The pixels follow the PIL path
(`Preprocess.__call__`) as closely as float tensor code can: `F.interpolate(antialias=True)`
uses PIL's filters (support scaled by the reduction, bicubic a = -0.5), and like PIL we resize one
axis at a time, rounding and clamping to 0..255 between the passes, in PIL's pass order; nearest
picks PIL's own source pixels (exact). What is left is PIL's fixed-point arithmetic against
float32: +-1 level on a small fraction of pixels, rarely 2 (measured: docs/decode.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import PIL
import torch
import torch.nn.functional as F

from mlreassess.errors import InputError
from mlreassess.inference.input.devices import host_to_device
from mlreassess.inference.input.preprocess import Preprocess

# The timm interpolations done on the device: PIL's filters that torch has (antialiased), and
# nearest (PIL's pixel picks); lanczos, box, hamming, ... are left to the PIL path.
TORCH_MODES = {"bicubic": "bicubic", "bilinear": "bilinear"}
INTERPOLATIONS = (*TORCH_MODES, "nearest")
# timm's eval crop modes we reproduce ('border' pads with the mean colour: left to the PIL path).
CROP_MODES = ("center", "squash")
# Pillow 13 resizes vertically first when the height shrinks much more than the width
# (python-pillow/Pillow#9549); older Pillow always resizes horizontally first.
_PIL_VERTICAL_FIRST = int(PIL.__version__.split(".")[0]) >= 13


def check_device_preprocess(prep: Preprocess) -> None:
    """InputError (one line) when `prep` cannot be done on the device."""
    if prep.interpolation not in INTERPOLATIONS:
        raise InputError(f"--decode gpu: the model's interpolation {prep.interpolation!r} has no device resize "
                         f"({', '.join(INTERPOLATIONS)}); use --decode cpu")
    if prep.crop == "center" and prep.crop_mode not in CROP_MODES:
        raise InputError(f"--decode gpu: the model's crop mode {prep.crop_mode!r} has no device version "
                         f"({', '.join(CROP_MODES)}); use --decode cpu")


@dataclass(frozen=True)
class Geometry:
    """Resize an h x w image to `size`, then copy its window at `src` (top, left) of `extent`
    (height, width) to `dst` (top, left) of the zero output (padding where the image is smaller)."""

    size: tuple[int, int]
    src: tuple[int, int] = (0, 0)
    dst: tuple[int, int] = (0, 0)
    extent: tuple[int, int] | None = None


def _resized_size(h: int, w: int, prep: Preprocess) -> tuple[int, int]:
    """The size timm's eval transform resizes an h x w image to before its centre crop."""
    crop_pct = prep.crop_pct or 0.875  # timm's DEFAULT_CROP_PCT
    scale = (math.floor(prep.height / crop_pct), math.floor(prep.width / crop_pct))
    if prep.crop_mode == "squash":
        return scale
    if scale[0] == scale[1]:  # torchvision Resize(int): shorter side to s, longer truncated
        short, long = (w, h) if w <= h else (h, w)
        new_long = int(scale[0] * long / short)
        return (new_long, scale[0]) if w <= h else (scale[0], new_long)
    ratio = min(h / scale[0], w / scale[1])  # timm ResizeKeepRatio (longest=0)
    return round(h / ratio), round(w / ratio)


def _centre(resized: int, crop: int) -> tuple[int, int, int]:
    """(src offset, dst offset, extent) on one axis of torchvision's CenterCrop (zero padding)."""
    if crop > resized:
        return 0, (crop - resized) // 2, resized
    return int(round((resized - crop) / 2.0)), 0, crop


def geometry(h: int, w: int, prep: Preprocess) -> Geometry:
    """Where an h x w image goes in the model's (height, width) input."""
    if prep.crop != "center":
        return Geometry((prep.height, prep.width))
    rh, rw = _resized_size(h, w, prep)
    (sy, dy, eh), (sx, dx, ew) = _centre(rh, prep.height), _centre(rw, prep.width)
    return Geometry((rh, rw), (sy, sx), (dy, dx), (eh, ew))


def pil_pass_order(h: int, w: int, height: int, width: int) -> list[tuple[int, int]]:
    """The intermediate and final sizes of PIL's one-axis-at-a-time resize, in PIL's order."""
    vertical_first = _PIL_VERTICAL_FIRST and h > height and h - height > 2 * (w - width)
    steps = [(height, w), (height, width)] if vertical_first else [(h, width), (height, width)]
    out, current = [], (h, w)
    for step in steps:
        if step != current:
            out.append(step)
            current = step
    return out


def pil_nearest_index(n: int, size: int) -> np.ndarray:
    """The source pixel of each of `size` output pixels in PIL's nearest resize from `n` pixels.
    PIL (Geometry.c, ImagingScaleAffine) starts at half a step (step = n / size, double) and adds
    the step once per pixel, truncating; a cumulative sum adds in the same order, so these are
    PIL's indices exactly (torch's 'nearest-exact' differs where a centre lands on a boundary)."""
    steps = np.full(size, n / size)
    steps[0] = 0.5 * (n / size)
    return np.clip(np.cumsum(steps).astype(np.int64), 0, n - 1)


def resize(x: torch.Tensor, size: tuple[int, int], interpolation: str) -> torch.Tensor:
    """uint8 (n, 3, h, w) -> uint8 (n, 3, *size) on x's device, as PIL's resize would."""
    h, w = x.shape[-2:]
    if (h, w) == tuple(size):
        return x
    if interpolation == "nearest":
        rows, cols = (host_to_device(torch.from_numpy(pil_nearest_index(a, b)), x.device)
                      for a, b in ((h, size[0]), (w, size[1])))
        return x.index_select(2, rows).index_select(3, cols)
    mode = TORCH_MODES[interpolation]
    y = x.float()
    for step in pil_pass_order(h, w, *size):
        # Round and clamp after each pass, as PIL stores its intermediate image as uint8.
        y = F.interpolate(y, size=step, mode=mode, antialias=True, align_corners=False).round_().clamp_(0, 255)
    return y.to(torch.uint8)


def fit(x: torch.Tensor, prep: Preprocess) -> torch.Tensor:
    """uint8 (n, 3, h, w) images of one size -> uint8 (n, 3, height, width): `prep` on the device."""
    g = geometry(x.shape[-2], x.shape[-1], prep)
    y = resize(x, g.size, prep.interpolation)
    if g.extent is None or (g.size == (prep.height, prep.width) and g.src == (0, 0)):
        return y
    (sy, sx), (dy, dx), (eh, ew) = g.src, g.dst, g.extent
    out = torch.zeros((x.shape[0], 3, prep.height, prep.width), dtype=torch.uint8, device=x.device)
    out[:, :, dy : dy + eh, dx : dx + ew] = y[:, :, sy : sy + eh, sx : sx + ew]
    return out
