"""Progress bars and the log handler that keeps them intact.

Bars draw only when stderr is a terminal, so logs of batch jobs and CI hold no progress noise.
Library code logs with `logging.getLogger(__name__)`; only the CLI installs `TqdmHandler`.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from tqdm import tqdm


def bar(iterable: Any = None, *, total: int | None = None, desc: str = "", unit: str = "img",
        enabled: bool = True) -> tqdm:
    """A tqdm bar on stderr, drawn only if `enabled` and stderr is a terminal."""
    return tqdm(iterable, total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True,
                disable=not (enabled and sys.stderr.isatty()))


class TqdmHandler(logging.Handler):
    """Writes log lines above any live progress bar instead of through it."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # logging must never raise into the caller
            self.handleError(record)
