"""Parse the paper's Tables 3-10 into data_manifests/paper_reported.csv and paper_checkpoints.txt.

    .venv/bin/python scripts/parse_paper_tables.py [--paper ../shared/paper/reassessing-imagenet-multilabel.txt]

The csv is committed; tests/test_report_paper.py re-runs the parser when the paper is present
and compares.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mlreassess.io import write_text_atomic
from mlreassess.report.paper import checkpoints_in_order, parse_paper_tables, to_csv_text

REPO = Path(__file__).resolve().parents[1]
DEFAULT_PAPER = REPO.parent / "shared" / "paper" / "reassessing-imagenet-multilabel.txt"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--paper", type=Path, default=DEFAULT_PAPER)
    ap.add_argument("--out-dir", type=Path, default=REPO / "data_manifests")
    args = ap.parse_args()
    rows = parse_paper_tables(args.paper.read_text())
    names = checkpoints_in_order(rows)
    write_text_atomic(args.out_dir / "paper_reported.csv", to_csv_text(rows))
    write_text_atomic(args.out_dir / "paper_checkpoints.txt", "".join(n + "\n" for n in names))
    per_table: dict[str, set] = {}
    for r in rows:
        per_table.setdefault(r.source_table, set()).add(r.checkpoint)
    unmapped = sorted({r.checkpoint for r in rows if not r.timm_checkpoint})
    print(f"{len(rows)} values, {len(names)} checkpoints in Tables 4-10; per table: "
          + ", ".join(f"T{t}: {len(c)}" for t, c in sorted(per_table.items(), key=lambda kv: int(kv[0]))))
    if unmapped:
        print(f"unmapped Table 3 names: {unmapped}")


if __name__ == "__main__":
    main()
