#!/usr/bin/env python3
"""Pixels of `--decode gpu` against `--decode cpu` (the PIL path) over a whole manifest.

usage: compare_decode.py MANIFEST [--model NAME] [--device cpu|cuda] [--crop none|center]
                         [--batch-size N] [--workers N] [--source-root DIR]

Both input pipelines run over every sample (the model's preprocessing, as infer resolves it);
prints the distribution of |difference| in levels (0..255) over all pixel values, the mean, the
samples that differ most, and whether both pipelines agree on which samples are unreadable.
On a CPU device the tensor path decodes with libjpeg-turbo (torchvision), on CUDA with nvjpeg.
"""

from __future__ import annotations

import argparse
import warnings

import torch

from mlreassess.datasets.manifest import read_manifest
from mlreassess.inference.input.pipeline import check_readable, pil_batches
from mlreassess.inference.input.device_input import device_batches
from mlreassess.inference.models.registry import ModelSpec, data_config
from mlreassess.inference.input.preprocess import preprocess_for

warnings.filterwarnings("ignore", "The image decoding", DeprecationWarning)  # torchvision 0.29: still works


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("manifest")
    parser.add_argument("--model", default="tf_efficientnet_lite0")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--crop", default="none", choices=("none", "center"))
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--source-root")
    args = parser.parse_args()
    manifest = read_manifest(args.manifest)
    check_readable(manifest)
    prep = preprocess_for(data_config(ModelSpec(args.model, "random")), args.crop)
    rows = list(range(len(manifest)))
    common = (prep, args.device, args.batch_size, args.workers, args.source_root)
    histogram = torch.zeros(256, dtype=torch.int64)
    worst: list[tuple[int, str]] = []
    same_errors = True
    with torch.inference_mode():
        for (idx, pil, e1), (_, dev, e2) in zip(pil_batches(manifest, rows, *common), device_batches(manifest, rows, *common)):
            same_errors &= [bool(e) for e in e1] == [bool(e) for e in e2]
            diff = (pil.cpu().int() - dev.cpu().int()).abs()
            histogram += torch.bincount(diff.flatten(), minlength=256)
            worst += [(int(d.max()), manifest.sample_ids[int(i)]) for i, d in zip(idx, diff)]
    total = int(histogram.sum())
    levels = torch.arange(256)
    print(f"{manifest.name}: {len(rows)} samples, {prep.describe()}, decode gpu on {args.device} vs PIL")
    print(f"values compared: {total:,}; mean |diff| {float((histogram * levels).sum()) / total:.4f} levels; "
          f"max {int(levels[histogram > 0].max())}")
    for k in (0, 1, 2, 4, 8, 16):
        over = int(histogram[k + 1 :].sum())
        print(f"  values off by more than {k:>2} levels: {over:,} ({over / total:.2e})")
    print("most different samples (max |diff|):", ", ".join(f"{s} {m}" for m, s in sorted(worst, reverse=True)[:5]))
    print(f"unreadable samples agree: {same_errors}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
