"""`mlreassess run CONFIG.yaml`: the whole study (manifests, PatchML, inference, metrics, report).

Each stage calls the same Python entry points as its own subcommand and writes into the config's
`out` folder, named by `mlreassess.results.ResultsLayout`; `OUT/.run/<step>.json` records what made
each finished step (the resume stamps).

Resuming: a manifest step is skipped when its stamp records the same options and its output
exists; inference skips every (model, dataset) whose predictions are complete and were made
with the configured precision/crop/top-k; evaluate skips when no input changed; the report when
neither metrics.parquet nor the manifests changed. A second run therefore does nothing, and says so.

Under torchrun every rank runs this: rank 0 builds the manifests while the others wait, all ranks
share the inference (the runner splits it), rank 0 evaluates and reports.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from mlreassess.config import RunConfig
from mlreassess.datasets.build import build_v1, build_v2
from mlreassess.datasets.manifest import Manifest, read_manifest, write_manifest
from mlreassess.datasets.summary import summary as manifest_summary
from mlreassess.errors import InputError, MlreassessError
from mlreassess.inference.sweep import distributed as D
from mlreassess.inference.sweep import writers
from mlreassess.inference.models.registry import ModelSpec, check_specs, read_models_file
from mlreassess.inference.sweep.runner import hold_folder
from mlreassess.inference.sweep.runner import run as run_sweep
from mlreassess.io import write_text_atomic
from mlreassess.metrics.evaluate import evaluate_results, scoring_workers, set_params
from mlreassess.options import InferOptions, PatchMLOptions, options_of, result_options
from mlreassess.patchml import generate_from
from mlreassess.provenance import canonical, changed, inputs_changed, inputs_fingerprint
from mlreassess.report import ITEMS, Report
from mlreassess.report.html import page_out_of_date_on_failure, why_page_stale, write_results_page
from mlreassess.results import PATCHML_MANIFEST, ResultsLayout

log = logging.getLogger(__name__)


@dataclass
class StepLog:
    """What each step did: 'done' (work happened) or 'up to date' (skipped)."""

    entries: list[tuple[str, str]] = field(default_factory=list)
    verbose: bool = True  # False on torchrun ranks other than 0: one log, not one per rank

    def add(self, step: str, status: str, detail: str = "") -> None:
        self.entries.append((step, status))
        if self.verbose:
            log.info(f"run: {step}: {status}" + (f" ({detail})" if detail else ""))

    @property
    def done(self) -> list[str]:
        return [s for s, st in self.entries if st == "done"]

    @property
    def nothing_done(self) -> bool:
        return not self.done


# --- resume stamps ---------------------------------------------------------------------------------


def _stamp_matches(layout: ResultsLayout, step: str, params: dict[str, Any], outputs: list[Path]) -> bool:
    """Whether `step`'s outputs exist and were made with `params` from input files unchanged since;
    if not, and it was done before, one line says why it is redone."""
    path = layout.stamp(step)
    if not path.is_file() or not all(p.exists() for p in outputs):
        return False
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return False  # a damaged stamp: redo the step
    reason = changed(record.get("params"), params) or inputs_changed(record.get("inputs") or {})
    if reason is not None:
        log.info(f"run: {step}: redoing it: {reason}")
    return reason is None


def _write_stamp(layout: ResultsLayout, step: str, params: dict[str, Any], elapsed_s: float,
                 inputs: list[Any] = ()) -> None:
    """Record what made `step`: its options and the fingerprints of the files it read."""
    record = {"step": step, "params": canonical(params), "inputs": inputs_fingerprint(list(inputs)),
              "elapsed_s": round(elapsed_s, 3)}
    write_text_atomic(layout.stamp(step), json.dumps(record, indent=2, sort_keys=True) + "\n")


# --- datasets ------------------------------------------------------------------------------------


def _build_manifest(layout: ResultsLayout, steps: StepLog, name: str, options: Any,
                    build: Callable[[], Manifest]) -> Path:
    """Build a V1/V2 manifest unless the stamp says the same options already made it."""
    out, step, params = layout.data_manifest(name), f"data/{name}", result_options(options)
    if _stamp_matches(layout, step, params, [out]):
        steps.add(step, "up to date", str(out))
        return out
    start = time.perf_counter()
    manifest = build()
    write_manifest(out, manifest.table, manifest.meta, elapsed_s=time.perf_counter() - start)
    log.info(manifest_summary(manifest, str(out)))
    _write_stamp(layout, step, params, time.perf_counter() - start, _manifest_inputs(manifest, options))
    steps.add(step, "done", f"{len(manifest):,} samples")
    return out


def _manifest_inputs(manifest: Manifest, options: Any) -> list[Any]:
    """The files a V1/V2 manifest was read from: its path options (ReaL, labels), its ground-truth
    file, its image folder's listing, and its shards (by content: a shard changed in place redoes it)."""
    files = [getattr(options, o.name) for o in options_of(type(options)) if o.spec.path == "file"]
    source = manifest.meta.get("label_source")
    if source and Path(source).is_file():
        files.append(source)
    root = manifest.meta.get("root")
    return files + [root] + [Path(root, shard) for shard in manifest.meta.get("shards") or {}]


def build_datasets(cfg: RunConfig, steps: StepLog) -> list[Path]:
    """Every manifest the config asks for (built or found up to date), sorted by path."""
    layout = ResultsLayout(cfg.out)
    paths: list[Path] = list(cfg.manifests)
    if cfg.v1 is not None:
        paths.append(_build_manifest(layout, steps, cfg.v1.dataset, cfg.v1, lambda: build_v1(cfg.v1)))
    if cfg.v2 is not None:
        paths.append(_build_manifest(layout, steps, cfg.v2.dataset, cfg.v2, lambda: build_v2(cfg.v2)))
    if cfg.patchml is not None:
        paths += build_patchml(cfg, steps)
    return paths


def patchml_name(options: PatchMLOptions) -> str:
    """One dataset name per seed: `<name>_seed<S>` (default `patchml_seed<S>`)."""
    return f"{options.name or 'patchml'}_seed{options.seed}"


def build_patchml(cfg: RunConfig, steps: StepLog) -> list[Path]:
    layout, p = ResultsLayout(cfg.out), cfg.patchml
    out = []
    for seed in p.seeds:
        options = p.for_seed(seed)
        folder = layout.patchml_dir(patchml_name(options))
        step = f"patchml/seed{seed}"
        params = {**result_options(options), "render": p.render}
        manifest = folder / PATCHML_MANIFEST
        out.append(manifest)
        if _stamp_matches(layout, step, params, [manifest]):
            steps.add(step, "up to date", str(manifest))
            continue
        # Without PNGs (render: false), inference and Figure 8 render canvases on the fly from the
        # source images recorded in the manifest, which saves ~300 kB per canvas.
        result = generate_from(dataclasses.replace(options, name=patchml_name(options)), folder, p.render)
        _write_stamp(layout, step, params, result.elapsed_s, [options.boxes, options.image_sizes])
        steps.add(step, "done", f"{len(result.manifest):,} canvases from {result.pool_size:,} patches, {result.status}")
    return out


# --- inference -----------------------------------------------------------------------------------


def inference_options(cfg: RunConfig) -> InferOptions:
    """The config's inference options; PatchML canvases not rendered to PNG are rendered from the
    source images on the fly."""
    source_root = cfg.patchml.options.images if cfg.patchml else None
    return dataclasses.replace(cfg.inference, source_root=source_root or cfg.inference.source_root)


def model_specs(cfg: RunConfig) -> list[ModelSpec]:
    """The configured models with their weight sources, validated (names, weights) up front."""
    default = cfg.inference.weights
    specs = [ModelSpec(name, default) for name in cfg.models]
    if cfg.models_file is not None:
        specs += read_models_file(cfg.models_file, default)
    try:
        return check_specs(specs)
    except InputError as exc:
        raise InputError(f"{cfg.source}: models: {exc}") from None


def _drop_rebuilt_copies(cfg: RunConfig, manifests: list[Path]) -> None:
    """A manifest the config has rebuilt with other samples (same name) replaces its RESULTS copy; its
    predictions then no longer match their recipe and are redone by the sweep. (Same samples with
    new labels: the sweep itself replaces the copy.)"""
    layout = ResultsLayout(cfg.out)
    for m in manifests:
        manifest = read_manifest(m)
        try:
            writers.check_manifest_copy(layout, manifest)
        except InputError:
            log.info(f"run: {layout.manifest_copy(manifest.name)}: {m} was rebuilt since: replacing it")
            layout.manifest_copy(manifest.name).unlink()


def infer(cfg: RunConfig, steps: StepLog, manifests: list[Path], specs: list[ModelSpec], is_main: bool) -> list[str]:
    """Run the sweep (it skips what is up to date and redoes what is stale); the failed units' lines."""
    summary = run_sweep([str(m) for m in manifests], specs, cfg.out, inference_options(cfg))
    if not summary.done and not summary.failed:
        steps.add("infer", "up to date", f"{len(summary.skipped)} predictions files")
        return []
    if is_main:
        for line in summary.lines():
            log.info(line)
    steps.add("infer", "done", f"{len(summary.done)} predictions files written, {len(summary.skipped)} already there")
    return [f"{m} on {d}: {e}" for d, m, e in summary.failed]


# --- evaluate and report -------------------------------------------------------------------------


def evaluate(cfg: RunConfig, steps: StepLog, manifests: list[Path]) -> None:
    """Score the config's datasets (only those: a PatchML seed an earlier config left in RESULTS is not
    averaged into this study's patchml_mean)."""
    e = cfg.evaluate
    names = [read_manifest(m).name for m in manifests]
    path, summary = evaluate_results(cfg.out, e.bootstrap, e.ci, e.seed, min_group_n=e.min_group_n, sets=set_params(e),
                                     workers=scoring_workers(e), only=names)
    steps.add("evaluate", "up to date" if summary is None else "done", str(path))


def _report_inputs(layout: ResultsLayout) -> dict[str, Any]:
    """Sizes and mtimes of what the report reads: metrics.parquet and the manifests."""
    files = [layout.metrics, *layout.manifest_copies()]
    return {str(p.relative_to(layout.root)): [p.stat().st_size, p.stat().st_mtime_ns] for p in files if p.exists()}


def report(cfg: RunConfig, steps: StepLog) -> None:
    layout = ResultsLayout(cfg.out)
    # One `input:<file>` key per file read, so a redo names the file that changed (`provenance.changed`).
    params = {**{f"input:{k}": v for k, v in _report_inputs(layout).items()}, "items": list(ITEMS)}
    if _stamp_matches(layout, "report", params, [layout.tables, layout.figures, layout.index_html]):
        stale = why_page_stale(cfg.out)  # the page itself names what it was made from
        if stale is None:
            steps.add("report", "up to date", f"{layout.tables}, {layout.figures}, {layout.index_html}")
            return
        log.info(f"run: report: redoing it: {layout.index_html.name} was made from other files ({stale})")
    start = time.perf_counter()
    done = Report(cfg.out, layout.tables, layout.figures).run(list(ITEMS))
    write_results_page(cfg.out)
    _write_stamp(layout, "report", params, time.perf_counter() - start)
    steps.add("report", "done", f"{len(done)} of {len(ITEMS)} items")


# --- the whole run -------------------------------------------------------------------------------


def _datasets_on_rank0(cfg: RunConfig, steps: StepLog, dist: D.Dist) -> list[Path]:
    """Rank 0 builds the manifests; the others wait for its word (its manifests, or its error)."""
    error, manifests = None, None
    if dist.is_main:
        try:
            manifests = build_datasets(cfg, steps)
            _drop_rebuilt_copies(cfg, manifests)  # before the broadcast: no rank checks a copy too early
        except MlreassessError as exc:
            error = str(exc)
            if not dist.active:
                raise
    error = dist.broadcast(error)
    if error is not None:
        raise MlreassessError(error if dist.is_main else f"rank 0 failed while building the datasets: {error}")
    return sorted(dict.fromkeys(dist.broadcast(manifests)))


def run_study(cfg: RunConfig) -> StepLog:
    """Run (or resume) every stage of `cfg`; raises MlreassessError if some inference failed."""
    start = time.perf_counter()
    specs = model_specs(cfg)  # every rank validates, so a bad config stops all of them alike
    dist = D.init_from_env()
    steps = StepLog(verbose=dist.is_main)
    try:
        with hold_folder(cfg.out, dist):  # one study per folder at a time
            manifests = _datasets_on_rank0(cfg, steps, dist)
            failed = infer(cfg, steps, manifests, specs, dist.is_main)
            dist.barrier()  # all ranks done talking before any leaves (see inference.runner.run)
            if dist.is_main:
                _evaluate_and_report(cfg, steps, manifests, failed, start)
    finally:
        D.shutdown(dist)
    return steps


def _evaluate_and_report(cfg: RunConfig, steps: StepLog, manifests: list[Path], failed: list[str],
                         start: float) -> None:
    with page_out_of_date_on_failure(cfg.out, "run (evaluate, report)"):
        if cfg.evaluate is not None:
            evaluate(cfg, steps, manifests)
        if cfg.report:
            report(cfg, steps)
    _summary(cfg, steps, time.perf_counter() - start)
    if failed:
        failures = ResultsLayout(cfg.out).failures
        raise MlreassessError(f"{len(failed)} inference unit(s) failed (see {failures}): {failed[0]}")


def _summary(cfg: RunConfig, steps: StepLog, elapsed: float) -> None:
    if steps.nothing_done:
        log.info(f"run: nothing to do: all {len(steps.entries)} steps were up to date ({cfg.out})")
    else:
        skipped = len(steps.entries) - len(steps.done)
        log.info(f"run: {len(steps.done)} step(s) done, {skipped} up to date, in {elapsed:.1f} s; results in {cfg.out}")
