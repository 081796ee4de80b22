"""What every part of inference (input, models, sweep) shares about the device: small host tensors
copied to it without a stall, and how a CUDA error is read.

Copies. `non_blocking=True` is asynchronous only from pinned memory: from pageable memory the
driver stages the copy and may wait for the work already queued on the stream (the forward passes
of earlier batches), which is the stall the flag was meant to avoid. `host_to_device` pins first
(the caching host allocator's block, which it keeps until the copy is done, so the source may be
reused at once).

Errors. Out of memory (typed, or wrapped by dynamo / inductor when it happens inside a compile)
means: retry with a smaller batch. Any other CUDA error (an illegal address, a device-side assert,
a launch failure) may leave the CUDA context unusable for good ("sticky"): every later call fails,
whichever model makes it, and an asynchronous error surfaces in a later call than the one that
caused it. So the sweep stops the process (`DeviceFault`), naming the model in whose call it
surfaced, rather than blaming it on every model after it.
"""

from __future__ import annotations

import re

import torch

from mlreassess.errors import MlreassessError

# RuntimeError texts of CUDA failures that are not typed as torch.AcceleratorError (cuDNN / cuBLAS
# statuses, torch's device-side assert text, older torch versions).
_CUDA_ERROR = re.compile(r"CUDA error|CUDA kernel errors|device-side assert|illegal memory access|"
                         r"CUDNN_STATUS_EXECUTION_FAILED|CUBLAS_STATUS_EXECUTION_FAILED|"
                         r"unspecified launch failure|misaligned address")
_OUT_OF_MEMORY = re.compile(r"CUDA out of memory|CUDA error: out of memory|CUBLAS_STATUS_ALLOC_FAILED|"
                            r"CUDNN_STATUS_ALLOC_FAILED")
_ACCELERATOR_ERROR = getattr(torch, "AcceleratorError", ())  # torch >= 2.8: CUDA errors get a type


def host_to_device(tensor: torch.Tensor, device) -> torch.Tensor:
    """A CPU tensor on `device`: on CUDA through pinned memory and a non-blocking copy (no wait for
    the queued work, the source reusable at once); elsewhere a plain `.to`."""
    if torch.device(device).type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def _chain(exc: BaseException):
    """`exc` and what it wraps: dynamo's `inner_exception`, `raise ... from`, and the exception being
    handled when it was raised (as a traceback shows them)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        inner = getattr(exc, "inner_exception", None)
        implicit = None if exc.__suppress_context__ else exc.__context__
        exc = inner if isinstance(inner, BaseException) else (exc.__cause__ or implicit)


def out_of_memory(exc: BaseException) -> torch.OutOfMemoryError | None:
    """The out-of-memory error in `exc` or what it wraps, typed (an untyped "CUDA error: out of memory"
    becomes a `torch.OutOfMemoryError` with its text); None when it is not one."""
    for e in _chain(exc):
        if isinstance(e, torch.OutOfMemoryError):
            return e
        if isinstance(e, RuntimeError) and _OUT_OF_MEMORY.search(str(e)):
            return torch.OutOfMemoryError(str(e))
    return None


def fatal_device_error(exc: BaseException) -> bool:
    """Whether `exc` (or what it wraps) is a CUDA error other than out of memory: the process must stop."""
    if out_of_memory(exc) is not None:
        return False
    return any(isinstance(e, _ACCELERATOR_ERROR) or (isinstance(e, RuntimeError) and _CUDA_ERROR.search(str(e)))
               for e in _chain(exc))


def first_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0].strip()[:300] if lines else ''}"


class DeviceFault(MlreassessError):
    """A CUDA error other than out of memory, met by `model` (on `dataset`): the process stops."""

    def __init__(self, model: str, dataset: str, error: str):
        self.model, self.dataset, self.error = model, dataset, error
        where = f" on {dataset}" if dataset else ""
        super().__init__(
            f"model {model!r}{where} met a CUDA error ({error}); such an error can leave the device unusable for "
            "this process, so the sweep stops here instead of failing every later model (recorded in "
            "failures.jsonl; a rerun resumes; CUDA_LAUNCH_BLOCKING=1 names the kernel, as the error may have "
            "come from earlier asynchronous work)"
        )
