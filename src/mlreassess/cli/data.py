"""`mlreassess data imagenet-val|imagenetv2`: build a dataset manifest (see docs/data.md)."""

from __future__ import annotations

import argparse
import time


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("data", help="build a dataset manifest (ImageNet val, ImageNetV2)")
    sub = parser.add_subparsers(dest="data_command", metavar="DATASET", required=True)

    v1 = sub.add_parser(
        "imagenet-val",
        help="ILSVRC-2012 val (Kaggle or classic layout) with ReaL multi-labels",
        description="Manifest of the ImageNet val images under ROOT (any subset of the 50,000), "
        "original labels from the layout's ground truth, ReaL multi-labels by image number.",
    )
    v1.add_argument("--root", required=True, help="Kaggle root (with ILSVRC/ and LOC_val_solution.csv) or classic val root")
    v1.add_argument("--real", metavar="FILE", help="ReaL labels JSON (default: the copy timm ships)")
    _common(v1, default_name="imagenet_v1")
    v1.set_defaults(func=run_imagenet_val)

    v2 = sub.add_parser(
        "imagenetv2",
        help="ImageNetV2 (one variant) with optional multi-labels",
        description="Manifest of ROOT/imagenetv2-<variant>-format-val/<class>/<sha1>.jpeg "
        "(ROOT may be that folder itself).",
    )
    v2.add_argument("--root", required=True, help="folder holding imagenetv2-<variant>-format-val/, or that folder")
    # Checked by the builder (imagenetv2.VARIANTS), which --help must not import.
    v2.add_argument("--variant", required=True, help="matched-frequency, threshold-0.7 or top-images")
    v2.add_argument("--labels", metavar="FILE", help="multi-labels: JSON {key: [labels]} or CSV 'path,labels' (default: [label])")
    v2.add_argument(
        "--keep-original",
        action="store_true",
        help="images missing from --labels get labels=[their class folder] instead of an error",
    )
    _common(v2, default_name="imagenet_v2_<variant>")
    v2.set_defaults(func=run_imagenetv2)


def _common(parser: argparse.ArgumentParser, default_name: str) -> None:
    parser.add_argument("--out", required=True, metavar="FILE.parquet", help="manifest to write (atomically)")
    parser.add_argument("--name", help=f"dataset name used in output paths (default: {default_name})")
    parser.add_argument(
        "--skip-bad", action="store_true", help="drop bad samples (no ground truth, unreadable) instead of failing"
    )
    parser.add_argument(
        "--verify-images", action="store_true", help="decode every image now and treat unreadable ones as bad (slow)"
    )


def run_imagenet_val(args: argparse.Namespace) -> int:
    from mlreassess.datasets.imagenet import build_imagenet_val  # lazy: keeps `mlreassess --help` fast

    start = time.perf_counter()
    manifest = build_imagenet_val(args.root, real=args.real, name=args.name, skip_bad=args.skip_bad)
    return _finish(args, manifest, start)


def run_imagenetv2(args: argparse.Namespace) -> int:
    from mlreassess.datasets.imagenetv2 import build_imagenetv2  # lazy: keeps `mlreassess --help` fast

    start = time.perf_counter()
    manifest = build_imagenetv2(
        args.root, args.variant, labels_file=args.labels, name=args.name, skip_bad=args.skip_bad,
        keep_original=args.keep_original,
    )
    return _finish(args, manifest, start)


def _finish(args: argparse.Namespace, manifest, start: float) -> int:
    # lazy: keeps `mlreassess --help` fast (pyarrow)
    from mlreassess.datasets.images import verify_manifest_images
    from mlreassess.datasets.manifest import write_manifest
    from mlreassess.datasets.summary import summary

    if args.verify_images:
        manifest = verify_manifest_images(manifest, skip_bad=args.skip_bad)
    write_manifest(args.out, manifest.table, manifest.meta, elapsed_s=time.perf_counter() - start)
    print(summary(manifest, args.out))
    return 0


def summary(manifest, out: str) -> str:
    """Re-export of `mlreassess.datasets.summary.summary` for `pipeline` until it imports that."""
    from mlreassess.datasets.summary import summary as datasets_summary  # lazy: keeps `--help` fast

    return datasets_summary(manifest, out)
