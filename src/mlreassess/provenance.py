"""What made an output, and what changed since: the one staleness mechanism of every stage.

An output records its *recipe*: the fingerprints of its input files and every option that changes
the result. A rerun computes the recipe it would use now; `changed(old, new)` says, in one short
phrase, the first thing that differs ("weights random -> pypi", "real.json changed"), or None when
the output is up to date. Inputs are fingerprinted by content (sha256), so a file edited in place
is noticed even if its size and time are restored.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any

# Content hashes by (path, size, mtime_ns, ctime_ns, inode): a big weights file is read once per
# process, and any write or time change since (which sets ctime) reads it again.
_hashes: dict[tuple[str, int, int, int, int], str] = {}


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes."""
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    if key not in _hashes:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        _hashes[key] = digest.hexdigest()
    return _hashes[key]


def fingerprint(path: str | os.PathLike | None) -> str | None:
    """A file's content hash; None for no file (an option left unset)."""
    return None if path is None else file_sha256(path)


def canonical(value: Any) -> Any:
    """`value` as plain JSON types (tuples -> lists, paths -> str), so recipes compare equal."""
    return json.loads(json.dumps(value, default=str, sort_keys=True))


def _short(value: Any, limit: int = 40) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def changed(old: dict[str, Any] | None, new: dict[str, Any], first: tuple[str, ...] = ()) -> str | None:
    """The first difference between a recorded recipe and the current one, in a few words; the keys
    in `first` are compared first (a new weights source also changes what follows from it)."""
    if not old:
        return "no record of the inputs and options that made it (an older mlreassess?)"
    return _first_difference(old, canonical(new), first)


def _first_difference(old: dict[str, Any], new: dict[str, Any], first: tuple[str, ...] = (), where: str = "") -> str | None:
    for key in [*first, *sorted((set(old) | set(new)) - set(first))]:
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):  # say which entry, not two cut-off blobs
            return _first_difference(a, b, where=f"{where}{key}.")
        name = f"{where}{key}"
        if key.endswith("sha256") or key.startswith("input:"):
            return f"{name.removesuffix('_sha256').removeprefix('input:')} changed"
        if a is None or b is None:
            return f"{name} {'added' if a is None else 'removed'}" if where else f"{name} {_short(a)} -> {_short(b)}"
        return f"{name} {_short(a)} -> {_short(b)}"
    return None


def folder_fingerprint(folder: str | os.PathLike) -> str:
    """sha256 of a folder's file listing (relative paths and sizes): images added, removed or
    replaced by another size show; reading 50,000 images' bytes for every check would not pay."""
    folder = Path(folder)
    digest = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath, name)
            try:
                size = path.stat().st_size
            except OSError:  # a dangling link: its name still counts
                size = -1
            digest.update(f"{path.relative_to(folder)}\0{size}\n".encode())
    return digest.hexdigest()


def inputs_fingerprint(paths: list[str | os.PathLike | None]) -> dict[str, str]:
    """{path: fingerprint} of the given files and folders (None and missing paths left out)."""
    out = {}
    for p in paths:
        if p is None or not Path(p).exists():
            continue
        out[str(p)] = folder_fingerprint(p) if Path(p).is_dir() else file_sha256(p)
    return out


def inputs_changed(recorded: dict[str, str]) -> str | None:
    """Which recorded input file differs now (None: all the same)."""
    for path, old in sorted(recorded.items()):
        now = inputs_fingerprint([path]).get(path)
        if now != old:
            return f"{path} {'is gone' if now is None else 'changed'}"
    return None


# ---- what a derived file was derived from ----------------------------------------------------------
# A derived file (metrics.parquet, a report table, the results page) records the files it was made
# from: {path relative to its folder: [size, mtime_ns, ctime_ns, sha256]}. A reader compares that with
# the files there now: same size, mtime and ctime -> the same file, not read (the kernel sets ctime on
# every write, rename or time change, so no edit can restore it); otherwise the content decides, so a
# copied or moved folder (new times, same bytes) is still current and a file edited in place is not.


def derived_from(paths: list[str | os.PathLike], root: str | os.PathLike) -> dict[str, list]:
    """{path relative to `root`: [size, mtime_ns, ctime_ns, sha256]} of the files `paths` (all under
    `root`: relative keys keep the record valid in a copied folder)."""
    root = Path(root)
    out = {}
    for p in sorted(Path(p) for p in paths):
        st = p.stat()
        out[p.relative_to(root).as_posix()] = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, file_sha256(p)]
    return out


def _same_file(path: Path, record: Any) -> bool:
    if not (isinstance(record, list) and len(record) == 4):
        return False
    try:
        st = path.stat()
    except OSError:
        return False
    if not stat.S_ISREG(st.st_mode):  # a FIFO or a device is never one of the files recorded
        return False
    if [st.st_size, st.st_mtime_ns, st.st_ctime_ns] == record[:3]:
        return True
    return st.st_size == record[0] and file_sha256(path) == record[3]


def derived_changed(recorded: Any, paths: list[str | os.PathLike], root: str | os.PathLike) -> str | None:
    """How the files a derived file was made from (`recorded`, from `derived_from`) differ from
    `paths`, the files it would be made from now: the first one added, gone or changed, in a few
    words; None when they are the same files."""
    if not isinstance(recorded, dict):
        return "no record of the files it was made from (an older mlreassess?)"
    root = Path(root)
    now = {Path(p).relative_to(root).as_posix(): Path(p) for p in paths}
    for rel in sorted(set(recorded) | set(now)):
        if rel not in now:
            return f"{rel} is gone"
        if rel not in recorded:
            return f"{rel} is new"
        if not _same_file(now[rel], recorded[rel]):
            return f"{rel} changed"
    return None


def derived_unchanged(recorded: Any, root: str | os.PathLike) -> str | None:
    """Which file of a `derived_from` record differs now (gone or other content), in a few words;
    None when every one is as recorded. A key that is not a file of `root` (absolute, with `..`: a
    forged record) makes it not current, and is never opened."""
    if not isinstance(recorded, dict):
        return "no record of the files it was made from"
    for key, record in sorted(recorded.items()):
        if not isinstance(key, str) or os.path.isabs(key) or ".." in Path(key).parts:
            return f"its record names {key!r}, not a file of this folder"
        if not _same_file(Path(root) / key, record):
            return f"{key} {'is gone' if not (Path(root) / key).exists() else 'changed'}"
    return None
