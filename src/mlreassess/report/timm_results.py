"""timm's published validation results, a second reference beside the paper's (SPEC 7).

Shipped in `mlreassess/resources/timm_results/` (its README: source, commit, licence). timm
evaluates with its standard transform, a centre crop; the paper resizes without one. So each of our
values is compared with the reference made the way it was made: a `--crop center` run with timm's,
a resize-only run (the default) with the paper's; the predictions' metadata (`crop`, `input_size`)
say which, per (model, dataset). timm lists some checkpoints at two input sizes: the value at our
run's input size is the one compared.

Which of ours each timm value compares with: top-1 and top-5 on V1 and on V2 matched-frequency (the
only V2 variant timm publishes), and ReaL on V1, which timm computes over every image with a label
set (our `real`; the paper's ReaL is our `real_1to5`).
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Iterable, Mapping

from mlreassess.constants import DEFAULT_V1_LABEL_SET
from mlreassess.errors import MlreassessError
from mlreassess.io import read_meta
from mlreassess.metrics.inputs import incomplete_reason
from mlreassess.results import ResultsLayout

log = logging.getLogger(__name__)

# (paper dataset role, our metric) -> (file, column) of timm's results.
FILES = {
    ("imagenet_v1", "top1"): ("results-imagenet.csv", "top1"),
    ("imagenet_v1", "top5"): ("results-imagenet.csv", "top5"),
    ("imagenet_v1", "real"): ("results-imagenet-real.csv", "top1"),
    ("imagenet_v2", "top1"): ("results-imagenetv2-matched-frequency.csv", "top1"),
    ("imagenet_v2", "top5"): ("results-imagenetv2-matched-frequency.csv", "top5"),
}
TIMM_V2_VARIANT = "matched-frequency"
# The reference a protocol reproduces: resize-only is the paper's, timm's centre crop is timm's.
REFERENCE_OF_CROP = {"none": "paper", "center": "timm"}

Table = Mapping[tuple[str, str, str], Mapping[int, float]]  # (checkpoint, role, metric) -> {img_size: value}


def results_dir() -> Path:
    return Path(str(resources.files("mlreassess") / "resources" / "timm_results"))


@lru_cache(maxsize=2)
def timm_table(folder: str | None = None) -> dict[tuple[str, str, str], dict[int, float]]:
    """Every value of the shipped files (or of `folder`), by (checkpoint, role, metric) and img_size."""
    base = Path(folder) if folder else results_dir()
    out: dict[tuple[str, str, str], dict[int, float]] = {}
    for (role, metric), (name, column) in FILES.items():
        with open(base / name, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                out.setdefault((row["model"], role, metric), {})[int(row["img_size"])] = float(row[column])
    return out


@dataclass(frozen=True)
class Protocol:
    """How one of our values was made: the crop and the (square) input size of its predictions;
    both None when unknown (not run here, or no predictions metadata)."""

    crop: str | None = None
    img_size: int | None = None

    @property
    def reference(self) -> str | None:
        """'paper' or 'timm': the published reference made the same way."""
        return REFERENCE_OF_CROP.get(self.crop or "")


def timm_value(table: Table, checkpoint: str, role: str, metric: str, protocol: Protocol = Protocol()) -> float | None:
    """timm's value at our run's input size. Protocol unknown: the value when timm lists one size only;
    a run at a size timm did not evaluate (or not square): none."""
    sizes = table.get((checkpoint, role, metric))
    if not sizes:
        return None
    if protocol.crop is None and protocol.img_size is None:
        return next(iter(sizes.values())) if len(sizes) == 1 else None
    return sizes.get(protocol.img_size) if protocol.img_size is not None else None


def protocol_of(meta: Mapping) -> Protocol:
    size = meta.get("input_size") or []
    square = len(size) >= 2 and size[-1] == size[-2]
    return Protocol(meta.get("crop"), int(size[-1]) if square else None)


def protocols(layout: ResultsLayout, pairs: Iterable[tuple[str, str]]) -> dict[tuple[str, str], Protocol]:
    """(model, dataset) -> Protocol, from the predictions files' metadata (files that exist)."""
    out = {}
    for model, dataset in pairs:
        try:
            path = layout.prediction(dataset, model)
            meta = read_meta(path) if path.exists() else None
            if meta and incomplete_reason(path, meta) is None:  # a bad file is not a protocol (the page says so)
                out[(model, dataset)] = protocol_of(meta)
        except MlreassessError as exc:  # an odd name or an unreadable file: no protocol, no comparison
            log.warning("timm reference: %s", exc)
    return out


def timm_roles(layout: ResultsLayout | None, roles: Mapping[str, str | None]) -> dict[str, str]:
    """The paper roles timm's files cover -> the dataset playing each: V1 labelled with ReaL (or with
    nothing recorded), V2 only when it is the matched-frequency variant."""
    out = {}
    for role, dataset in roles.items():
        if not dataset or role not in {r for r, _ in FILES}:
            continue
        meta = _manifest_meta(layout, dataset)
        if role == "imagenet_v2" and meta.get("variant", TIMM_V2_VARIANT) != TIMM_V2_VARIANT:
            continue
        if role == "imagenet_v1" and meta.get("label_set", DEFAULT_V1_LABEL_SET) != DEFAULT_V1_LABEL_SET:
            continue
        out[role] = dataset
    return out


def _manifest_meta(layout: ResultsLayout | None, dataset: str) -> dict:
    try:
        path = layout.manifest_copy(dataset) if layout is not None else None
        return read_meta(path) if path is not None and path.exists() else {}
    except MlreassessError:
        return {}


def outside(value: float | None, low: float | None, high: float | None) -> bool | None:
    """Whether a reference value lies outside our interval (None when either is unknown)."""
    if value is None or low is None or high is None or low != low or high != high:
        return None
    return bool(value < low or value > high)


TIMM_NOTE = ("timm = timm's published value (huggingface/pytorch-image-models results/, centre crop) at our input "
             "size; its ReaL is over every image with a label set (our `real`). Our crop says which reference our "
             "run reproduces: none (resize-only) the paper's, center timm's. Outside our interval: the references "
             "outside our 95% interval. Table 'timm': values timm publishes that the paper has not.")


def timm_reference(layout: ResultsLayout | None, metrics, roles: Mapping[str, str | None]) -> dict:
    """The keyword arguments `tables.reported_vs_reproduced` takes for timm's reference: timm's table,
    our protocols (from the predictions' metadata) and the roles timm covers."""
    covered = timm_roles(layout, roles)
    pairs = {(m, d) for m, d in zip(metrics["model"], metrics["dataset"]) if d in roles.values()} if len(metrics) else set()
    return {"timm": timm_table(), "protocols": protocols(layout, sorted(pairs)) if layout else {}, "timm_roles": covered}
