"""How far a label set agrees with the original labels: the share of images whose original label is
in their label set, per label count, printed on every build; a share far below what real sets
reach stops the build (`check`).

ReaL agrees for 90.0% of the 50,000 val images (93.0% of the 1,300-image mini set), Anzaku et
al.'s V2 labels for 89.1% of the 9,871 V2 images they label. A file shifted by one image, made for
other images or in another order agrees at about chance (0.1-0.3%), so `DEFAULT_MIN_AGREEMENT`
(50%) lies far from both. Images with an empty label set cannot agree and are counted apart.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Sequence

from mlreassess.constants import IMAGENET_ASMA_RANGE, MIN_AGREEMENT_IMAGES
from mlreassess.datasets.labelsets.base import LabelSet, V1Labels
from mlreassess.datasets.labelsets.registry import provenance
from mlreassess.errors import InputError

_TOP = IMAGENET_ASMA_RANGE[-1]
_VAL_NUMBER = re.compile(r"ILSVRC2012_val_([0-9]{8})")


def _bucket(count: int) -> str:
    return str(count) if count <= _TOP else f">{_TOP}"


def measure(originals: Sequence[int | None], label_lists: Sequence[Sequence[int]]) -> dict[str, Any]:
    """{"pct", "n", "agree", "by_count": {"1".."5", ">5": [agree, n]}, "no_label"} over the images
    with an original label; "pct" is None when none has a label set."""
    by: dict[str, list[int]] = {}
    no_label = 0
    for original, labels in zip(originals, label_lists):
        if original is None:
            continue
        if not labels:
            no_label += 1
            continue
        cell = by.setdefault(_bucket(len(labels)), [0, 0])
        cell[0] += int(original in labels)
        cell[1] += 1
    order = [_bucket(g) for g in range(1, _TOP + 2)]
    by_count = {k: by[k] for k in order if k in by}
    agree, n = sum(a for a, _ in by.values()), sum(m for _, m in by.values())
    return {"pct": round(100.0 * agree / n, 2) if n else None, "n": n, "agree": agree,
            "by_count": by_count, "no_label": no_label}


def describe(agreement: dict[str, Any]) -> str:
    """'93.00% of 1,243 images (1 label: 93.8% of 1,105; 2: 83.8% of 105; ...); 57 with no label'."""
    if agreement["pct"] is None:
        return f"no image has both an original label and a label set ({agreement['no_label']:,} with no label)"
    parts = [f"{k}{' label' if i == 0 else ''}: {100.0 * a / m:.1f}% of {m:,}"
             for i, (k, (a, m)) in enumerate(agreement["by_count"].items())]
    text = f"{agreement['pct']:.2f}% of {agreement['n']:,} images ({'; '.join(parts)})"
    return text + (f"; {agreement['no_label']:,} with no label" if agreement["no_label"] else "")


def check(agreement: dict[str, Any], label_file: str, min_pct: float, hint: str = "") -> None:
    """InputError, one line naming the file and the figure, when the agreement is implausibly low."""
    pct = agreement["pct"]
    if pct is None or agreement["n"] < MIN_AGREEMENT_IMAGES or pct >= min_pct:
        return
    raise InputError(
        f"{label_file}: only {pct:.2f}% of {agreement['n']:,} images have their original label in their label set "
        f"(real label sets: about 90%; below {min_pct:g}% the file is for other images, in another order or "
        f"shifted{hint}; --min-agreement 0 builds it anyway)"
    )


def shift_hint(numbers: Sequence[int], originals: Sequence[int], lookup, min_pct: float) -> str:
    """For a positional file (entry i = image i+1): what to add to the message when the file read one
    entry later or earlier agrees; '' otherwise. `lookup(number)` -> labels
    (a tuple) or why there are none (a str)."""
    for shift in (1, -1):
        shifted = [lookup(n + shift) for n in numbers]
        pairs = [(o, ls) for o, ls in zip(originals, shifted) if isinstance(ls, tuple)]
        m = measure([o for o, _ in pairs], [ls for _, ls in pairs])
        if m["pct"] is not None and m["pct"] >= min_pct:
            return (f"; read one entry {'later' if shift > 0 else 'earlier'}, it agrees for {m['pct']:.1f}%: "
                    f"this file is shifted by one image")
    return ""


def v1_meta(label_set: LabelSet, path: Path, multi: V1Labels, columns: tuple[list, list, list, list],
            left_out: dict[str, int], min_pct: float) -> dict[str, Any]:
    """What a V1 manifest records about its labels, once they passed `check`: the set, its file and
    hash, the agreement, the images it left out (by reason) and entries for other images."""
    ids, _, originals, multis = columns
    agreement = measure(originals, multis)
    if agreement["pct"] is not None and agreement["pct"] < min_pct and multi.positional:
        found = [(int(m.group(1)), o) for m, o in zip(map(_VAL_NUMBER.search, ids), originals) if m]  # V1 ids: val stems
        hint = shift_hint([n for n, _ in found], [o for _, o in found], multi.lookup, min_pct)
        check(agreement, str(path), min_pct, hint)
    check(agreement, str(path), min_pct)
    return {**provenance(label_set, path), "label_agreement": agreement,
            "label_set_left_out": dict(sorted(left_out.items())), "label_entries_other_images": multi.other_entries}
