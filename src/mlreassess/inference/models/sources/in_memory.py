"""A torch module from the caller's own code (the Python API: `mlreassess.assess`, `mlreassess.predict`).

Not chosen by a name prefix: its `ModelSpec` carries an `InMemory` (the module and its data config)
in `spec.module`, which the runner passes through untouched. Its weight source is `module`; its
recipe fingerprints what its forward can depend on that can be seen: every parameter and buffer
(sha256), and the plain attributes of simple types of it and its submodules (`attributes_sha256`:
`self.scale = 2.0`, `self.use_cls_token = False`), so a rerun after more training, or with a
changed setting, redoes its predictions, and one with the same state skips them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import torch
from timm.data import resolve_model_data_config

from mlreassess.errors import InputError
from mlreassess.inference.models.sources import base, transforms
from mlreassess.inference.models.sources.base import LoadedModel, ModelSpec
from mlreassess.options import InferOptions

PREFIX = None  # chosen by `spec.module`, not by a name prefix
WEIGHTS = ("module",)
PACKAGE = None


_SIMPLE = (bool, int, float, str, type(None))


def _simple(value: Any) -> bool:
    if isinstance(value, (list, tuple)):
        return all(_simple(v) for v in value)
    return isinstance(value, _SIMPLE)


def attributes_sha256(module: torch.nn.Module) -> str:
    """sha256 of the module's and its submodules' own plain attributes of simple types (numbers,
    text, booleans, None and lists of them), by name. Not `training` (predictions run in eval mode)
    nor torch's own private state (`_parameters`, hooks, ...): those are the tensors' business."""
    seen = {}
    for path, sub in module.named_modules():
        own = {k: repr(v) for k, v in sorted(vars(sub).items())
               if not k.startswith("_") and k != "training" and _simple(v)}
        if own:
            seen[path] = own
    return hashlib.sha256(json.dumps(seen, sort_keys=True).encode()).hexdigest()


@dataclass(eq=False)
class InMemory:
    module: torch.nn.Module
    data_config: dict
    _sha256: str | None = field(default=None, repr=False)

    @property
    def sha256(self) -> str:
        """Computed once: the runner asks for it per dataset, and the tensors do not change during a sweep."""
        if self._sha256 is None:
            self._sha256 = base.weights_sha256(self.module)
        return self._sha256


def spec_for(module: Any, name: str, transform: Any = None) -> ModelSpec:
    """The spec of the caller's `module`: its preprocessing from `transform` (a torchvision transform
    or a data config dict) or, without one, from the module's timm data config (`pretrained_cfg`)."""
    if not isinstance(module, torch.nn.Module):
        raise InputError(f"model {name!r}: expected a torch.nn.Module or a model name, got {type(module).__name__}")
    if any(torch.nn.parameter.is_lazy(t) for t in [*module.parameters(), *module.buffers()]):
        raise InputError(f"model {name!r}: it has uninitialised (lazy) parameters; run one forward pass first")
    if transform is not None:
        config = transforms.config_from(transform, name)
    elif getattr(module, "pretrained_cfg", None):
        config = transforms.config_from_dict(dict(resolve_model_data_config(module)), name)
    else:
        raise InputError(f"model {name!r}: a {type(module).__name__} has no timm data config (pretrained_cfg): pass "
                         "transform= (its torchvision eval transform, or {input_size, interpolation, mean, std})")
    return ModelSpec(name, "module", InMemory(module, config))


def check(spec: ModelSpec) -> None:
    if not isinstance(spec.module, InMemory) or spec.weights != "module":
        raise InputError(f"model {spec.name!r}: an in-memory model comes from mlreassess.assess or predict")


def data_config(spec: ModelSpec, use_test_size: bool = False) -> dict:
    return dict(spec.module.data_config)


def model_bytes(spec: ModelSpec) -> int | None:
    return base.state_bytes(spec.module.module)


def _class_name(spec: ModelSpec) -> str:
    kind = type(spec.module.module)
    return f"{kind.__module__}.{kind.__qualname__}"


def build(spec: ModelSpec, opts: InferOptions, device: str | None = None) -> LoadedModel:
    """The caller's module itself (not a copy), in eval mode; the API restores its mode and device."""
    module = spec.module.module.eval()
    weights = f"module:{_class_name(spec)} (sha256 {spec.module.sha256[:16]})"
    return LoadedModel(spec=spec, module=module, weights=weights, data_config=data_config(spec))


def recipe_entries(spec: ModelSpec, opts: InferOptions) -> dict:
    config = spec.module.data_config
    return {"weights_sha256": spec.module.sha256, "module_attributes_sha256": attributes_sha256(spec.module.module),
            "module_class": _class_name(spec),
            "mean": list(config["mean"]), "std": list(config["std"])}
