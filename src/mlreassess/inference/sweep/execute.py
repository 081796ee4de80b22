"""Running the passes of one sweep: what they share (manifests, device, patch caches, the open
input pipeline of the current group), loading a pass's models once, streaming each dataset through
them, and merging the ranks' shares when samples are split."""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, Callable

import numpy as np
import torch

from mlreassess.datasets.manifest import Manifest
from mlreassess.errors import MlreassessError
from mlreassess.inference.input.device_input import pipeline_for
from mlreassess.inference.input.caches import SweepCaches
from mlreassess.inference.input.devices import DeviceFault, fatal_device_error, first_line
from mlreassess.inference.input.pipeline import InputPipeline
from mlreassess.inference.input.preprocess import Preprocess, preprocess_for
from mlreassess.inference.models.model_runner import ModelRunner, NoRoom
from mlreassess.inference.models.registry import LoadedModel, ModelSpec, build
from mlreassess.inference.sweep.builds import Builds
from mlreassess.inference.sweep.compile_rule import CompileChoice
from mlreassess.inference.sweep import distributed as D
from mlreassess.inference.sweep import writers
from mlreassess.inference.sweep.outputs import Loaded, Summary, run_meta
from mlreassess.inference.sweep.passes import (
    Pass,
    Unit,
    fits,
    free_memory,
    split_models,
)
from mlreassess.inference.sweep.stream import (
    PassResult,
    one_line,
    pass_workers,
    run_pass,
    runners_for,
)
from mlreassess.options import InferOptions
from mlreassess.results import ResultsLayout

log = logging.getLogger(__name__)


class Sweep:
    """What the passes of one sweep share: the manifests, the device, the patch caches (one per
    sweep, built when first needed), and the open input pipeline of the current group."""

    def __init__(self, manifests: list[Manifest], device: str, opts: InferOptions, layout: ResultsLayout,
                 dist: D.Dist, split_samples: bool, passes: list[Pass], summary: Summary):
        self.manifests, self.device, self.opts, self.layout = manifests, device, opts, layout
        self.dist, self.split_samples, self.summary = dist, split_samples, summary
        self.passes_over = {d: sum(d in p.datasets for p in passes) for d in range(len(manifests))}
        self.group_datasets: dict[Preprocess, list[int]] = {}
        for p in passes:
            self.group_datasets.setdefault(p.preprocess, [])
            self.group_datasets[p.preprocess] = sorted({*self.group_datasets[p.preprocess], *p.datasets})
        patchml = {d: self.rows(d) for d in sorted(self.passes_over) if self.passes_over[d]
                   and manifests[d].kind == "patchml"}
        self.caches = SweepCaches(manifests, patchml, opts.source_root, pass_workers(opts))
        self._pipeline: tuple[Preprocess, InputPipeline] | None = None
        self.builds: Builds | None = None  # the models built ahead (set by the runner)
        self.compile_choices: dict[str, CompileChoice] = {}  # model -> compiled or not (--compile), by the plan

    def rows(self, d: int) -> list[int]:
        """The rows of dataset `d` this rank predicts."""
        rows = list(range(len(self.manifests[d])))
        return D.block(rows, self.dist.rank, self.dist.world) if self.split_samples else rows

    def pipeline(self, prep: Preprocess) -> InputPipeline:
        """The input pipeline of `prep`'s group: one set of decode workers for all its passes."""
        if self._pipeline is not None and self._pipeline[0] == prep:
            return self._pipeline[1]
        self.close()
        datasets = self.group_datasets[prep]
        kind = pipeline_for(self.opts.decode)
        extra = {"device_pixels": self.caches.device_pixels} if self.opts.decode == "gpu" else {}
        made = kind({d: self.manifests[d] for d in datasets}, prep, self.device, self.opts.batch_size,
                    pass_workers(self.opts), self.opts.source_root, {d: self.caches.get(d) for d in datasets}, **extra)
        self._pipeline = (prep, made)
        return made

    def opts_for(self, spec: ModelSpec) -> InferOptions:
        """The options one model is loaded with: the sweep's, compiled or not as the plan chose."""
        choice = self.compile_choices.get(spec.name)
        if choice is None or choice.compile == self.opts.compile:
            return self.opts
        return dataclasses.replace(self.opts, compile=choice.compile)

    def make(self, spec: ModelSpec) -> LoadedModel:
        """`registry.build` of one model with the sweep's options (what `_load` builds)."""
        return build(spec, self.opts.test_input_size, self.opts.checkpoint_key, device=self.device, opts=self.opts)

    def build(self, spec: ModelSpec, *args, **kwargs) -> LoadedModel:
        """`registry.build`, or the model the background thread built ahead (`make`: the same arguments)."""
        if self.builds is None:
            return build(spec, *args, **kwargs)
        return self.builds.take(spec)

    def model_meta(self, name: str) -> dict[str, Any]:
        """What its outputs' metadata says of how a model was loaded beyond `run_meta`."""
        choice = self.compile_choices.get(name)
        built = self.builds.seconds.get(name) if self.builds is not None else None
        return {"compile_choice": choice.meta() if choice else None,
                "build_s": round(built, 3) if built is not None else None}

    def close(self) -> None:
        if self._pipeline is not None:
            self._pipeline[1].close()
            self._pipeline = None


def run_pass_and_deferred(p: Pass, sweep: Sweep) -> None:
    """Run pass `p`, then the models it had to leave for later (device memory), at once."""
    todo: Pass | None = p
    while todo is not None:
        todo = _one_pass(todo, sweep)


def _load(unit: Unit, device: str, opts: InferOptions, alone: bool = True,
          make: Callable[..., LoadedModel] = build) -> Loaded:
    """The unit's model built (by `make`), on the device and warmed up. Not `alone` (other models of
    the pass are already on the device), a warm-up out of memory raises `NoRoom` rather than halving
    the batch for the whole sweep: the model runs in a pass of its own instead."""
    start = time.perf_counter()
    loaded = make(unit.model, opts.test_input_size, opts.checkpoint_key, device=device, opts=opts)
    actual = preprocess_for(loaded.data_config, opts.crop)
    if actual != unit.preprocess:  # the registry's config and the built model's disagree
        raise MlreassessError(
            f"model {unit.model.name!r}: built model wants {actual.describe()}, its registry entry {unit.preprocess.describe()}"
        )
    runner = ModelRunner(loaded, device, opts)
    if opts.compile or torch.device(device).type == "cuda":  # compile now (timed); measure activations
        runner.warm_up(unit.preprocess.height, unit.preprocess.width, shrink=alone)
    return Loaded(runner, time.perf_counter() - start)


def _load_pass(p: Pass, sweep: Sweep) -> tuple[dict[str, Loaded], dict[str, str], Pass, Pass | None]:
    """(loaded models, load errors, the pass as loaded, the models left for a later pass). On CUDA,
    loading stops at the first model after which the largest probed forward pass would not fit."""
    loaded, errors = {}, {}
    models = p.models
    count = len(models)  # models of the pass that stay in it
    for n, spec in enumerate(models):
        try:
            loaded[spec.name] = _load(p.units_of_model(spec)[0], sweep.device, sweep.opts_for(spec),
                                      alone=not loaded, make=sweep.build)
        except NoRoom as exc:  # its forward pass does not fit beside the others: it goes to the next pass
            log.info(f"model {spec.name} does not fit beside {len(loaded)} other model(s) ({exc}): it runs next")
            count = n
            break
        except Exception as exc:  # weights missing, offline hub, bad file: this model only
            _stop_on_device_error(exc, [spec.name], p.units_of_model(spec), sweep)
            errors[spec.name] = one_line(exc)
            log.warning(f"model {spec.name} failed to load: {errors[spec.name]}")
            continue
        if n + 1 < len(models) and not _room_for_more(loaded, sweep):
            count = n + 1
            break
    kept = _agreed(count, sweep.dist, sweep.split_samples)
    for spec in models[kept:]:  # loaded on this rank, but another rank had to stop earlier
        loaded.pop(spec.name, None)
        errors.pop(spec.name, None)
    if kept == len(models):
        return loaded, errors, p, None
    head, rest = split_models(p, kept)
    log.info(f"{len(rest.models)} model(s) of the pass do not fit the device with the others: they run next")
    return loaded, errors, head, rest


def _room_for_more(loaded: dict[str, Loaded], sweep: Sweep) -> bool:
    """Whether the device has room for another model beside `loaded` (always on a CPU device)."""
    if torch.device(sweep.device).type != "cuda":
        return True
    largest = max((x.runner.activation_bytes or 0 for x in loaded.values()), default=0)
    torch.cuda.empty_cache()
    return fits(free_memory(sweep.device), largest)


def _agreed(count: int, dist: D.Dist, split_samples: bool) -> int:
    """The number of models every rank keeps: with split samples all ranks run the same passes, so
    they keep the smallest count any of them could; otherwise each rank decides alone."""
    return min(dist.all_gather(count)) if split_samples else count


def _one_pass(p: Pass, sweep: Sweep) -> Pass | None:
    """Load the pass's models once, stream each dataset they need through them, write their
    outputs; returns the models left for a pass of their own (device memory), if any."""
    sweep.pipeline(p.preprocess)  # first: a device copy of the patch cache is there when models are fitted
    loaded, load_errors, head, rest = _load_pass(p, sweep)
    sweep.summary.passes += 1
    try:
        for d in head.datasets:
            _one_dataset(head, d, loaded, load_errors, sweep)
    finally:
        loaded.clear()
        if torch.device(sweep.device).type == "cuda":
            _empty_cache()  # the next pass measures free memory
    return rest


def _empty_cache() -> None:
    try:
        torch.cuda.empty_cache()
    except RuntimeError:  # after a CUDA error: the error already on its way is the one to report
        pass


def _stop_on_device_error(exc: Exception, names: list[str], units: list[Unit], sweep: Sweep) -> None:
    """A CUDA error other than out of memory (`input.devices`): recorded in failures.jsonl for the
    model that met it (`names`: all the pass's models when it came outside a model's call), then
    the process stops with one line. Any other error: nothing (the caller records it per model)."""
    fault = exc if isinstance(exc, DeviceFault) else None
    if fault is None and not fatal_device_error(exc):
        return
    error = fault.error if fault else first_line(exc)
    culprits = [fault.model] if fault else names
    for unit in units:
        if unit.model.name in culprits:
            _record_failure(unit, sweep.manifests[unit.dataset].name, f"CUDA error (the sweep stopped): {error}", sweep)
    if fault is None:
        dataset = sweep.manifests[units[0].dataset].name if units else ""
        fault = DeviceFault(", ".join(names), dataset, error)
    raise fault from None


def _one_dataset(p: Pass, d: int, loaded: dict[str, Loaded], load_errors: dict[str, str], sweep: Sweep) -> None:
    dist, manifest = sweep.dist, sweep.manifests[d]
    units = p.units_of(d)
    runners = runners_for(p.preprocess, [(loaded[u.model.name].runner, u.preprocess) for u in units
                                         if u.model.name in loaded])
    result = PassResult()
    if runners:
        rows = sweep.rows(d)
        desc = f"{manifest.name} | {', '.join(r.name for r in runners)}" + (f" [rank {dist.rank}]" if dist.active else "")
        pipeline = sweep.pipeline(p.preprocess)
        before = pipeline.decode_fallbacks
        try:
            result = run_pass(pipeline.batches(d, rows), manifest, len(rows), runners, sweep.opts, desc=desc)
        except Exception as exc:
            _stop_on_device_error(exc, [r.name for r in runners], units, sweep)
            raise
        result.decode_fallbacks = None if before is None else pipeline.decode_fallbacks - before
    result.model_errors.update({u.model.name: load_errors[u.model.name] for u in units if u.model.name in load_errors})
    sweep.summary.dataset_passes += 1
    if sweep.split_samples:
        shards = dist.gather(result)
        if not dist.is_main:
            return
        result = _merge_shards(shards)
    finish_dataset(result, loaded, units, sweep)


def _merge_shards(shards: list[PassResult]) -> PassResult:
    """Rank results of one dataset (disjoint rows) -> one result, as if one process had run it."""
    merged = PassResult(elapsed_s=max(s.elapsed_s for s in shards))
    merged.rows = np.concatenate([s.rows for s in shards])
    counts = [s.decode_fallbacks for s in shards if s.decode_fallbacks is not None]
    merged.decode_fallbacks = sum(counts) if counts else None
    for s in shards:
        merged.failed += s.failed
        merged.model_errors.update(s.model_errors)
    for name in shards[0].outputs:
        if name in merged.model_errors or any(name not in s.outputs for s in shards):
            continue
        # A rank whose share had no readable rows has empty arrays and no softmax: leave it out.
        parts = [s.outputs[name] for s in shards if len(s.outputs[name][0])] or [shards[0].outputs[name]]
        soft = np.concatenate([p[2] for p in parts]) if parts[0][2] is not None else None
        merged.outputs[name] = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), soft)
    return merged


def _decoding(p: Pass, d: int, sweep: Sweep) -> dict[str, Any]:
    """How a dataset was decoded for a pass, for its outputs' metadata."""
    return {
        "decoded_with": sorted(u.model.name for u in p.units_of(d)),  # models sharing this decode (and its elapsed_s)
        "models_per_pass": sweep.opts.models_per_pass,
        "dataset_passes": sweep.passes_over[d],
        "decodes_per_image": sweep.caches.decodes_per_image(d, sweep.passes_over[d]),
    }


def finish_dataset(result: PassResult, loaded: dict[str, Loaded], units: list[Unit], sweep: Sweep) -> None:
    """Write each model's predictions on one dataset (or record its failure)."""
    d = units[0].dataset
    manifest, layout, summary = sweep.manifests[d], sweep.layout, sweep.summary
    ids = manifest.sample_ids
    failed = [{"sample_id": ids[r], "error": e} for r, e in sorted(result.failed, key=lambda f: ids[f[0]])]
    decoding = _decoding(Pass(units[0].preprocess, units), d, sweep) if result.outputs else {}
    for unit in units:
        name = unit.model.name
        error = result.model_errors.get(name)
        if error is None and not len(result.rows):
            error = f"no sample of {manifest.name} could be read"
        if error is not None:
            _record_failure(unit, manifest.name, error, sweep)
            continue
        idx, prob, soft = result.outputs[name]
        table = writers.predictions_table([ids[r] for r in result.rows.tolist()], idx, prob, soft)
        meta = run_meta(loaded[name], manifest, unit.preprocess, sweep.opts, result.elapsed_s, table.num_rows, failed,
                     sweep.dist.world)
        meta.update(decoding, **sweep.model_meta(name), recipe=unit.recipe, decode_fallbacks=result.decode_fallbacks)
        writers.write_predictions(layout.prediction(manifest.name, name), table, meta)
        writers.drop_retired(layout.retired(manifest.name, name))
        summary.done.append((manifest.name, name))
        summary.images += table.num_rows
        log.info(f"{manifest.name} / {name}: {table.num_rows} images, {meta['images_per_s']} images/s"
                 + (f", {len(failed)} unreadable" if failed else ""))


def _record_failure(unit: Unit, dataset: str, error: str, sweep: Sweep) -> None:
    layout, name = sweep.layout, unit.model.name
    retired = layout.retired(dataset, name)
    extra = {"retired": str(retired)} if retired.exists() else {}
    writers.record_failure(layout, name, dataset, error, weights=unit.model.weights, rank=sweep.dist.rank, **extra)
    sweep.summary.failed.append((dataset, name, error))
