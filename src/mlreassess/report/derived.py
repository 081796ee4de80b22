"""What each table and figure of the report was made from, and whether it still is.

`Report.run` records, per file it writes, the files of the results folder the item read
(metrics.parquet, manifest copies, a predictions file) with their size, time and sha256, in
`.derived-from.json` of the folder it writes into (`provenance.derived_from`). The results page shows a table or figure only
while that record holds (`why_not_current`): one made from an older metrics.parquet, or left over
from an item that is skipped now, is left out with a line saying why, never shown as current.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from mlreassess.io import write_text_atomic
from mlreassess.provenance import derived_from, derived_unchanged

SIDECAR = ".derived-from.json"


def _read(folder: Path) -> dict:
    if (folder / SIDECAR).is_symlink():  # a record elsewhere says nothing of these files
        return {}
    try:
        data = json.loads((folder / SIDECAR).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def record(files: Iterable[Path], inputs: Iterable[Path], root: Path) -> None:
    """Note that `files` were made from `inputs`, those of them in the results folder `root`
    (relative to it, so the record survives a copied folder). Files named on the command line from
    elsewhere (`--data`, `--reported`, the paper's numbers shipped with mlreassess) are the user's
    explicit choice and are not recorded."""
    made = derived_from(sorted({Path(p) for p in inputs if Path(p).is_relative_to(root)}), root)
    by_folder: dict[Path, list[Path]] = {}
    for f in files:
        by_folder.setdefault(Path(f).parent, []).append(Path(f))
    for folder, written in by_folder.items():
        entries = _read(folder)
        entries.update({f.name: made for f in written})
        write_text_atomic(folder / SIDECAR, json.dumps(entries, indent=1, sort_keys=True) + "\n")


def forget(files: Iterable[Path]) -> list[Path]:
    """Remove those of `files` the report made (they have a record): an item's outputs of an earlier
    run that it does not make now, so they cannot pass for current. Returns the files removed."""
    by_folder: dict[Path, list[Path]] = {}
    for f in files:
        by_folder.setdefault(Path(f).parent, []).append(Path(f))
    removed = []
    for folder, candidates in by_folder.items():
        entries = _read(folder)
        ours = [f for f in candidates if f.name in entries]
        for f in ours:
            f.unlink(missing_ok=True)
            entries.pop(f.name)
        if ours:
            write_text_atomic(folder / SIDECAR, json.dumps(entries, indent=1, sort_keys=True) + "\n")
        removed += ours
    return removed


def why_not_current(path: Path, root: Path) -> str | None:
    """Why `path` (a table or figure) is not what the report would make now: no record of it, or an
    input it was made from is gone or changed; None when it is current."""
    entry = _read(path.parent).get(path.name)
    if entry is None:
        return "no record of what it was made from (written by an older mlreassess, or not by `mlreassess report`)"
    return derived_unchanged(entry, root)
