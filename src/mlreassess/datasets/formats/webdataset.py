"""WebDataset tar shards (`imagenet1k-validation-0000.tar`, ...), read in place (nothing is extracted).

A sample is the members sharing a key (the member name up to the first '.' of its file name, as
webdataset's `__key__`): the image (`.jpg`, `.jpeg`, `.png` or `.webp`), its class index as text
(`.cls`, the sorted-wnid order, as timm's `wds` reader and CLIP_benchmark write it) and optionally a
`.json` whose `filename` names the original file (timm's shards). The val image number comes from
the key, else from that `filename`.

Reading is by offset: the scan records each image member's data offset and size, and a worker
reads exactly those bytes with one `os.pread` on its own open file (and the 512-byte member header
before them, to check that the shard still holds that member there). No tar parsing, no streaming
past other samples: the DataLoader asks for samples in manifest order, several workers at once.
Only uncompressed tars can be read this way (webdataset shards usually are).
"""

from __future__ import annotations

import json
import os
import tarfile
from collections import defaultdict
from pathlib import Path

import pyarrow as pa

from mlreassess.datasets.formats.base import (Found, Scan, ShardReader, find_shards, inside, relative_name,
                                              shard_fingerprints, val_name)
from mlreassess.errors import InputError

NAME = "webdataset"
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")  # in order of preference
EXTRA_COLUMNS = (("member", pa.string()), ("offset", pa.int64()), ("size", pa.int64()))
_BLOCK = tarfile.BLOCKSIZE
# Magic bytes of compressed tars, which cannot be read by offset.
_COMPRESSED = {b"\x1f\x8b": "gzip", b"BZh": "bzip2", b"\xfd7zXZ": "xz", b"\x28\xb5\x2f\xfd": "zstd"}


def detect(root: Path) -> list[str]:
    """The validation-split tar shards under `root` (relative paths), [] when there are none."""
    return find_shards(root, ".tar")


def _members(path: Path) -> list[tarfile.TarInfo]:
    """Every member of an uncompressed tar; InputError when it is compressed, damaged or cut short."""
    with open(path, "rb") as f:
        head = f.read(6)
    kind = next((k for magic, k in _COMPRESSED.items() if head.startswith(magic)), None)
    if kind:
        raise InputError(f"{path}: a {kind}-compressed tar; shards are read by offset, so they must be "
                         "uncompressed (decompress it once)")
    try:
        with tarfile.open(path, mode="r:") as tar:
            members = []
            while (member := tar.next()) is not None:
                members.append(member)
            end = tar.offset
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise InputError(f"{path}: not a readable tar file (damaged or cut short?): {exc}") from None
    with open(path, "rb") as f:
        f.seek(end)
        marker = f.read(2 * _BLOCK)
    if marker != bytes(2 * _BLOCK):
        last = f" after member {members[-1].name}" if members else ""
        raise InputError(f"{path}: no end-of-archive marker{last}: the shard is cut short")
    return members


def _key_ext(name: str) -> tuple[str, str]:
    folder, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext.lower()


class _Bad(Exception):
    """A sample of a shard that cannot be used: (where, problem)."""


def _sample(fd: int, path: Path, shard: str, key: str, parts: dict[str, tarfile.TarInfo], size: int) -> Found:
    """The image of one key; `_Bad` when it cannot be one."""
    ext = next((e for e in IMAGE_EXTENSIONS if e in parts), None)
    if ext is None:
        raise _Bad(f"{path}: {key}", f"no image member ({', '.join('.' + e for e in IMAGE_EXTENSIONS)})")
    image = parts[ext]
    if not image.isreg() or image.issparse():
        raise _Bad(f"{path}: {image.name}", "a link, sparse or special member, not the image's bytes in one piece")
    if image.offset_data + image.size > size:
        raise _Bad(f"{path}: {image.name}", f"cut short ({image.size} bytes from offset {image.offset_data}, "
                   f"the shard has {size})")
    if "cls" not in parts:
        raise _Bad(f"{path}: {key}", "no .cls member (the sample's class index)")
    text = os.pread(fd, parts["cls"].size, parts["cls"].offset_data).decode("utf-8", "replace").strip()
    if not text.isdigit() or int(text) >= 1000:
        raise _Bad(f"{path}: {parts['cls'].name}", f"{text[:20]!r} is not a class index 0..999")
    vn = val_name(key.rpartition("/")[2])
    if vn is None and "json" in parts:
        vn = val_name(_json_filename(fd, parts["json"]))
    return Found(vn.stem if vn else key, vn.number if vn else None, f"{path}: {image.name}", int(text),
                 {"path": shard, "member": image.name, "offset": image.offset_data, "size": image.size})


def _json_filename(fd: int, member: tarfile.TarInfo) -> str | None:
    """The `filename` a sample's .json gives (timm's shards), None if none."""
    try:
        meta = json.loads(os.pread(fd, member.size, member.offset_data))
    except ValueError:
        return None
    name = meta.get("filename") if isinstance(meta, dict) else None
    return Path(name).name if isinstance(name, str) else None


def _group(path: Path, members: list[tarfile.TarInfo]) -> tuple[dict[str, dict[str, tarfile.TarInfo]], list]:
    """Members by key and extension (in member order), and the members that cannot be part of a sample."""
    keys: dict[str, dict[str, tarfile.TarInfo]] = defaultdict(dict)
    bad: list[tuple[str, str]] = []
    for member in members:
        if member.isdir():
            continue
        try:
            relative_name(member.name, str(path))
        except InputError as exc:
            bad.append((f"{path}: member", str(exc).removeprefix(f"{path}: ")))
            continue
        key, ext = _key_ext(member.name)
        if ext in keys[key]:
            bad.append((f"{path}: {member.name}", f"a second .{ext} member for key {key}"))
            continue
        keys[key][ext] = member
    return keys, bad


def _scan_shard(root: Path, shard: str) -> tuple[list[Found], list[tuple[str, str]]]:
    path = inside(root, shard, str(root))
    keys, bad = _group(path, _members(path))
    found = []
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        for key, parts in keys.items():
            try:
                found.append(_sample(fd, path, shard, key, parts, size))
            except _Bad as exc:
                bad.append(exc.args)
    finally:
        os.close(fd)
    return found, bad


def scan(root: Path, shards: list[str]) -> Scan:
    """Every sample of the shards: its name, class and where its image bytes lie."""
    found, bad = [], []
    for shard in shards:
        f, b = _scan_shard(root, shard)
        found += f
        bad += b
    meta = {"format": NAME, "shards": shard_fingerprints(root, shards)}
    return Scan(found, bad, "the shards' .cls members (sorted-wnid order)", meta, EXTRA_COLUMNS)


class Reader(ShardReader):
    """Row i -> its image's bytes: one pread at the offset the manifest recorded (one open file per shard)."""

    columns = EXTRA_COLUMNS

    def __init__(self, root: Path, table: pa.Table, where: str):
        super().__init__(root, table, where)
        self.offsets = table.column("offset").to_pylist()
        self.sizes = table.column("size").to_pylist()
        self._fds: dict[str, int] = {}

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_fds": {}}  # each worker opens its own files

    def __del__(self) -> None:
        for fd in getattr(self, "_fds", {}).values():  # absent when __init__ refused the manifest
            os.close(fd)

    def where(self, i: int) -> str:
        return f"{self.root / str(self.shards[i])}: {self.members[i]}"

    def _fd(self, shard: str) -> int:
        if shard not in self._fds:
            path = inside(self.root, shard, self.manifest)
            try:
                self._fds[shard] = os.open(path, os.O_RDONLY)
            except OSError as exc:
                raise InputError(f"{path}: cannot open the shard ({exc.strerror})") from None
        return self._fds[shard]

    def read(self, i: int) -> bytes:
        offset, size = self.offsets[i], self.sizes[i]
        relative_name(self.members[i], self.manifest)
        if offset is None or size is None or offset < _BLOCK or size < 0:
            raise InputError(f"{self.where(i)}: offset {offset} and size {size} cannot be a member's bytes")
        data = os.pread(self._fd(self.shards[i]), _BLOCK + size, offset - _BLOCK)
        try:
            header = tarfile.TarInfo.frombuf(data[:_BLOCK], "utf-8", "surrogateescape")
        except tarfile.HeaderError:
            header = None
        stale = header is None or header.size != size or (len(self.members[i]) < 100 and header.name != self.members[i])
        if stale or len(data) != _BLOCK + size:
            raise InputError(f"{self.where(i)}: not at offset {offset} of the shard any more; it changed since the "
                             "manifest was built: rebuild it")
        return data[_BLOCK:]
