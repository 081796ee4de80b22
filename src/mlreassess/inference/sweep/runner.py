"""The inference sweep: every (model, dataset) unit, resumable, model-major.

The entry points: `run` (the sweep) and `plan_only` (`infer --plan`). Its parts: `plan` (what is
pending, in which passes), `execute` (running the passes), `stream` (one dataset through a pass),
`outputs` (what a finished dataset writes).

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
import time
import uuid
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterator

import torch

from mlreassess.datasets.manifest import Manifest, read_manifest
from mlreassess.errors import InputError
from mlreassess.inference.input.pipeline import PREFETCH, check_readable
from mlreassess.inference.input.preprocess import Preprocess, SharedDecode
from mlreassess.inference.input.slots import prefetch_that_fits, shared_memory_free
from mlreassess.inference.models.registry import check_specs
from mlreassess.inference.sweep.builds import Builds
from mlreassess.inference.sweep import distributed as D
from mlreassess.inference.sweep import writers
from mlreassess.inference.sweep.distributed import resolve_device
from mlreassess.inference.sweep.execute import Sweep, run_pass_and_deferred
from mlreassess.inference.sweep.outputs import Summary
from mlreassess.inference.sweep.passes import (
    Pass,
    free_memory,
    one_model_passes,
    one_unit_passes,
    pass_of,
)
from mlreassess.inference.sweep.plan import SweepPlan, sweep_plan
from mlreassess.inference.sweep.stream import pass_workers
from mlreassess.io import remove_stale_tmp
from mlreassess.locks import folder_lock
from mlreassess.options import InferOptions
from mlreassess.results import ResultsLayout

log = logging.getLogger(__name__)


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


def _check_inside(layout: ResultsLayout, manifests: list[Manifest]) -> None:
    """Every folder the sweep writes into resolves inside RESULTS (docs/outputs.md), checked before
    anything is written: a linked predictions/<dataset>/, manifests/ or retired/ is one line now."""
    checked = [layout.failures, layout.claims_dir]  # ResultsLayout checks every path it hands out
    for m in manifests:
        checked += [layout.predictions_of(m.name), layout.manifest_copy(m.name), layout.retired_of(m.name)]


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


def _check_slots(passes: list[Pass], opts: InferOptions) -> list[Pass]:
    """The passes, checked now (not at a group's first pass) for room for their decode workers' batch
    slots: one line if a group's cannot fit; a shared decode that cannot is split into its groups."""
    if opts.decode == "gpu":
        return passes  # no slots: encoded batches of every size
    free, workers = shared_memory_free(), pass_workers(opts)

    def fits(prep) -> bool:
        try:
            prefetch_that_fits(PREFETCH, workers, opts.batch_size * 3 * prep.height * prep.width, free)
        except InputError:
            if isinstance(prep, SharedDecode):
                return False
            raise
        return True

    checked = []
    for p in passes:
        if fits(p.preprocess):
            checked.append(p)
            continue
        log.info(f"{p.preprocess.describe()}: its batch slots do not fit /dev/shm: each group decodes alone")
        groups = [pass_of([u for u in p.units if u.preprocess == part]) for part in p.preprocess.parts]
        for g in groups:
            fits(g.preprocess)  # a group whose own slots cannot fit stops the sweep, as before
        checked += groups
    return checked


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
    _check_inside(layout, manifests)
    _copy_manifests(layout, manifests, dist)
    device = _device(opts, dist)
    plan = None
    if dist.is_main:
        _clear_leftovers(layout, manifests)
        plan = sweep_plan(manifests, specs, layout, opts, device)
        plan.passes = _check_slots(plan.passes, opts)  # before anything is retired: a sweep that cannot start changes nothing
        _retire_stale(plan, manifests, layout)
    shared = (plan.passes, plan.skipped, plan.compile, uuid.uuid4().hex) if plan else None
    passes, skipped, compile_choices, run_id = dist.broadcast(shared)
    passes, split_samples = _schedule(passes, manifests, dist)
    claims = D.Claims(layout.claims_dir / run_id, dist.rank) if dist.active and not split_samples else None
    sweep = Sweep(manifests, device, opts, layout, dist, split_samples, passes,
                   Summary(skipped=skipped if dist.is_main else []))
    sweep.compile_choices = compile_choices
    _run_passes(passes, claims, sweep)
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


def _run_passes(passes: list[Pass], claims: D.Claims | None, sweep: Sweep) -> None:
    """Run this rank's passes, the next models built in the background meanwhile (`builds`): all of
    them in order when this rank runs every pass, else each claimed pass's as it is claimed."""
    opts = sweep.opts
    if opts.build_ahead:
        sweep.builds = Builds(sweep.make)
        if claims is None:
            sweep.builds.expect([m for p in passes for m in p.models])
    try:
        for i, p in enumerate(passes):
            if claims is None or claims.take(i):
                if claims is not None and sweep.builds is not None:
                    sweep.builds.expect(p.models)
                run_pass_and_deferred(p, sweep)
    finally:
        sweep.close()
        if sweep.builds is not None:
            sweep.builds.close()


def _device(opts: InferOptions, dist: D.Dist) -> str:
    """This rank's device, checked to exist."""
    device = D.device_for(D.check_available(resolve_device(opts.device)), dist)
    if torch.device(device).type == "cuda":
        torch.cuda.set_device(torch.device(device))
    return device
