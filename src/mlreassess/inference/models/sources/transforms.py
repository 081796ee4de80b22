"""A torchvision transform, or a data config dict, as the data config the sweep runs with.

mlreassess never runs a model's transform image by image: workers decode and resize every image
once per pass into uint8 batches shared by every model of the pass, and the device normalises
them per model (`inference.preprocess`). So a transform is read, not run: its resize size, centre
crop, interpolation, mean and std become a timm-style data config (`base.data_config`), and the
sweep applies them as it does for every model (resize-only to the input size by default, the crop
only with --crop center). Transforms that do anything else are refused with one line.
"""

from __future__ import annotations

from typing import Any

from mlreassess.errors import InputError
from mlreassess.inference.models.sources import base

# Steps that only turn a PIL image into a float tensor in [0, 1]: nothing to carry over.
TENSOR_STEPS = frozenset({"ToTensor", "PILToTensor", "ConvertImageDtype", "ToImage", "ToDtype", "ToPureTensor",
                          "ToImageTensor", "MaybeToTensor", "MaybePILToTensor", "ToNumpy"})
DEFAULT_INTERPOLATION = "bilinear"  # torchvision's Resize default


def config_from(transform: Any, where: str) -> dict:
    """The data config of a torchvision transform (Compose, ImageClassification, v1 or v2) or of a
    data config dict; `where` names the model in errors."""
    try:
        if isinstance(transform, dict):
            return config_from_dict(transform, where)
        steps: dict[str, Any] = {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0), "interpolation": DEFAULT_INTERPOLATION}
        for step in _flatten(transform):
            _read_step(step, steps, where)
        return _config_of_steps(steps, where)
    except (TypeError, ValueError) as exc:  # a mean that is not numbers, an interpolation of another library
        raise InputError(f"model {where!r}: cannot read its transform ({exc})") from None


def _flatten(transform: Any) -> list[Any]:
    inner = getattr(transform, "transforms", None)
    if type(transform).__name__ == "Compose" and isinstance(inner, (list, tuple)):
        return [s for t in inner for s in _flatten(t)]
    return [transform]


def _read_step(step: Any, steps: dict[str, Any], where: str) -> None:
    kind = type(step).__name__
    if kind == "ImageClassification":  # torchvision's weights preset: resize, centre crop, normalise
        steps.update(resize=_size(step.resize_size, where), crop=_size(step.crop_size, where),
                     interpolation=_interpolation(step.interpolation, where), mean=tuple(step.mean),
                     std=tuple(step.std))
    elif kind == "Resize":
        if getattr(step, "max_size", None) is not None:
            raise InputError(f"model {where!r}: transform Resize(max_size=...) is not supported")
        steps.update(resize=_size(step.size, where), interpolation=_interpolation(step.interpolation, where))
    elif kind == "CenterCrop":
        steps["crop"] = _size(step.size, where)
    elif kind == "Normalize":
        steps.update(mean=tuple(step.mean), std=tuple(step.std))
    elif kind not in TENSOR_STEPS:
        raise InputError(
            f"model {where!r}: transform step {kind} is not supported: mlreassess reads a transform's Resize, "
            "CenterCrop and Normalize and runs its own pipeline (see docs/python-api.md); pass those, or a data "
            "config dict {input_size, interpolation, mean, std, crop_pct}"
        )


def _size(size: Any, where: str) -> tuple[int, ...]:
    """(side,) for a shorter-side size, (height, width) for an exact one."""
    values = (size,) if isinstance(size, int) else tuple(size)
    if len(values) not in (1, 2) or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
        raise InputError(f"model {where!r}: transform size {size!r} is not one or two positive integers")
    return values


def _interpolation(mode: Any, where: str) -> str:
    name = base.PIL_FILTERS.get(mode) if isinstance(mode, int) else str(getattr(mode, "value", mode))
    if name not in base.INTERPOLATIONS:
        raise InputError(f"model {where!r}: interpolation {mode!r} is not one of {', '.join(sorted(base.INTERPOLATIONS))}")
    return name


def _config_of_steps(steps: dict[str, Any], where: str) -> dict:
    resize, crop = steps.get("resize"), steps.get("crop")
    if crop is not None and len(crop) == 1:
        crop = crop * 2
    if resize is None:
        raise InputError(f"model {where!r}: the transform has no Resize, so its images have no fixed size")
    if crop is None:
        if len(resize) == 1:
            raise InputError(f"model {where!r}: Resize({resize[0]}) without CenterCrop gives images of varying shape; "
                             "add CenterCrop or use Resize((height, width))")
        return base.data_config(*resize, steps["interpolation"], steps["mean"], steps["std"], None, where)
    if len(resize) == 2:
        if resize != crop:
            raise InputError(f"model {where!r}: Resize({resize}) then CenterCrop({crop}) is not supported; "
                             "resize the shorter side (Resize(int)) or drop the crop")
        pct = None
    elif crop[0] != crop[1]:
        raise InputError(f"model {where!r}: a non-square CenterCrop{crop} after Resize({resize[0]}) is not supported")
    else:
        pct = base.crop_pct_for(crop[0], resize[0])
    return base.data_config(*crop, steps["interpolation"], steps["mean"], steps["std"], pct, where)


def config_from_dict(config: dict, where: str) -> dict:
    """A user's data config dict, checked: input_size (3, H, W) or (H, W), interpolation, mean, std, crop_pct."""
    unknown = set(config) - {"input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode"}
    if unknown:
        raise InputError(f"model {where!r}: data config keys {sorted(unknown)} are not known")
    size = config.get("input_size") or ()
    size = tuple(size) if isinstance(size, (tuple, list)) else (size,)
    if len(size) == 3 and size[0] == 3:
        size = size[1:]
    if len(size) != 2:
        raise InputError(f"model {where!r}: data config input_size {config.get('input_size')!r} is not (3, H, W)")
    interpolation = _interpolation(config.get("interpolation", "bicubic"), where)
    return base.data_config(*_size(size, where), interpolation, config.get("mean", (0.0,) * 3),
                            config.get("std", (1.0,) * 3), config.get("crop_pct"), where)
