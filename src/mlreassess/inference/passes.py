"""Passes: a sweep's units grouped by (dataset, preprocessing), each group cut into passes.

A pass decodes its dataset once for all its models, so fewer, fuller passes mean fewer decodes.
`--models-per-pass N` cuts each group into runs of N models. `auto` (the default) fills a pass with
models while their weights and the predictions they keep on the device fit in half the device's
free memory; the other half is for the one forward pass running at a time (models of a pass run one
after another on each batch), the input batches, and the patch cache with --decode gpu. A model's
size comes from `models.model_bytes` (an empty build on the meta device).
"""

from __future__ import annotations

import itertools
import os
from typing import Callable, Hashable, Sequence, TypeVar

import torch

from mlreassess.options import MODELS_PER_PASS_AUTO

T = TypeVar("T")

# Share of the device's free memory that the models of one pass may hold together.
MODEL_MEMORY_SHARE = 0.5
# A model whose size cannot be known before it is loaded (hf-hub: models) counts as this share of
# the budget: at most 4 such models per pass, the old fixed default.
UNKNOWN_MODEL_SHARE = 0.25
SOFTMAX_BYTES = 2 * 1000  # float16 per class, per sample (--save-softmax)
TOPK_BYTES = 4 + 4  # int32 class + float32 probability per kept class, per sample


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


def memory_budget(device: str) -> int:
    return int(free_memory(device) * MODEL_MEMORY_SHARE)


def unit_bytes(weights: int | None, samples: int, topk: int, save_softmax: bool, budget: int) -> int:
    """What one model of a pass holds on the device: its weights and its predictions until the pass ends."""
    kept = samples * (topk * TOPK_BYTES + (SOFTMAX_BYTES if save_softmax else 0))
    return (int(budget * UNKNOWN_MODEL_SHARE) if weights is None else weights) + kept


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


def make_passes(units: Sequence[T], key: Callable[[T], Hashable], per_pass: int | str,
                cost: Callable[[T], int] | None = None, budget: int = 0) -> list[list[T]]:
    """Consecutive `units` with one `key` (dataset, preprocessing), cut into passes: `per_pass` models
    each, or with `auto`, as many as fit `budget` by `cost`."""
    passes = []
    for _, group in itertools.groupby(units, key=key):
        group = list(group)
        if per_pass == MODELS_PER_PASS_AUTO:
            passes += fill(group, cost, budget)
        else:
            passes += cut(group, int(per_pass))
    return passes
