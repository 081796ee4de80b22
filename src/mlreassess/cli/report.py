"""`mlreassess report`: the paper's tables (Markdown, CSV, LaTeX) and figures (PNG, PDF)."""

from __future__ import annotations

import argparse
from pathlib import Path

from mlreassess.errors import InputError
from mlreassess.results import ResultsLayout


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "report",
        help="paper tables 1-10 and figures 4-8 (+ reported vs reproduced) from RESULTS",
        description="Write the paper's tables to RESULTS/tables/ (.md, .csv, .tex) and figures to "
        "RESULTS/figures/ (.png, .pdf), or only the ITEMs named. Items whose inputs are absent are "
        "skipped with a note. `report table1 --out DIR` needs no inference: it counts labels of the "
        "--data manifests, or of the full val set's ReaL labels when none are given.",
    )
    p.add_argument("items", nargs="*", metavar="ITEM",
                   help="table1 table2 table3 tables4-10 (or table4..table10) reported_vs_reproduced "
                   "figure4 .. figure8 (default: all)")
    p.add_argument("--results", default=None, metavar="RESULTS", help="results folder (metrics.parquet, manifests/)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="write every file into DIR (default: RESULTS/tables and RESULTS/figures)")
    p.add_argument("--data", nargs="+", default=[], metavar="MANIFEST",
                   help="manifests for the label-count items (table1, table2, figure4) instead of RESULTS/manifests")
    p.add_argument("--v1", default=None, metavar="NAME", help="ImageNetV1 dataset to report (default imagenet_v1)")
    p.add_argument("--v2", default=None, metavar="NAME",
                   help="ImageNetV2 dataset to report (default imagenet_v2_matched-frequency, else the first)")
    p.add_argument("--reported", default=None, metavar="CSV", help="paper numbers (default data_manifests/paper_reported.csv)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # Imported here so `mlreassess --help` need not load pandas and matplotlib.
    from mlreassess.report import REPORTED_CSV, Report, resolve_items
    from mlreassess.report.html import PageOptions, page_out_of_date_on_failure, write_results_page
    from mlreassess.report.inputs import read_reported

    items = resolve_items(args.items)
    results = Path(args.results) if args.results else None
    if results is not None and not results.is_dir():
        raise InputError(f"{results}: no such results folder")
    if results is None and args.out is None:
        raise InputError("give --results RESULTS or --out DIR")
    for d in args.data:
        if not Path(d).exists():
            raise InputError(f"{d}: no such manifest")
    reported = Path(args.reported) if args.reported else REPORTED_CSV
    if args.reported and not reported.is_file():
        raise InputError(f"{reported}: no such file (--reported)")
    if "reported_vs_reproduced" in items and reported.is_file():
        read_reported(reported)  # an unreadable file: one line now, before any item is written
    tables_dir = Path(args.out) if args.out else ResultsLayout(results).tables
    figures_dir = Path(args.out) if args.out else ResultsLayout(results).figures
    report = Report(results, tables_dir, figures_dir, [Path(d) for d in args.data], args.v1, args.v2, reported)
    with page_out_of_date_on_failure(results, "report"):
        done = report.run(items)
    print(f"report: {len(done)} of {len(items)} item(s) written to {tables_dir}"
          + (f" and {figures_dir}" if figures_dir != tables_dir else ""))
    if results is not None:  # RESULTS/index.html
        options = PageOptions(v1=args.v1, v2=args.v2, reported_csv=reported)
        with page_out_of_date_on_failure(results, "the results page"):
            write_results_page(results, options)  # logs "results page: PATH (N models)"
    return 0
