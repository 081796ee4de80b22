"""torchvision's ImageNet classifiers: `torchvision:NAME`, NAME one of `torchvision.models.list_models(
module=torchvision.models)` (resnet50, vit_b_16, convnext_tiny, ...).

Weights: `hub` (the weights enum's DEFAULT, downloaded to torch's hub cache), `file:PATH` (a state
dict for `get_model(NAME)`), `random`. Preprocessing: the DEFAULT weights' metadata, whatever the
weights (`weights.transforms()`: resize of the shorter side, centre crop, mean, std, interpolation):
the crop size is the input size (resize-only: the whole image to it), crop / resize the crop_pct
(--crop center resizes and crops exactly as torchvision does).
"""

from __future__ import annotations

import difflib

from mlreassess.errors import InputError, MlreassessError, first_line
from mlreassess.inference.models.sources import base, transforms
from mlreassess.inference.models.sources.base import LoadedModel, ModelSpec
from mlreassess.options import InferOptions

PREFIX = "torchvision:"
WEIGHTS = ("hub", "file:PATH", "random")
PACKAGE = ("torchvision", "torchvision")


def _models(spec: ModelSpec):
    return base.require("torchvision.models", spec, "torchvision")


def _arch(spec: ModelSpec) -> str:
    return base.source_name(spec, PREFIX)


def check(spec: ModelSpec) -> None:
    models = _models(spec)
    known = models.list_models(module=models)  # the ImageNet classifiers, not detection or video models
    if _arch(spec) not in known:
        close = difflib.get_close_matches(_arch(spec), known, n=5, cutoff=0.6)
        hint = f"; close matches: {', '.join(close)}" if close else ""
        raise InputError(f"unknown model {spec.name!r} (not a torchvision classification model){hint}")
    base.check_weights(spec, WEIGHTS)


def _default(spec: ModelSpec):
    return _models(spec).get_model_weights(_arch(spec)).DEFAULT


def data_config(spec: ModelSpec, use_test_size: bool = False) -> dict:
    """From the DEFAULT weights' transforms (torchvision has no test size)."""
    return transforms.config_from(_default(spec).transforms(), spec.name)


def model_bytes(spec: ModelSpec) -> int | None:
    return base.meta_bytes(lambda: _models(spec).get_model(_arch(spec), weights=None))


def build(spec: ModelSpec, opts: InferOptions, device: str | None = None) -> LoadedModel:
    models, arch = _models(spec), _arch(spec)
    module, source = base.load_weights(spec, opts, lambda: models.get_model(arch, weights=None), hub=lambda: _hub(spec))
    return LoadedModel(spec=spec, module=module.eval(), weights=source, data_config=data_config(spec))


def _hub(spec: ModelSpec):
    default = _default(spec)
    try:
        module = _models(spec).get_model(_arch(spec), weights=default)
    except Exception as exc:  # network / cache errors come in many types; all mean the same here
        raise MlreassessError(
            f"model {spec.name!r}: torchvision weights {default} not available and not in torch's hub cache "
            f"({first_line(exc)}); pre-download them where there is network (python -c \"import "
            f"torchvision; torchvision.models.get_model('{_arch(spec)}', weights='DEFAULT')\", then copy "
            f"TORCH_HOME) or pass --weights file:PATH"
        ) from None
    return module, f"hub:torchvision:{default} ({default.url})"


def recipe_entries(spec: ModelSpec, opts: InferOptions) -> dict:
    """The mean and std (the input size, interpolation and crop are in every recipe), and which
    weights `hub` stands for (a newer torchvision may change DEFAULT)."""
    config = data_config(spec)
    entries = {"mean": list(config["mean"]), "std": list(config["std"])}
    if spec.weights == "hub":
        entries["hub_weights"] = str(_default(spec))
    return entries
