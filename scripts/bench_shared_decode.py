"""CPU cost of decoding a sweep's images: every preprocessing group decoding alone (`--no-share-decode`)
against the passes the sweep plans (small groups joining others: each image decoded, or its PatchML
canvas painted, once per pass, then resized for each group of the pass), in one run.

The groups and passes come from the sweep's own planner (`passes.make_passes`) over the models
file's preprocessings (registry data configs: no weights, no builds; memory does not bind for the
paper's passes, so they are planned by count). Every pipeline runs in this process (`--workers 0`),
over the first `--limit` samples of each manifest, after one patch cache is built for the PatchML
manifests (once per sweep either way, so not timed). CPU time is this process's
(`resource.getrusage`). The pixels of every group are compared between its own decode and the
shared one, so a speed-up that changed a pixel fails here.

With `--throughput CSV` (timm's benchmark-infer table), it also bounds each pass's wall time on a
machine with `--workers-there` decode workers: the larger of its decode (CPU per image / workers)
and its models' forward time per image, over the paper's images (60,000 JPEGs, 364,515 canvases),
with this machine's CPU times.

    python scripts/bench_shared_decode.py --data v1.parquet --data patchml1/manifest.parquet \
        [--models data_manifests/paper_checkpoints.txt] [--limit 150] [--throughput CSV]
"""

from __future__ import annotations

import argparse
import resource
from pathlib import Path

import torch

from mlreassess.datasets.manifest import read_manifest
from mlreassess.inference.input.caches import shared_caches
from mlreassess.inference.input.pipeline import InputPipeline, one_manifest_batches
from mlreassess.inference.input.preprocess import SharedDecode
from mlreassess.inference.models.registry import read_models_file
from mlreassess.inference.sweep.estimate import images_per_s, read_throughput
from mlreassess.inference.sweep.passes import Unit, make_passes
from mlreassess.inference.sweep.plan import preprocessing
from mlreassess.options import InferOptions

REPO = Path(__file__).resolve().parents[1]
PAPER_IMAGES = {"imagenet_v1": 60_000, "patchml": 364_515}  # V1 + V2 JPEGs; 5 x 72,903 canvases


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def drain(manifest, rows, prep, cached, batch: int) -> tuple[float, list[torch.Tensor]]:
    """(CPU seconds, the batches) of one pipeline over `rows`."""
    start = cpu()
    out = [images for _, images, _ in one_manifest_batches(InputPipeline, manifest, rows, prep, "cpu", batch, 0,
                                                           cached=cached)]
    return cpu() - start, out


def planned(models_file: Path):
    """(each group's models, the passes with shared decodes, without)."""
    specs = read_models_file(models_file, "random")
    prep = preprocessing(specs, InferOptions())
    units = [Unit(0, s, prep[s]) for s in specs]
    groups: dict = {}
    for u in units:
        groups.setdefault(u.preprocess, []).append(u.model.name)
    return groups, make_passes(units, 10**6), make_passes(units, 10**6, share_decode=False)


def measure(manifest, rows, cached, passes, batch: int) -> tuple[dict, dict]:
    """CPU seconds per sample of each group alone, and of each shared decode (pixels checked)."""
    alone, shared = {}, {}
    for p in passes:
        decode = p.preprocess
        parts = decode.parts if isinstance(decode, SharedDecode) else (decode,)
        outs = {}
        for part in parts:
            seconds, outs[part] = drain(manifest, rows, part, cached, batch)
            alone[part] = seconds / len(rows)
        if isinstance(decode, SharedDecode):
            seconds, together = drain(manifest, rows, decode, cached, batch)
            shared[decode] = seconds / len(rows)
            for part in parts:
                assert all(torch.equal(decode.part(s, part), a) for s, a in zip(together, outs[part])), part.describe()
    return alone, shared


def wall_bound(passes, cpu_per_image: dict, throughput, groups, workers: int) -> tuple[float, float]:
    """(hours of the passes, each the larger of its decode and its forward time per kind of image;
    hours of those the decode bounds beyond their forward time)."""
    total = over = 0.0
    for p in passes:
        forward = sum(1 / rate for prep in _parts(p.preprocess) for name in groups[prep]
                      if (rate := images_per_s(throughput, name, prep.height)[0]))
        for kind, n in PAPER_IMAGES.items():
            decode = cpu_per_image[kind][p.preprocess] / workers
            total += n * max(decode, forward)
            over += n * max(0.0, decode - forward)
    return total / 3600, over / 3600


def _parts(decode):
    return decode.parts if isinstance(decode, SharedDecode) else (decode,)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", action="append", required=True, metavar="MANIFEST")
    parser.add_argument("--models", type=Path, default=REPO / "data_manifests" / "paper_checkpoints.txt")
    parser.add_argument("--limit", type=int, default=150, help="samples per manifest")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--throughput", metavar="CSV")
    parser.add_argument("--workers-there", type=int, default=15)
    args = parser.parse_args()
    torch.set_num_threads(1)
    manifests = [read_manifest(p) for p in args.data]
    rows = [list(range(min(args.limit, len(m)))) for m in manifests]
    caches = shared_caches(manifests, rows, None, 0)
    groups, passes, apart = planned(args.models)
    print(f"{len(groups)} groups: {len(apart)} passes apart, {len(passes)} with shared decodes")
    per_image = {}
    for n, (m, r) in enumerate(zip(manifests, rows)):
        alone, shared = measure(m, r, caches.get(n), passes, args.batch_size)
        with_shared = sum(shared.get(p.preprocess, alone.get(p.preprocess, 0.0)) for p in passes)
        print(f"{m.name}: {len(r)} samples: CPU ms per sample over all groups: {1000 * sum(alone.values()):.1f} "
              f"decoding apart, {1000 * with_shared:.1f} with shared decodes (ratio "
              f"{with_shared / sum(alone.values()):.2f}); pixels identical")
        per_image["patchml" if m.kind == "patchml" else "imagenet_v1"] = {**alone, **shared}
    if args.throughput and len(per_image) == len(PAPER_IMAGES):
        table = read_throughput(args.throughput)
        for workers in sorted({1, 2, 4, 8, args.workers_there}):
            line = []
            for name, ps in (("apart", apart), ("shared", passes)):
                hours, decode_bound = wall_bound(ps, per_image, table, groups, workers)
                line.append(f"{name} {hours:.2f} h ({decode_bound:.2f} h decode-bound)")
            print(f"{Path(args.throughput).name}, {workers} workers: " + "; ".join(line))


if __name__ == "__main__":
    main()
