"""`python -m mlreassess ...` (what `torchrun -m mlreassess` runs)."""

from mlreassess.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
