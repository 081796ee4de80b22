"""`mlreassess bench ...`: speed benchmarks (`bench infer`: pipeline vs pure forward speed)."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    from mlreassess.cli.infer import add_model_arguments

    parser = subparsers.add_parser("bench", help="speed benchmarks", description="Speed benchmarks.")
    inner = parser.add_subparsers(dest="bench_command", metavar="BENCHMARK", required=True)
    infer = inner.add_parser(
        "infer",
        help="end-to-end inference images/s against forward-only images/s",
        description="Forward-only images/s (random tensors on the device, same batch and precision) and "
        "end-to-end images/s (the infer pipeline over the manifest's first images); the last line is "
        "'ratio X.XX' (end-to-end / forward-only).",
    )
    add_model_arguments(infer, multiple=False, default_weights="random")
    infer.add_argument("--data", required=True, metavar="MANIFEST", help="manifest whose images are decoded")
    infer.add_argument("--batches", type=int, default=20, metavar="N", help="timed batches (default: 20)")
    infer.add_argument("--warmup", type=int, default=2, metavar="N", help="untimed batches first (default: 2)")
    infer.set_defaults(func=run_infer)


def run_infer(args: argparse.Namespace) -> int:
    from mlreassess.cli.infer import options_from
    from mlreassess.inference.bench import bench_infer
    from mlreassess.inference.models import ModelSpec

    opts = options_from(args)
    result = bench_infer(ModelSpec(args.model, args.weights), args.data, opts, batches=args.batches, warmup=args.warmup)
    for line in result.lines():
        print(line)
    return 0
