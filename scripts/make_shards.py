#!/usr/bin/env python3
"""Write ImageNet val images as Hugging Face-style parquet shards or WebDataset tar shards.

  make_shards.py SOURCE OUT --format hf-parquet [--shards N] [--row-group 100] [--shuffle SEED]
  make_shards.py SOURCE OUT --format webdataset [--shards N] [--shuffle SEED]

SOURCE: any copy `mlreassess data imagenet-val --root` reads (a JPEG folder: Kaggle, classic, wnid
folders, ...), or a V1 manifest (.parquet). The images' bytes are copied unchanged (never re-encoded).

hf-parquet: OUT/data/validation-00000-of-0000N.parquet, as the `imagenet-1k` dataset on the Hugging Face
  hub holds it: an `image` struct (`bytes`, `path` = ILSVRC2012_val_00000001_n01751748.JPEG), an int64
  `label` (sorted-wnid order), the `huggingface` schema metadata `datasets` writes, whose ClassLabel
  names are Hugging Face's own `IMAGENET2012_CLASSES` (n03126707 is 'crane2'; mlreassess ships the list),
  snappy, --row-group images per row group (`datasets` writes 100 for image datasets).
webdataset: OUT/imagenet1k-validation-0000.tar ..., as timm's `imagenet-1k-wds`: per key
  (ILSVRC2012_val_00000001) a `.jpg` (`.png` for the PNG bytes ImageNet val holds under a .JPEG name),
  `.cls` (class index as text) and `.json` ({"filename", "label", "class_name"}); OUT/_info.json lists
  the split's shards and their lengths (timm's `_info.json`). Members are written with mtime 0, so the
  same input gives byte-identical shards.

--shuffle SEED writes the images in a random order (a copy whose rows are not in val-index order).
Then: `mlreassess data imagenet-val --root OUT --out MANIFEST.parquet`.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import tarfile
from pathlib import Path

from mlreassess.datasets import labels as lab
from mlreassess.datasets import samples
from mlreassess.datasets.formats import parquet
from mlreassess.datasets.imagenet import build_imagenet_val
from mlreassess.datasets.manifest import Manifest, read_manifest
from mlreassess.io import atomic_path

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def load(source: Path) -> Manifest:
    if source.is_file():
        return read_manifest(source)
    return build_imagenet_val(source, no_real=True)  # ReaL is not needed to copy the images


def _split(items: list[int], shards: int) -> list[list[int]]:
    per = -(-len(items) // shards)
    return [items[k : k + per] for k in range(0, len(items), per)]


def write_parquet(manifest: Manifest, order: list[int], out: Path, shards: int, row_group: int) -> list[Path]:
    read = samples.reader(manifest)
    ids, labels = manifest.sample_ids, manifest.table.column("label").to_pylist()
    parts = _split(order, shards)
    written = []
    for k, part in enumerate(parts):
        path = out / "data" / f"validation-{k:05d}-of-{len(parts):05d}.parquet"
        rows = [(read.read(i), f"{ids[i]}_{lab.class_wnid(labels[i])}.JPEG", labels[i]) for i in part]
        parquet.write_shard(path, rows, list(lab.hf_class_names()), row_group)
        written.append(path)
    return written


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    tar.addfile(info, io.BytesIO(data))


def write_webdataset(manifest: Manifest, order: list[int], out: Path, shards: int) -> list[Path]:
    read = samples.reader(manifest)
    ids, labels = manifest.sample_ids, manifest.table.column("label").to_pylist()
    parts = _split(order, shards)
    written = []
    for k, part in enumerate(parts):
        path = out / f"imagenet1k-validation-{k:04d}.tar"
        with atomic_path(path) as tmp, tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
            for i in part:
                data = read.read(i)
                _add(tar, f"{ids[i]}.{'png' if data.startswith(PNG_MAGIC) else 'jpg'}", data)
                _add(tar, f"{ids[i]}.cls", str(labels[i]).encode())
                meta = {"filename": f"{ids[i]}.JPEG", "label": labels[i], "class_name": lab.class_name(labels[i])}
                _add(tar, f"{ids[i]}.json", json.dumps(meta).encode())
        written.append(path)
    info = {"name": "imagenet-1k", "splits": {"validation": {
        "name": "validation", "num_samples": len(order), "filenames": [p.name for p in written],
        "shard_lengths": [len(p) for p in parts]}}}
    with atomic_path(out / "_info.json") as tmp:
        tmp.write_text(json.dumps(info, indent=2) + "\n")
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="an ImageNet val copy (folder) or a V1 manifest (.parquet)")
    parser.add_argument("out", type=Path, help="output folder")
    parser.add_argument("--format", choices=("hf-parquet", "webdataset"), required=True)
    parser.add_argument("--shards", type=int, default=4, help="number of shards (default 4)")
    parser.add_argument("--row-group", type=int, default=100, help="hf-parquet: images per row group (default 100)")
    parser.add_argument("--shuffle", type=int, default=None, metavar="SEED", help="write the images in a random order")
    args = parser.parse_args()
    manifest = load(args.source)
    order = list(range(len(manifest)))
    if args.shuffle is not None:
        random.Random(args.shuffle).shuffle(order)
    shards = max(1, min(args.shards, len(order)))
    if args.format == "hf-parquet":
        written = write_parquet(manifest, order, args.out, shards, args.row_group)
    else:
        written = write_webdataset(manifest, order, args.out, shards)
    print(f"{len(order)} images in {len(written)} {args.format} shards under {args.out}")


if __name__ == "__main__":
    main()
