"""`infer --plan`: the sweep as it would run, and its GPU time from a throughput table, running nothing.

The throughput table is a CSV with timm's benchmark columns (`results/benchmark-infer-*.csv` of
pytorch-image-models: `model` = architecture, `infer_img_size`, `infer_samples_per_sec`), or the rows
`bench infer --csv FILE` appends (the same columns plus ours). A model is looked up by architecture
(its pretrained tag dropped) at its input size; at another size its throughput is scaled by the
pixel ratio (said in the summary: a rough estimate); a model not in the table is counted apart.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

from mlreassess.datasets.manifest import Manifest
from mlreassess.errors import InputError
from mlreassess.inference.sweep.passes import Pass
from mlreassess.inference.sweep.plan import SweepPlan, pass_bytes
from mlreassess.options import InferOptions

THROUGHPUT_COLUMNS = ("model", "infer_img_size", "infer_samples_per_sec")


def read_throughput(path: str | os.PathLike) -> dict[str, dict[int, float]]:
    """{architecture: {input size: images/s}} from a timm-style benchmark CSV; one line per bad file."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path}: cannot read the throughput table ({exc})") from None
    missing = [c for c in THROUGHPUT_COLUMNS if not rows or c not in rows[0]]
    if missing:
        raise InputError(f"{path}: not a throughput table (needs columns {', '.join(THROUGHPUT_COLUMNS)}; "
                         f"missing {', '.join(missing)})")
    table: dict[str, dict[int, float]] = {}
    for n, row in enumerate(rows, 2):
        try:
            size, rate = int(row["infer_img_size"]), float(row["infer_samples_per_sec"])
        except (TypeError, ValueError):
            raise InputError(f"{path}: line {n}: infer_img_size / infer_samples_per_sec are not numbers") from None
        if not rate > 0 or size < 1:  # also refuses NaN
            raise InputError(f"{path}: line {n}: images/s must be positive and size at least 1")
        table.setdefault(row["model"].split(".", 1)[0], {})[size] = rate
    return table


def images_per_s(table: dict[str, dict[int, float]], model: str, size: int) -> tuple[float | None, bool]:
    """(images/s of `model` at input `size`, whether it was scaled from another size)."""
    sizes = table.get(model.split(".", 1)[0])
    if not sizes:
        return None, False
    if size in sizes:
        return sizes[size], False
    nearest = min(sizes, key=lambda s: (abs(s - size), s))
    return sizes[nearest] * (nearest / size) ** 2, True


@dataclass
class GpuTime:
    seconds: float = 0.0
    found: int = 0
    scaled: int = 0
    missing: list[str] = field(default_factory=list)


def gpu_time(passes: list[Pass], manifests: list[Manifest], table: dict[str, dict[int, float]]) -> GpuTime:
    """Forward-speed seconds of every pending unit by the throughput table."""
    out = GpuTime()
    for p in passes:
        for model in p.models:
            rate, scaled = images_per_s(table, model.name, p.preprocess.height)
            if rate is None:
                out.missing.append(model.name)
                continue
            out.found += 1
            out.scaled += scaled
            out.seconds += sum(len(manifests[u.dataset]) for u in p.units_of_model(model)) / rate
    return out


def _gib(n: int | None) -> str:
    return "?" if n is None else f"{n / 2**30:.1f} GiB"


def describe(plan: SweepPlan, manifests: list[Manifest], opts: InferOptions, free_bytes: int,
             table: dict[str, dict[int, float]] | None) -> list[str]:
    """The plan in lines: totals, groups, passes, loads, compiles, decodes, GPU time."""
    passes = plan.passes
    units = sum(len(p.units) for p in passes)
    models = sorted({m.name for p in passes for m in p.models})
    groups: dict = {}
    for p in passes:
        groups.setdefault(p.preprocess, []).append(p)
    decoded = sum(len(manifests[d]) for p in passes for d in p.datasets)
    one_per_pass = sum(len(manifests[u.dataset]) for p in passes for u in p.units)
    lines = [
        f"plan: {units} units to run ({len(models)} models x {len(manifests)} datasets), {len(plan.skipped)} up to "
        f"date, {len(plan.stale)} stale; device with {_gib(free_bytes)} free, {opts.precision}, batch {opts.batch_size}, "
        f"models per pass {opts.models_per_pass}" + (f" ({_gib(plan.budget)} for a pass's models)" if plan.budget else ""),
        f"groups (input size, interpolation, crop): {len(groups)}; passes: {len(passes)}; model loads: {len(models)}; "
        f"compiles: {len(models) if opts.compile else 0}",
        f"images decoded: {decoded:,} ({one_per_pass:,} if every unit decoded its dataset alone)",
    ]
    for prep, ps in groups.items():
        lines.append(f"  {prep.describe()}: {len({m for p in ps for m in p.models})} models in {len(ps)} "
                     f"pass{'es' if len(ps) != 1 else ''}")
        for p in ps:
            lines.append(f"    {len(p.models)} models, {_gib(pass_bytes(p, plan, manifests, opts))}, "
                         f"datasets {', '.join(manifests[d].name for d in p.datasets)}")
    lines.append(_time_line(passes, manifests, table, opts))
    return lines


def _time_line(passes: list[Pass], manifests: list[Manifest], table, opts: InferOptions) -> str:
    if table is None:
        return "GPU time: no throughput table given (--throughput FILE: timm's benchmark CSV or `bench infer --csv`)"
    t = gpu_time(passes, manifests, table)
    missing = f"; not in the table: {len(t.missing)} ({', '.join(t.missing[:5])}{', ...' if len(t.missing) > 5 else ''})"
    return (f"GPU time at the table's forward speed: {t.seconds / 3600:.1f} GPU-hours for {t.found} models"
            f"{f' ({t.scaled} scaled from another input size)' if t.scaled else ''}{missing if t.missing else ''}")
