"""The inference sweep: every (model, dataset) unit, resumable, one decode per preprocessing group.

A unit is one (dataset, model) pair and one output file. Units whose output is complete are
skipped. The rest are grouped by dataset and CPU-side preprocessing (input size, interpolation,
crop); each group (at most `models_per_pass` models) is one pass over the dataset: every image is
decoded and resized once in DataLoader workers, copied to the device once as uint8, and fed to
every model of the pass. A model that fails is recorded in RESULTS/failures.jsonl and the sweep
goes on. Under torchrun, ranks take passes first come, first served (`distributed.Claims`), or,
when there are fewer units than ranks, split the samples of each unit (rank 0 merges and writes).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import timm
import torch

from mlreassess.constants import NUM_CLASSES
from mlreassess.cpus import capped_workers
from mlreassess.datasets.manifest import Manifest, read_manifest
from mlreassess.errors import InputError, MlreassessError
from mlreassess.inference import distributed as D
from mlreassess.inference import writers
from mlreassess.inference.data import SweepCaches, check_readable, default_workers
from mlreassess.inference.device_input import batches_for
from mlreassess.inference.device_resize import check_device_preprocess
from mlreassess.inference.distributed import resolve_device
from mlreassess.inference.models import (LoadedModel, ModelSpec, build, check_specs, data_config, model_bytes,
                                         recipe_entries)
from mlreassess.inference.passes import make_passes, memory_budget, unit_bytes
from mlreassess.inference.preprocess import Normalizer, Preprocess, autocast, preprocess_for
from mlreassess.locks import folder_lock
from mlreassess.options import MODELS_PER_PASS_AUTO, InferOptions
from mlreassess.patchml.cache import PatchCache
from mlreassess.progress import bar
from mlreassess.results import ResultsLayout

log = logging.getLogger(__name__)


def forward_with_retry(forward, x, state: dict):
    """`forward(x)`, in chunks of at most state['chunk'] samples; on out-of-memory halve the chunk and
    retry the batch (the smaller chunk is kept for later batches). Fails only at chunk size 1."""
    while True:
        try:
            if len(x) <= state["chunk"]:
                return forward(x)
            return torch.cat([forward(part) for part in x.split(state["chunk"])])
        except torch.cuda.OutOfMemoryError:  # = torch.OutOfMemoryError on torch >= 2.5, and exists before
            size = min(state["chunk"], len(x))
            if size <= 1:
                raise
            state["chunk"] = size // 2
            log.warning(f"out of memory at batch {size}: retrying with batch {state['chunk']}")
        # Outside the except block, so the failed attempt's tensors are already freed.
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def topk_stable(probs, k: int):
    """Top-k (indices, values), best first; equal probabilities -> lower class index first."""
    values, indices = torch.sort(probs, dim=1, descending=True, stable=True)
    return indices[:, :k].to(torch.int32), values[:, :k]


class ModelRunner:
    """One model on the device: normalise, forward (AMP / channels_last / compile), float32 softmax,
    top-k. Results stay on the device until `collect()`, so batches are never synchronised."""

    def __init__(self, loaded: LoadedModel, device: str, opts: InferOptions):
        self.loaded = loaded
        self.name = loaded.spec.name
        self.device = device
        self.precision = opts.precision
        self.topk = opts.topk
        self.save_softmax = opts.save_softmax
        module = loaded.module.to(device)
        if opts.channels_last:
            module = module.to(memory_format=torch.channels_last)
        self.module = torch.compile(module) if opts.compile else module
        self.normalize = Normalizer(loaded.data_config["mean"], loaded.data_config["std"], device, opts.channels_last)
        self.state = {"chunk": opts.batch_size}
        self._out: list[tuple] = []

    def logits(self, x):
        with autocast(self.device, self.precision):
            return self.module(x)

    def predict(self, batch_uint8) -> None:
        x = self.normalize(batch_uint8)
        logits = forward_with_retry(self.logits, x, self.state)
        if not isinstance(logits, torch.Tensor) or logits.shape != (len(x), NUM_CLASSES):  # e.g. a module's own head
            shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise MlreassessError(f"its forward gives {shape}, not the (batch, {NUM_CLASSES}) ImageNet-1k logits")
        probs = logits.float().softmax(dim=1)  # float32 softmax, whatever the AMP dtype
        idx, prob = topk_stable(probs, self.topk)
        self._out.append((idx, prob, probs.half() if self.save_softmax else None))

    def collect(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """All batches' (topk_idx int32, topk_prob float32, softmax float16 or None) as numpy."""
        if not self._out:
            classes = self.topk
            return np.zeros((0, classes), np.int32), np.zeros((0, classes), np.float32), None
        idx = torch.cat([o[0] for o in self._out]).cpu().numpy()
        prob = torch.cat([o[1] for o in self._out]).cpu().numpy()
        soft = torch.cat([o[2] for o in self._out]).cpu().numpy() if self.save_softmax else None
        self._out = []
        return idx, prob, soft


@dataclass
class PassResult:
    rows: list[int] = field(default_factory=list)  # manifest rows predicted, in order
    failed: list[tuple[int, str]] = field(default_factory=list)  # unreadable rows and why
    outputs: dict[str, tuple] = field(default_factory=dict)  # model -> collect()
    model_errors: dict[str, str] = field(default_factory=dict)
    elapsed_s: float = 0.0
    batch_end_s: list[float] = field(default_factory=list)  # time of each batch's end, from start


def sync_device(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def run_pass(
    manifest: Manifest,
    rows: list[int],
    runners: list[ModelRunner],
    preprocess: Preprocess,
    opts: InferOptions,
    desc: str = "",
    sync_after: int | None = None,
    cached: tuple[PatchCache, int] | None = None,
) -> PassResult:
    """Decode `rows` once and feed every batch to every runner. Bad samples are left out (or, with
    opts.strict, stop the run); a runner that raises is dropped and its error kept. `sync_after`:
    wait for the device after that many batches (a timing mark for benchmarks). `cached`: the
    sweep's patch cache for a PatchML manifest (and the manifest's index in it)."""
    device = runners[0].device if runners else resolve_device(opts.device)
    make_batches = batches_for(opts.decode)
    batches = make_batches(manifest, rows, preprocess, device, opts.batch_size, pass_workers(opts), opts.source_root,
                           cached)
    result = PassResult()
    live = list(runners)
    start = time.perf_counter()
    with torch.inference_mode(), bar(total=len(rows), desc=desc, enabled=opts.progress) as progress:
        for idx, images, errors in batches:
            idx, images = _drop_unreadable(manifest, idx, images, errors, opts.strict, result)
            if len(idx):
                _predict(images, live, manifest.name, result)
                result.rows.extend(int(i) for i in idx)
            if sync_after is not None and len(result.batch_end_s) + 1 == sync_after:
                sync_device(device)
            result.batch_end_s.append(time.perf_counter() - start)
            progress.update(len(errors))
        for runner in live:
            result.outputs[runner.name] = runner.collect()
        result.elapsed_s = time.perf_counter() - start
    return result


def pass_workers(opts: InferOptions) -> int:
    return default_workers() if opts.workers is None else capped_workers(opts.workers)


def _drop_unreadable(manifest: Manifest, idx, images, errors: list[str], strict: bool, result: PassResult):
    """The batch without the samples that could not be read (recorded in `result`, or raised if strict)."""
    keep = [j for j, e in enumerate(errors) if not e]
    if len(keep) == len(errors):
        return idx, images
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
            result.model_errors[runner.name] = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
            live.remove(runner)
            log.warning(f"model {runner.name} failed on {dataset}: {result.model_errors[runner.name]}")


@dataclass(frozen=True)
class Unit:
    dataset: int  # index into the sweep's manifests
    model: ModelSpec
    preprocess: Preprocess
    recipe: dict = field(default_factory=dict, compare=False, hash=False)  # what its output depends on


@dataclass
class Summary:
    done: list[tuple[str, str]] = field(default_factory=list)  # (dataset, model)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str, str]] = field(default_factory=list)  # (dataset, model, error)
    images: int = 0  # samples predicted, summed over models
    passes: int = 0  # passes over a dataset (each decodes it once for its models)
    elapsed_s: float = 0.0

    def merge(self, other: "Summary") -> None:
        self.done += other.done
        self.skipped += other.skipped
        self.failed += other.failed
        self.images += other.images
        self.passes += other.passes

    def lines(self) -> list[str]:
        rate = self.images / self.elapsed_s if self.elapsed_s > 0 else 0.0
        out = [
            f"infer: {len(self.done)} done, {len(self.skipped)} skipped, {len(self.failed)} failed in "
            f"{self.passes} pass{'es' if self.passes != 1 else ''}; "
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


def _plan(manifests: list[Manifest], specs: list[ModelSpec], layout: ResultsLayout, opts: InferOptions):
    """(pending units in pass order, skipped (dataset, model) pairs). Run on rank 0 only. A complete
    output is redone, with a line saying why, when what made it differs from what would make it now."""
    prep = {s: preprocess_for(data_config(s, opts.test_input_size), opts.crop) for s in specs}
    if opts.decode == "gpu":  # before any work, not when the model's pass comes
        for spec, p in prep.items():
            try:
                check_device_preprocess(p)
            except InputError as exc:
                raise InputError(f"model {spec.name!r}: {exc}") from None
    entries = {s: recipe_entries(s, opts) for s in specs}  # once per model (an hf: config may be fetched)
    pending, skipped = [], []
    for d, manifest in enumerate(manifests):
        content = writers.pixels_sha256(manifest)
        for spec in specs:
            unit = Unit(d, spec, prep[spec], writers.recipe(spec.weights, opts, prep[spec], content, entries[spec]))
            path = layout.prediction(manifest.name, spec.name)
            if not opts.overwrite and writers.is_complete(path):
                reason = writers.stale_reason(path, unit.recipe)
                if reason is None:
                    skipped.append((manifest.name, spec.name))
                    continue
                log.info(f"{path}: redoing it: {reason}")
            pending.append(unit)
    pending.sort(key=lambda u: (u.dataset, u.preprocess, u.model))
    return pending, skipped


def _sweep_plan(manifests: list[Manifest], specs: list[ModelSpec], layout: ResultsLayout, opts: InferOptions,
                device: str) -> tuple[list[list[Unit]], list[tuple[str, str]]]:
    """(passes, skipped (dataset, model) pairs). Run on rank 0 only; its device sets an auto budget."""
    pending, skipped = _plan(manifests, specs, layout, opts)
    budget = memory_budget(device) if opts.models_per_pass == MODELS_PER_PASS_AUTO else 0
    sizes = {u.model.name: model_bytes(u.model) for u in pending} if budget else {}

    def cost(u: Unit) -> int:
        return unit_bytes(sizes[u.model.name], len(manifests[u.dataset]), opts.topk, opts.save_softmax, budget)

    passes = make_passes(pending, lambda u: (u.dataset, u.preprocess), opts.models_per_pass, cost, budget)
    if budget:
        log.debug(f"models per pass: auto, {budget / 2**30:.1f} GiB for the models of a pass on {device}")
    return passes, skipped


def _load(unit: Unit, device: str, opts: InferOptions) -> ModelRunner:
    loaded = build(unit.model, opts.test_input_size, opts.checkpoint_key, device=device, opts=opts)
    actual = preprocess_for(loaded.data_config, opts.crop)
    if actual != unit.preprocess:  # the registry's config and the built model's disagree
        raise MlreassessError(
            f"model {unit.model.name!r}: built model wants {actual.describe()}, its registry entry {unit.preprocess.describe()}"
        )
    return ModelRunner(loaded, device, opts)


def _meta(runner: ModelRunner, manifest: Manifest, preprocess: Preprocess, opts: InferOptions, elapsed_s: float,
          n: int, failed: list[dict], world: int) -> dict[str, Any]:
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
        "channels_last": opts.channels_last,
        "compile": opts.compile,
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
    }


def _merge_shards(shards: list[PassResult]) -> PassResult:
    """Rank results of one pass (disjoint rows) -> one result, as if one process had run it."""
    merged = PassResult(elapsed_s=max(s.elapsed_s for s in shards))
    for s in shards:
        merged.rows += s.rows
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


def run(manifest_paths: list[str | Path], specs: list[ModelSpec], results: str | Path, opts: InferOptions) -> Summary:
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


def _run(dist: D.Dist, manifest_paths, specs: list[ModelSpec], results: Path, opts: InferOptions) -> Summary:
    start = time.perf_counter()
    layout = ResultsLayout(results)
    specs = check_specs(specs)
    manifests = load_manifests(manifest_paths)
    for m in manifests:  # every rank checks, so a clash stops all of them alike
        state = writers.check_manifest_copy(layout, m)
        if state != "same" and dist.is_main:
            if state == "relabelled":
                log.info(f"{layout.manifest_copy(m.name)}: {m.source} has new labels for the same samples: "
                         "replacing the copy (the predictions stand)")
            writers.write_manifest_copy(layout, m)
    device = _device(opts, dist)
    plan = (*_sweep_plan(manifests, specs, layout, opts, device), uuid.uuid4().hex) if dist.is_main else None
    passes, skipped, run_id = dist.broadcast(plan)
    # Biggest datasets first: with first-come claims, the last passes to finish are short ones.
    passes = sorted(passes, key=lambda p: -len(manifests[p[0].dataset]))
    n_units = sum(len(p) for p in passes)
    split_samples = dist.active and 0 < n_units < dist.world
    claims = None
    if dist.active and not split_samples:
        if len(passes) < dist.world:  # rather split a pass's models than leave a rank idle
            passes = [[u] for p in passes for u in p]
        claims = D.Claims(results / ".claims" / run_id, dist.rank)
    sweep = _Sweep(manifests, device, opts, layout, dist, split_samples, Counter(p[0].dataset for p in passes),
                   Summary(skipped=skipped if dist.is_main else []))
    # PatchML canvases come from one patch cache per sweep (and rank), built at its first pass.
    patchml = {d: sweep.rows(d) for d in sorted(sweep.passes_over) if manifests[d].kind == "patchml"}
    sweep.caches = SweepCaches(manifests, patchml, opts.source_root, pass_workers(opts))
    for i, units in enumerate(passes):
        if claims is None or claims.take(i):
            _one_pass(units, sweep)
            sweep.summary.passes += 1
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


@dataclass
class _Sweep:
    """What the passes of one sweep share."""

    manifests: list[Manifest]
    device: str
    opts: InferOptions
    layout: ResultsLayout
    dist: D.Dist
    split_samples: bool  # every unit's samples are split among the ranks
    passes_over: Counter  # dataset index -> passes over it in the whole sweep
    summary: Summary
    caches: SweepCaches | None = None

    def rows(self, d: int) -> list[int]:
        """The rows of dataset `d` this rank predicts."""
        rows = list(range(len(self.manifests[d])))
        return D.block(rows, self.dist.rank, self.dist.world) if self.split_samples else rows


def _device(opts: InferOptions, dist: D.Dist) -> str:
    """This rank's device, checked to exist."""
    device = D.device_for(D.check_available(resolve_device(opts.device)), dist)
    if torch.device(device).type == "cuda":
        torch.cuda.set_device(torch.device(device))
    return device


def _one_pass(units: list[Unit], sweep: _Sweep) -> None:
    """Load the pass's models, decode the dataset once for all of them, write their outputs."""
    d, dist = units[0].dataset, sweep.dist
    manifest = sweep.manifests[d]
    runners, load_errors = [], {}
    for unit in units:
        try:
            runners.append(_load(unit, sweep.device, sweep.opts))
        except Exception as exc:  # weights missing, offline hub, bad file: this model only
            load_errors[unit.model.name] = str(exc) if isinstance(exc, MlreassessError) else f"{type(exc).__name__}: {exc}"
            log.warning(f"model {unit.model.name} failed on {manifest.name}: {load_errors[unit.model.name]}")
    names = [r.name for r in runners]
    desc = f"{manifest.name} | {', '.join(names)}" + (f" [rank {dist.rank}]" if dist.active else "")
    result = PassResult()
    if runners:
        result = run_pass(manifest, sweep.rows(d), runners, units[0].preprocess, sweep.opts, desc=desc,
                          cached=sweep.caches.get(d))
    result.model_errors.update(load_errors)
    if sweep.split_samples:
        shards = dist.gather(result)
        if not dist.is_main:
            return
        result = _merge_shards(shards)
    _finish_pass(result, runners, units, sweep)


def _decoding(units: list[Unit], sweep: _Sweep) -> dict[str, Any]:
    """How a pass's dataset was decoded, for its outputs' metadata."""
    d = units[0].dataset
    return {
        "decoded_with": sorted(u.model.name for u in units),  # models sharing this pass's decode (and its elapsed_s)
        "models_per_pass": sweep.opts.models_per_pass,
        "dataset_passes": sweep.passes_over[d],
        "decodes_per_image": sweep.caches.decodes_per_image(d, sweep.passes_over[d]),
    }


def _finish_pass(result: PassResult, runners: list[ModelRunner], units: list[Unit], sweep: _Sweep) -> None:
    """Write each model's predictions (or record its failure) for one finished pass."""
    d = units[0].dataset
    manifest, layout, summary = sweep.manifests[d], sweep.layout, sweep.summary
    ids = manifest.sample_ids
    failed = [{"sample_id": ids[r], "error": e} for r, e in sorted(result.failed, key=lambda f: ids[f[0]])]
    by_name = {r.name: r for r in runners}
    decoding = _decoding(units, sweep) if result.outputs else {}  # no output: build no cache for it
    for unit in units:
        name = unit.model.name
        error = result.model_errors.get(name)
        if error is None and not result.rows:
            error = f"no sample of {manifest.name} could be read"
        if error is not None:
            writers.record_failure(layout, name, manifest.name, error, weights=unit.model.weights, rank=sweep.dist.rank)
            summary.failed.append((manifest.name, name, error))
            continue
        idx, prob, soft = result.outputs[name]
        table = writers.predictions_table([ids[r] for r in result.rows], idx, prob, soft)
        meta = _meta(by_name[name], manifest, units[0].preprocess, sweep.opts, result.elapsed_s, table.num_rows,
                     failed, sweep.dist.world)
        meta.update(decoding, recipe=unit.recipe)
        writers.write_predictions(layout.prediction(manifest.name, name), table, meta)
        summary.done.append((manifest.name, name))
        summary.images += table.num_rows
        log.info(f"{manifest.name} / {name}: {table.num_rows} images, {meta['images_per_s']} images/s"
                 + (f", {len(failed)} unreadable" if failed else ""))
