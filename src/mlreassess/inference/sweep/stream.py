"""One dataset streamed through the models of a pass: every batch to every model, unreadable
samples left out (or fatal with --strict), a model that raises dropped with its error."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import torch

from mlreassess.cpus import capped_workers
from mlreassess.datasets.manifest import Manifest
from mlreassess.errors import InputError, MlreassessError
from mlreassess.inference.input.devices import DeviceFault, fatal_device_error, first_line
from mlreassess.inference.input.pipeline import default_workers
from mlreassess.inference.input.preprocess import Preprocess, SharedDecode
from mlreassess.inference.models.model_runner import ModelRunner
from mlreassess.options import InferOptions
from mlreassess.progress import bar

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
    decode_fallbacks: int | None = None  # --decode gpu: images the device decoder refused (PIL decoded them)


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
                _each_live(live, manifest.name, result, lambda runner: runner.predict(images))
                rows.append(idx.numpy() if isinstance(idx, torch.Tensor) else np.asarray(idx))
            if sync_after is not None and len(result.batch_end_s) + 1 == sync_after:
                sync_device(device)
            result.batch_end_s.append(time.perf_counter() - start)
            progress.update(len(errors))
        _each_live(live, manifest.name, result, lambda runner: result.outputs.update({runner.name: runner.collect()}))
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


def _each_live(live: list[ModelRunner], dataset: str, result: PassResult, call) -> None:
    """`call(runner)` for every live runner (a batch, or collecting its outputs); a runner that raises
    is dropped with its error (a model whose outputs are NaN, say)."""
    for runner in list(live):
        try:
            call(runner)
        except Exception as exc:  # one model's failure must not sink the others
            if fatal_device_error(exc):  # but a CUDA error would sink every later one: stop
                raise DeviceFault(runner.name, dataset, first_line(exc)) from None
            result.model_errors[runner.name] = one_line(exc)
            live.remove(runner)
            log.warning(f"model {runner.name} failed on {dataset}: {result.model_errors[runner.name]}")


class PartRunner:
    """A model of a pass whose decode is shared by several groups: fed its own group's part of each
    batch (`SharedDecode.part`), cut once per batch for all the models of that group."""

    def __init__(self, runner: ModelRunner, part: Preprocess, parts: "_Parts"):
        self.runner, self.part, self.parts = runner, part, parts
        self.name, self.device = runner.name, runner.device

    def predict(self, batch) -> None:
        self.runner.predict(self.parts(batch, self.part))

    def collect(self):
        return self.runner.collect()


class _Parts:
    """The parts of the latest batch, each cut once."""

    def __init__(self, decode: SharedDecode):
        self.decode, self.batch, self.cut = decode, None, {}

    def __call__(self, batch, part: Preprocess):
        if batch is not self.batch:
            self.batch, self.cut = batch, {}
        if part not in self.cut:
            self.cut[part] = self.decode.part(batch, part)
        return self.cut[part]


def runners_for(decode, runners: list[tuple[ModelRunner, Preprocess]]) -> list:
    """The runners as a pass with `decode` feeds them: as they are, or (a shared decode) each given
    its own part of every batch."""
    if not isinstance(decode, SharedDecode):
        return [r for r, _ in runners]
    parts = _Parts(decode)
    return [PartRunner(r, prep, parts) for r, prep in runners]


def one_line(exc: Exception) -> str:
    return str(exc) if isinstance(exc, MlreassessError) else f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
