"""The inference sweep: every (model, dataset) unit, resumable, model-major.

A unit is one (dataset, model) pair and one output file. Units whose output is complete and up to
date are skipped; a stale one is moved to RESULTS/retired/ before it is redone, so no stale result
is ever read as current (and it stays there, beside a failures.jsonl entry, if the redo fails).
The pending units are grouped by CPU-side preprocessing (input size, interpolation, crop) and
each group's models cut into passes (`passes`, `plan`). A pass loads its models once (weights cast
once, compiled once), then streams every dataset they need through them: each image is decoded and
resized once in DataLoader workers (which live as long as the group, not one pass), copied to the
device once as uint8 on a side stream, and fed to every model of the pass. A model that fails is
recorded in RESULTS/failures.jsonl and the sweep goes on. Under torchrun, ranks take passes first
come, first served (`distributed.Claims`), or, when there are fewer units than ranks, split the
samples of each dataset (rank 0 merges and writes).
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import timm
import torch

from mlreassess.cpus import capped_workers
from mlreassess.datasets.manifest import Manifest, read_manifest
from mlreassess.errors import InputError, MlreassessError
from mlreassess.inference import distributed as D
from mlreassess.inference import writers
from mlreassess.inference.data import PREFETCH, InputPipeline, SweepCaches, check_readable, default_workers
from mlreassess.inference.device_input import pipeline_for
from mlreassess.inference.distributed import resolve_device
from mlreassess.inference.model_runner import ModelRunner
from mlreassess.inference.models import build, check_specs
from mlreassess.inference.passes import Pass, Unit, fits, free_memory, one_model_passes, one_unit_passes, split_models
from mlreassess.inference.plan import SweepPlan, sweep_plan
from mlreassess.inference.slots import prefetch_that_fits, shared_memory_free
from mlreassess.inference.preprocess import Preprocess, preprocess_for
from mlreassess.io import remove_stale_tmp
from mlreassess.locks import folder_lock
from mlreassess.options import InferOptions
from mlreassess.progress import bar
from mlreassess.results import ResultsLayout

log = logging.getLogger(__name__)


@dataclass
class PassResult:
    """One dataset streamed through a pass's models."""

    rows: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # manifest rows predicted, in order
    failed: list[tuple[int, str]] = field(default_factory=list)  # unreadable rows and why
    outputs: dict[str, tuple] = field(default_factory=dict)  # model -> ModelRunner.collect()
    model_errors: dict[str, str] = field(default_factory=dict)
    elapsed_s: float = 0.0
    batch_end_s: list[float] = field(default_factory=list)  # time of each batch's end, from start


def sync_device(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def run_pass(batches: Iterator[tuple], manifest: Manifest, total: int, runners: list[ModelRunner],
             opts: InferOptions, desc: str = "", sync_after: int | None = None) -> PassResult:
    """Feed every batch of `batches` (rows, uint8 images on the device, errors) to every runner. Bad
    samples are left out (or, with opts.strict, stop the run); a runner that raises is dropped and
    its error kept. `sync_after`: wait for the device after that many batches (a benchmark's mark)."""
    result = PassResult()
    live = list(runners)
    rows: list[np.ndarray] = []
    start = time.perf_counter()
    device = runners[0].device if runners else "cpu"
    with torch.inference_mode(), bar(total=total, desc=desc, enabled=opts.progress) as progress:
        for idx, images, errors in batches:
            idx, images = _drop_unreadable(manifest, idx, images, errors, opts.strict, result)
            if len(idx):
                _predict(images, live, manifest.name, result)
                rows.append(idx.numpy() if isinstance(idx, torch.Tensor) else np.asarray(idx))
            if sync_after is not None and len(result.batch_end_s) + 1 == sync_after:
                sync_device(device)
            result.batch_end_s.append(time.perf_counter() - start)
            progress.update(len(errors))
        for runner in live:
            result.outputs[runner.name] = runner.collect()
        result.elapsed_s = time.perf_counter() - start
    result.rows = np.concatenate(rows) if rows else result.rows
    return result


def pass_workers(opts: InferOptions) -> int:
    return default_workers() if opts.workers is None else capped_workers(opts.workers)


def _drop_unreadable(manifest: Manifest, idx, images, errors: list[str], strict: bool, result: PassResult):
    """The batch without the samples that could not be read (recorded in `result`, or raised if strict)."""
    if not any(errors):
        return idx, images
    keep = [j for j, e in enumerate(errors) if not e]
    for j in (j for j, e in enumerate(errors) if e):
        row, sample = int(idx[j]), manifest.sample_ids[int(idx[j])]
        if strict:
            raise InputError(f"{manifest.source}: sample {sample!r}: {errors[j]}")
        result.failed.append((row, errors[j]))
        log.warning(f"skipping sample {sample!r} of {manifest.name}: {errors[j]}")
    return idx[keep], images[keep]


def _predict(x, live: list[ModelRunner], dataset: str, result: PassResult) -> None:
    """Feed one batch to every live runner; a runner that raises is dropped with its error."""
    for runner in list(live):
        try:
            runner.predict(x)
        except Exception as exc:  # one model's failure must not sink the others
            result.model_errors[runner.name] = _one_line(exc)
            live.remove(runner)
            log.warning(f"model {runner.name} failed on {dataset}: {result.model_errors[runner.name]}")


def _one_line(exc: Exception) -> str:
    return str(exc) if isinstance(exc, MlreassessError) else f"{type(exc).__name__}: {exc}".splitlines()[0][:500]


@dataclass
class Summary:
    done: list[tuple[str, str]] = field(default_factory=list)  # (dataset, model)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str, str]] = field(default_factory=list)  # (dataset, model, error)
    images: int = 0  # samples predicted, summed over models
    passes: int = 0  # model-major passes (each loads its models once)
    dataset_passes: int = 0  # datasets streamed through a pass (each decodes the dataset once)
    elapsed_s: float = 0.0

    def merge(self, other: "Summary") -> None:
        self.done += other.done
        self.skipped += other.skipped
        self.failed += other.failed
        self.images += other.images
        self.passes += other.passes
        self.dataset_passes += other.dataset_passes

    def lines(self) -> list[str]:
        rate = self.images / self.elapsed_s if self.elapsed_s > 0 else 0.0
        out = [
            f"infer: {len(self.done)} done, {len(self.skipped)} skipped, {len(self.failed)} failed in "
            f"{self.passes} pass{'es' if self.passes != 1 else ''} ({self.dataset_passes} dataset decodes); "
            f"{self.images:,} images in {self.elapsed_s:.1f} s ({rate:.1f} images/s over all models)"
        ]
        out += [f"  failed: {m} on {d}: {e}" for d, m, e in sorted(self.failed)]
        return out


def load_manifests(paths: list[str | Path]) -> list[Manifest]:
    manifests = [read_manifest(p) for p in paths]
    seen: dict[str, Path | None] = {}
    for m in manifests:
        check_readable(m)
        if m.name in seen:
            raise InputError(f"{m.source}: dataset name {m.name!r} is also the name of {seen[m.name]}")
        seen[m.name] = m.source
    return sorted(manifests, key=lambda m: m.name)


def run(manifest_paths: list[str | Path], specs: list, results: str | Path, opts: InferOptions) -> Summary:
    """Run (or resume) the sweep; returns this rank's view (rank 0: the whole sweep's summary)."""
    dist = D.init_from_env()
    try:
        with hold_folder(results, dist):
            summary = _run(dist, manifest_paths, specs, Path(results), opts)
            # Every rank must be done talking before any rank tears its group down: a rank that
            # destroys a gloo group while rank 0 still receives from it aborts the other process.
            dist.barrier()
        return summary
    finally:
        D.shutdown(dist)


@contextmanager
def hold_folder(folder: str | Path, dist: D.Dist) -> Iterator[None]:
    """One writer per output folder: rank 0 holds its lock for the job, and every rank stops alike
    if another job holds it."""
    with ExitStack() as stack:
        error = None
        if dist.is_main:
            try:
                stack.enter_context(folder_lock(folder))
            except InputError as exc:
                error = str(exc)
        error = dist.broadcast(error)
        if error is not None:
            raise InputError(error)
        yield


def _clear_leftovers(layout: ResultsLayout, manifests: list[Manifest]) -> None:
    """Temporary files a killed run left beside outputs (we hold the folder's lock: no writer is live)."""
    folders = [layout.root, layout.manifests_dir, *(layout.predictions_of(m.name) for m in manifests)]
    gone = sum(remove_stale_tmp(f) for f in folders)
    if gone:
        log.info(f"{layout.root}: removed {gone} temporary file(s) an interrupted run left behind")


def _copy_manifests(layout: ResultsLayout, manifests: list[Manifest], dist: D.Dist) -> None:
    for m in manifests:  # every rank checks, so a clash stops all of them alike
        state = writers.check_manifest_copy(layout, m)
        if state != "same" and dist.is_main:
            if state == "relabelled":
                log.info(f"{layout.manifest_copy(m.name)}: {m.source} has new labels for the same samples: "
                         "replacing the copy (the predictions stand)")
            elif state == "new sources":
                log.info(f"{layout.manifest_copy(m.name)}: {m.source} reads its samples from changed sources: "
                         "replacing the copy (their predictions are redone)")
            writers.write_manifest_copy(layout, m)


def _retire_stale(plan: SweepPlan, manifests: list[Manifest], layout: ResultsLayout) -> None:
    """Move each stale output out of what evaluate reads before it is redone (said in one line)."""
    for unit, reason in plan.stale:
        name, model = manifests[unit.dataset].name, unit.model.name
        path = layout.prediction(name, model)
        log.info(f"{path}: redoing it: {reason}")
        writers.retire(path, layout.retired(name, model))


def _check_slots(passes: list[Pass], opts: InferOptions) -> None:
    """One line now, not at a group's first pass, if its decode workers' batch slots cannot fit."""
    if opts.decode == "gpu":
        return  # no slots: encoded batches of every size
    free, workers = shared_memory_free(), pass_workers(opts)
    for prep in sorted({p.preprocess for p in passes}):
        prefetch_that_fits(PREFETCH, workers, opts.batch_size * 3 * prep.height * prep.width, free)


def _schedule(passes: list[Pass], manifests: list[Manifest], dist: D.Dist) -> tuple[list[Pass], bool]:
    """(passes in the order ranks take them, whether every dataset's samples are split among ranks).
    Groups with the most work go first (with first-come claims, the last passes to finish are short
    ones); a group's passes stay together, so its decode workers serve them all."""
    work: dict[Preprocess, int] = {}
    for p in passes:
        work[p.preprocess] = work.get(p.preprocess, 0) + sum(len(manifests[u.dataset]) for u in p.units)
    passes = sorted(passes, key=lambda p: (-work[p.preprocess], p.preprocess))
    n_units = sum(len(p.units) for p in passes)
    split_samples = dist.active and 0 < n_units < dist.world
    if dist.active and not split_samples:  # rather split passes than leave a rank idle
        if len(passes) < dist.world:
            passes = one_model_passes(passes)
        if len(passes) < dist.world:
            passes = one_unit_passes(passes)
    return passes, split_samples


def plan_only(manifest_paths: list[str | Path], specs: list, results: str | Path, opts: InferOptions,
              free_bytes: int | None = None) -> tuple[SweepPlan, list[Manifest], int]:
    """(the sweep's plan, its manifests, the free device memory planned for) without running,
    loading, writing or locking anything: `infer --plan`. Models are sized on the meta device."""
    specs = check_specs(specs)
    manifests = load_manifests(manifest_paths)
    device = resolve_device(opts.device)
    free = free_memory(D.check_available(device)) if free_bytes is None else free_bytes
    return sweep_plan(manifests, specs, ResultsLayout(results), opts, device, free), manifests, free


def _run(dist: D.Dist, manifest_paths, specs: list, results: Path, opts: InferOptions) -> Summary:
    start = time.perf_counter()
    layout = ResultsLayout(results)
    specs = check_specs(specs)
    manifests = load_manifests(manifest_paths)
    _copy_manifests(layout, manifests, dist)
    device = _device(opts, dist)
    plan = None
    if dist.is_main:
        _clear_leftovers(layout, manifests)
        plan = sweep_plan(manifests, specs, layout, opts, device)
        _check_slots(plan.passes, opts)  # before anything is retired: a sweep that cannot start changes nothing
        _retire_stale(plan, manifests, layout)
    passes, skipped, run_id = dist.broadcast((plan.passes, plan.skipped, uuid.uuid4().hex) if plan else None)
    passes, split_samples = _schedule(passes, manifests, dist)
    claims = D.Claims(results / ".claims" / run_id, dist.rank) if dist.active and not split_samples else None
    sweep = _Sweep(manifests, device, opts, layout, dist, split_samples, passes,
                   Summary(skipped=skipped if dist.is_main else []))
    try:
        for i, p in enumerate(passes):
            if claims is None or claims.take(i):
                _run_pass_and_deferred(p, sweep)
    finally:
        sweep.close()
    summary = sweep.summary
    summary.elapsed_s = time.perf_counter() - start
    everyone = dist.gather(summary)  # also: every rank is past its last claim
    if not dist.is_main:
        return summary
    if claims is not None:
        claims.remove()
    writers.prune_failures(layout)  # failures that this run fixed are history
    total = Summary(elapsed_s=max(s.elapsed_s for s in everyone))
    for s in everyone:
        total.merge(s)
    return total


class _Sweep:
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

    def close(self) -> None:
        if self._pipeline is not None:
            self._pipeline[1].close()
            self._pipeline = None


def _device(opts: InferOptions, dist: D.Dist) -> str:
    """This rank's device, checked to exist."""
    device = D.device_for(D.check_available(resolve_device(opts.device)), dist)
    if torch.device(device).type == "cuda":
        torch.cuda.set_device(torch.device(device))
    return device


def _run_pass_and_deferred(p: Pass, sweep: _Sweep) -> None:
    """Run pass `p`, then the models it had to leave for later (device memory), at once."""
    todo: Pass | None = p
    while todo is not None:
        todo = _one_pass(todo, sweep)


@dataclass
class _Loaded:
    runner: ModelRunner
    load_s: float


def _load(unit: Unit, device: str, opts: InferOptions) -> _Loaded:
    start = time.perf_counter()
    loaded = build(unit.model, opts.test_input_size, opts.checkpoint_key, device=device, opts=opts)
    actual = preprocess_for(loaded.data_config, opts.crop)
    if actual != unit.preprocess:  # the registry's config and the built model's disagree
        raise MlreassessError(
            f"model {unit.model.name!r}: built model wants {actual.describe()}, its registry entry {unit.preprocess.describe()}"
        )
    runner = ModelRunner(loaded, device, opts)
    if opts.compile or torch.device(device).type == "cuda":  # compile now (timed); measure activations
        runner.warm_up(unit.preprocess.height, unit.preprocess.width)
    return _Loaded(runner, time.perf_counter() - start)


def _load_pass(p: Pass, sweep: _Sweep) -> tuple[dict[str, _Loaded], dict[str, str], Pass, Pass | None]:
    """(loaded models, load errors, the pass as loaded, the models left for a later pass). On CUDA,
    loading stops at the first model after which the largest probed forward pass would not fit."""
    loaded, errors = {}, {}
    models = p.models
    for n, spec in enumerate(models):
        try:
            loaded[spec.name] = _load(p.units_of_model(spec)[0], sweep.device, sweep.opts)
        except Exception as exc:  # weights missing, offline hub, bad file: this model only
            errors[spec.name] = _one_line(exc)
            log.warning(f"model {spec.name} failed to load: {errors[spec.name]}")
            continue
        if n + 1 < len(models) and not _room_for_more(loaded, sweep):
            break
    else:
        n = len(models) - 1
    kept = _agreed(n + 1, sweep.dist, sweep.split_samples)
    for spec in models[kept:]:  # loaded on this rank, but another rank had to stop earlier
        loaded.pop(spec.name, None)
        errors.pop(spec.name, None)
    if kept == len(models):
        return loaded, errors, p, None
    head, rest = split_models(p, kept)
    log.info(f"{len(rest.models)} model(s) of the pass do not fit the device with the others: they run next")
    return loaded, errors, head, rest


def _room_for_more(loaded: dict[str, _Loaded], sweep: _Sweep) -> bool:
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


def _one_pass(p: Pass, sweep: _Sweep) -> Pass | None:
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
            torch.cuda.empty_cache()  # the next pass measures free memory
    return rest


def _one_dataset(p: Pass, d: int, loaded: dict[str, _Loaded], load_errors: dict[str, str], sweep: _Sweep) -> None:
    dist, manifest = sweep.dist, sweep.manifests[d]
    units = p.units_of(d)
    runners = [loaded[u.model.name].runner for u in units if u.model.name in loaded]
    result = PassResult()
    if runners:
        rows = sweep.rows(d)
        desc = f"{manifest.name} | {', '.join(r.name for r in runners)}" + (f" [rank {dist.rank}]" if dist.active else "")
        batches = sweep.pipeline(p.preprocess).batches(d, rows)
        result = run_pass(batches, manifest, len(rows), runners, sweep.opts, desc=desc)
    result.model_errors.update({u.model.name: load_errors[u.model.name] for u in units if u.model.name in load_errors})
    sweep.summary.dataset_passes += 1
    if sweep.split_samples:
        shards = dist.gather(result)
        if not dist.is_main:
            return
        result = _merge_shards(shards)
    _finish_dataset(result, loaded, units, sweep)


def _merge_shards(shards: list[PassResult]) -> PassResult:
    """Rank results of one dataset (disjoint rows) -> one result, as if one process had run it."""
    merged = PassResult(elapsed_s=max(s.elapsed_s for s in shards))
    merged.rows = np.concatenate([s.rows for s in shards])
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


def _meta(loaded: _Loaded, manifest: Manifest, preprocess: Preprocess, opts: InferOptions, elapsed_s: float,
          n: int, failed: list[dict], world: int) -> dict[str, Any]:
    runner = loaded.runner
    cfg = runner.loaded.data_config
    return {
        "model": runner.name,
        "dataset": manifest.name,
        "dataset_kind": manifest.kind,
        "manifest": str(manifest.source.resolve()) if manifest.source else None,
        "weights": runner.loaded.weights,
        "input_size": [int(v) for v in cfg["input_size"]],
        "interpolation": preprocess.interpolation,
        "mean": [float(v) for v in cfg["mean"]],
        "std": [float(v) for v in cfg["std"]],
        "crop": preprocess.crop,
        "crop_pct": preprocess.crop_pct,
        "test_input_size": opts.test_input_size,
        "checkpoint_key": opts.checkpoint_key if runner.loaded.spec.weights.startswith("file:") else None,
        "precision": opts.precision,
        "weights_cast_once": runner.cast_tensors,
        "weights_bytes": runner.weights_bytes,
        "activation_bytes": runner.activation_bytes,
        "channels_last": opts.channels_last,
        "compile": runner.describe_compile(),
        "load_s": round(loaded.load_s, 3),
        "batch_size": opts.batch_size,
        "forward_batch_size": runner.state["chunk"],
        "device": runner.device,
        "topk": opts.topk,
        "torch": torch.__version__,
        "timm": timm.__version__,
        "elapsed_s": round(elapsed_s, 3),
        "images_per_s": round(n / elapsed_s, 2) if elapsed_s > 0 else None,
        "failed_samples": failed,
        "world_size": world,
        "pid": os.getpid(),
    }


def _decoding(p: Pass, d: int, sweep: _Sweep) -> dict[str, Any]:
    """How a dataset was decoded for a pass, for its outputs' metadata."""
    return {
        "decoded_with": sorted(u.model.name for u in p.units_of(d)),  # models sharing this decode (and its elapsed_s)
        "models_per_pass": sweep.opts.models_per_pass,
        "dataset_passes": sweep.passes_over[d],
        "decodes_per_image": sweep.caches.decodes_per_image(d, sweep.passes_over[d]),
    }


def _finish_dataset(result: PassResult, loaded: dict[str, _Loaded], units: list[Unit], sweep: _Sweep) -> None:
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
        meta = _meta(loaded[name], manifest, unit.preprocess, sweep.opts, result.elapsed_s, table.num_rows, failed,
                     sweep.dist.world)
        meta.update(decoding, recipe=unit.recipe)
        writers.write_predictions(layout.prediction(manifest.name, name), table, meta)
        writers.drop_retired(layout.retired(manifest.name, name))
        summary.done.append((manifest.name, name))
        summary.images += table.num_rows
        log.info(f"{manifest.name} / {name}: {table.num_rows} images, {meta['images_per_s']} images/s"
                 + (f", {len(failed)} unreadable" if failed else ""))


def _record_failure(unit: Unit, dataset: str, error: str, sweep: _Sweep) -> None:
    layout, name = sweep.layout, unit.model.name
    retired = layout.retired(dataset, name)
    extra = {"retired": str(retired)} if retired.exists() else {}
    writers.record_failure(layout, name, dataset, error, weights=unit.model.weights, rank=sweep.dist.rank, **extra)
    sweep.summary.failed.append((dataset, name, error))
