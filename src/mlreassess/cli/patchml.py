"""`mlreassess patchml`: compose a PatchML set from a boxes file (and render it with --images)."""

from __future__ import annotations

import argparse
import sys

from mlreassess.constants import PATCHML_DEFAULT_CANVAS, PATCHML_DEFAULT_COUNTS, PATCHML_DEFAULT_MIN_BOX_SIDE
from mlreassess.errors import InputError

_DEFAULT_COUNTS = ",".join(map(str, PATCHML_DEFAULT_COUNTS))


def _counts(text: str) -> list[int]:
    try:
        counts = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated integers, e.g. {_DEFAULT_COUNTS}") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: patch counts must be positive integers")
    return counts


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be >= 0")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    # Options default to None and `generate` fills in the constants, so the API and the CLI share them.
    p = subparsers.add_parser(
        "patchml",
        help="compose a seed-controlled PatchML set (manifest; PNGs with --images)",
        description="Compose PatchML canvases (paper Algorithm 1) from a Kaggle-format boxes CSV "
        "(ImageId,PredictionString). Writes OUT/manifest.parquet; with --images also renders "
        "OUT/images/<sample_id>.png. Same seed and inputs -> byte-identical output.",
    )
    p.add_argument("--boxes", required=True, help="boxes CSV, e.g. LOC_val_solution.csv (inclusive pixel boxes)")
    p.add_argument("--seed", required=True, type=_non_negative, help="random seed (the paper's sets: 1-5)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--images",
        help="folder of the source images: checks boxes against them, records it in the manifest, renders PNGs",
    )
    p.add_argument(
        "--no-render",
        action="store_true",
        help="with --images: record the folder but write no PNGs (canvases then render on the fly)",
    )
    p.add_argument(
        "--image-sizes",
        help="ImageId,width,height CSV to check boxes against (default: image_sizes.csv beside --boxes, if any)",
    )
    p.add_argument("--counts", type=_counts, help=f"patch counts k per canvas (default {_DEFAULT_COUNTS})")
    p.add_argument("--canvas", type=_non_negative, help=f"canvas side L in px (default {PATCHML_DEFAULT_CANVAS})")
    p.add_argument(
        "--min-box-side",
        type=_non_negative,
        help=f"drop boxes whose shorter side is below N px (default {PATCHML_DEFAULT_MIN_BOX_SIDE})",
    )
    p.add_argument("--resample", help="resize filter: nearest, bilinear, bicubic (default) or lanczos")
    p.add_argument("--source-pattern", help="source image file name from its id (default '{id}.JPEG')")
    p.add_argument("--name", help="dataset name (default patchml_seed<SEED>)")
    p.add_argument("--workers", type=_non_negative, help="rendering processes (default: all cores)")
    p.add_argument("--skip-bad", action="store_true", help="drop bad box rows / unreadable sources and report how many")
    p.set_defaults(func=run)


def _check_args(args: argparse.Namespace) -> None:
    if args.canvas == 0:
        raise InputError("--canvas 0: the canvas side must be at least 1 px")
    if args.source_pattern is not None:
        try:
            valid = "{id}" in args.source_pattern and args.source_pattern.format(id="x")
        except (KeyError, IndexError, ValueError):
            valid = False
        if not valid:
            raise InputError(f"--source-pattern {args.source_pattern!r}: must contain '{{id}}' and no other field")


def run(args: argparse.Namespace) -> int:
    from mlreassess.patchml import generate  # lazy: keeps `mlreassess --help` fast (numpy, pyarrow, PIL)

    _check_args(args)
    result = generate(
        args.boxes,
        args.seed,
        args.out,
        images=args.images,
        render=not args.no_render,
        image_sizes=args.image_sizes,
        counts=args.counts,
        canvas_size=args.canvas,
        min_box_side=args.min_box_side,
        resample=args.resample,
        source_pattern=args.source_pattern,
        name=args.name,
        workers=args.workers,
        skip_bad=args.skip_bad,
    )
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
            f"rendered {r.rendered:,} PNGs ({r.existing:,} already there, {len(r.failed):,} left out) "
            f"in {r.elapsed_s:.1f} s, {r.canvases_per_s:.1f} canvases/s, {r.sources_decoded:,} source decodes",
            file=out,
        )
    print(f"done in {result.elapsed_s:.1f} s", file=out)
