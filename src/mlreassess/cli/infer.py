"""`mlreassess infer`: batched, resumable inference of models over dataset manifests."""

from __future__ import annotations

import argparse
import os

from mlreassess.cli.options import add_options, options_from
from mlreassess.options import InferOptions


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "infer",
        help="run models over manifests: top-k softmax per sample",
        description="Predict every sample of each --data manifest with each model; writes "
        "RESULTS/predictions/<dataset>/<model>.parquet (top-k indices and softmax probabilities). "
        "Finished outputs are skipped, so an interrupted sweep resumes. Under torchrun the work is "
        "split across ranks.",
    )
    parser.add_argument("--data", action="append", required=True, metavar="MANIFEST",
                        help="dataset manifest (repeatable)")
    parser.add_argument("--model", action="append", default=[], metavar="NAME",
                        help="model (repeatable): a timm name (resnet50.a1_in1k), torchvision:NAME, "
                        "hf:ORG/REPO or hf:/ABS/DIR, open_clip:ARCH/PRETRAINED")
    parser.add_argument("--models", metavar="FILE",
                        help="file with one model per line: 'NAME [WEIGHTS]' ('#' comments)")
    parser.add_argument("--out", required=True, metavar="RESULTS", help="results folder")
    add_options(parser, InferOptions)
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    plan = parser.add_argument_group("planning (run nothing)")
    plan.add_argument("--plan", action="store_true",
                      help="print the sweep as it would run (groups, passes and their memory, loads, compiles, "
                      "decodes, GPU time) and stop; models are sized on the meta device, no weights needed")
    plan.add_argument("--device-memory", type=_gib, metavar="GIB",
                      help="with --plan: plan for a device with this much free memory (GiB), not this one")
    parser.set_defaults(func=run)


INDUCTOR_CACHE_ENV = "TORCHINDUCTOR_CACHE_DIR"

# A --device-memory above this is a typo (a PiB of device memory), not a device to plan for.
_MAX_GIB = 1 << 20


def _gib(text: str) -> int:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number of GiB, e.g. 80") from None
    if not 0 < value < _MAX_GIB:  # also refuses NaN and inf
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number of GiB above 0 and below {_MAX_GIB:,}")
    return int(value * 2**30)


def configure_torch(device: str | None) -> None:
    """Process-wide torch settings, which only the CLI layer makes (library code never does): cuDNN's
    benchmark mode for any CUDA device (`cuda`, `cuda:1`, or the default when CUDA is there)."""
    import torch  # here, not at the top: `mlreassess --help` must not import torch

    from mlreassess.inference.models.sources.base import compile_cache_dir  # imports torch, as above

    if (device is None or torch.device(device).type == "cuda") and torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick the fastest kernels
    # Compiled graphs reused across checkpoints of one architecture and across runs (a user's own
    # choice of folder stands); inductor reads the variable when it first compiles.
    os.environ.setdefault(INDUCTOR_CACHE_ENV, str(compile_cache_dir()))


def run(args: argparse.Namespace) -> int:
    # Imported here, not at the top: `mlreassess --help` must not import torch.
    from mlreassess.errors import InputError
    from mlreassess.inference.sweep import distributed as D
    from mlreassess.inference.models.registry import ModelSpec, read_models_file
    from mlreassess.inference.sweep.runner import run as run_sweep

    opts = options_from(InferOptions, args, progress=not args.no_progress)
    specs = [ModelSpec(name, opts.weights) for name in args.model]
    if args.models:
        specs += read_models_file(args.models, opts.weights)
    if not specs:
        raise InputError("no model given (use --model NAME or --models FILE)")
    if args.plan:
        return print_plan(args, specs, opts)
    if args.device_memory is not None:
        raise InputError("--device-memory is for --plan")
    configure_torch(opts.device)
    summary = run_sweep(args.data, specs, args.out, opts)
    if D.is_main_process():
        for line in summary.lines():
            print(line)
    return 1 if summary.failed else 0


def print_plan(args: argparse.Namespace, specs: list, opts) -> int:
    # Imported here, not at the top: `mlreassess --help` must not import torch.
    from mlreassess.inference.sweep.estimate import describe
    from mlreassess.inference.sweep.runner import plan_only

    plan, manifests, free = plan_only(args.data, specs, args.out, opts, args.device_memory)
    for line in describe(plan, manifests, opts, free):
        print(line)
    return 0
