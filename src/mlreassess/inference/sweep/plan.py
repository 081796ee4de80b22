"""The sweep's plan: which (model, dataset) units are pending and why, and the passes they run in.

Run on rank 0 only (and by `infer --plan`, which runs nothing). A complete output is redone, with a
line saying why, when what made it differs from what would make it now (`writers.stale_reason`).
"""

from __future__ import annotations

import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import torch

from mlreassess.cpus import available_cpus
from mlreassess.datasets.manifest import Manifest
from mlreassess.errors import InputError
from mlreassess.inference.sweep import writers
from mlreassess.inference.sweep.compile_rule import CompileChoice, Tables, compile_choices
from mlreassess.inference.input.device_resize import check_device_preprocess
from mlreassess.inference.models.registry import ModelSpec, data_config, model_bytes, recipe_entries
from mlreassess.inference.sweep.passes import Pass, Unit, kept_bytes, make_passes, memory_budget, run_dtype_bytes, unit_bytes
from mlreassess.inference.input.preprocess import Preprocess, preprocess_for
from mlreassess.options import MODELS_PER_PASS_AUTO, InferOptions
from mlreassess.results import ResultsLayout

log = logging.getLogger(__name__)


@dataclass
class SweepPlan:
    passes: list[Pass]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (dataset, model) up to date
    stale: list[tuple[Unit, str]] = field(default_factory=list)  # complete but out of date, and why
    sizes: dict[str, int | None] = field(default_factory=dict)  # model -> weights bytes as run
    budget: int = 0  # bytes for a pass's models (auto), 0 with a fixed --models-per-pass
    compile: dict[str, CompileChoice] = field(default_factory=dict)  # model -> compiled or not, and why (--compile)


def preprocessing(specs: list[ModelSpec], opts: InferOptions) -> dict[ModelSpec, Preprocess]:
    """Each model's CPU-side preprocessing from its registry data config, checked for --decode gpu
    before any work (not when the model's pass comes)."""
    prep = {s: preprocess_for(data_config(s, opts.test_input_size), opts.crop) for s in specs}
    if opts.decode == "gpu":
        for spec, p in prep.items():
            try:
                check_device_preprocess(p)
            except InputError as exc:
                raise InputError(f"model {spec.name!r}: {exc}") from None
    return prep


def pending_units(manifests: list[Manifest], specs: list[ModelSpec], layout: ResultsLayout,
                  opts: InferOptions) -> SweepPlan:
    """The units to run (as one pass each, not yet cut), the up-to-date ones, and the stale ones."""
    prep = preprocessing(specs, opts)
    entries = {s: recipe_entries(s, opts) for s in specs}  # once per model (an hf: config may be fetched)
    plan = SweepPlan(passes=[])
    pending = []
    for d, manifest in enumerate(manifests):
        content = writers.pixels_sha256(manifest)
        for spec in specs:
            unit = Unit(d, spec, prep[spec], writers.recipe(spec.weights, opts, prep[spec], content, entries[spec]))
            path = layout.prediction(manifest.name, spec.name)
            if writers.is_complete(path):
                # --overwrite redoes it too, and it is retired like any stale output: a failed redo
                # must not leave the old file where evaluate reads it as current.
                reason = "--overwrite" if opts.overwrite else writers.stale_reason(path, unit.recipe)
                if reason is None:
                    plan.skipped.append((manifest.name, spec.name))
                    continue
                plan.stale.append((unit, reason))
            pending.append(unit)
    plan.passes = [Pass(u.preprocess, [u]) for u in pending]
    return plan


def sweep_plan(manifests: list[Manifest], specs: list[ModelSpec], layout: ResultsLayout, opts: InferOptions,
               device: str, free_bytes: int | None = None) -> SweepPlan:
    """The sweep's passes: pending units grouped by preprocessing, each group's models cut into
    passes that fit the device (`passes.make_passes`). `free_bytes`: the device's free memory to
    plan for (default: measured on `device`)."""
    # Read first, so that a missing or bad table stops the sweep before any work.
    wanted = opts.compile and (opts.compile_when == "pays" or bool(opts.throughput and opts.compiled_throughput))
    tables = Tables.read(opts) if wanted else None
    plan = pending_units(manifests, specs, layout, opts)
    pending = [u for p in plan.passes for u in p.units]
    auto = opts.models_per_pass == MODELS_PER_PASS_AUTO
    plan.budget = memory_budget(device, free_bytes) if auto else 0
    models = sorted({u.model for u in pending})
    plan.sizes = {m.name: run_dtype_bytes(b, opts.precision) for m, b in zip(models, sizes_of(models))} if auto else {}
    largest = {m: max(len(manifests[u.dataset]) for u in pending if u.model == m) for m in models}

    def cost(m: ModelSpec) -> int:
        return unit_bytes(plan.sizes[m.name], largest[m], opts.topk, opts.save_softmax, plan.budget)

    share = opts.share_decode and opts.decode == "cpu"  # a device decode serves one input size
    plan.passes = make_passes(pending, opts.models_per_pass, cost, plan.budget, share_decode=share)
    plan.compile = compile_choices(plan.passes, manifests, opts, tables)
    if auto:
        log.debug(f"models per pass: auto, {plan.budget / 2**30:.1f} GiB for the models of a pass on {device}")
    return plan


# Below this many models, sizing them in a process pool costs more than it saves.
POOL_MIN_MODELS = 16


def sizes_of(models: list[ModelSpec]) -> list[int | None]:
    """`model_bytes` of each model; many are sized in forked processes (up to 0.5 s of CPU each on
    the meta device: the paper's 315 took 46 CPU-s on a slow 2-core machine), so that planning the
    paper's sweep takes well under a minute."""
    workers = min(available_cpus(), len(models) // POOL_MIN_MODELS * 4)
    if workers < 2:
        return [model_bytes(m) for m in models]
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(pool_start_method())) as pool:
        return list(pool.map(model_bytes, models, chunksize=8))


def pool_start_method() -> str:
    """fork (fast: the parent's imports are there) while this process has no CUDA context; after
    (the sweep plans once the device is set), forkserver: a child forked from a process with a
    CUDA context must not touch CUDA, which a model's constructor may do."""
    return "forkserver" if torch.cuda.is_initialized() else "fork"


def pass_bytes(p: Pass, plan: SweepPlan, manifests: list[Manifest], opts: InferOptions) -> int | None:
    """What a pass's models hold on the device by the plan (weights as run, the largest dataset's
    kept predictions); None when a model's size is unknown."""
    sizes = [plan.sizes.get(m.name) for m in p.models]
    if not sizes or any(s is None for s in sizes):
        return None
    largest = max(len(manifests[d]) for d in p.datasets)
    return sum(sizes) + len(sizes) * kept_bytes(largest, opts.topk, opts.save_softmax)
