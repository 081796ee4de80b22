"""The one place that opens dataset images: full decode to RGB, or the size from the header only.

ImageNet val holds a few files that trip naive loaders (CMYK and grayscale JPEGs, a PNG named
`.JPEG`); PIL identifies the format from the bytes, so all of those decode here. A truncated or
corrupt file raises `InputError` naming it: `Image.verify()` misses truncation, so we force a full
decode with `load()` (and never switch on PIL's global LOAD_TRUNCATED_IMAGES).
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
from PIL import Image

from mlreassess.datasets.manifest import Manifest
from mlreassess.datasets.paths import inside_root
from mlreassess.datasets.skip import raise_or_skip
from mlreassess.errors import InputError
from mlreassess.progress import bar

# Suffixes (lower-cased) treated as images when listing dataset folders.
IMAGE_SUFFIXES = frozenset({".jpeg", ".jpg", ".png"})

# What PIL raises for unreadable or truncated image data (SyntaxError: some broken headers).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def is_image_file(name: str | os.PathLike) -> bool:
    return Path(name).suffix.lower() in IMAGE_SUFFIXES


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode == "RGB":
        return im  # already decoded: stays valid after its file is closed
    if im.mode == "P" and "transparency" in im.info:
        # Palette transparency must go through RGBA, else PIL warns and may pick wrong colours.
        im = im.convert("RGBA")
    return im.convert("RGB")


def open_image(path: str | os.PathLike) -> Image.Image:
    """Decode the whole image at `path` and return it as an RGB `PIL.Image` (file closed)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: image file not found")
    try:
        with Image.open(path) as im:
            im.load()
            return _to_rgb(im)
    except Image.UnidentifiedImageError:
        raise InputError(f"{path}: not a readable image (unknown format or corrupt header)") from None
    except _DECODE_ERRORS as exc:
        raise InputError(f"{path}: corrupt or truncated image ({exc})") from None


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) of the image at `path`, read from its header without decoding pixels."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: image file not found")
    try:
        with Image.open(path) as im:
            return im.size
    except Image.UnidentifiedImageError:
        raise InputError(f"{path}: not a readable image (unknown format or corrupt header)") from None
    except _DECODE_ERRORS as exc:
        raise InputError(f"{path}: unreadable image header ({exc})") from None


def verify_manifest_images(manifest: Manifest, skip_bad: bool = False, progress: bool = True) -> Manifest:
    """Decode every image of an image manifest; raise on the first unreadable one unless `skip_bad`.

    Returns the manifest without the unreadable images, which are appended to `meta["skipped"]`.
    Costs a full decode per image (minutes for 50,000), so builders only do it on request.
    """
    root = manifest.root
    if root is None:
        raise InputError(f"manifest {manifest.name!r} has no image root to verify")
    ids = manifest.sample_ids
    bad, keep = [], []
    paths = manifest.table.column("path").to_pylist()
    for i, rel in enumerate(bar(paths, desc=f"decoding {manifest.name}", unit="img", enabled=progress)):
        try:
            open_image(inside_root(root, rel, f"{manifest.source or manifest.name}: sample {ids[i]}"))
        except InputError as exc:
            bad.append((f"sample {ids[i]}", str(exc)))
            continue
        keep.append(i)
    skipped = raise_or_skip(bad, skip_bad)
    meta = {**manifest.meta, "skipped": manifest.meta.get("skipped", []) + skipped, "images_verified": True}
    return Manifest(table=manifest.table.take(pa.array(keep, pa.int64())), meta=meta, source=manifest.source)
