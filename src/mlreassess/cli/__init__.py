"""The `mlreassess` command: one subcommand module per stage (`main` builds the parser)."""

from mlreassess.cli.main import main

__all__ = ["main"]
