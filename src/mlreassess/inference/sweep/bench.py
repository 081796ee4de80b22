"""Speed: how close the pipeline gets to a model's pure forward speed, and the input pipeline alone.

`bench_infer`: forward-only: random already-normalised tensors on the device, the same batch size and precision.
end-to-end: the sweep's own pass (decode + resize in workers, uint8 copy, normalise, forward,
softmax, top-k) over the manifest's first images. Both skip their first `warmup` batches.

`bench_data`: the input pipeline alone (decode, PatchML patch cache, the model's preprocessing,
batching, the uint8 batches on the device; no forward pass) over every sample of the given
manifests, with `--decode cpu` (PIL in the workers) or `gpu` (`device_input`: decode and resize on
the device). CPU time is this process's plus its finished children's (DataLoader workers, cache
builders): `resource.getrusage`.
"""

from __future__ import annotations

import csv
import resource
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from mlreassess.datasets.manifest import Manifest, read_manifest
from mlreassess.errors import InputError
from mlreassess.inference.input.caches import NO_CACHE, shared_caches
from mlreassess.inference.input.pipeline import check_readable, one_manifest_batches
from mlreassess.inference.input.device_input import pipeline_for
from mlreassess.inference.input.device_resize import check_device_preprocess
from mlreassess.inference.sweep.distributed import check_available, resolve_device
from mlreassess.inference.models.registry import ModelSpec, build, check_specs, data_config
from mlreassess.inference.input.preprocess import Preprocess, preprocess_for
from mlreassess.inference.models.model_runner import ModelRunner
from mlreassess.inference.sweep.stream import pass_workers, run_pass, sync_device
from mlreassess.options import InferOptions


@dataclass
class BenchResult:
    model: str
    weights: str
    preprocess: str
    device: str
    precision: str
    batch_size: int
    batches: int
    decode: str
    forward_images_per_s: float
    end_to_end_images_per_s: float
    unreadable: int
    input_size: int = 0  # the model's input height (timm's benchmark `infer_img_size`)

    @property
    def ratio(self) -> float:
        return self.end_to_end_images_per_s / self.forward_images_per_s

    def row(self) -> dict[str, object]:
        """The result in timm's benchmark columns (`model` is the architecture), then ours."""
        return {"model": self.model, "infer_img_size": self.input_size, "infer_samples_per_sec":
                round(self.forward_images_per_s, 2), "infer_batch_size": self.batch_size,
                "end_to_end_samples_per_sec": round(self.end_to_end_images_per_s, 2), "precision": self.precision,
                "device": self.device, "decode": self.decode}

    def append_csv(self, path: str | Path) -> None:
        """Append `row()` to a CSV (its header written first if the file is new or empty)."""
        path = Path(path)
        row = self.row()
        try:
            new = not path.exists() or path.stat().st_size == 0
            with path.open("a", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=list(row))
                if new:
                    writer.writeheader()
                writer.writerow(row)
        except OSError as exc:
            raise InputError(f"{path}: cannot append the result ({exc.strerror or exc})") from None

    def lines(self) -> list[str]:
        return [
            f"model {self.model} ({self.weights}), {self.preprocess}, batch {self.batch_size}, "
            f"{self.precision}, {self.device}, decode {self.decode}, {self.batches} timed batches",
            f"forward-only: {self.forward_images_per_s:.1f} images/s",
            f"end-to-end: {self.end_to_end_images_per_s:.1f} images/s"
            + (f" ({self.unreadable} unreadable images skipped)" if self.unreadable else ""),
            f"ratio {self.ratio:.2f}",
        ]


def forward_only(runner: ModelRunner, shape: tuple[int, ...], batches: int, warmup: int) -> float:
    """images/s of the bare model on random input already on the device."""
    x = torch.randn(shape, device=runner.device)
    if runner.normalize.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        for _ in range(warmup):
            runner.logits(x)
        sync_device(runner.device)
        start = time.perf_counter()
        for _ in range(batches):
            runner.logits(x)
        sync_device(runner.device)
    return batches * shape[0] / (time.perf_counter() - start)


def bench_infer(spec: ModelSpec, manifest_path: str | Path, opts: InferOptions, batches: int = 20, warmup: int = 2) -> BenchResult:
    if batches < 1 or warmup < 1:
        raise InputError("--batches and --warmup must be at least 1")
    (spec,) = check_specs([spec])
    manifest = read_manifest(manifest_path)
    if len(manifest) == 0:
        raise InputError(f"{manifest_path}: the manifest has no samples to benchmark on")
    check_readable(manifest)
    device = check_available(resolve_device(opts.device))
    loaded = build(spec, opts.test_input_size, opts.checkpoint_key, device=device, opts=opts)
    prep = preprocess_for(loaded.data_config, opts.crop)
    runner = ModelRunner(loaded, device, opts)
    b = opts.batch_size
    fwd = forward_only(runner, (b, 3, prep.height, prep.width), batches, warmup)

    n = (warmup + batches) * b
    rows = [i % len(manifest) for i in range(n)]  # a small manifest is cycled through
    stream = one_manifest_batches(pipeline_for(opts.decode), manifest, rows, prep, device, b, pass_workers(opts),
                                  opts.source_root, owned=False)  # the sweep's batches, as it gets them
    result = run_pass(stream, manifest, n, [runner], opts, desc=f"bench {spec.name}", sync_after=warmup)
    if runner.name in result.model_errors:
        raise InputError(f"model {spec.name!r} failed during the benchmark: {result.model_errors[runner.name]}")
    timed_images = n - warmup * b
    e2e = timed_images / (result.elapsed_s - result.batch_end_s[warmup - 1])
    return BenchResult(
        model=spec.name, weights=loaded.weights, preprocess=prep.describe(), device=device,
        precision=opts.precision, batch_size=b, batches=batches, decode=opts.decode, forward_images_per_s=fwd,
        end_to_end_images_per_s=e2e, unreadable=len(result.failed), input_size=prep.height,
    )


@dataclass
class DataBenchResult:
    model: str
    preprocess: str
    decode: str
    device: str
    manifests: int
    samples: int
    unreadable: int
    workers: int
    cache_bytes: int  # patch cache file(s), 0 without PatchML (or with --no-patch-cache)
    elapsed_s: float
    cpu_s: float
    cpu_main_s: float  # of cpu_s, this process's (the rest: DataLoader workers, cache builders)

    def lines(self) -> list[str]:
        return [
            f"model {self.model}: {self.preprocess}, decode {self.decode} on {self.device}; "
            f"{self.manifests} manifests, {self.samples} samples"
            + (f" ({self.unreadable} unreadable)" if self.unreadable else "")
            + f", {self.workers} workers, patch cache {self.cache_bytes / 2**20:.1f} MiB",
            f"{self.samples / self.elapsed_s:.1f} samples/s ({self.elapsed_s:.2f} s wall, {self.cpu_s:.2f} s CPU: "
            f"{self.cpu_main_s:.2f} s main process, {max(0.0, self.cpu_s - self.cpu_main_s):.2f} s workers)",
            f"cpu_ms_per_sample {1000 * self.cpu_s / max(1, self.samples):.2f}",
        ]


def cpu_seconds(children: bool = True) -> float:
    """User + system CPU time of this process and (`children`) its finished (waited-for) children."""
    who = (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN) if children else (resource.RUSAGE_SELF,)
    return sum(r.ru_utime + r.ru_stime for r in map(resource.getrusage, who))


def _drain(manifest: Manifest, prep: Preprocess, opts: InferOptions, device: str, workers: int,
           cached) -> tuple[int, int]:
    """(samples, unreadable) of one pass of the input pipeline over all rows of `manifest`."""
    cached = cached or NO_CACHE  # none for this manifest: canvases rendered on the fly, as infer would
    samples = unreadable = 0
    for _, _, errors in one_manifest_batches(pipeline_for(opts.decode), manifest, list(range(len(manifest))), prep,
                                             device, opts.batch_size, workers, opts.source_root, cached, owned=False):
        samples += len(errors)
        unreadable += sum(1 for e in errors if e)
    return samples, unreadable


def bench_data(spec: ModelSpec, manifest_paths: list[str | Path], opts: InferOptions,
               patch_cache: bool = True) -> DataBenchResult:
    """Time the input pipeline alone over every sample of `manifest_paths` (cache building included)."""
    manifests = [read_manifest(p) for p in manifest_paths]
    for m in manifests:
        check_readable(m)
    prep = preprocess_for(data_config(spec, opts.test_input_size), opts.crop)
    device = check_available(resolve_device(opts.device))
    if opts.decode == "gpu":
        check_device_preprocess(prep)  # before the patch cache is built
    workers = pass_workers(opts)
    cpu0, main0, start = cpu_seconds(), cpu_seconds(children=False), time.perf_counter()
    every = [list(range(len(m))) for m in manifests]
    caches = shared_caches(manifests, every, opts.source_root, workers) if patch_cache else {}
    cache_bytes = sum(c.nbytes for c in {id(c): c for c, _ in caches.values()}.values())
    samples = unreadable = 0
    for n, m in enumerate(manifests):
        s, u = _drain(m, prep, opts, device, workers, caches.get(n))
        samples, unreadable = samples + s, unreadable + u
    sync_device(device)  # the last batches' device work is part of the pipeline
    elapsed, cpu, main = time.perf_counter() - start, cpu_seconds() - cpu0, cpu_seconds(children=False) - main0
    return DataBenchResult(model=spec.name, preprocess=prep.describe(), decode=opts.decode, device=device,
                           manifests=len(manifests), samples=samples,
                           unreadable=unreadable, workers=workers, cache_bytes=cache_bytes, elapsed_s=elapsed,
                           cpu_s=cpu, cpu_main_s=main)
