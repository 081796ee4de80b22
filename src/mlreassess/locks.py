"""One writer per output folder: a second `patchml`, `infer` or `run` into a folder in use stops at once.

The lock is an advisory `flock` on `FOLDER/.mlreassess.lock`, so the kernel releases it when its
process ends, however it ends (no stale locks after kill -9). The file records who holds it, for
the message the second writer prints. Locks are re-entrant within one process (`run` holds its
folder while its `infer` step takes it again); torchrun ranks of one job let rank 0 hold it.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from mlreassess.errors import InputError

LOCK_NAME = ".mlreassess.lock"

# Folders this process holds (resolved path -> depth): bookkeeping of this module only.
_held: dict[Path, int] = {}


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return "another mlreassess process"
    return f"mlreassess (pid {info.get('pid', '?')}, since {info.get('since', '?')}: {info.get('command', '?')})"


@contextmanager
def folder_lock(folder: str | os.PathLike) -> Iterator[None]:
    """Hold `folder` for writing, or raise InputError at once if another process holds it."""
    folder = Path(folder).resolve()
    if folder in _held:
        _held[folder] += 1
        try:
            yield
        finally:
            _held[folder] -= 1
        return
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    try:  # never through a link: the lock's record would be written wherever it points
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666)
    except OSError as exc:
        why = "a symbolic link" if path.is_symlink() else (exc.strerror or str(exc))
        raise InputError(f"{path}: cannot take the folder's lock ({why})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InputError(f"{folder}: in use by {_holder(path)}; wait for it to finish or write elsewhere") from None
        _record(fd)
        _held[folder] = 1
        try:
            yield
        finally:
            del _held[folder]
    finally:
        os.close(fd)  # closing releases the flock


def _record(fd: int) -> None:
    since = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    info = {"pid": os.getpid(), "since": since, "command": " ".join(sys.argv)[:300]}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(info).encode(), 0)
