"""`mlreassess run CONFIG.yaml`: the whole study from one config, resumable (see docs/reproduce.md)."""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "run",
        help="the whole study from one YAML config: data, PatchML, infer, evaluate, report (resumable)",
        description="Build the config's manifests and PatchML sets, run its models over them, compute "
        "the metrics and write the report into the config's `out` folder. Finished work is skipped, "
        "so a rerun resumes, and a rerun with nothing left says so. Relative paths in the config "
        "resolve against the config file's folder. Under torchrun, rank 0 builds the datasets, all "
        "ranks share the inference, rank 0 evaluates and reports.",
    )
    p.add_argument("config", metavar="CONFIG.yaml", help="study config (see configs/mini.yaml, configs/paper.yaml)")
    p.add_argument("--check", action="store_true", help="validate the config (paths, models, options) and stop")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # Imported here, not at the top: `mlreassess --help` must not import torch.
    from mlreassess.cli.infer import configure_torch
    from mlreassess.config import load_config
    from mlreassess.pipeline import model_specs, run_study

    cfg = load_config(args.config)
    if args.check:
        specs = model_specs(cfg)
        print(f"{cfg.source}: valid; {len(specs)} model(s), output in {cfg.out}", file=sys.stderr)
        return 0
    configure_torch(cfg.inference.device)
    run_study(cfg)
    return 0
