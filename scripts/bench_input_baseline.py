#!/usr/bin/env python3
"""Baselines for `mlreassess bench data` (results/benchmarks/input.md): CPU ms per sample.

  patchml MANIFEST... --source-root DIR [--size 224]
      a plain PIL loop: for every canvas, open every source JPEG of every patch again, crop,
      resize the patch, paste it on a black canvas, resize the canvas to SIZE x SIZE (bicubic)
  v1-plain MANIFEST [--size 224]
      a plain PIL loop over the manifest's image files: open, convert to RGB, resize to SIZE x SIZE
      (bicubic), as an array: the naive loop V1 input must be no slower than
  v1 MANIFEST [--size 224]
      the per-image code path of `infer --workers 0`: `ManifestImages` (open_image + resize-only
      preprocessing) through the DataLoader, from whichever mlreassess PYTHONPATH selects (run it
      with PYTHONPATH=/work/main/src for the code before the patch cache)

The last line is `cpu_ms_per_sample X.XX` (CPU time of this process, resource.getrusage), as in
`mlreassess bench data`. Same machine, one run after the other: compare CPU time, not wall time.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
from PIL import Image

from mlreassess.datasets.manifest import read_manifest
from mlreassess.inference.input.pipeline import pil_batches
from mlreassess.inference.input.preprocess import Preprocess
from mlreassess.patchml.render import canvases


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime + c.ru_utime + c.ru_stime


def plain_patchml(paths: list[str], source_root: str, size: int) -> int:
    n = 0
    for path in paths:
        m = read_manifest(path)
        side = int(m.meta["canvas_size"])
        for c in canvases(m.table):
            canvas = Image.new("RGB", (side, side))
            for src, (x0, y0, x1, y1), wh, xy in zip(c.src_ids, c.boxes, c.sizes, c.positions):
                with Image.open(f"{source_root}/{src}.JPEG") as im:
                    patch = im.convert("RGB").crop((x0, y0, x1 + 1, y1 + 1)).resize(wh, Image.Resampling.BICUBIC)
                canvas.paste(patch, xy)
            np.asarray(canvas.resize((size, size), Image.Resampling.BICUBIC))
            n += 1
    return n


def plain_v1(path: str, size: int) -> int:
    m = read_manifest(path)
    for rel in m.table.column("path").to_pylist():
        with Image.open(f"{m.root}/{rel}") as im:
            np.asarray(im.convert("RGB").resize((size, size), Image.Resampling.BICUBIC))
    return len(m)


def current_v1(path: str, size: int) -> int:
    m = read_manifest(path)
    rows = list(range(len(m)))
    return sum(len(errors) for _, _, errors in pil_batches(m, rows, Preprocess(size, size, "bicubic"), "cpu", 128, 0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["patchml", "v1", "v1-plain"])
    parser.add_argument("manifests", nargs="+")
    parser.add_argument("--source-root")
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    cpu0, t0 = cpu_s(), time.perf_counter()
    if args.mode == "patchml":
        n = plain_patchml(args.manifests, args.source_root, args.size)
    elif args.mode == "v1-plain":
        n = plain_v1(args.manifests[0], args.size)
    else:
        n = current_v1(args.manifests[0], args.size)
    cpu, wall = cpu_s() - cpu0, time.perf_counter() - t0
    print(f"{args.mode} baseline: {n} samples, {n / wall:.1f} samples/s ({wall:.2f} s wall, {cpu:.2f} s CPU)")
    print(f"cpu_ms_per_sample {1000 * cpu / n:.2f}")


if __name__ == "__main__":
    main()
