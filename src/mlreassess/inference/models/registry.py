"""Which models to run: the models file, and the one facade the sweep asks models through.

What the sweep (`runner`, `passes`, `bench`) asks of a model, and all it asks, is this facade:
`check_specs`, `data_config(spec)` (planned before building), `model_bytes(spec)` (sizes passes),
`build(spec)` (a `LoadedModel`: an eval-mode module whose forward gives the 1,000 ImageNet logits)
and `recipe_entries(spec)` (what besides the weights makes its predictions, for staleness). Each
call goes to the spec's model source, one module of `inference/models/sources/` (`SOURCES`): a name's
prefix picks it, a bare name is timm's, and a spec carrying a module is the Python API's.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from types import ModuleType

from mlreassess.constants import DEFAULT_CHECKPOINT_KEY
from mlreassess.errors import InputError
from mlreassess.io import read_text
from mlreassess.inference.models.sources import hf, in_memory, open_clip, torchvision
from mlreassess.inference.models.sources import timm as timm_source
from mlreassess.inference.models.sources.base import LoadedModel, ModelSpec
from mlreassess.inference.models.sources.timm import check_model_name, registry_data_config
from mlreassess.options import InferOptions
from mlreassess.results import model_file_name

__all__ = ["SOURCES", "LoadedModel", "ModelSpec", "build", "check_model_name", "check_specs", "data_config",
           "model_bytes", "read_models_file", "recipe_entries", "registry_data_config", "source_of"]

# Name prefix -> the module of that model source. A bare name is a timm name (timm_source).
SOURCES: dict[str, ModuleType] = {
    torchvision.PREFIX: torchvision,
    hf.PREFIX: hf,
    open_clip.PREFIX: open_clip,
}


def source_of(spec: ModelSpec) -> ModuleType:
    """The module that checks, builds and describes `spec`'s model."""
    if spec.module is not None:
        return in_memory
    for prefix, source in SOURCES.items():
        if spec.name.startswith(prefix):
            return source
    return timm_source


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
        model_file_name(spec.name)  # a name that cannot name its output files fails now, not at the end
        source_of(spec).check(spec)
        other = by_name.setdefault(spec.name, spec)
        if other.weights != spec.weights:
            raise InputError(f"model {spec.name!r} listed twice with different weights ({other.weights}, {spec.weights})")
        if other.module is not spec.module:
            raise InputError(f"model {spec.name!r} given twice as two different modules")
    return sorted(by_name.values())


def data_config(spec: ModelSpec, use_test_size: bool = False) -> dict:
    """The data config the runner plans with (before any model is built): what `build(spec)` will
    report as `LoadedModel.data_config`."""
    return source_of(spec).data_config(spec, use_test_size)


def recipe_entries(spec: ModelSpec, opts: InferOptions | None = None) -> dict:
    """What a model's predictions depend on besides its weights source and the sweep's result options
    (a zero-shot model's prompts and class names, a transformers model's id2label, an in-memory
    module's tensors); JSON values, compared by reruns. timm models: nothing more."""
    return source_of(spec).recipe_entries(spec, opts or InferOptions())


def model_bytes(spec: ModelSpec) -> int | None:
    """Bytes of the model's parameters and buffers as loaded (float32), from an empty build on the
    meta device (no memory, no download); None when that cannot be known before loading."""
    return source_of(spec).model_bytes(spec)


def build(spec: ModelSpec, use_test_size: bool = False, checkpoint_key: str = DEFAULT_CHECKPOINT_KEY, *,
          device: str | None = None, opts: InferOptions | None = None) -> LoadedModel:
    """The model with its weights, in eval mode on the CPU. `checkpoint_key`: the entry of a `file:`
    training checkpoint to load (`state_dict` unless asked for `state_dict_ema`). `device`: where
    work done once per build runs (a zero-shot model's text classifier); `opts`: the sweep's options
    (its zero-shot prompts and class names)."""
    opts = dataclasses.replace(opts or InferOptions(), test_input_size=use_test_size, checkpoint_key=checkpoint_key)
    return source_of(spec).build(spec, opts, device)
