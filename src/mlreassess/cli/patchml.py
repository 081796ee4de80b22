"""`mlreassess patchml`: compose a PatchML set from a boxes file (and render it with --images)."""

from __future__ import annotations

import argparse
import sys

from mlreassess.cli.options import add_options, options_from
from mlreassess.options import PatchMLOptions


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "patchml",
        help="compose a seed-controlled PatchML set (manifest; PNGs with --images)",
        description="Compose PatchML canvases (paper Algorithm 1) from a Kaggle-format boxes CSV "
        "(ImageId,PredictionString). Writes OUT/manifest.parquet; with --images also renders "
        "OUT/images/<sample_id>.png. Same seed and inputs -> byte-identical output.",
    )
    p.add_argument("--out", required=True, help="output folder")
    add_options(p, PatchMLOptions)
    p.add_argument(
        "--no-render",
        action="store_true",
        help="with --images: record the folder but write no PNGs (canvases then render on the fly)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mlreassess.patchml import generate_from  # lazy: keeps `mlreassess --help` fast (numpy, pyarrow, PIL)

    result = generate_from(options_from(PatchMLOptions, args), args.out, render=not args.no_render)
    _print_result(result)
    return 0


def _print_result(result) -> None:
    """The summary on stdout: pool, bounds, manifest, label-count table, rendering, time."""
    from mlreassess.datasets.manifest import label_count_distribution  # lazy: keeps `--help` fast

    meta = result.manifest.meta
    table = result.manifest.table
    out = sys.stdout
    print(
        f"pool: {result.boxes_read:,} boxes -> {result.pool_size:,} patches "
        f"(shorter side >= {meta['min_box_side']} px)",
        file=out,
    )
    if result.rows_dropped:
        print(f"skipped {result.rows_dropped:,} bad rows (--skip-bad); listed in the manifest's bad_rows", file=out)
    bounds = f"checked against {result.bounds_source}" if result.bounds_source else (
        "UNCHECKED (no --images, --image-sizes or image_sizes.csv beside the boxes file)"
    )
    print(f"box bounds: {bounds}", file=out)
    print(f"manifest: {result.manifest_path} ({len(table):,} canvases, seed {meta['seed']}): {result.status}", file=out)
    print("label count -> images", file=out)
    dist = label_count_distribution(table)
    for count, n in dist.items():
        print(f"  {count:>3} {n:>9,}", file=out)
    print(f"  all {sum(dist.values()):>9,}", file=out)
    r = result.render
    if r is not None:
        print(
            f"rendered {r.rendered:,} PNGs ({r.existing:,} already there, "
            + (f"{r.stale:,} there rendered from other rows: redone, " if r.stale else "")
            + f"{len(r.failed):,} left out) "
            f"in {r.elapsed_s:.1f} s, {r.canvases_per_s:.1f} canvases/s, {r.sources_decoded:,} source decodes",
            file=out,
        )
    print(f"done in {result.elapsed_s:.1f} s", file=out)
