#!/usr/bin/env python3
"""`mlreassess bench data` on the same images as JPEG files, HF parquet shards and WebDataset tars
(results/benchmarks/input.md): CPU ms per image, runs alternated, medians.

  bench_input_formats.py FILES.parquet HF.parquet WDS.parquet [--repeats 5] [--workers 0 2]

The three manifests are `mlreassess data imagenet-val` of one copy each (e.g. the full-size mini, and
`scripts/make_shards.py` of it). Each run is its own `mlreassess bench data` process (CPU time of the
process and its workers, `resource.getrusage`); one round runs every format once, in a rotating
order, so a change in the machine's load falls on all of them alike.

--read-only: instead, in this process, the CPU time of reading every sample's encoded bytes alone
(`datasets.samples.reader(manifest).read(i)`, in manifest order, a fresh reader per round): the
cost a format adds before the decode, which is the same for all three.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys

MODEL = "tf_efficientnet_lite0"


def one(manifest: str, workers: int) -> float:
    out = subprocess.run([sys.executable, "-m", "mlreassess", "bench", "data", "--model", MODEL, "--data", manifest,
                          "--workers", str(workers)], check=True, capture_output=True, text=True).stdout
    return float(re.search(r"cpu_ms_per_sample ([0-9.]+)", out).group(1))


def read_only(manifest: str) -> float:
    import time

    from mlreassess.datasets import samples
    from mlreassess.datasets.manifest import read_manifest

    m = read_manifest(manifest)
    read = samples.reader(m)
    start = time.process_time()
    for i in range(len(m)):
        read.read(i)
    return 1000 * (time.process_time() - start) / len(m)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("manifests", nargs=3, metavar=("FILES", "HF", "WDS"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workers", type=int, nargs="+", default=[0])
    parser.add_argument("--read-only", action="store_true", help="time reading the bytes alone, in this process")
    args = parser.parse_args()
    names = ["files", "hf-parquet", "webdataset"]
    if args.read_only:
        runs = {n: [] for n in names}
        for r in range(args.repeats):
            for k in range(3):
                j = (r + k) % 3
                runs[names[j]].append(read_only(args.manifests[j]))
        for n in names:
            print(f"read only {n:11s} cpu ms/image runs {' '.join(f'{v:.3f}' for v in runs[n])} "
                  f"median {statistics.median(runs[n]):.3f}")
        return
    for workers in args.workers:
        runs: dict[str, list[float]] = {n: [] for n in names}
        for r in range(args.repeats):
            for k in range(3):
                j = (r + k) % 3
                runs[names[j]].append(one(args.manifests[j], workers))
        med = {n: statistics.median(v) for n, v in runs.items()}
        for n in names:
            print(f"workers {workers} {n:11s} cpu ms/image runs {' '.join(f'{v:.2f}' for v in runs[n])} "
                  f"median {med[n]:.2f} ratio {med[n] / med['files']:.3f}")


if __name__ == "__main__":
    main()
