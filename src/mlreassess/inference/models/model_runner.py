"""One model on the device: weights cast once, compiled once, uint8 batch in, top-k out.

`ModelRunner` is built once per model per sweep (model-major passes) and fed every batch of every
dataset of its pass. What it does per batch runs on the device without synchronising: normalise,
forward (autocast, channels_last, torch.compile), float32 softmax, top-k; results stay on the
device until `collect()`.

Precision: with bf16/fp16 the weights of convolutions and linear layers are cast to the autocast
dtype once, at load. Autocast casts exactly those tensors to that dtype on every batch, so the
predictions are bit-identical (tested) while a batch no longer re-casts the weights and the weights
take half the memory; norms and everything autocast keeps in float32 stay float32.

Compile: each model gets a compiled function with a code object of its own, because dynamo's
recompile limit (8) counts the graphs of one code object, shared by every instance of a model
class: the ninth ResNet of a sweep would otherwise run eager without a word. Batches are padded
to one static shape (the padding's outputs are dropped), so a model compiles once. A graph break
inside a forward that many models share (every timm ViT's `Block.forward`) still gives that shared
code object one graph per model shape, so the limit is raised with the number of compiled models
(`recompile_limit`). A compile that fails or hits the limit falls back to eager with a warning,
and the metadata says so.

Out of memory: the batch is split into chunks of half the size, and the chunk is kept for later
batches; a compiled model then compiles once more for the new static shape (at most once per
halving, never once per batch), and an out-of-memory error raised inside a compile (dynamo wraps
it) is taken as one, not as a failed compile. A warm-up that must not shrink the batch (a model
loaded beside others: the memory is theirs, not too small for it) raises `NoRoom` instead.
Any other CUDA error is left to the caller, which stops (`input.devices`).
"""

from __future__ import annotations

import logging
import time
from typing import Callable

import numpy as np
import torch
import torch._dynamo  # for its config: a hit recompile limit must raise, not silently run eager
import torch.nn.functional as F
from timm.layers import Conv2dSame

from mlreassess.constants import NUM_CLASSES
from mlreassess.errors import MlreassessError
from mlreassess.inference.input.devices import fatal_device_error, first_line, out_of_memory
from mlreassess.inference.input.preprocess import Normalizer, amp_dtype, autocast
from mlreassess.inference.models.registry import LoadedModel
from mlreassess.options import InferOptions

log = logging.getLogger(__name__)

# Modules whose forward is one op that autocast runs in the low-precision dtype, with all its
# tensor arguments cast to it: casting their parameters once gives autocast's own inputs. Exact
# types only: a subclass may use its weight otherwise (timm's StdConv2d standardises it first).
CAST_ONCE_TYPES = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.Linear, Conv2dSame)

COMPILE_BACKEND = "inductor"  # tests swap in "eager" (dynamo without code generation)


class NoRoom(MlreassessError):
    """A model's forward pass does not fit the device beside the models already on it."""


def forward_with_retry(forward, x, state: dict, shrink: bool = True):
    """`forward(x)`, in chunks of at most state['chunk'] samples; on out-of-memory halve the chunk and
    retry the batch (the smaller chunk is kept for later batches). Fails only at chunk size 1, or at
    once (`NoRoom`) when not `shrink`."""
    while True:
        try:
            if len(x) <= state["chunk"]:
                return forward(x)
            return torch.cat([forward(part) for part in x.split(state["chunk"])])
        except Exception as exc:
            oom = out_of_memory(exc)
            size = min(state["chunk"], len(x))
            if oom is None or size <= 1:
                raise
            if not shrink:
                raise NoRoom(f"out of memory at batch {size}: {first_line(oom)}") from None
            state["chunk"] = size // 2
            log.warning(f"out of memory at batch {size}: retrying with batch {state['chunk']}")
        # Outside the except block, so the failed attempt's tensors are already freed.
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def topk_stable(probs, k: int):
    """Top-k (int32 indices, float32 values) of float32 probabilities, best first; equal values ->
    lower class index first (as a stable descending sort). One `topk` on int64 keys instead of a
    full sort: a non-negative float's bits order as the float does, and the low bits hold the
    reversed class index, so keys are distinct and their order is exactly the wanted one."""
    classes = probs.shape[1]
    shift = max(1, (classes - 1).bit_length())
    reversed_index = torch.arange(classes - 1, -1, -1, device=probs.device, dtype=torch.int64)
    keys = (probs.contiguous().view(torch.int32).to(torch.int64) << shift) | reversed_index
    top = keys.topk(k, dim=1, sorted=True).values
    idx = (classes - 1) - (top & ((1 << shift) - 1))
    return idx.to(torch.int32), (top >> shift).to(torch.int32).view(torch.float32)


def cast_once(module: torch.nn.Module, precision: str) -> int:
    """Cast the parameters autocast would cast on every batch (`CAST_ONCE_TYPES`) to the run dtype,
    in place; returns how many tensors were cast. A parameter also used by another module is left
    alone (that module may need it in float32)."""
    dtype = amp_dtype(precision)
    if dtype is None:
        return 0
    chosen = [m for m in module.modules() if type(m) in CAST_ONCE_TYPES]
    chosen_ids = {id(m) for m in chosen}
    elsewhere = {id(p) for m in module.modules() if id(m) not in chosen_ids for p in m.parameters(recurse=False)}
    cast = 0
    for m in chosen:
        for name, p in m.named_parameters(recurse=False):
            if id(p) not in elsewhere and p.dtype == torch.float32:
                p.data = p.data.to(dtype)
                cast += 1
    return cast


def module_bytes(module: torch.nn.Module) -> int:
    tensors = [*module.parameters(), *module.buffers()]
    return sum(t.numel() * t.element_size() for t in {id(t): t for t in tensors}.values())


def _own_code(fn: Callable, name: str) -> Callable:
    """`fn` with a code object of its own (dynamo keeps its compiled graphs per code object)."""
    fn.__code__ = fn.__code__.replace(co_name=f"mlreassess_forward_{name}")
    return fn


# dynamo's per-code-object graph limit (torch < 2.6 calls it cache_size_limit), and its default.
_LIMIT = "recompile_limit" if hasattr(torch._dynamo.config, "recompile_limit") else "cache_size_limit"
_ACCUMULATED = next((n for n in ("accumulated_recompile_limit", "accumulated_cache_size_limit")
                     if hasattr(torch._dynamo.config, n)), None)
_graphs = {"models": 0, "per_model": 0}  # the compiled models of this process, and their graph allowance


def recompile_limit() -> dict:
    """The dynamo limits a compiled call runs under: each compiled model may add one graph per static
    batch size (its batch, and each out-of-memory halving) to any code object it shares with other
    models, so the default (8, counted over every model of the process) becomes that allowance times
    the compiled models so far. Applied per call (`config.patch`), not set for the process."""
    limit = max(getattr(torch._dynamo.config, _LIMIT), _graphs["per_model"])
    limits = {_LIMIT: limit}
    if _ACCUMULATED is not None:
        limits[_ACCUMULATED] = max(getattr(torch._dynamo.config, _ACCUMULATED), limit)
    return limits


def _count_compiled(batch_size: int) -> None:
    _graphs["models"] += 1
    _graphs["per_model"] += 1 + batch_size.bit_length()  # the batch and each halving down to 1


def compiled_forward(module: torch.nn.Module, name: str, mode: str) -> Callable:
    def forward(x):
        return module(x)

    safe = "".join(c if c.isalnum() else "_" for c in name)
    return torch.compile(_own_code(forward, safe), backend=COMPILE_BACKEND, mode=None if mode == "default" else mode,
                         dynamic=False)


def _root_cause(exc: BaseException) -> str:
    """'Type: first line' of the innermost cause (dynamo wraps a backend's error in its own)."""
    while getattr(exc, "inner_exception", None) is not None or exc.__cause__ is not None:
        exc = getattr(exc, "inner_exception", None) or exc.__cause__
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0].strip()[:200] if lines else ''}"


class ModelRunner:
    """One model on the device: normalise, forward, float32 softmax, top-k. Results stay on the
    device until `collect()`, so batches are never synchronised."""

    def __init__(self, loaded: LoadedModel, device: str, opts: InferOptions):
        self.loaded = loaded
        self.name = loaded.spec.name
        self.device = device
        self.precision = opts.precision
        self.topk = opts.topk
        self.save_softmax = opts.save_softmax
        self.batch_size = opts.batch_size
        self.cast_tensors = cast_once(loaded.module, opts.precision)
        module = loaded.module.to(device)
        if opts.channels_last:
            module = module.to(memory_format=torch.channels_last)
        self.module = module
        self.weights_bytes = module_bytes(module)
        self.compile_mode = opts.compile_mode if opts.compile else None
        self._forward = compiled_forward(module, self.name, opts.compile_mode) if opts.compile else module
        self.compile = ({"mode": self.compile_mode, "seconds": None, "fallback": None, "batch_sizes": []}
                        if opts.compile else None)
        if opts.compile:
            _count_compiled(opts.batch_size)
        self.normalize = Normalizer(loaded.data_config["mean"], loaded.data_config["std"], device, opts.channels_last)
        self.state = {"chunk": opts.batch_size}
        self.activation_bytes: int | None = None
        self._out: list[tuple] = []
        self._non_finite = None  # samples with a NaN or inf logit, counted on the device (no sync per batch)

    def _padded(self, x):
        """A compiled model sees one batch shape: a short batch is padded with zeros (dropped after)."""
        n, want = len(x), self.state["chunk"]
        if self.compile is None or self.compile["fallback"]:
            return self._forward(x)
        if want not in self.compile["batch_sizes"]:  # its first call at this shape compiles it
            self.compile["batch_sizes"].append(want)
        if n >= want:
            return self._forward(x)
        return self._forward(F.pad(x, (0, 0, 0, 0, 0, 0, 0, want - n)))[:n]

    def logits(self, x):
        with autocast(self.device, self.precision):
            if self.compile is None or self.compile["fallback"]:
                return self._padded(x)
            try:
                with torch._dynamo.config.patch(fail_on_recompile_limit_hit=True, **recompile_limit()):
                    return self._padded(x)
            except Exception as exc:
                oom = out_of_memory(exc)  # also when a compile ran out of memory (dynamo wraps it)
                if oom is not None:
                    raise oom from None
                if fatal_device_error(exc):  # not the compiler's fault: the caller stops
                    raise
                self._fall_back(exc)  # a compile that fails or hits the limit: eager, said once
                return self._padded(x)

    def _fall_back(self, exc: Exception) -> None:
        why = _root_cause(exc)
        self.compile["fallback"] = why
        self._forward = self.module
        log.warning(f"model {self.name}: torch.compile failed, running eager ({why})")

    def warm_up(self, height: int, width: int, shrink: bool = True) -> None:
        """One batch of zeros through the model before the data comes: compiles it (timed), and on
        CUDA measures the memory one forward pass needs beyond the weights (`activation_bytes`).
        Out of memory halves the batch for good, or, when not `shrink`, raises `NoRoom`."""
        x = torch.zeros((self.batch_size, 3, height, width), dtype=torch.uint8, device=self.device)
        cuda = torch.device(self.device).type == "cuda"
        if cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            before = torch.cuda.memory_allocated(self.device)
        start = time.perf_counter()
        with torch.inference_mode():
            forward_with_retry(self.logits, self.normalize(x), self.state, shrink)
        if cuda:
            torch.cuda.synchronize(self.device)
            self.activation_bytes = int(torch.cuda.max_memory_allocated(self.device) - before)
        if self.compile is not None:
            self.compile["seconds"] = round(time.perf_counter() - start, 3)

    def predict(self, batch_uint8) -> None:
        x = self.normalize(batch_uint8)
        logits = forward_with_retry(self.logits, x, self.state)
        if not isinstance(logits, torch.Tensor) or logits.shape != (len(x), NUM_CLASSES):  # e.g. a module's own head
            shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise MlreassessError(f"its forward gives {shape}, not the (batch, {NUM_CLASSES}) ImageNet-1k logits")
        bad = (~torch.isfinite(logits)).any(dim=1).sum()
        self._non_finite = bad if self._non_finite is None else self._non_finite + bad
        probs = logits.float().softmax(dim=1)  # float32 softmax, whatever the AMP dtype
        idx, prob = topk_stable(probs, self.topk)
        self._out.append((idx, prob, probs.half() if self.save_softmax else None))

    def collect(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """All batches' (topk_idx int32, topk_prob float32, softmax float16 or None) as numpy, since
        the last collect. MlreassessError if any logit was NaN or inf: such a model's outputs are not
        a softmax, and none of them is stored."""
        bad, self._non_finite = self._non_finite, None
        if bad is not None and int(bad):
            self._out = []
            raise MlreassessError(f"its forward gave non-finite logits (NaN or inf) for {int(bad)} sample(s); "
                                  "nothing of it is stored")
        if not self._out:
            k = self.topk
            return np.zeros((0, k), np.int32), np.zeros((0, k), np.float32), None
        idx = torch.cat([o[0] for o in self._out]).cpu().numpy()
        prob = torch.cat([o[1] for o in self._out]).cpu().numpy()
        soft = torch.cat([o[2] for o in self._out]).cpu().numpy() if self.save_softmax else None
        self._out = []
        return idx, prob, soft

    def describe_compile(self) -> dict | None:
        return dict(self.compile) if self.compile is not None else None
