"""What a model source is, and what every source shares.

A source turns a `ModelSpec` (a model name such as `torchvision:resnet50` and a weight source such
as `hub`, `file:PATH` or `random`) into a `LoadedModel`: an eval-mode module whose forward takes
normalised float images and gives the 1,000 ImageNet-1k logits, in class-index order. Each source is
one module of this package that provides:

    PREFIX                              the name prefix it owns ('torchvision:'; timm, the default, '')
    WEIGHTS                             the weight sources it accepts (for messages)
    PACKAGE                             (import name, pip extra) of the library it needs, or None
    check(spec)                         a one-line InputError for a name or weight source it cannot do
    data_config(spec, use_test_size)    its preprocessing, known before the model is built
    model_bytes(spec)                   float32 bytes of the built model (None: unknown before loading)
    build(spec, opts, device)           the LoadedModel
    recipe_entries(spec, opts)          what its predictions depend on besides its weight source and
                                        the sweep's result options (JSON values, compared by reruns)

`mlreassess.inference.models.registry.SOURCES` maps prefixes to modules: a new source is one new module and
one line there. A data config is timm's dict (input_size (3, H, W), interpolation, mean, std,
crop_pct, crop_mode), the one form `preprocess.preprocess_for` takes, whatever library the model
comes from.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import math
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch.overrides import TorchFunctionMode

from mlreassess.errors import InputError, MlreassessError, short_repr
from mlreassess.inference.models import weights as W
from mlreassess.provenance import file_sha256

# The user cache folder (the zero-shot classifiers); MLREASSESS_CACHE overrides it.
CACHE_ENV = "MLREASSESS_CACHE"

# Pillow's resampling filters by number (PIL.Image.Resampling), as timm names them.
PIL_FILTERS = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}
INTERPOLATIONS = frozenset(PIL_FILTERS.values())
MAX_INPUT_SIDE = 4096  # px: far beyond any classifier, and short of an allocation that sinks the machine


@dataclass(frozen=True, order=True)
class ModelSpec:
    """A model of a sweep. `module`: an in-memory torch module (the Python API's), which the runner
    passes through untouched to `build`; it takes no part in comparisons or sorting."""

    name: str  # a timm name ('resnet50.a1_in1k'), or PREFIX:NAME of another source ('torchvision:resnet50')
    weights: str  # 'hub' | 'pypi' | 'file:PATH' | 'random' | 'module' (the Python API's own module)
    module: Any = field(default=None, compare=False, repr=False)


@dataclass
class LoadedModel:
    spec: ModelSpec
    module: object  # torch.nn.Module in eval mode, on the CPU (or the device it was asked to build on)
    weights: str  # description of the source, for the metadata
    data_config: dict  # timm's data config (input_size, interpolation, mean, std, crop_pct, crop_mode)


def source_name(spec: ModelSpec, prefix: str) -> str:
    """The name without its source prefix ('torchvision:resnet50' -> 'resnet50')."""
    return spec.name[len(prefix):]


def require(import_name: str, spec: ModelSpec, extra: str) -> Any:
    """The optional library a source needs, or one line saying what to install."""
    try:
        return importlib.import_module(import_name)
    except Exception as exc:  # ImportError when absent; anything when an installed one is broken
        installed = sys.modules.get(import_name, True) is not None and importlib.util.find_spec(import_name) is not None
        if installed:
            raise MlreassessError(f"model {spec.name!r}: the installed {import_name} package fails to import "
                                  f"({first_sentence(root_cause(exc))}); reinstall it: pip install --force-reinstall "
                                  f"'mlreassess[{extra}]'") from None
        reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise MlreassessError(
            f"model {spec.name!r} needs the {import_name} package ({reason}): pip install 'mlreassess[{extra}]'"
        ) from None


def first_sentence(exc: BaseException, limit: int = 200) -> str:
    """`Type: the message's first sentence`, in whole words (a library's paragraph of advice as one
    clause; cut at a word with ' ...' when longer than `limit`)."""
    text = " ".join(str(exc).split())
    sentence = re.split(r"(?<=[.!?])\s", text, maxsplit=1)[0].rstrip(".")
    if len(sentence) > limit:
        sentence = sentence[:limit].rsplit(" ", 1)[0] + " ..."
    return f"{type(exc).__name__}: {sentence}".rstrip(": ")


def root_cause(exc: BaseException) -> BaseException:
    """The innermost exception `exc` was raised from (a library's wrapper hides the real import error)."""
    seen = {id(exc)}
    while (inner := exc.__cause__ or exc.__context__) is not None and id(inner) not in seen:
        seen.add(id(inner))
        exc = inner
    return exc


def hub_unavailable(spec: ModelSpec, what: str, exc: BaseException, local: str) -> MlreassessError:
    """One full line for a model the Hugging Face hub could not give: the library's reason, whether
    the machine is offline, and the three ways out (`local`: how to name a local folder instead)."""
    if os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0"):
        state = "HF_HUB_OFFLINE is set and it is not in the local cache"
    else:
        state = "no network here? set HF_HUB_OFFLINE=1 to fail at once instead of retrying"
    return MlreassessError(f"model {spec.name!r}: cannot fetch its {what} ({first_sentence(exc)}); {state}; "
                           f"pre-download it where there is network and copy HF_HOME's hub cache here, "
                           f"or pass a local folder ({local})")


def check_weights(spec: ModelSpec, allowed: tuple[str, ...]) -> None:
    """Refuse a weight source this source cannot load; a `file:` path must exist."""
    kind = "file:PATH" if spec.weights.startswith("file:") else spec.weights
    if kind not in allowed:
        raise InputError(f"model {spec.name!r}: weight source {spec.weights!r} is not one of {', '.join(allowed)}")
    if kind == "file:PATH":
        path = Path(spec.weights[len("file:"):]).expanduser()
        if not path.is_file():
            raise InputError(f"model {spec.name!r}: weights file {path} not found")


def file_path(spec: ModelSpec) -> Path:
    return Path(spec.weights[len("file:"):]).expanduser()


def data_config(height: int, width: int, interpolation: str, mean, std, crop_pct: float | None,
                where: str) -> dict:
    """A timm-style data config, checked (`where` names the model); `crop_pct` None means the model
    has no crop (1.0 under --crop center)."""
    if interpolation not in INTERPOLATIONS:
        raise InputError(f"model {where!r}: interpolation {interpolation!r} is not one of "
                         f"{', '.join(sorted(INTERPOLATIONS))}")
    if not all(isinstance(v, int) and 1 <= v <= MAX_INPUT_SIDE for v in (height, width)):
        raise InputError(f"model {where!r}: input size {height}x{width} is not two sides of 1..{MAX_INPUT_SIDE} px")
    try:
        config = {
            "input_size": (3, int(height), int(width)),
            "interpolation": interpolation,
            "mean": tuple(float(m) for m in mean),
            "std": tuple(float(s) for s in std),
            "crop_pct": 1.0 if crop_pct is None else float(crop_pct),
            "crop_mode": "center",
        }
    except (TypeError, ValueError):
        raise InputError(f"model {where!r}: mean, std and crop_pct must be numbers, not "
                         f"{short_repr(mean)}, {short_repr(std)}, {short_repr(crop_pct)}") from None
    for key in ("mean", "std"):
        if len(config[key]) != 3 or not all(math.isfinite(v) for v in config[key]):
            raise InputError(f"model {where!r}: {key} {list(config[key])} is not three finite numbers")
    if min(config["std"]) <= 0:
        raise InputError(f"model {where!r}: std {list(config['std'])} must be positive")
    if not (math.isfinite(config["crop_pct"]) and 0 < config["crop_pct"] <= 1.0):
        raise InputError(f"model {where!r}: crop_pct {config['crop_pct']} is not in (0, 1]")
    return config


def crop_pct_for(crop: int, resize: int) -> float:
    """The crop_pct that makes timm's eval transform resize the shorter side to exactly `resize` and
    crop `crop` (timm resizes to floor(crop / crop_pct), and crop / resize can land one below)."""
    pct = crop / resize
    while math.floor(crop / pct) < resize:
        pct = math.nextafter(pct, 0.0)
    while math.floor(crop / pct) > resize:
        pct = math.nextafter(pct, 1.0)
    return pct


def weights_sha256(module: torch.nn.Module, skip: Callable[[str], bool] = lambda name: False) -> str:
    """sha256 of a module's state (names, dtypes, shapes and bytes of every tensor, in order)."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        if skip(name):
            continue
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}\0{t.dtype}\0{tuple(t.shape)}\n".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def state_bytes(module: torch.nn.Module) -> int:
    """Bytes of a module's parameters and buffers as they are."""
    tensors = list(module.parameters()) + list(module.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)


# What initialises a tensor's values in place: torch.nn.init's functions and the tensor methods they
# (and timm's trunc_normal_) use. None of them changes a shape, a dtype or a stride.
_VALUE_WRITES = frozenset({
    "uniform_", "normal_", "trunc_normal_", "constant_", "ones_", "zeros_", "eye_", "dirac_",
    "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_", "orthogonal_", "sparse_",
    "fill_", "zero_", "erfinv_", "mul_", "add_", "sub_", "div_", "clamp_", "clamp_min_", "clamp_max_",
    "copy_", "exp_", "log_", "sqrt_", "neg_", "abs_", "bernoulli_", "random_", "exponential_", "lerp_",
    "addcmul_", "addcdiv_", "pow_", "masked_fill_", "fill_diagonal_",
})


class _SkipMetaValueWrites(TorchFunctionMode):
    """Returns a meta tensor unchanged from a value write (`kaiming_uniform_`, `normal_`, `erfinv_`,
    ...) without running it. A meta tensor has no values, yet torch still checks each such op through
    its Python meta kernels: that was 35-75% of a model's empty build (0.3-1.3 s of CPU for the
    paper's large models). Anything else, shape-changing in-place ops included, runs as usual."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if getattr(func, "__name__", None) in _VALUE_WRITES:
            target = args[0] if args else kwargs.get("tensor")  # torch.nn.init passes it by keyword
            if isinstance(target, torch.Tensor) and target.is_meta:
                return target
        return func(*args, **kwargs)


def empty(make: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    """`make()` on the meta device: every tensor has its shape and dtype, none has memory or values
    (random init is skipped: the weights overwrite it; computed buffers are recomputed by `fill`)."""
    with torch.device("meta"), _SkipMetaValueWrites():
        return make()


def meta_bytes(make: Callable[[], torch.nn.Module]) -> int | None:
    """`state_bytes` of `make()` built on the meta device (no memory, no init); None if that fails."""
    try:
        return state_bytes(empty(make))
    except Exception:  # the model will fail (and be reported) when it is really built
        return None


# --- weights into a model built without initialising it --------------------------------------------


def refillable(module: torch.nn.Module) -> bool:
    """Whether a state dict and `init_non_persistent_buffers` restore every tensor of a meta-built
    module: a non-persistent buffer (not in checkpoints) must come with that method (timm's
    convention), and no module may keep a tensor outside its parameters and buffers."""
    for sub in module.modules():
        if sub._non_persistent_buffers_set and not hasattr(sub, "init_non_persistent_buffers"):
            return False
        if any(isinstance(v, torch.Tensor) for v in vars(sub).values()):
            return False
    return True


Loader = Callable[[torch.nn.Module, dict, bool], None]  # (module, state, assign): a strict load_state_dict


def fill(module: torch.nn.Module, state: dict, load: Loader) -> torch.nn.Module:
    """A meta-built, `refillable` module holding `state`'s tensors: loaded with assign=True (the
    module takes the tensors themselves, cast to its dtypes: no copy, no second allocation), then
    its computed buffers (relative position indices, RoPE tables) allocated and recomputed."""
    target = module.state_dict()  # meta tensors: the dtypes to keep
    load(module, {k: (v.to(target[k].dtype).contiguous() if k in target else v) for k, v in state.items()}, True)
    for sub in module.modules():
        for name, buffer in sub._buffers.items():
            if buffer is not None and buffer.is_meta:  # non-persistent: not in any checkpoint
                sub._buffers[name] = torch.empty_like(buffer, device="cpu")
        if hasattr(sub, "init_non_persistent_buffers"):
            sub.init_non_persistent_buffers()
    left = [n for n, t in [*module.named_parameters(), *module.named_buffers()] if t.is_meta]
    if left:  # a strict load assigns every persistent tensor; anything else is a bug, not a user error
        raise MlreassessError(f"tensors {left[:3]} were not restored by the checkpoint")
    return module


def build_filled(empty_module: torch.nn.Module, make: Callable[[], torch.nn.Module], state: dict,
                 load: Loader) -> torch.nn.Module:
    """The model `make()` builds, holding `state`, in eval mode. `empty_module` (`empty(make)`) is
    filled when that restores every tensor (no random init to overwrite); else `make()` is loaded."""
    if refillable(empty_module):
        return fill(empty_module, state, load).eval()
    module = make()
    load(module, state, False)
    return module.eval()


def load_weights(spec: ModelSpec, opts, make: Callable[[], torch.nn.Module],
                 hub: Callable[[], tuple[torch.nn.Module, str]]) -> tuple[torch.nn.Module, str]:
    """(model, description of its weights) for `spec.weights`: `hub()` (the source's own pretrained
    loader), `make()` as it initialises itself (`random`), or a `file:` checkpoint (`opts.checkpoint_key`)
    strictly loaded into `make()`'s model, built without initialising it where that is exact."""
    if spec.weights == "hub":
        return hub()
    if spec.weights == "random":
        return make(), "random"
    path = file_path(spec)
    state, used = W.read_checkpoint(path, spec.name, opts.checkpoint_key)
    module = build_filled(empty(make), make, state, lambda m, s, assign: W.load_state(m, s, spec.name, path, assign))
    return module, W.file_description(path, used)


# --- the user cache --------------------------------------------------------------------------------


def cache_dir() -> Path:
    """$MLREASSESS_CACHE, else $XDG_CACHE_HOME/mlreassess, else ~/.cache/mlreassess."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "mlreassess"


def compile_cache_dir() -> Path:
    """Where torch.compile's caches belong (inductor's FX graph, AOT autograd and kernel caches): in
    the user cache, so a resumed sweep, a later one, every rank and every RESULTS folder reuse what
    was compiled (inductor's default is /tmp, often wiped between jobs). The key of each entry is
    the graph, the shapes, the options and the torch version, so the folder is never stale."""
    return cache_dir() / "inductor"


def folder_weights_sha256(folder: Path, patterns: tuple[str, ...]) -> str:
    """sha256 of the weight files of a model folder (their names and contents)."""
    files = sorted({p for pattern in patterns for p in Path(folder).glob(pattern)})
    return text_sha256([f"{p.name}:{file_sha256(p)}" for p in files])


def text_sha256(items: list[str]) -> str:
    """sha256 of a list of strings (order and every character count)."""
    digest = hashlib.sha256()
    for item in items:
        data = item.encode()
        digest.update(f"{len(data)}\0".encode() + data)
    return digest.hexdigest()
