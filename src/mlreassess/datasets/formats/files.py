"""Image files under a folder (Kaggle, classic, ImageFolder, HF-style names, ImageNetV2): the
manifest's `path` is the file, relative to `root`. A manifest without a `format` key is this one."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from mlreassess.datasets.formats.base import inside
from mlreassess.datasets.images import open_image
from mlreassess.errors import InputError

NAME = "files"


class Reader:
    """Row i -> its image file's bytes or pixels."""

    def __init__(self, root: Path, table, where: str):
        self.root = Path(root)
        self.paths = table.column("path").to_pylist()
        self.manifest = where

    def path(self, i: int) -> Path:
        if self.paths[i] is None:
            raise InputError(f"{self.manifest}: row {i} has no image path")
        return inside(self.root, self.paths[i], self.manifest)

    def where(self, i: int) -> str:
        return str(self.root / str(self.paths[i]))

    def read(self, i: int) -> bytes:
        path = self.path(i)
        try:
            return path.read_bytes()
        except OSError:
            raise InputError(f"{path}: image file not found") from None

    def open(self, i: int) -> Image.Image:
        return open_image(self.path(i))
