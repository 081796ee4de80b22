"""Manifest rows -> preprocessed uint8 batches, decoded in DataLoader workers.

A sample that cannot be read does not stop the batch: its slot holds zeros and its error text,
and the runner leaves it out of the predictions (or stops, with --strict).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import torch
from torch.utils.data import DataLoader, Dataset

from mlreassess.cpus import available_cpus
from mlreassess.datasets.images import open_image
from mlreassess.datasets.manifest import Manifest
from mlreassess.errors import InputError, MlreassessError
from mlreassess.inference.preprocess import Preprocess
from mlreassess.patchml.render import is_whole_png, render_row
from mlreassess.results import PATCHML_IMAGES


def check_readable(manifest: Manifest) -> None:
    """Fail before any work when a manifest cannot say where its pixels come from."""
    if manifest.kind == "patchml":
        return  # rendered from the manifest (or read from DIR/images/*.png): checked per sample
    if manifest.root is None:
        raise InputError(f"{manifest.source}: manifest has no image root in its metadata (rebuild it with `mlreassess data`)")
    paths = manifest.table.column("path")
    if paths.null_count:
        sid = manifest.sample_ids[paths.to_pylist().index(None)]
        raise InputError(f"{manifest.source}: sample {sid!r} has no image path")


def image_opener(manifest: Manifest, source_root: str | os.PathLike | None = None) -> Callable[[int], object]:
    """Row index -> RGB PIL image. PatchML canvases come from DIR/images/<id>.png when it is whole,
    else are rendered from the manifest and its source images (same pixels, SPEC 2)."""
    ids = manifest.sample_ids
    if manifest.kind == "patchml":
        png_dir = manifest.source.parent / PATCHML_IMAGES if manifest.source is not None else None

        def open_canvas(i: int):
            if png_dir is not None:
                png = png_dir / f"{ids[i]}.png"
                if is_whole_png(png):
                    return open_image(png)
            return render_row(manifest, i, source_root=source_root)

        return open_canvas
    root = Path(manifest.root)
    paths = manifest.table.column("path").to_pylist()
    return lambda i: open_image(root / paths[i])


class ManifestImages(Dataset):
    """Item j -> (row index, uint8 tensor (3, H, W), error text or '')."""

    def __init__(self, manifest: Manifest, preprocess: Preprocess, rows: list[int], source_root=None):
        self.manifest = manifest
        self.preprocess = preprocess
        self.rows = list(rows)
        self.source_root = source_root
        self._open = None  # built lazily, in each worker

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, j: int):
        i = self.rows[j]
        if self._open is None:
            self._open = image_opener(self.manifest, self.source_root)
        try:
            return i, self.preprocess(self._open(i)), ""
        except MlreassessError as exc:
            error = str(exc)
        except Exception as exc:  # a decoder or renderer failure must not kill the worker
            error = f"{type(exc).__name__}: {exc}"
        blank = torch.zeros((3, self.preprocess.height, self.preprocess.width), dtype=torch.uint8)
        return i, blank, error


def default_workers() -> int:
    """Decode workers per process: the CPUs this process may use, split among local ranks, max 16."""
    cpus = available_cpus()
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(1, min(16, cpus // max(1, local) - 1))


def make_loader(dataset: ManifestImages, batch_size: int, workers: int, pin_memory: bool) -> DataLoader:
    """In-order batches (sample order is the manifest's), prefetched by `workers` processes."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        pin_memory=pin_memory,
        prefetch_factor=4 if workers > 0 else None,
        persistent_workers=False,
    )
