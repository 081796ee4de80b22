"""`infer --plan`: the sweep as it would run, and its GPU time from throughput tables, running nothing.

The tables (`throughput`: timm's benchmark-infer CSVs or `bench infer --csv` rows) give each model's
images/s eager (`--throughput`) and compiled (`--compiled-throughput`); a model at another input
size than the table's is scaled by the pixel ratio (said in the summary: a rough estimate); a model
not in a table is counted apart. With `--compile`, the plan says which models compile and why
(`compile_rule`), and what the compiles cost.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mlreassess.datasets.manifest import Manifest
from mlreassess.inference.input.preprocess import SharedDecode
from mlreassess.inference.sweep.compile_rule import CompileChoice
from mlreassess.inference.sweep.passes import Pass
from mlreassess.inference.sweep.plan import SweepPlan, pass_bytes
from mlreassess.inference.sweep.throughput import (  # noqa: F401 (read_throughput: re-exported)
    THROUGHPUT_COLUMNS,
    Table,
    images_per_s,
    read_throughput,
)
from mlreassess.options import InferOptions


@dataclass
class GpuTime:
    seconds: float = 0.0
    found: int = 0
    scaled: int = 0
    missing: list[str] = field(default_factory=list)
    compile_s: float = 0.0  # expected seconds of the compiles counted
    compiled: int = 0  # models timed at the compiled table's speed


def gpu_time(passes: list[Pass], manifests: list[Manifest], table: Table, compiled: Table | None = None,
             choices: dict[str, CompileChoice] | None = None) -> GpuTime:
    """Forward-speed seconds of every pending unit by `table`; with `compiled` and `choices`, the
    models the plan compiles are timed by `compiled` (where it has them) plus their compile time."""
    out = GpuTime()
    for p in passes:
        for model in p.models:
            units = p.units_of_model(model)
            choice = (choices or {}).get(model.name)
            rate, scaled = images_per_s(table, model.name, units[0].preprocess.height)
            if compiled is not None and choice is not None and choice.compile:
                fast, fast_scaled = images_per_s(compiled, model.name, units[0].preprocess.height)
                if fast is not None:
                    rate, scaled = fast, fast_scaled
                    out.compiled += 1
                out.compile_s += choice.cost_s or 0.0
            if rate is None:
                out.missing.append(model.name)
                continue
            out.found += 1
            out.scaled += scaled
            out.seconds += sum(len(manifests[u.dataset]) for u in units) / rate
    return out


def _gib(n: int | None) -> str:
    return "?" if n is None else f"{n / 2**30:.1f} GiB"


def describe(plan: SweepPlan, manifests: list[Manifest], opts: InferOptions, free_bytes: int) -> list[str]:
    """The plan in lines: totals, decodes and their passes, loads, compiles, decodes, GPU time."""
    passes = plan.passes
    units = sum(len(p.units) for p in passes)
    models = sorted({m.name for p in passes for m in p.models})
    groups = {u.preprocess for p in passes for u in p.units}
    decodes: dict = {}
    for p in passes:
        decodes.setdefault(p.preprocess, []).append(p)
    decoded = sum(len(manifests[d]) for p in passes for d in p.datasets)
    one_per_pass = sum(len(manifests[u.dataset]) for p in passes for u in p.units)
    compiled = sum(c.compile for c in plan.compile.values())
    shared = [d for d in decodes if isinstance(d, SharedDecode)]
    lines = [
        f"plan: {units} units to run ({len(models)} models x {len(manifests)} datasets), {len(plan.skipped)} up to "
        f"date, {len(plan.stale)} stale; device with {_gib(free_bytes)} free, {opts.precision}, batch {opts.batch_size}, "
        f"models per pass {opts.models_per_pass}" + (f" ({_gib(plan.budget)} for a pass's models)" if plan.budget else ""),
        f"groups (input size, interpolation, crop): {len(groups)}; passes: {len(passes)}; model loads: {len(models)}; "
        f"compiles: {compiled}",
        f"images decoded: {decoded:,} ({one_per_pass:,} if every unit decoded its dataset alone)"
        + (f"; {sum(len(d.parts) for d in shared)} groups share {len(shared)} decodes (small groups joined to others)" if shared else ""),
    ]
    for decode, ps in decodes.items():
        n = len({m for p in ps for m in p.models})
        lines.append(f"  {decode.describe()}: {n} models in {len(ps)} pass{'es' if len(ps) != 1 else ''}")
        for p in ps:
            done = sum(plan.compile[m.name].compile for m in p.models if m.name in plan.compile)
            lines.append(f"    {len(p.models)} models, {_gib(pass_bytes(p, plan, manifests, opts))}"
                         + (f", {done} compiled" if opts.compile else "")
                         + f", datasets {', '.join(manifests[d].name for d in p.datasets)}")
    return lines + _compile_lines(plan, opts) + _time_lines(plan, manifests, opts)


def _compile_lines(plan: SweepPlan, opts: InferOptions) -> list[str]:
    if not opts.compile or opts.compile_when == "always":
        return []
    eager = sorted(m for m, c in plan.compile.items() if not c.compile)
    cost = sum(c.cost_s or 0.0 for c in plan.compile.values() if c.compile)
    names = ", ".join(eager[:5]) + (", ..." if len(eager) > 5 else "")
    return [f"compile where it pays: {len(plan.compile) - len(eager)} of {len(plan.compile)} models compiled "
            f"({cost / 3600:.1f} h of compiles expected)" + (f"; eager, their compile would cost more than it saves: "
                                                             f"{len(eager)} ({names})" if eager else "")]


def _time_lines(plan: SweepPlan, manifests: list[Manifest], opts: InferOptions) -> list[str]:
    if opts.throughput is None:
        return ["GPU time: no throughput table given (--throughput FILE: timm's benchmark CSV or `bench infer --csv`)"]
    table = read_throughput(opts.throughput)
    t = gpu_time(plan.passes, manifests, table)
    missing = f"; not in the table: {len(t.missing)} ({', '.join(t.missing[:5])}{', ...' if len(t.missing) > 5 else ''})"
    lines = [f"GPU time at the table's forward speed: {t.seconds / 3600:.1f} GPU-hours for {t.found} models"
             f"{f' ({t.scaled} scaled from another input size)' if t.scaled else ''}{missing if t.missing else ''}"]
    if opts.compiled_throughput is not None and opts.compile:
        fast = read_throughput(opts.compiled_throughput)
        every = {name: CompileChoice(True, "", cost_s=c.cost_s) for name, c in plan.compile.items()}
        for label, choices in (("every model compiled", every), ("as planned", plan.compile)):
            c = gpu_time(plan.passes, manifests, table, fast, choices)
            lines.append(f"  {label}: {c.seconds / 3600:.1f} GPU-hours + {c.compile_s / 3600:.1f} h of compiles "
                         f"({c.compiled} models at the compiled table's speed)")
    return lines
