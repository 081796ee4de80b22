"""Speed: how close the pipeline gets to a model's pure forward speed, and the input pipeline alone.

`bench_infer`: forward-only: random already-normalised tensors on the device, the same batch size
and precision. end-to-end: the sweep's own pass (decode + resize in workers, uint8 copy, normalise,
forward, softmax, top-k) over the manifest's images, cycled when it has fewer than needed.

Windows. The DataLoader keeps `in_flight` batches (prefetch x workers, ~30) ahead of the consumer;
the ones its workers made while the model was built or compiled come at once. Timing them would
inflate end-to-end up to ~1.4x for a decode-bound model over 40 batches. So the untimed warm-up
is at least twice that queue (`warmup_batches`: with production at half the consumption, the
queue drains by half a batch per batch taken), and at least `BENCH_TIMED_BATCHES` batches are timed.

`bench_data`: the input pipeline alone (decode, PatchML patch cache, the model's preprocessing,
batching, the uint8 batches on the device; no forward pass) over every sample of the given
manifests, read again in order until at least `min_samples` are read (start-up is then a small
part), with `--decode cpu` (PIL in the workers) or `gpu` (`device_input`: decode and resize on the
device). CPU time is this process's plus its finished children's (DataLoader workers, cache
builders): `resource.getrusage`; "past start-up" is the rate after each manifest's warm-up batches.
"""

from __future__ import annotations

import csv
import resource
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from mlreassess.constants import BENCH_MIN_SAMPLES, BENCH_TIMED_BATCHES
from mlreassess.datasets.manifest import Manifest, read_manifest
from mlreassess.errors import InputError
from mlreassess.inference.input.caches import NO_CACHE, pass_cache, shared_caches
from mlreassess.inference.input.device_input import pipeline_for
from mlreassess.inference.input.device_resize import check_device_preprocess
from mlreassess.inference.input.pipeline import PREFETCH, check_readable
from mlreassess.inference.input.preprocess import Preprocess, preprocess_for
from mlreassess.inference.models.model_runner import ModelRunner
from mlreassess.inference.models.registry import ModelSpec, build, check_specs, data_config
from mlreassess.inference.sweep.distributed import check_available, resolve_device
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
    warmup: int = 0  # untimed end-to-end batches (`warmup_batches`)
    in_flight: int = 0  # batches the loader keeps ahead
    pinned: bool | None = None
    decode_fallbacks: int | None = None
    compile: dict | None = None  # ModelRunner.describe_compile()

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
        fallbacks = f", {self.decode_fallbacks} images decoded by PIL after the device refused them" \
            if self.decode_fallbacks else ""
        pinned = {True: ", batch slots pinned", False: ", batch slots NOT pinned", None: ""}[self.pinned]
        compiled = ""
        if self.compile is not None:
            compiled = (f", compiled ({self.compile['seconds']} s)" if not self.compile["fallback"]
                        else f", compile failed: eager ({self.compile['fallback']})")
        return [
            f"model {self.model} ({self.weights}), {self.preprocess}, batch {self.batch_size}, "
            f"{self.precision}, {self.device}, decode {self.decode}, {self.batches} timed batches after "
            f"{self.warmup} ({self.in_flight} in flight){pinned}{fallbacks}{compiled}",
            f"forward-only: {self.forward_images_per_s:.1f} images/s",
            f"end-to-end: {self.end_to_end_images_per_s:.1f} images/s"
            + (f" ({self.unreadable} unreadable images skipped)" if self.unreadable else ""),
            f"ratio {self.ratio:.2f}",
        ]


FORWARD_WARMUP = 5  # forward-only: the first calls pick cuDNN kernels / compile; no queue to drain


def warmup_batches(in_flight: int, asked: int | None = None) -> int:
    """Untimed batches before the timed ones: `asked`, but at least twice the batches the loader keeps
    in flight (module docstring) and at least 2."""
    return max(2, 2 * in_flight, asked or 0)


def forward_only(runner: ModelRunner, shape: tuple[int, ...], batches: int, warmup: int = FORWARD_WARMUP) -> float:
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


@dataclass
class EndToEnd:
    """One end-to-end window: images/s over the timed batches, and what the run was."""

    images_per_s: float
    warmup: int  # untimed batches
    in_flight: int  # batches the loader keeps ahead
    unreadable: int
    pinned: bool | None  # the batch slots registered as pinned memory (CUDA with --decode cpu), else None
    decode_fallbacks: int | None  # --decode gpu: images the device decoder refused (PIL decoded them)


def end_to_end(runners: list[ModelRunner], prep: Preprocess, manifest: Manifest, opts: InferOptions, batches: int,
               warmup: int | None = None) -> EndToEnd:
    """The sweep's pass of `runners` (one decode for all, as a preprocessing group's pass) over
    `manifest`'s rows (cycled), timed over `batches` batches after `warmup_batches` untimed ones."""
    b, workers, device = opts.batch_size, pass_workers(opts), runners[0].device
    most = (warmup_batches(PREFETCH * workers, warmup) + batches) * b  # the prefetch can only shrink
    cached = pass_cache(manifest, range(min(len(manifest), most)), opts.source_root, workers, None) or NO_CACHE
    pipeline = pipeline_for(opts.decode)({0: manifest}, prep, device, b, workers, opts.source_root, {0: cached})
    try:
        w = warmup_batches(pipeline.in_flight, warmup)
        n = (w + batches) * b
        rows = [i % len(manifest) for i in range(n)]  # a short manifest is cycled through
        desc = f"bench {runners[0].name}" + (f" and {len(runners) - 1} more" if len(runners) > 1 else "")
        result = run_pass(pipeline.batches(0, rows), manifest, n, runners, opts, desc=desc, sync_after=w)
        cuda = torch.device(device).type == "cuda"
        pinned = pipeline.slots.pinned if pipeline.slots is not None and cuda else None
        fallbacks = pipeline.decode_fallbacks
    finally:
        pipeline.close()
    if result.model_errors:  # a benchmark of fewer models than asked would be wrong, not short
        name, error = next(iter(result.model_errors.items()))
        raise InputError(f"model {name!r} failed during the benchmark: {error}")
    e2e = (n - w * b) / (result.elapsed_s - result.batch_end_s[w - 1])
    return EndToEnd(e2e, w, pipeline.in_flight, len(result.failed), pinned, fallbacks)


def load_runner(spec: ModelSpec, opts: InferOptions, device: str) -> tuple[ModelRunner, Preprocess, str]:
    """(the model on the device, its preprocessing, its weights' description)."""
    loaded = build(spec, opts.test_input_size, opts.checkpoint_key, device=device, opts=opts)
    return ModelRunner(loaded, device, opts), preprocess_for(loaded.data_config, opts.crop), loaded.weights


def bench_infer(spec: ModelSpec, manifest_path: str | Path, opts: InferOptions, batches: int = BENCH_TIMED_BATCHES,
                warmup: int | None = None) -> BenchResult:
    if batches < 1 or (warmup is not None and warmup < 1):
        raise InputError("--batches and --warmup must be at least 1")
    (spec,) = check_specs([spec])
    manifest = read_manifest(manifest_path)
    if len(manifest) == 0:
        raise InputError(f"{manifest_path}: the manifest has no samples to benchmark on")
    check_readable(manifest)
    device = check_available(resolve_device(opts.device))
    runner, prep, weights = load_runner(spec, opts, device)
    b = opts.batch_size
    fwd = forward_only(runner, (b, 3, prep.height, prep.width), batches)
    e2e = end_to_end([runner], prep, manifest, opts, batches, warmup)
    return BenchResult(
        model=spec.name, weights=weights, preprocess=prep.describe(), device=device,
        precision=opts.precision, batch_size=b, batches=batches, decode=opts.decode, forward_images_per_s=fwd,
        end_to_end_images_per_s=e2e.images_per_s, unreadable=e2e.unreadable, input_size=prep.height,
        warmup=e2e.warmup, in_flight=e2e.in_flight, pinned=e2e.pinned, decode_fallbacks=e2e.decode_fallbacks,
        compile=runner.describe_compile(),
    )


@dataclass
class DataBenchResult:
    model: str
    preprocess: str
    decode: str
    device: str
    manifests: int
    samples: int  # read, repeats included
    unreadable: int
    workers: int
    cache_bytes: int  # patch cache file(s), 0 without PatchML (or with --no-patch-cache)
    elapsed_s: float
    cpu_s: float
    cpu_main_s: float  # of cpu_s, this process's (the rest: DataLoader workers, cache builders)
    reads: int = 1  # times each manifest was read
    steady_samples: int = 0  # samples after each read's warm-up batches, and their time
    steady_s: float = 0.0
    decode_fallbacks: int | None = None

    def lines(self) -> list[str]:
        reads = f" ({self.reads} reads of each)" if self.reads > 1 else ""
        steady = (f"past start-up: {self.steady_samples / self.steady_s:.1f} samples/s (after each read's first "
                  "batches)" if self.steady_s > 0 else "past start-up: too few batches to say")
        fallbacks = f"; {self.decode_fallbacks} decoded by PIL after the device refused them" \
            if self.decode_fallbacks else ""
        return [
            f"model {self.model}: {self.preprocess}, decode {self.decode} on {self.device}; "
            f"{self.manifests} manifests, {self.samples} samples{reads}"
            + (f" ({self.unreadable} unreadable)" if self.unreadable else "")
            + f", {self.workers} workers, patch cache {self.cache_bytes / 2**20:.1f} MiB{fallbacks}",
            f"{self.samples / self.elapsed_s:.1f} samples/s ({self.elapsed_s:.2f} s wall, {self.cpu_s:.2f} s CPU: "
            f"{self.cpu_main_s:.2f} s main process, {max(0.0, self.cpu_s - self.cpu_main_s):.2f} s workers)",
            steady,
            f"cpu_ms_per_sample {1000 * self.cpu_s / max(1, self.samples):.2f}",
        ]


def cpu_seconds(children: bool = True) -> float:
    """User + system CPU time of this process and (`children`) its finished (waited-for) children."""
    who = (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN) if children else (resource.RUSAGE_SELF,)
    return sum(r.ru_utime + r.ru_stime for r in map(resource.getrusage, who))


@dataclass
class _Drained:
    samples: int = 0
    unreadable: int = 0
    steady_samples: int = 0
    steady_s: float = 0.0
    decode_fallbacks: int | None = None


def _drain(manifest: Manifest, prep: Preprocess, opts: InferOptions, device: str, workers: int, cached,
           reads: int) -> _Drained:
    """The input pipeline over all rows of `manifest`, `reads` times in order, one pipeline."""
    cached = cached or NO_CACHE  # none for this manifest: canvases rendered on the fly, as infer would
    pipeline = pipeline_for(opts.decode)({0: manifest}, prep, device, opts.batch_size, workers, opts.source_root,
                                         {0: cached})
    out, warm, mark = _Drained(), warmup_batches(pipeline.in_flight), None
    try:
        for k, (_, _, errors) in enumerate(pipeline.batches(0, list(range(len(manifest))) * reads)):
            out.samples += len(errors)
            out.unreadable += sum(1 for e in errors if e)
            if k + 1 == warm:  # start-up over: time the rest
                sync_device(device)
                mark = (time.perf_counter(), out.samples)
        sync_device(device)
        if mark is not None and out.samples > mark[1]:
            out.steady_samples, out.steady_s = out.samples - mark[1], time.perf_counter() - mark[0]
        out.decode_fallbacks = pipeline.decode_fallbacks
    finally:
        pipeline.close()
    return out


def bench_data(spec: ModelSpec, manifest_paths: list[str | Path], opts: InferOptions,
               patch_cache: bool = True, min_samples: int = BENCH_MIN_SAMPLES) -> DataBenchResult:
    """Time the input pipeline alone over every sample of `manifest_paths`, read again (in order) until
    at least `min_samples` (cache building included)."""
    manifests = [read_manifest(p) for p in manifest_paths]
    for m in manifests:
        check_readable(m)
    prep = preprocess_for(data_config(spec, opts.test_input_size), opts.crop)
    device = check_available(resolve_device(opts.device))
    if opts.decode == "gpu":
        check_device_preprocess(prep)  # before the patch cache is built
    workers = pass_workers(opts)
    reads = max(1, -(-min_samples // sum(len(m) for m in manifests)))
    cpu0, main0, start = cpu_seconds(), cpu_seconds(children=False), time.perf_counter()
    every = [list(range(len(m))) for m in manifests]
    caches = shared_caches(manifests, every, opts.source_root, workers) if patch_cache else {}
    cache_bytes = sum(c.nbytes for c in {id(c): c for c, _ in caches.values()}.values())
    total = _Drained()
    for n, m in enumerate(manifests):
        one = _drain(m, prep, opts, device, workers, caches.get(n), reads)
        total.samples, total.unreadable = total.samples + one.samples, total.unreadable + one.unreadable
        total.steady_samples, total.steady_s = total.steady_samples + one.steady_samples, total.steady_s + one.steady_s
        if one.decode_fallbacks is not None:
            total.decode_fallbacks = (total.decode_fallbacks or 0) + one.decode_fallbacks
    elapsed, cpu, main = time.perf_counter() - start, cpu_seconds() - cpu0, cpu_seconds(children=False) - main0
    return DataBenchResult(model=spec.name, preprocess=prep.describe(), decode=opts.decode, device=device,
                           manifests=len(manifests), samples=total.samples, unreadable=total.unreadable,
                           workers=workers, cache_bytes=cache_bytes, elapsed_s=elapsed, cpu_s=cpu, cpu_main_s=main,
                           reads=reads, steady_samples=total.steady_samples, steady_s=total.steady_s,
                           decode_fallbacks=total.decode_fallbacks)
