"""Running under torchrun: which rank does what, and the few messages ranks exchange.

Ranks only exchange control messages and (when one unit's samples are split) small prediction
arrays, so the process group is always gloo on the CPU, whatever device the models run on.
"""

from __future__ import annotations

import datetime
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence, TypeVar

import torch
import torch.distributed as td

from mlreassess.errors import InputError

T = TypeVar("T")


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owns_group: bool = False  # we created the process group (a caller's group is left alone)

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.active:
            td.barrier()

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's `obj`, on every rank."""
        if not self.active:
            return obj
        box = [obj]
        td.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj: Any) -> list[Any] | None:
        """Every rank's `obj`, in rank order, on rank 0 (None elsewhere)."""
        if not self.active:
            return [obj]
        out: list[Any] | None = [None] * self.world if self.is_main else None
        td.gather_object(obj, out, dst=0)
        return out

    def all_gather(self, obj: Any) -> list[Any]:
        if not self.active:
            return [obj]
        out: list[Any] = [None] * self.world
        td.all_gather_object(out, obj)
        return out


def init_from_env() -> Dist:
    """A `Dist` for this process: torchrun's RANK/WORLD_SIZE/LOCAL_RANK, or a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    owns = not td.is_initialized()
    if owns:
        # Ranks wait for each other across whole stages (rank 0 building PatchML sets, a long
        # pass on another rank): gloo's default 30-minute timeout would kill a healthy job.
        timeout_h = float(os.environ.get("MLREASSESS_DIST_TIMEOUT_HOURS", "48"))
        td.init_process_group(backend="gloo", timeout=datetime.timedelta(hours=timeout_h))
    return Dist(rank=td.get_rank(), world=td.get_world_size(),
                local_rank=int(os.environ.get("LOCAL_RANK", "0")), owns_group=owns)


def shutdown(dist: Dist) -> None:
    if dist.owns_group:
        if td.is_initialized():
            td.destroy_process_group()


def block(items: Sequence[T], rank: int, world: int) -> list[T]:
    """Rank `rank`'s contiguous share of `items` (sizes differ by at most one; order kept)."""
    n = len(items)
    return list(items[rank * n // world : (rank + 1) * n // world])


def resolve_device(device: str | None) -> str:
    """The device asked for, or (None) cuda if available, else cpu."""
    if device is not None:
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def check_available(device: str) -> str:
    """`device`, or a one-line error when it is a CUDA device and none is visible."""
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {device}: no CUDA device is available here (use --device cpu)")
    return device


def device_for(device: str, dist: Dist) -> str:
    """'cuda' -> this rank's GPU ('cuda:<local rank>') under torchrun; anything else unchanged."""
    if device == "cuda" and dist.active:
        return f"cuda:{dist.local_rank}"
    return device


def is_main_process() -> bool:
    """Rank 0 of a torchrun job, or a plain process (usable after the process group is gone)."""
    return int(os.environ.get("RANK", "0")) == 0


class Claims:
    """Work items handed out first come, first served: a rank owns item i if it creates the file
    `<folder>/<i>` first (O_EXCL is atomic, also on NFS), so fast ranks take more items and no
    rank waits for a slow one. The folder is per run (a fresh id), so a killed run's claims never
    block a rerun; it must be on a filesystem all ranks see (as RESULTS must be)."""

    def __init__(self, folder: str | os.PathLike, rank: int):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.rank = rank

    def take(self, item: int) -> bool:
        try:
            fd = os.open(self.folder / f"{item:06d}", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        os.write(fd, f"{self.rank}\n".encode())
        os.close(fd)
        return True

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
        try:
            self.folder.parent.rmdir()  # only if no other run's claims are in it
        except OSError:
            pass
