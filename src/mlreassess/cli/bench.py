"""`mlreassess bench ...`: speed benchmarks (`bench infer`: pipeline vs pure forward speed; `bench data`:
the input pipeline alone)."""

from __future__ import annotations

import argparse

from mlreassess.cli.options import add_options, options_from
from mlreassess.constants import BENCH_MIN_SAMPLES, BENCH_TIMED_BATCHES
from mlreassess.options import InferOptions

# The inference options that matter for speed (the rest change no timing).
BENCH_OPTIONS = ("weights", "checkpoint_key", "test_input_size", "device", "batch_size", "precision",
                 "channels_last", "compile", "crop", "decode", "workers")
# Those that matter for the input pipeline alone (the device: where the batches end up, and where
# --decode gpu decodes and resizes).
DATA_OPTIONS = ("test_input_size", "crop", "decode", "device", "workers", "batch_size", "source_root")


def register(subparsers) -> None:
    parser = subparsers.add_parser("bench", help="speed benchmarks", description="Speed benchmarks.")
    inner = parser.add_subparsers(dest="bench_command", metavar="BENCHMARK", required=True)
    infer = inner.add_parser(
        "infer",
        help="end-to-end inference images/s against forward-only images/s",
        description="Forward-only images/s (random tensors on the device, same batch and precision) and "
        "end-to-end images/s (the infer pipeline over the manifest's first images); the last line is "
        "'ratio X.XX' (end-to-end / forward-only).",
    )
    infer.add_argument("--model", required=True, metavar="NAME", help="timm model name")
    add_options(infer, InferOptions, only=BENCH_OPTIONS, defaults={"weights": "random"})
    infer.add_argument("--data", required=True, metavar="MANIFEST", help="manifest whose images are decoded")
    infer.add_argument("--batches", type=int, default=BENCH_TIMED_BATCHES, metavar="N",
                       help=f"timed batches (default: {BENCH_TIMED_BATCHES})")
    infer.add_argument("--warmup", type=int, metavar="N",
                       help="untimed end-to-end batches first (default, and at least: twice the batches the "
                       "decode workers keep in flight, so none made ahead is timed; at least 2)")
    infer.add_argument("--csv", metavar="FILE", help="also append the result as a row of FILE (timm's benchmark "
                       "columns, which `infer --plan --throughput FILE` reads)")
    infer.set_defaults(func=run_infer)
    register_data(inner)


def register_data(inner) -> None:
    data = inner.add_parser(
        "data",
        help="the input pipeline alone: samples/s and CPU ms per sample",
        description="Decode and preprocess (the model's timm data config, resize-only by default, as infer "
        "does) every sample of the manifests into uint8 batches on the device, without a forward pass; "
        "PatchML canvases without PNGs come from one patch cache per source folder. CPU time counts this "
        "process and its workers, cache building included; the last line is 'cpu_ms_per_sample X.XX'.",
    )
    data.add_argument("--data", required=True, action="append", metavar="MANIFEST",
                      help="manifest to read (repeat for several)")
    data.add_argument("--model", required=True, metavar="NAME", help="timm model name (its preprocessing)")
    add_options(data, InferOptions, only=DATA_OPTIONS)
    data.add_argument("--no-patch-cache", dest="patch_cache", action="store_false",
                      help="render PatchML canvases on the fly, each source decoded per patch (the old path)")
    data.add_argument("--min-samples", type=int, default=BENCH_MIN_SAMPLES, metavar="N",
                      help="read the manifests again, in order, until at least N samples are read, so that "
                      f"start-up (workers, cache) is a small part (default: {BENCH_MIN_SAMPLES}; 0: each once)")
    data.set_defaults(func=run_data)


def run_infer(args: argparse.Namespace) -> int:
    # Imported here, not at the top: `mlreassess --help` must not import torch.
    from mlreassess.cli.infer import configure_torch
    from mlreassess.inference.sweep.bench import bench_infer
    from mlreassess.inference.models.registry import ModelSpec

    opts = options_from(InferOptions, args)
    configure_torch(opts.device)
    result = bench_infer(ModelSpec(args.model, opts.weights), args.data, opts, batches=args.batches,
                         warmup=args.warmup)
    for line in result.lines():
        print(line)
    if args.csv:
        result.append_csv(args.csv)
    return 0


def run_data(args: argparse.Namespace) -> int:
    # Imported here, not at the top: `mlreassess --help` must not import torch.
    from mlreassess.errors import InputError
    from mlreassess.inference.sweep.bench import bench_data
    from mlreassess.inference.models.registry import ModelSpec

    opts = options_from(InferOptions, args)
    if args.min_samples < 0:
        raise InputError("--min-samples must be at least 0")
    result = bench_data(ModelSpec(args.model, "random"), args.data, opts, patch_cache=args.patch_cache,
                        min_samples=args.min_samples)
    for line in result.lines():
        print(line)
    return 0
