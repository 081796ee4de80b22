"""The one skip-bad policy: a builder collects its bad samples or rows, then raises on the first one
(naming it and how many more there are) unless `--skip-bad`, in which case they are dropped and
recorded in the output's metadata.
"""

from __future__ import annotations

from typing import Sequence

from mlreassess.errors import InputError


def raise_or_skip(bad: Sequence[tuple[str, str]], skip_bad: bool, what: str = "such samples") -> list[dict[str, str]]:
    """Raise InputError on the first `(where, problem)` of `bad` unless `skip_bad`.

    Returns them as `{"file", "error"}` records for the metadata (what was dropped). `what` names
    the dropped things in the hint ("use --skip-bad to drop <what>").
    """
    if bad and not skip_bad:
        where, problem = bad[0]
        more = f" (and {len(bad) - 1} more like it)" if len(bad) > 1 else ""
        raise InputError(f"{where}: {problem}{more}; use --skip-bad to drop {what}")
    return [{"file": where, "error": problem} for where, problem in bad]
