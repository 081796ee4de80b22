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
from mlreassess.inference.models.weights import architecture
from mlreassess.inference.input.preprocess import Preprocess, SharedDecode, amp_dtype, decode_of
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
    """Models of one preprocessing group (or of several sharing a decode), loaded once, and the units
    they produce (by dataset)."""

    preprocess: Preprocess | SharedDecode  # what the pass's decode workers make of each image
    units: list[Unit]  # sorted by (dataset, model)

    @property
    def models(self) -> list[ModelSpec]:
        """In load order (`model_order`)."""
        return sorted({u.model for u in self.units}, key=model_order)

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


# A group of at most this many models does not decode every image for itself: its decode (JPEG
# decode or canvas painting, then the resize) serves so few models that the pass can be bound by its
# decode workers while the device waits. Such a group joins another pass (`make_passes`).
SHARED_DECODE_MAX_MODELS = 3
# The groups of one pass hold at most this many pixels per image together (one 800 x 800 image, the
# largest input of the paper's sweep), so a shared decode's batch slots are no larger than that group's own.
SHARED_DECODE_MAX_PIXELS = 800 * 800


def make_passes(units: Sequence[Unit], per_pass: int | str, cost: Callable[[ModelSpec], int] | None = None,
                budget: int = 0, share_decode: bool = True) -> list[Pass]:
    """`units` grouped by preprocessing, each group's models cut into passes: `per_pass` models
    each, or with `auto`, as many as fit `budget` by `cost`; a pass takes all its models' units.
    With `share_decode`, each group of at most `SHARED_DECODE_MAX_MODELS` models (largest images
    first) joins, whole, the first pass with room for its models and its pixels
    (`SHARED_DECODE_MAX_PIXELS`), those with the most units first, else opens one: that pass decodes
    each image once and resizes it for each of its groups (`SharedDecode`). One pass is never slower
    than its groups' passes apart (its decode costs no more than theirs together, and its device
    work is theirs), and a decode-bound small group's resizes run while a large group's models keep
    the device busy."""
    groups: dict[Preprocess, list[Unit]] = {}
    for u in sorted(units, key=lambda u: (u.preprocess, model_order(u.model), u.dataset)):
        groups.setdefault(u.preprocess, []).append(u)
    n_models = {prep: len({u.model for u in g}) for prep, g in groups.items()}
    small = {p for p in groups if share_decode and n_models[p] <= SHARED_DECODE_MAX_MODELS}
    auto = per_pass == MODELS_PER_PASS_AUTO
    cost_of, limit = (cost, budget) if auto else (None, int(per_pass))

    def cut_group(group: list[Unit]) -> list[_Bin]:
        models = sorted({u.model for u in group}, key=model_order)
        runs = fill(models, cost, budget) if auto else cut(models, limit)
        return [_Bin([u for u in group if u.model in chosen], cost_of) for chosen in map(set, runs)]

    bins = [b for prep in groups if prep not in small for b in cut_group(groups[prep])]
    for prep in sorted(small, key=lambda p: (-p.height * p.width, p)):
        guest = _Bin(groups[prep], cost_of)
        host = next((b for b in sorted(bins, key=lambda b: -len(b.units)) if b.room_for(guest, limit)), None)
        if host is not None:
            host.take(guest)
        else:
            bins += [guest] if guest.used <= limit else cut_group(groups[prep])
    return [pass_of(b.units) for b in bins]


class _Bin:
    """The units of one pass being packed: what its models cost (`cost`, or a count without one),
    and the pixels per image of its groups."""

    def __init__(self, units: list[Unit], cost: Callable[[ModelSpec], int] | None):
        self.units = list(units)
        models = {u.model for u in units}
        self.used = sum(map(cost, models)) if cost is not None else len(models)
        self.preps = {u.preprocess for u in units}

    @property
    def pixels(self) -> int:
        return sum(p.height * p.width for p in self.preps)

    def room_for(self, guest: "_Bin", limit: int) -> bool:
        return self.used + guest.used <= limit and self.pixels + guest.pixels <= SHARED_DECODE_MAX_PIXELS

    def take(self, guest: "_Bin") -> None:
        self.units += guest.units
        self.used += guest.used
        self.preps |= guest.preps


def model_order(model: ModelSpec) -> tuple[str, str, str]:
    """The order of a group's models: the pretrained tags of one architecture next to each other, so
    that each compiles from the graph its predecessor left in inductor's FX graph cache."""
    return architecture(model.name), model.name, model.weights


def pass_of(units: Sequence[Unit]) -> Pass:
    """The pass of `units`, decoding for all of their preprocessings (`decode_of`)."""
    return Pass(decode_of(u.preprocess for u in units), sorted(units, key=lambda u: (u.dataset, u.model)))


def split_models(p: Pass, first: int) -> tuple[Pass, Pass]:
    """The pass's first `first` models, and the rest (a pass of their own; both keep the pass's decode,
    whose workers are already running)."""
    models = p.models
    head = set(models[:first])
    return (Pass(p.preprocess, [u for u in p.units if u.model in head]),
            Pass(p.preprocess, [u for u in p.units if u.model not in head]))


def one_model_passes(passes: Sequence[Pass]) -> list[Pass]:
    """Every model of every pass in a pass of its own (to keep more ranks busy), decoding for it alone."""
    return [pass_of(p.units_of_model(m)) for p in passes for m in p.models]


def one_unit_passes(passes: Sequence[Pass]) -> list[Pass]:
    """Every unit in a pass of its own."""
    return [pass_of([u]) for p in passes for u in p.units]
