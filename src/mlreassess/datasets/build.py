"""A V1 or V2 manifest from the schema's options: what `mlreassess data` and `mlreassess run` build."""

from __future__ import annotations

from mlreassess.constants import DEFAULT_V2_LABEL_SET
from mlreassess.datasets.imagenet import build_imagenet_val
from mlreassess.datasets.imagenetv2 import build_imagenetv2
from mlreassess.datasets.manifest import Manifest
from mlreassess.datasets.samples import verify_manifest_images
from mlreassess.options import ImagenetV2Options, ImagenetValOptions


def build_v1(options: ImagenetValOptions) -> Manifest:
    manifest = build_imagenet_val(options.root, real=options.real, name=options.dataset, skip_bad=options.skip_bad,
                                  label_set=options.label_set, label_file=options.label_file,
                                  min_agreement=options.min_agreement, input_format=options.format,
                                  no_real=options.no_real)
    return _verified(manifest, options)


def build_v2(options: ImagenetV2Options) -> Manifest:
    manifest = build_imagenetv2(options.root, options.variant, labels_file=options.label_file or options.labels,
                                name=options.dataset, skip_bad=options.skip_bad, keep_original=options.keep_original,
                                label_set=options.label_set or DEFAULT_V2_LABEL_SET,
                                min_agreement=options.min_agreement)
    return _verified(manifest, options)


def _verified(manifest: Manifest, options: ImagenetValOptions | ImagenetV2Options) -> Manifest:
    """With --verify-images: every image decoded now, unreadable ones bad (dropped with --skip-bad)."""
    if options.verify_images:
        return verify_manifest_images(manifest, skip_bad=options.skip_bad)
    return manifest
