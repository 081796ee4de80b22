"""Which models to compile: all of them (`--compile`), or, with `--compile-when pays`, those whose
compile pays for itself over the sweep.

A compile costs seconds with the device idle; it saves (1 / eager - 1 / compiled images/s) seconds
per image. With `pays`, the pretrained tags of one architecture at one input size (one graph: the
later ones compile from the first's entry in inductor's FX graph cache, since the sweep loads them
one after another) are decided together: compiled when the forward time they save over all their
pending images exceeds their compile time, else eager. Throughputs come from two tables (eager,
compiled: `throughput`); a compile time from the compiled table's `compile_s` column where it has
one, else `DEFAULT_COMPILE_S`. A tag after the first of its architecture costs
`CACHED_COMPILE_SHARE` of that. An architecture missing from either table is compiled, as asked.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlreassess.datasets.manifest import Manifest
from mlreassess.errors import InputError
from mlreassess.inference.models.weights import architecture
from mlreassess.inference.sweep.passes import Pass
from mlreassess.inference.sweep.throughput import Table, images_per_s, nearest, read_compile_seconds, read_throughput
from mlreassess.options import InferOptions

# A priori seconds to compile one model (torch.compile, inductor, default mode) where no table row
# measured it: a round figure for a timm model on a GPU host, to be replaced by `compile_s` rows
# measured on the machine (`scripts/gpu_bench.sh`); the choice is only as good as this figure.
DEFAULT_COMPILE_S = 60.0
# Share of that a later tag of the same architecture and input size takes (an estimate): dynamo still
# traces the model, but inductor's FX graph cache returns the compiled graph (the weights are graph
# inputs, not constants, so one architecture's tags share an entry); tracing a timm model takes seconds.
CACHED_COMPILE_SHARE = 0.25


@dataclass(frozen=True)
class CompileChoice:
    """Whether one model is compiled, and why (recorded in its outputs' metadata and the plan)."""

    compile: bool
    why: str
    saved_s: float | None = None  # forward seconds compiling saves over its pending images, by the tables
    cost_s: float | None = None  # seconds its compile is expected to take

    def meta(self) -> dict:
        return {"compile": self.compile, "why": self.why, "saved_s": _round(self.saved_s), "cost_s": _round(self.cost_s)}


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 1)


@dataclass(frozen=True)
class Tables:
    eager: Table
    compiled: Table
    compile_s: Table

    @classmethod
    def read(cls, opts: InferOptions) -> "Tables":
        if not (opts.throughput and opts.compiled_throughput):
            raise InputError("--compile-when pays: needs --throughput (eager images/s) and --compiled-throughput "
                             "(compiled images/s) tables, e.g. timm's benchmark-infer CSVs without and with -dynamo")
        return cls(read_throughput(opts.throughput), read_throughput(opts.compiled_throughput),
                   read_compile_seconds(opts.compiled_throughput))


def compile_choices(passes: list[Pass], manifests: list[Manifest], opts: InferOptions,
                    tables: Tables | None = None) -> dict[str, CompileChoice]:
    """{model: its choice} for every model of `passes` ({} without --compile). `tables`: read from
    the options when needed (`pays`); with `always`, used only for the expected compile times."""
    if not opts.compile:
        return {}
    models = {m: p.units_of_model(m) for p in passes for m in p.models}
    if tables is None and opts.compile_when == "pays":
        tables = Tables.read(opts)
    families: dict[tuple[str, int, int], list] = {}
    for m, units in models.items():
        prep = units[0].preprocess
        families.setdefault((architecture(m.name), prep.height, prep.width), []).append(m)
    choices = {}
    for (_, size, _), family in families.items():
        images = {m: sum(len(manifests[u.dataset]) for u in models[m]) for m in family}
        cost = _costs(family, size, tables)
        if opts.compile_when == "always":
            choices.update({m.name: CompileChoice(True, "--compile", None, cost[m]) for m in family})
        else:
            choices.update(_decide(family, images, size, tables, cost))
    return choices


def _costs(family: list, size: int, tables: Tables | None) -> dict:
    """Each tag's expected compile seconds: the table's `compile_s` (else `DEFAULT_COMPILE_S`) for
    the first, `CACHED_COMPILE_SHARE` of it for the later ones (inductor's FX graph cache)."""
    first = nearest(tables.compile_s, family[0].name, size) if tables is not None else None
    first = DEFAULT_COMPILE_S if first is None else first
    return {m: first * (1 if n == 0 else CACHED_COMPILE_SHARE) for n, m in enumerate(family)}


def _decide(family: list, images: dict, size: int, tables: Tables, cost: dict) -> dict[str, CompileChoice]:
    """One choice for the tags of one architecture at one size."""
    name = family[0].name
    eager, _ = images_per_s(tables.eager, name, size)
    compiled, _ = images_per_s(tables.compiled, name, size)
    if eager is None or compiled is None:
        return {m.name: CompileChoice(True, "not in the throughput tables: compiled (--compile)", None, cost[m])
                for m in family}
    saved = {m: images[m] * (1 / eager - 1 / compiled) for m in family}
    total_saved, total_cost = sum(saved.values()), sum(cost.values())
    pays = total_saved > total_cost
    tags = f" ({len(family)} tags of one architecture together)" if len(family) > 1 else ""
    why = (f"saves {total_saved:.0f} s of forward time for {total_cost:.0f} s of compiling{tags}" if pays else
           f"would save {total_saved:.0f} s of forward time for {total_cost:.0f} s of compiling{tags}: eager")
    return {m.name: CompileChoice(pays, why, saved[m], cost[m]) for m in family}
