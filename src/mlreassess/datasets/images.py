"""The one place that decodes dataset images: full decode to RGB, or the size from the header only,
from a file (`open_image`, `image_size`) or from bytes read out of a shard (`decode_image`,
`encoded_size`; `datasets.formats` says where a sample's bytes are).

ImageNet val holds a few files that trip naive loaders (CMYK and grayscale JPEGs, a PNG named
`.JPEG`); PIL identifies the format from the bytes, so all of those decode here. A truncated or
corrupt file raises `InputError` naming it: `Image.verify()` misses truncation, so we force a full
decode with `load()` (and never switch on PIL's global LOAD_TRUNCATED_IMAGES).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

from PIL import Image

from mlreassess.errors import InputError

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


def _decoded(source, where: str) -> Image.Image:
    try:
        with Image.open(source) as im:
            im.load()
            return _to_rgb(im)
    except Image.UnidentifiedImageError:
        raise InputError(f"{where}: not a readable image (unknown format or corrupt header)") from None
    except _DECODE_ERRORS as exc:
        raise InputError(f"{where}: corrupt or truncated image ({exc})") from None


def _header_size(source, where: str) -> tuple[int, int]:
    try:
        with Image.open(source) as im:
            return im.size
    except Image.UnidentifiedImageError:
        raise InputError(f"{where}: not a readable image (unknown format or corrupt header)") from None
    except _DECODE_ERRORS as exc:
        raise InputError(f"{where}: unreadable image header ({exc})") from None


def open_image(path: str | os.PathLike) -> Image.Image:
    """Decode the whole image at `path` and return it as an RGB `PIL.Image` (file closed)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: image file not found")
    return _decoded(path, str(path))


def decode_image(data: bytes, where: str) -> Image.Image:
    """Decode encoded image bytes (a sample read from a shard) to RGB; errors name `where`."""
    return _decoded(io.BytesIO(data), where)


def encoded_size(data: bytes, where: str) -> tuple[int, int]:
    """(width, height) of encoded image bytes, from the header only."""
    return _header_size(io.BytesIO(data), where)


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) of the image at `path`, read from its header without decoding pixels."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: image file not found")
    return _header_size(path, str(path))
