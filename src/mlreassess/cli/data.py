"""`mlreassess data imagenet-val|imagenetv2`: build a dataset manifest (see docs/data.md)."""

from __future__ import annotations

import argparse
import time

from mlreassess.cli.options import add_options, options_from
from mlreassess.options import ImagenetV2Options, ImagenetValOptions


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("data", help="build a dataset manifest (ImageNet val, ImageNetV2)")
    sub = parser.add_subparsers(dest="data_command", metavar="DATASET", required=True)

    v1 = sub.add_parser(
        "imagenet-val",
        help="ILSVRC-2012 val (Kaggle, classic, wnid folders, HF names, HF parquet or WebDataset shards) with ReaL",
        description="Manifest of the ImageNet val images under ROOT (any subset of the 50,000; the layout is "
        "detected from ROOT, shards are read in place), original labels from the layout's ground truth, "
        "ReaL multi-labels by image number.",
    )
    v1.add_argument("--out", required=True, metavar="FILE.parquet", help="manifest to write (atomically)")
    add_options(v1, ImagenetValOptions)
    v1.set_defaults(func=run_imagenet_val)

    v2 = sub.add_parser(
        "imagenetv2",
        help="ImageNetV2 (one variant) with optional multi-labels",
        description="Manifest of ROOT/imagenetv2-<variant>-format-val/<class>/<sha1>.jpeg "
        "(ROOT may be that folder itself).",
    )
    v2.add_argument("--out", required=True, metavar="FILE.parquet", help="manifest to write (atomically)")
    add_options(v2, ImagenetV2Options)
    v2.set_defaults(func=run_imagenetv2)


def _check_out(path: str, kind: str) -> None:
    """`--out` onto another kind of file (a PatchML manifest, predictions): refused before the build."""
    from mlreassess.io import check_replaceable, manifest_kind  # lazy: keeps `mlreassess --help` fast (pyarrow)

    check_replaceable(path, manifest_kind(kind))


def run_imagenet_val(args: argparse.Namespace) -> int:
    from mlreassess.datasets.build import build_v1  # lazy: keeps `mlreassess --help` fast

    _check_out(args.out, "imagenet_v1")
    start = time.perf_counter()
    return _finish(args, build_v1(options_from(ImagenetValOptions, args)), start)


def run_imagenetv2(args: argparse.Namespace) -> int:
    from mlreassess.datasets.build import build_v2  # lazy: keeps `mlreassess --help` fast

    _check_out(args.out, "imagenet_v2")
    start = time.perf_counter()
    return _finish(args, build_v2(options_from(ImagenetV2Options, args)), start)


def _finish(args: argparse.Namespace, manifest, start: float) -> int:
    # lazy: keeps `mlreassess --help` fast (pyarrow)
    from mlreassess.datasets.manifest import write_manifest
    from mlreassess.datasets.summary import summary

    write_manifest(args.out, manifest.table, manifest.meta, elapsed_s=time.perf_counter() - start)
    print(summary(manifest, args.out))
    return 0
