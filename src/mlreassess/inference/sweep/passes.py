"""Passes: a sweep's units grouped by preprocessing, each group's models cut into passes.

A pass is model-major: its models (one preprocessing group) are loaded, cast and compiled once,
then every dataset they still need streams through them, each image decoded once for all of them.
So a model is loaded once per sweep, not once per dataset. `--models-per-pass N` cuts a group into
runs of N models; `auto` (the default) fills a pass while its models' weights, in the dtype they
run in, and the predictions each keeps on the device until a dataset ends fit `MODEL_MEMORY_SHARE`
of the device's free memory. The rest is for one forward pass's activations (models of a pass run
one after another on each batch), the input batches and a device copy of the patch cache; on CUDA
the runner also measures each model's activations on a probe batch when it loads the pass, and
moves a model that does not fit to a pass of its own (`fits`).
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from typing import Callable, Sequence, TypeVar

import torch

from mlreassess.inference.models.registry import ModelSpec
from mlreassess.inference.input.preprocess import Preprocess, amp_dtype
from mlreassess.options import MODELS_PER_PASS_AUTO

T = TypeVar("T")

# Share of the device's free memory that the models of one pass may hold together (weights and
# kept predictions), planned before any is loaded.
MODEL_MEMORY_SHARE = 0.6
# Share of the free memory (measured after loading) that must stay free for the largest probed
# forward pass, with this factor of headroom (allocator fragmentation, cuDNN workspaces).
ACTIVATION_HEADROOM = 1.25
# A model whose size cannot be known before it is loaded counts as this share of the budget.
UNKNOWN_MODEL_SHARE = 0.25
SOFTMAX_BYTES = 2 * 1000  # float16 per class, per sample (--save-softmax)
TOPK_BYTES = 4 + 4  # int32 class + float32 probability per kept class, per sample


@dataclass(frozen=True)
class Unit:
    """One output file: a model's predictions on one dataset."""

    dataset: int  # index into the sweep's manifests
    model: ModelSpec
    preprocess: Preprocess
    recipe: dict = field(default_factory=dict, compare=False, hash=False)  # what its output depends on


@dataclass
class Pass:
    """Models of one preprocessing group, loaded once, and the units they produce (by dataset)."""

    preprocess: Preprocess
    units: list[Unit]  # sorted by (dataset, model)

    @property
    def models(self) -> list[ModelSpec]:
        return sorted({u.model for u in self.units})

    @property
    def datasets(self) -> list[int]:
        return sorted({u.dataset for u in self.units})

    def units_of(self, d: int) -> list[Unit]:
        return [u for u in self.units if u.dataset == d]

    def units_of_model(self, model: ModelSpec) -> list[Unit]:
        return [u for u in self.units if u.model == model]


def run_dtype_bytes(float32_bytes: int | None, precision: str) -> int | None:
    """A model's weights in the dtype they run in: with bf16/fp16 the convolution and linear weights
    (`model_runner.cast_once`: nearly all of them) take half the float32 bytes."""
    if float32_bytes is None or amp_dtype(precision) is None:
        return float32_bytes
    return float32_bytes // 2


def kept_bytes(samples: int, topk: int, save_softmax: bool) -> int:
    """What one model keeps on the device for a dataset of `samples` until the dataset ends."""
    return samples * (topk * TOPK_BYTES + (SOFTMAX_BYTES if save_softmax else 0))


def unit_bytes(weights: int | None, samples: int, topk: int, save_softmax: bool, budget: int) -> int:
    """What one model of a pass holds on the device: its weights and the predictions it keeps."""
    return (int(budget * UNKNOWN_MODEL_SHARE) if weights is None else weights) + kept_bytes(samples, topk, save_softmax)


def free_memory(device: str) -> int:
    """Free bytes on `device` (CUDA: the driver's count; CPU: the kernel's MemAvailable)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return int(torch.cuda.mem_get_info(dev)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def memory_budget(device: str, free: int | None = None) -> int:
    return int((free_memory(device) if free is None else free) * MODEL_MEMORY_SHARE)


def fits(free_after_load: int, largest_activation: int) -> bool:
    """Whether a loaded pass leaves room for its largest probed forward pass."""
    return free_after_load >= largest_activation * ACTIVATION_HEADROOM


def fill(items: Sequence[T], cost: Callable[[T], int], budget: int) -> list[list[T]]:
    """`items` in order, cut into runs whose costs sum to at most `budget` (a lone item over it runs alone)."""
    runs: list[list[T]] = []
    used = 0
    for item in items:
        c = cost(item)
        if not runs or used + c > budget:
            runs.append([])
            used = 0
        runs[-1].append(item)
        used += c
    return runs


def cut(items: Sequence[T], per_pass: int) -> list[list[T]]:
    return [list(items[i : i + per_pass]) for i in range(0, len(items), per_pass)]


def make_passes(units: Sequence[Unit], per_pass: int | str, cost: Callable[[ModelSpec], int] | None = None,
                budget: int = 0) -> list[Pass]:
    """`units` grouped by preprocessing (in order), each group's models cut into passes: `per_pass`
    models each, or with `auto`, as many as fit `budget` by `cost`; a pass takes all its models' units."""
    passes = []
    ordered = sorted(units, key=lambda u: (u.preprocess, u.model, u.dataset))
    for prep, group in itertools.groupby(ordered, key=lambda u: u.preprocess):
        group = list(group)
        models = sorted({u.model for u in group})
        runs = fill(models, cost, budget) if per_pass == MODELS_PER_PASS_AUTO else cut(models, int(per_pass))
        for run in runs:
            chosen = set(run)
            passes.append(Pass(prep, sorted((u for u in group if u.model in chosen), key=lambda u: (u.dataset, u.model))))
    return passes


def split_models(p: Pass, first: int) -> tuple[Pass, Pass]:
    """The pass's first `first` models, and the rest (a pass of their own)."""
    models = p.models
    head = set(models[:first])
    return (Pass(p.preprocess, [u for u in p.units if u.model in head]),
            Pass(p.preprocess, [u for u in p.units if u.model not in head]))


def one_model_passes(passes: Sequence[Pass]) -> list[Pass]:
    """Every model of every pass in a pass of its own (to keep more ranks busy)."""
    return [Pass(p.preprocess, p.units_of_model(m)) for p in passes for m in p.models]


def one_unit_passes(passes: Sequence[Pass]) -> list[Pass]:
    """Every unit in a pass of its own."""
    return [Pass(p.preprocess, [u]) for p in passes for u in p.units]
