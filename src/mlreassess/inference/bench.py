"""How close the pipeline gets to a model's pure forward speed.

forward-only: random already-normalised tensors on the device, the same batch size and precision.
end-to-end: the sweep's own pass (decode + resize in workers, uint8 copy, normalise, forward,
softmax, top-k) over the manifest's first images. Both skip their first `warmup` batches.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from mlreassess.datasets.manifest import read_manifest
from mlreassess.errors import InputError
from mlreassess.inference.data import check_readable
from mlreassess.inference.distributed import resolve_device
from mlreassess.inference.models import ModelSpec, build, check_specs
from mlreassess.inference.preprocess import preprocess_for
from mlreassess.inference.runner import ModelRunner, run_pass, sync_device
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
    forward_images_per_s: float
    end_to_end_images_per_s: float
    unreadable: int

    @property
    def ratio(self) -> float:
        return self.end_to_end_images_per_s / self.forward_images_per_s

    def lines(self) -> list[str]:
        return [
            f"model {self.model} ({self.weights}), {self.preprocess}, batch {self.batch_size}, "
            f"{self.precision}, {self.device}, {self.batches} timed batches",
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
    device = resolve_device(opts.device)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA device is available here (use --device cpu)")
    loaded = build(spec, opts.test_input_size, opts.checkpoint_key)
    prep = preprocess_for(loaded.data_config, opts.crop)
    runner = ModelRunner(loaded, device, opts)
    b = opts.batch_size
    fwd = forward_only(runner, (b, 3, prep.height, prep.width), batches, warmup)

    n = (warmup + batches) * b
    rows = [i % len(manifest) for i in range(n)]  # a small manifest is cycled through
    result = run_pass(manifest, rows, [runner], prep, opts, desc=f"bench {spec.name}", sync_after=warmup)
    if runner.name in result.model_errors:
        raise InputError(f"model {spec.name!r} failed during the benchmark: {result.model_errors[runner.name]}")
    timed_images = n - warmup * b
    e2e = timed_images / (result.elapsed_s - result.batch_end_s[warmup - 1])
    return BenchResult(
        model=spec.name, weights=loaded.weights, preprocess=prep.describe(), device=device,
        precision=opts.precision, batch_size=b, batches=batches, forward_images_per_s=fwd,
        end_to_end_images_per_s=e2e, unreadable=len(result.failed),
    )
