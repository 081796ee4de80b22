"""`mlreassess run CONFIG.yaml`: the whole study (manifests, PatchML, inference, metrics, report).

Each stage calls the same Python entry points as its own subcommand and writes into the config's
`out` folder (the RESULTS folder of docs/architecture.md):

    OUT/data/<name>.parquet                 V1 / V2 manifests          (mlreassess data)
    OUT/data/<patchml name>/manifest.parquet  one PatchML set per seed (mlreassess patchml)
    OUT/predictions, OUT/manifests          (mlreassess infer)
    OUT/metrics.parquet                     (mlreassess evaluate)
    OUT/tables, OUT/figures                 (mlreassess report)
    OUT/.run/<step>.json                    what made each finished step (the resume stamps)

Resuming: a manifest step is skipped when its stamp records the same parameters and its output
exists; inference skips every (model, dataset) whose predictions are complete and were made
with the configured precision/crop/top-k; evaluate skips when no input changed; the report when
neither metrics.parquet nor the manifests changed. A second run therefore does nothing, and says so.

Under torchrun every rank runs this: rank 0 builds the manifests while the others wait, all ranks
share the inference (the runner splits it), rank 0 evaluates and reports.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from mlreassess.config import RunConfig
from mlreassess.errors import InputError, MlreassessError

RUN_DIR = ".run"  # resume stamps, inside OUT
DATA_DIR = "data"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class StepLog:
    """What each step did: 'done' (work happened) or 'up to date' (skipped)."""

    entries: list[tuple[str, str]] = field(default_factory=list)
    verbose: bool = True  # False on torchrun ranks other than 0: one log, not one per rank

    def add(self, step: str, status: str, detail: str = "") -> None:
        self.entries.append((step, status))
        if self.verbose:
            log(f"run: {step}: {status}" + (f" ({detail})" if detail else ""))

    @property
    def done(self) -> list[str]:
        return [s for s, st in self.entries if st == "done"]

    @property
    def nothing_done(self) -> bool:
        return not self.done


# --- resume stamps ---------------------------------------------------------------------------------


def _stamp_path(out: Path, step: str) -> Path:
    return out / RUN_DIR / (step.replace("/", "__") + ".json")


def _stamp_matches(out: Path, step: str, params: dict[str, Any], outputs: list[Path]) -> bool:
    path = _stamp_path(out, step)
    if not path.is_file() or not all(p.exists() for p in outputs):
        return False
    try:
        return json.loads(path.read_text()).get("params") == _jsonable(params)
    except (OSError, json.JSONDecodeError):
        return False  # a damaged stamp: redo the step


def _write_stamp(out: Path, step: str, params: dict[str, Any], elapsed_s: float) -> None:
    from mlreassess.io import write_text_atomic

    record = {"step": step, "params": _jsonable(params), "elapsed_s": round(elapsed_s, 3)}
    write_text_atomic(_stamp_path(out, step), json.dumps(record, indent=2, sort_keys=True) + "\n")


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str, sort_keys=True))


# --- stages --------------------------------------------------------------------------------------


def manifest_path(cfg: RunConfig, name: str) -> Path:
    return cfg.out / DATA_DIR / f"{name}.parquet"


def patchml_dir(cfg: RunConfig, seed: int) -> Path:
    return cfg.out / DATA_DIR / f"patchml_seed{seed}"


def _build_manifest(cfg: RunConfig, steps: StepLog, step: str, out: Path, params: dict, build: Callable) -> Path:
    """Build a V1/V2 manifest unless the stamp says the same parameters already made `out`."""
    if _stamp_matches(cfg.out, step, params, [out]):
        steps.add(step, "up to date", str(out))
        return out
    from mlreassess.cli.data import summary
    from mlreassess.datasets.manifest import write_manifest

    start = time.perf_counter()
    manifest = build()
    write_manifest(out, manifest.table, manifest.meta, elapsed_s=time.perf_counter() - start)
    log(summary(manifest, str(out)))
    _write_stamp(cfg.out, step, params, time.perf_counter() - start)
    steps.add(step, "done", f"{len(manifest):,} samples")
    return out


def build_datasets(cfg: RunConfig, steps: StepLog) -> list[Path]:
    """Every manifest the config asks for (built or found up to date), sorted by path."""
    paths: list[Path] = list(cfg.manifests)
    if cfg.v1 is not None:
        v1 = cfg.v1
        params = {"root": v1.root, "real": v1.real, "name": v1.name, "skip_bad": v1.skip_bad}

        def build_v1():
            from mlreassess.datasets.imagenet import build_imagenet_val

            return build_imagenet_val(v1.root, real=v1.real, name=v1.name, skip_bad=v1.skip_bad)

        paths.append(_build_manifest(cfg, steps, f"data/{v1.name}", manifest_path(cfg, v1.name), params, build_v1))
    if cfg.v2 is not None:
        v2 = cfg.v2
        params = {"root": v2.root, "variant": v2.variant, "labels": v2.labels, "name": v2.dataset, "skip_bad": v2.skip_bad}

        def build_v2():
            from mlreassess.datasets.imagenetv2 import build_imagenetv2

            return build_imagenetv2(v2.root, v2.variant, labels_file=v2.labels, name=v2.dataset, skip_bad=v2.skip_bad)

        paths.append(_build_manifest(cfg, steps, f"data/{v2.dataset}", manifest_path(cfg, v2.dataset), params, build_v2))
    if cfg.patchml is not None:
        paths += build_patchml(cfg, steps)
    return paths


def build_patchml(cfg: RunConfig, steps: StepLog) -> list[Path]:
    from mlreassess.patchml import MANIFEST_NAME

    p = cfg.patchml
    assert p is not None
    out = []
    for seed in p.seeds:
        folder = patchml_dir(cfg, seed)
        step = f"patchml/seed{seed}"
        params = {
            "boxes": p.boxes, "seed": seed, "counts": p.counts, "canvas": p.canvas, "min_box_side": p.min_box_side,
            "source_pattern": p.source_pattern, "render_images": p.images if p.render else None,
        }
        manifest = folder / MANIFEST_NAME
        out.append(manifest)
        if _stamp_matches(cfg.out, step, params, [manifest]):
            steps.add(step, "up to date", str(manifest))
            continue
        from mlreassess.patchml import generate

        result = generate(
            p.boxes, seed, folder,
            # Without PNGs (render: false), inference and Figure 8 render canvases on the fly from
            # the source images recorded in the manifest, which saves ~300 kB per canvas.
            images=p.images, render=p.render,
            counts=p.counts, canvas_size=p.canvas, min_box_side=p.min_box_side,
            source_pattern=p.source_pattern,
        )
        _write_stamp(cfg.out, step, params, result.elapsed_s)
        steps.add(step, "done", f"{len(result.manifest):,} canvases from {result.pool_size:,} patches, {result.status}")
    return out


def inference_options(cfg: RunConfig):
    """`runner.Options` from the config; unset values keep the runner's defaults."""
    from dataclasses import fields

    from mlreassess.inference.runner import Options

    inf = cfg.inference
    given = {
        "device": inf.device, "batch_size": inf.batch_size, "precision": inf.precision, "topk": inf.topk,
        "crop": inf.crop, "workers": inf.workers, "channels_last": inf.channels_last, "compile": inf.compile,
        "save_softmax": inf.save_softmax,
        # PatchML canvases not rendered to PNG are rendered from the source images on the fly.
        "source_root": str(cfg.patchml.images) if cfg.patchml and cfg.patchml.images else None,
    }
    known = {f.name for f in fields(Options)}
    opts = Options(**{k: v for k, v in given.items() if v is not None and k in known})
    if inf.device is None:
        import torch

        opts.device = "cuda" if torch.cuda.is_available() else "cpu"
    return opts


def model_specs(cfg: RunConfig) -> list:
    """The configured models with their weight sources, validated (names, weights) up front."""
    from mlreassess.inference.models import ModelSpec, check_specs, read_models_file

    default = cfg.inference.weights or "hub"
    specs = [ModelSpec(name, default) for name in cfg.models]
    if cfg.models_file is not None:
        specs += read_models_file(cfg.models_file, default)
    try:
        return check_specs(specs)
    except InputError as exc:
        raise InputError(f"{cfg.source}: models: {exc}") from None


# Prediction metadata that must match the config for a finished file to count as done.
_PREDICTION_KEYS = ("precision", "crop", "topk")


def _stale_predictions(cfg: RunConfig, manifests: list[Path], specs: list, opts) -> tuple[list[Path], list[Path]]:
    """(complete and matching, stale) predictions files; stale = made with other options, or from an
    earlier build of a manifest the config has since rebuilt (then its RESULTS copy is stale too)."""
    from mlreassess.datasets.manifest import read_manifest
    from mlreassess.inference import writers
    from mlreassess.io import read_meta

    fresh, stale = [], []
    for m in manifests:
        manifest = read_manifest(m)
        try:
            writers.check_manifest_copy(cfg.out, manifest)
            rebuilt = False
        except InputError:  # same name, other rows: the config changed how this dataset is built
            rebuilt = True
            stale.append(writers.manifest_copy_path(cfg.out, manifest.name))
        for spec in specs:
            path = writers.prediction_path(cfg.out, manifest.name, spec.name)
            if not writers.is_complete(path):
                continue
            meta = read_meta(path)
            if rebuilt or any(meta.get(k) != getattr(opts, k) for k in _PREDICTION_KEYS):
                stale.append(path)
            else:
                fresh.append(path)
    return fresh, stale


def infer(cfg: RunConfig, steps: StepLog, manifests: list[Path], specs: list, is_main: bool) -> list[str]:
    """Run the sweep unless every prediction is there; returns the failed units' lines."""
    from mlreassess.inference.runner import run as run_sweep

    opts = inference_options(cfg)
    fresh, stale = _stale_predictions(cfg, manifests, specs, opts)
    total = len(manifests) * len(specs)
    if len(fresh) == total:
        steps.add("infer", "up to date", f"{total} predictions files")
        return []
    if stale and is_main:
        for path in stale:
            log(f"run: {path}: made with other inference options ({', '.join(_PREDICTION_KEYS)}) "
                "or from an older build of its dataset: redoing it")
            path.unlink()
    summary = run_sweep([str(m) for m in manifests], specs, cfg.out, opts)
    if is_main:
        for line in summary.lines():
            log(line)
    steps.add("infer", "done", f"{len(summary.done)} predictions files written, {len(summary.skipped)} already there")
    return [f"{m} on {d}: {e}" for d, m, e in summary.failed]


def evaluate(cfg: RunConfig, steps: StepLog) -> None:
    from mlreassess.metrics.evaluate import evaluate_results

    path, summary = evaluate_results(cfg.out)
    steps.add("evaluate", "up to date" if summary is None else "done", str(path))


def _report_inputs(cfg: RunConfig) -> dict[str, Any]:
    """Sizes and mtimes of what the report reads: metrics.parquet and the manifests."""
    files = [cfg.out / "metrics.parquet", *sorted((cfg.out / "manifests").glob("*.parquet"))]
    return {str(p.relative_to(cfg.out)): [p.stat().st_size, p.stat().st_mtime_ns] for p in files if p.exists()}


def report(cfg: RunConfig, steps: StepLog) -> None:
    from mlreassess.report import ITEMS, Report

    tables, figures = cfg.out / "tables", cfg.out / "figures"
    params = {"inputs": _report_inputs(cfg), "items": list(ITEMS)}
    if _stamp_matches(cfg.out, "report", params, [tables, figures]):
        steps.add("report", "up to date", f"{tables}, {figures}")
        return
    start = time.perf_counter()
    done = Report(cfg.out, tables, figures).run(list(ITEMS), log)
    _write_stamp(cfg.out, "report", params, time.perf_counter() - start)
    steps.add("report", "done", f"{len(done)} of {len(ITEMS)} items")


# --- the whole run -------------------------------------------------------------------------------


def run_study(cfg: RunConfig) -> StepLog:
    """Run (or resume) every stage of `cfg`; raises MlreassessError if some inference failed."""
    from mlreassess.inference import distributed as D

    start = time.perf_counter()
    specs = model_specs(cfg)  # every rank validates, so a bad config stops all of them alike
    dist = D.init_from_env()
    steps = StepLog(verbose=dist.is_main)
    try:
        # Rank 0 builds the manifests; the others wait for its word (success or its error).
        error = None
        if dist.is_main:
            try:
                manifests = build_datasets(cfg, steps)
            except MlreassessError as exc:
                error = str(exc)
                if not dist.active:
                    raise
        error = dist.broadcast(error)
        if error is not None:
            raise MlreassessError(error if dist.is_main else f"rank 0 failed while building the datasets: {error}")
        manifests = sorted(dict.fromkeys(dist.broadcast(manifests if dist.is_main else None)))
        failed = infer(cfg, steps, manifests, specs, dist.is_main)
        dist.barrier()  # all ranks done talking before the group goes (see inference.runner.run)
    finally:
        D.shutdown(dist)
    if not dist.is_main:
        return steps
    if cfg.evaluate:
        evaluate(cfg, steps)
    if cfg.report:
        report(cfg, steps)
    elapsed = time.perf_counter() - start
    if steps.nothing_done:
        log(f"run: nothing to do: all {len(steps.entries)} steps were up to date ({cfg.out})")
    else:
        skipped = len(steps.entries) - len(steps.done)
        log(f"run: {len(steps.done)} step(s) done, {skipped} up to date, in {elapsed:.1f} s; results in {cfg.out}")
    if failed:
        raise MlreassessError(f"{len(failed)} inference unit(s) failed (see {cfg.out / 'failures.jsonl'}): {failed[0]}")
    return steps
