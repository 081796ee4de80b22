"""Main-process CPU time per sample outside the model's forward pass (issue: a sweep at GPU speed).

What it measures: the sweep's own input pipeline (`InputPipeline`: DataLoader workers decode and
resize, batches come back to the main process) and `stream.run_pass` (drop unreadable samples,
normalise, forward, float32 softmax, top-k, bookkeeping, collect) over N images, with a model whose
forward costs almost nothing (global average pool + one linear layer). The main process's CPU time
(`resource.getrusage(RUSAGE_SELF)`: every thread of it, not the workers) minus the time spent
inside `ModelRunner.predict` / `collect` (normalise, forward, softmax, top-k: kernels a GPU runs
asynchronously, but which a CPU device runs on the host) is the host work per sample: receiving
batches from the workers, dropping unreadable samples, bookkeeping (`host_us`). The same device
work timed alone over as many batches gives a second estimate by difference (`host_by_difference_us`,
noisy when the device work dominates). torch runs on one intra-op thread so the count is not inflated by idle spinning.

    python scripts/bench_host_overhead.py [--images 4096] [--size 64] [--batch-size 256] [--repeat 3]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mlreassess.datasets.manifest import Manifest, base_meta, core_table
from mlreassess.inference.input.pipeline import InputPipeline
from mlreassess.inference.models.model_runner import ModelRunner
from mlreassess.inference.models.registry import LoadedModel, ModelSpec
from mlreassess.inference.input.preprocess import Preprocess
from mlreassess.inference.sweep.stream import run_pass
from mlreassess.options import InferOptions


class Trivial(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(3, 1000)

    def forward(self, x):
        return self.fc(x.mean((2, 3)))


def main_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def make_manifest(folder: Path, n: int, size: int) -> Manifest:
    rng = np.random.default_rng(0)
    ids = [f"img_{i:06d}" for i in range(n)]
    for i in ids[: min(n, 64)]:
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    paths = [f"{ids[j % 64]}.png" for j in range(n)]  # 64 distinct files: the decode is not what is measured
    table = core_table(ids, paths, [j % 1000 for j in range(n)], [[j % 1000] for j in range(n)])
    return Manifest(table, base_meta("imagenet_v1", "bench", folder), folder / "m.parquet")


def one_run(manifest: Manifest, prep: Preprocess, opts: InferOptions, workers: int) -> dict[str, float]:
    cfg = {"input_size": (3, prep.height, prep.width), "interpolation": prep.interpolation, "mean": (0.5,) * 3,
           "std": (0.5,) * 3, "crop_pct": 1.0}
    runner = ModelRunner(LoadedModel(ModelSpec("trivial", "random"), Trivial().eval(), "random", cfg), "cpu", opts)
    pipeline = InputPipeline({0: manifest}, prep, "cpu", opts.batch_size, workers)
    rows = list(range(len(manifest)))
    list(pipeline.batches(0, rows[: opts.batch_size]))  # start the workers before timing
    inside = timed(runner)
    cpu0, t0 = main_cpu(), time.perf_counter()
    result = run_pass(pipeline.batches(0, rows), manifest, len(rows), [runner], opts)
    cpu, wall, in_runner = main_cpu() - cpu0, time.perf_counter() - t0, inside[0]
    pipeline.close()
    n = len(result.rows)
    forward, device = device_work(runner, prep, opts.batch_size, n)
    return {"total_us": 1e6 * cpu / n, "forward_us": 1e6 * forward / n, "device_work_us": 1e6 * in_runner / n,
            "host_us": 1e6 * (cpu - in_runner) / n, "host_by_difference_us": 1e6 * (cpu - device) / n,
            "wall_images_per_s": n / wall}


def timed(runner: ModelRunner) -> list[float]:
    """Count the main-process CPU time spent inside `runner.predict` and `collect` (device work)."""
    spent = [0.0]
    for name in ("predict", "collect"):
        real = getattr(runner, name)

        def wrapper(*args, _real=real):
            c = main_cpu()
            try:
                return _real(*args)
            finally:
                spent[0] += main_cpu() - c

        setattr(runner, name, wrapper)
    return spent


def device_work(runner: ModelRunner, prep: Preprocess, batch_size: int, n: int) -> tuple[float, float]:
    """(CPU seconds of the forward passes alone, of everything a GPU would run as kernels: normalise,
    forward, softmax, top-k, collect) over the same number of batches, without any input pipeline."""
    x = torch.zeros((batch_size, 3, prep.height, prep.width), dtype=torch.uint8)
    batches = -(-n // batch_size)
    with torch.inference_mode():
        runner.predict(x)
        runner.collect()
        f0 = main_cpu()
        normalized = runner.normalize(x)
        for _ in range(batches):
            runner.logits(normalized)
        forward = main_cpu() - f0
        d0 = main_cpu()
        for _ in range(batches):
            runner.predict(x)
        runner.collect()
        device = main_cpu() - d0
    return forward, device


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4096)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    prep = Preprocess(args.size, args.size, "bilinear")
    opts = InferOptions(batch_size=args.batch_size, progress=False)
    with tempfile.TemporaryDirectory() as tmp:
        manifest = make_manifest(Path(tmp), args.images, args.size)
        runs = [one_run(manifest, prep, opts, args.workers) for _ in range(args.repeat)]
    print(f"{args.images} images of {args.size}x{args.size}, batch {args.batch_size}, {args.workers} workers, "
          f"CPU device, {args.repeat} runs (median; all runs in brackets)")
    for key in ("total_us", "forward_us", "device_work_us", "host_us", "host_by_difference_us", "wall_images_per_s"):
        values = [r[key] for r in runs]
        print(f"{key}: {statistics.median(values):.2f} [{', '.join(f'{v:.2f}' for v in values)}]")


if __name__ == "__main__":
    main()
