"""`mlreassess evaluate`: predictions + manifests -> RESULTS/metrics.parquet."""

from __future__ import annotations

import argparse
import sys
import time

from mlreassess.cli.options import add_options, options_from
from mlreassess.options import EvaluateOptions


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="top-1, top-5, ReaL, subgroup accuracy, ASMA, recall@g, ranking metrics and prediction sets with "
        "bootstrap CIs -> RESULTS/metrics.parquet",
        description="Score every RESULTS/predictions/<dataset>/<model>.parquet against "
        "RESULTS/manifests/<dataset>.parquet (labels looked up by sample_id) and write "
        "RESULTS/metrics.parquet (long format, see docs/outputs.md). ASMA averages the design label "
        "counts (V1/V2 1..5, PatchML the set's patch counts) with at least --min-group-n samples; "
        "docs/metrics.md gives every convention. Reruns skip the work when no input file and no "
        "parameter changed.",
    )
    p.add_argument("--results", required=True, metavar="RESULTS", help="results folder written by `mlreassess infer`")
    add_options(p, EvaluateOptions)
    p.add_argument("--out", default=None, metavar="FILE", help="output file (default RESULTS/metrics.parquet)")
    p.add_argument("--force", action="store_true", help="recompute even if the inputs did not change")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # imported here so that `mlreassess --help` does not load numpy, pandas and pyarrow
    from mlreassess.metrics.evaluate import evaluate_results, scoring_workers, set_params
    from mlreassess.report.html import page_out_of_date_on_failure

    start = time.perf_counter()
    opts = options_from(EvaluateOptions, args)
    with page_out_of_date_on_failure(args.results if args.out is None else None, "evaluate"):
        out, summary = evaluate_results(args.results, opts.bootstrap, opts.ci, opts.seed, args.force, args.out,
                                        min_group_n=opts.min_group_n, sets=set_params(opts),
                                        workers=scoring_workers(opts))
    if summary is None:
        print(f"{out}: up to date (inputs unchanged; --force to recompute)", file=sys.stderr)
        return 0
    for name, info in summary["datasets"].items():
        print(f"{name}: {_dataset_line(info)}", file=sys.stderr)
    print(f"wrote {out} ({summary['rows']} rows) in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return 0


def _dataset_line(info: dict) -> str:
    """'N model(s)' plus the ASMA groups, seeds and missing samples of one dataset's summary."""
    missing = info.get("missing_samples") or {}
    extra = f", samples missing from predictions: {sum(missing.values())} over {len(missing)} model(s)" if missing else ""
    groups = f", ASMA over g={info['asma_range_present']}" if "asma_range_present" in info else ""
    left_out = []
    if info.get("below_min_group_n"):
        left_out.append(f"g={_keys(info['below_min_group_n'])}: under {info['min_group_n']} samples")
    if info.get("outside_design"):
        left_out.append(f"g={_keys(info['outside_design'])}: not a design count")
    if left_out:
        groups += f" (reported, not averaged: {'; '.join(left_out)})"
    seeds = f", mean of {len(info['seeds'])} seed(s)" if "seeds" in info else ""
    return f"{len(info['models'])} model(s){groups}{seeds}{extra}"


def _keys(groups: dict) -> str:
    return ",".join(groups)
