"""Preprocessing: PIL image -> uint8 CHW tensor on the CPU (workers), normalisation on the device.

Resize-only (the paper's choice, SPEC 3): the whole image goes to exactly the model's (H, W)
input size, aspect ignored, with the model's interpolation; no centre crop. `crop='center'`
gives timm's standard eval transform instead. Mean/std are not part of the CPU side, so models
that share input size, interpolation and crop share one decode of every image.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from functools import cached_property, total_ordering

import numpy as np
import torch
from timm.data import create_transform
from timm.data.transforms import str_to_pil_interp

from mlreassess.constants import CROPS, PRECISIONS


@dataclass(frozen=True, order=True)
class Preprocess:
    """The CPU half of a model's preprocessing; equal objects decode identically."""

    height: int
    width: int
    interpolation: str  # timm's name: 'bicubic', 'bilinear', ...
    crop: str = "none"
    crop_pct: float | None = None  # only with crop='center'
    crop_mode: str | None = None

    @cached_property
    def _center_transform(self):
        # use_prefetcher=True: timm's transform then ends in a uint8 tensor, no normalisation.
        return create_transform(
            input_size=(3, self.height, self.width),
            interpolation=self.interpolation,
            crop_pct=self.crop_pct,
            crop_mode=self.crop_mode,
            is_training=False,
            use_prefetcher=True,
        )

    def __call__(self, image):
        """RGB PIL image -> contiguous uint8 tensor (3, H, W)."""
        if self.crop == "center":
            return self._center_transform(image).contiguous()
        return self.tensor(image.resize((self.width, self.height), resample=self.pil_filter))

    @property
    def pil_filter(self):
        """The PIL resampling filter of the resize (resize-only preprocessing)."""
        return str_to_pil_interp(self.interpolation)

    @staticmethod
    def tensor(resized) -> torch.Tensor:
        """A resized RGB image (PIL, or an (H, W, 3) uint8 array) -> contiguous uint8 tensor (3, H, W)."""
        return torch.from_numpy(np.asarray(resized, dtype=np.uint8).transpose(2, 0, 1).copy())

    def describe(self) -> str:
        crop = f", center crop {self.crop_pct}" if self.crop == "center" else ""
        return f"{self.height}x{self.width} {self.interpolation}{crop}"


@total_ordering  # the other comparisons from __lt__ and the dataclass __eq__
@dataclass(frozen=True)
class SharedDecode:
    """Several preprocessing groups served by one decode: each image is decoded (or its PatchML
    canvas painted) once and resized for each part, from the same decoded image, so each part's
    pixels are exactly those its group's own decode gives. A worker lays the parts end to end in
    one uint8 tensor (3, 1, sum of H x W), so the batch slots and the pipeline treat it as one
    image; `part(batch, p)` cuts part `p` back out as (B, 3, H, W)."""

    parts: tuple[Preprocess, ...]

    def __post_init__(self) -> None:
        if len(self.parts) < 2 or list(self.parts) != sorted(set(self.parts)):
            raise ValueError(f"a shared decode needs two or more distinct parts, in order: {self.parts}")

    @property
    def height(self) -> int:
        return 1

    @property
    def width(self) -> int:
        return sum(p.height * p.width for p in self.parts)

    def __call__(self, image) -> torch.Tensor:
        return self.join(p(image) for p in self.parts)

    @staticmethod
    def join(tensors) -> torch.Tensor:
        """Each part's (3, H, W) tensor, in the order of `parts` -> the (3, 1, width) image."""
        return torch.cat([t.reshape(3, 1, -1) for t in tensors], dim=2)

    def part(self, batch, part: Preprocess):
        """Part `part` of a batch (B, 3, 1, width), contiguous (B, 3, H, W), as its own decode gives it."""
        start = 0
        for p in self.parts:
            if p == part:
                return batch[..., start : start + p.height * p.width].reshape(len(batch), 3, p.height, p.width)
            start += p.height * p.width
        raise KeyError(f"{part.describe()} is not a part of {self.describe()}")

    def describe(self) -> str:
        return "one decode for " + " + ".join(p.describe() for p in self.parts)

    # Passes sort by their decode: a shared decode sorts after every single preprocessing.
    def __lt__(self, other):
        if isinstance(other, SharedDecode):
            return self.parts < other.parts
        return False if isinstance(other, Preprocess) else NotImplemented


def decode_of(preprocessings) -> Preprocess | SharedDecode:
    """The decode that serves these preprocessings: the one itself, or a `SharedDecode` of them."""
    parts = tuple(sorted(set(preprocessings)))
    if not parts:
        raise ValueError("no preprocessing to decode for")
    return parts[0] if len(parts) == 1 else SharedDecode(parts)


def preprocess_for(data_config: dict, crop: str = "none") -> Preprocess:
    """The `Preprocess` of a timm data config (`resolve_model_data_config(model)`)."""
    if crop not in CROPS:
        raise ValueError(f"crop must be one of {CROPS}, not {crop!r}")
    _, height, width = data_config["input_size"]
    center = crop == "center"
    return Preprocess(
        height=int(height),
        width=int(width),
        interpolation=str(data_config["interpolation"]),
        crop=crop,
        crop_pct=float(data_config["crop_pct"]) if center else None,
        crop_mode=str(data_config.get("crop_mode", "center")) if center else None,
    )


def amp_dtype(precision: str):
    """torch dtype for autocast, or None for plain float32."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def autocast(device, precision: str):
    """Autocast context for `precision` on `device` (a no-op context for fp32)."""
    dtype = amp_dtype(precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


class Normalizer:
    """uint8 (B, 3, H, W) batch on the device -> float32 normalised input, optionally channels_last.

    (x / 255 - mean) / std is folded into one subtract and one divide by 255-scaled constants.
    """

    def __init__(self, mean, std, device, channels_last: bool = False):
        self.mean = torch.tensor([255.0 * m for m in mean], device=device).view(1, 3, 1, 1)
        self.std = torch.tensor([255.0 * s for s in std], device=device).view(1, 3, 1, 1)
        self.channels_last = channels_last

    def __call__(self, batch_uint8):
        x = batch_uint8
        if self.channels_last:  # reorder the uint8 batch (4x less to move); .float() keeps the layout
            x = x.contiguous(memory_format=torch.channels_last)
        return x.float().sub_(self.mean).div_(self.std)
