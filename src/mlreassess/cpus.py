"""CPU counts for worker pools: the cores this process may run on (its affinity, as set by a job
scheduler or `taskset`), not the machine's."""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)


def available_cpus() -> int:
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def capped_workers(requested: int, what: str = "--workers") -> int:
    """`requested` worker processes, at most one per available CPU: more only thrash (and a huge
    number would exhaust the process table)."""
    cpus = available_cpus()
    if requested > cpus:
        log.warning(f"{what} {requested}: only {cpus} CPUs available here; using {cpus}")
        return cpus
    return requested
