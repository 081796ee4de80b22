"""Batch slots: shared memory that decode workers write batches into, reused in a ring.

Without them every batch a worker sends is a new shared-memory segment: the main process receives
a file descriptor, maps the segment and (for a GPU) copies it into pinned memory in the
DataLoader's pin thread, a memcpy of every pixel. Here the main process allocates the slots once,
before the workers start (they inherit the mapping), a worker writes batch n into slot n mod R and
sends back only the slot number, and on CUDA the slots are registered as pinned memory once, so
the host-to-device copy reads them directly (DMA, no host copy).

Pinning comes after the workers have started (`InputPipeline` calls `pin` once its DataLoader has
forked them): registered memory may be marked do-not-fork (the driver's madvise(MADV_DONTFORK) on
pinned pages), and a worker forked after that would have no mapping where its slots are, and die
on its first write. The workers write through their own mapping of the shared file, unaffected.

Reuse rule. The DataLoader sends a worker the keys of batch n + P (P = prefetch factor x workers)
when the main process takes batch n, so after taking batch n any batch up to n + P may be being
written. With R = P + `HELD` slots, the slots of the `HELD` - 1 batches before the newest one are
not rewritten until the main process takes `HELD` more batches: a batch's pixels (and a pending
asynchronous copy out of them) stay valid while the consumer takes the next `HELD` - 1 batches.
"""

from __future__ import annotations

import logging
import os

import torch

from mlreassess.errors import InputError

log = logging.getLogger(__name__)

HELD = 4  # batches a consumer may still be using (or copying from) when it takes a new one


class Slots:
    """R uint8 batch buffers (B, 3, H, W) in shared memory; `view(slot, n)` is the first n images."""

    def __init__(self, count: int, batch_size: int, height: int, width: int):
        self.count = count
        self.buffers = torch.empty((count, batch_size, 3, height, width), dtype=torch.uint8).share_memory_()
        self.pinned = False
        self._next = 0

    @classmethod
    def for_loader(cls, prefetch: int, workers: int, batch_size: int, height: int, width: int) -> "Slots":
        return cls(prefetch * max(1, workers) + HELD, batch_size, height, width)

    @property
    def nbytes(self) -> int:
        return self.buffers.numel()

    def take(self) -> int:
        """The slot of the next batch handed out (the main process numbers batches in order)."""
        slot = self._next
        self._next = (self._next + 1) % self.count
        return slot

    def view(self, slot: int, n: int) -> torch.Tensor:
        return self.buffers[slot, :n]

    def pin(self) -> None:
        """Register the slots as pinned memory (CUDA): host-to-device copies become DMA reads. Only
        once the workers are forked (module docstring). If the driver refuses (too much locked
        memory), copies stay synchronous, and it is said once."""
        if self.pinned:
            return
        err = host_register(self.buffers.data_ptr(), self.nbytes)
        self.pinned = err == 0
        if not self.pinned:
            log.warning(f"could not pin {self.nbytes / 2**30:.1f} GiB of batch slots (CUDA error {err}): "
                        "host-to-device copies will not overlap the forward passes")

    def unpin(self) -> None:
        if self.pinned:
            host_unregister(self.buffers.data_ptr())
            self.pinned = False


def host_register(pointer: int, nbytes: int) -> int:
    """cudaHostRegister (the CUDA error code, 0 = pinned). Tests replace it to see when it runs."""
    return int(torch.cuda.cudart().cudaHostRegister(pointer, nbytes, 0))


def host_unregister(pointer: int) -> int:
    return int(torch.cuda.cudart().cudaHostUnregister(pointer))


# Share of the free shared memory (/dev/shm) the slots of one machine's pipelines may take together:
# under torchrun every local rank has its pipeline, so each gets this share divided by their number.
SHM_SHARE = 0.5


def local_ranks() -> int:
    """Processes of this job on this machine (torchrun's LOCAL_WORLD_SIZE; 1 without torchrun)."""
    try:
        return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        return 1


def shared_memory_free(folder: str = "/dev/shm") -> int | None:
    try:
        st = os.statvfs(folder)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def prefetch_that_fits(wanted: int, workers: int, batch_bytes: int, free: int | None) -> int:
    """The largest prefetch (batches per worker, at most `wanted`) whose slots fit this rank's part of
    `SHM_SHARE` of the free shared memory; one line saying what to change when not even one batch per worker fits
    (a container's /dev/shm is often 64 MB)."""
    if free is None:
        return wanted
    ranks = local_ranks()
    budget = int(free * SHM_SHARE / ranks)
    for prefetch in range(wanted, 0, -1):
        if (prefetch * max(1, workers) + HELD) * batch_bytes <= budget:
            return prefetch
    need = (max(1, workers) + HELD) * batch_bytes
    share = "half may be used" if ranks == 1 else f"half may be used, shared by {ranks} local ranks"
    raise InputError(f"--batch-size / --workers: the decode workers' batch slots need {need / 2**30:.2f} GiB of "
                     f"shared memory, and /dev/shm has {free / 2**30:.2f} GiB free ({share}); use a "
                     "smaller --batch-size, fewer --workers, or a larger /dev/shm (docker run --shm-size)")
