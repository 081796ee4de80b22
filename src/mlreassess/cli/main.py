"""The `mlreassess` command line: the parser of every subcommand, and the one log handler.

Each module in this package defines `register(subparsers)`, which adds its parser and sets
`func` to the function that runs it. Modules import heavy libraries (torch, timm, matplotlib)
inside those functions only, so `mlreassess --help` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from mlreassess import __version__
from mlreassess.errors import MlreassessError

# Order = order in `mlreassess --help`.
SUBCOMMAND_MODULES = ("data", "patchml", "infer", "evaluate", "report", "demo", "bench", "run")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlreassess",
        description="Re-assess ImageNet classifiers as multi-label predictors "
        "(PatchML test sets, batched timm inference, top-1 / ReaL / ASMA, paper tables and figures).",
    )
    parser.add_argument("--version", action="version", version=f"mlreassess {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(f"mlreassess.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"mlreassess.cli.{name}":
                raise
            continue  # subcommand not built yet
        module.register(subparsers)
    return parser


def setup_logging() -> None:
    """The one log handler: the package's INFO lines on stderr, written above any progress bar."""
    # Imported here, not at the top: tqdm is not needed for `mlreassess --help`.
    from mlreassess.progress import TqdmHandler

    logger = logging.getLogger("mlreassess")
    if not any(isinstance(h, TqdmHandler) for h in logger.handlers):
        handler = TqdmHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    setup_logging()
    try:
        result = args.func(args)
    except MlreassessError as exc:
        print(f"mlreassess: error: {exc}", file=sys.stderr)
        return 2
    except (OSError, UnicodeDecodeError) as exc:
        # A path that is a folder, unwritable, a text file that is not UTF-8: the message names it.
        print(f"mlreassess: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mlreassess: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)
