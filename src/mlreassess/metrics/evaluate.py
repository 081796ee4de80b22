"""RESULTS/predictions + RESULTS/manifests -> RESULTS/metrics.parquet (the only file I/O of metrics/).

Orchestration only: `inputs` reads and checks the files, `scoring` computes every model's
estimates per dataset (and the PatchML mean over seeds), `table` lays them out as rows.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

from mlreassess.constants import DEFAULT_BOOTSTRAP, DEFAULT_CI_LEVEL, DEFAULT_MIN_GROUP_N
from mlreassess.cpus import capped_workers
from mlreassess.errors import InputError
from mlreassess.io import METRICS, check_replaceable, read_meta, write_table
from mlreassess.metrics.beyond import SetParams
from mlreassess.metrics.inputs import discover, load_prediction, load_sample
from mlreassess.metrics.scoring import PATCHML_MEAN, DatasetResult, evaluate_dataset, mean_over_seeds, seed_mismatch
from mlreassess.metrics.table import metrics_table, rows_of
from mlreassess.options import EvaluateOptions
from mlreassess.progress import bar
from mlreassess.provenance import changed, derived_changed, derived_from
from mlreassess.results import ResultsLayout

__all__ = ["PATCHML_MEAN", "evaluate_results", "reevaluate", "scoring_workers", "set_params", "why_stale"]

log = logging.getLogger(__name__)

PARAMS = ("n_boot", "level", "seed", "min_group_n")  # the bootstrap parameters metrics.parquet records
ONLY = "only_datasets"  # the datasets scored when not all of RESULTS (a study's own: `mlreassess run`)
# ... and the oracle-free metrics' (`SetParams.recorded`), keyed as SetParams' fields.
SET_PARAMS = {"set_tau": "tau", "set_mass": "mass", "conformal_alpha": "alpha", "raps_kreg": "kreg",
              "raps_lambda": "lam", "conformal_seed": "seed", "map_bootstrap": "map_bootstrap",
              "calibration": "calibration", "set_taus": "taus", "set_masses": "masses"}


def _check_params(n_boot: int, level: float, seed: int, min_group_n: int) -> None:
    EvaluateOptions(bootstrap=n_boot, ci=level, seed=seed, min_group_n=min_group_n)  # the schema checks the bounds


def scoring_workers(opts: EvaluateOptions) -> int:
    """Processes for `evaluate_results`: --scoring-workers, capped at the CPUs available."""
    return capped_workers(opts.scoring_workers, "--scoring-workers")


def set_params(opts: EvaluateOptions) -> SetParams:
    """The oracle-free metrics' parameters from the evaluate options (mAP's resamples: at most --bootstrap)."""
    return SetParams(tau=opts.set_tau, mass=opts.set_mass, alpha=opts.conformal_alpha, kreg=opts.raps_kreg,
                     lam=opts.raps_lambda, seed=opts.conformal_seed, calibration=opts.calibration,
                     map_bootstrap=min(opts.map_bootstrap, opts.bootstrap))


def _inputs(datasets: list[tuple[Path, list[Path]]]) -> list[Path]:
    return [m for m, _ in datasets] + [p for _, ps in datasets for p in ps]


def why_stale(results: str | Path, params: dict[str, Any] | None = None, out: str | Path | None = None) -> str | None:
    """Why metrics.parquet (`out`, default RESULTS/metrics.parquet) does not hold the metrics of the
    predictions and manifests in RESULTS now, in a few words; None when it does. `params`: the
    parameters wanted (None: whichever it was made with). Its record (`derived_from`) names every
    input file with its size, time and sha256, so a predictions file added, removed (a failed redo
    retires its old file), replaced or edited in place shows, and a copied folder does not."""
    layout = ResultsLayout(results)
    out = Path(out) if out else layout.metrics
    if not out.exists():
        return f"{out.name} does not exist"
    try:
        meta = read_meta(out)
    except InputError as exc:
        return str(exc)
    if params is not None:
        reason = changed({k: meta.get(k) for k in params}, params)
        if reason is not None:
            return reason
    only = (params or {}).get(ONLY, meta.get(ONLY))
    return derived_changed(meta.get("derived_from"), _inputs(discover(layout, _names(only))), layout.root)


def _names(only: Any) -> list[str] | None:
    """A recorded `only_datasets` as a list of names (None: every dataset; anything else is ignored)."""
    return [str(n) for n in only] if isinstance(only, list) else None


def reevaluate(results: str | Path, reason: str) -> Path:
    """Recompute RESULTS/metrics.parquet with the parameters it records (those of the command that
    made it), saying why; what `report` does with metrics.parquet that is not current."""
    layout = ResultsLayout(results)
    try:
        meta = read_meta(layout.metrics)
    except InputError:
        meta = {}
    params = {k: meta[k] for k in PARAMS if isinstance(meta.get(k), (int, float)) and not isinstance(meta[k], bool)}
    log.info(f"{layout.metrics}: not current ({reason}): evaluating again"
             + (f" with its parameters ({', '.join(f'{k} {v}' for k, v in params.items())})" if params else ""))
    return evaluate_results(results, force=True, sets=_recorded_sets(meta), only=_names(meta.get(ONLY)), **params)[0]


def _recorded_sets(meta: dict[str, Any]) -> SetParams | None:
    """The oracle-free metrics' parameters metrics.parquet records (None: it records none, the defaults)."""
    given = {field: meta[key] for key, field in SET_PARAMS.items() if key in meta}
    if not given:
        return None
    for field in ("taus", "masses"):
        if isinstance(given.get(field), list):
            given[field] = tuple(given[field])
    try:
        return SetParams(**given)
    except TypeError:
        return None


def _score_all(datasets: list[tuple[Path, list[Path]]], n_boot: int, level: float, seed: int, min_group_n: int,
               sets: SetParams, workers: int = 1):
    """(rows, info per dataset, why patchml_mean was not written) of every dataset, then of the PatchML mean.

    The conformal calibration dataset is scored first (its models' calibrations serve the others);
    rows and info keep the datasets' order."""
    rows_by, info_by, patchml = {}, {}, []
    cal = calibration_index(datasets, sets.calibration)
    calibrations, cal_ids = {}, ()
    order = ([cal] if cal is not None else []) + [i for i in range(len(datasets)) if i != cal]
    with bar(total=sum(len(ps) for _, ps in datasets), desc="evaluate", unit="file") as progress:
        for i in order:
            manifest, paths = datasets[i]
            sample = load_sample(manifest)
            preds = [partial(load_prediction, path, sample) for path in paths]  # read per block of models
            res = evaluate_dataset(sample, preds, n_boot, seed, progress=progress.update, min_group_n=min_group_n,
                                   sets=sets, calibrate=i == cal, calibrations=calibrations, cal_ids=cal_ids,
                                   workers=workers)
            if i == cal:
                calibrations, cal_ids = res.calibrations, res.calibration_ids
            _warn_groups(res)
            rows_by[i] = rows_of(res, level)
            info_by[i] = (res.name, res.info)
            if res.kind == "patchml":
                patchml.append((i, res))
            del res
    rows = [r for i in sorted(rows_by) for r in rows_by[i]]
    info = dict(info_by[i] for i in sorted(info_by))
    patchml = [res for _, res in sorted(patchml, key=lambda t: t[0])]
    mismatch = seed_mismatch(patchml)
    if mismatch:
        log.warning(f"{PATCHML_MEAN}: not written: only seeds made with the same PatchML parameters are "
                    f"averaged, and {mismatch} (evaluate such sets in separate RESULTS folders)")
    elif patchml:
        mean = mean_over_seeds(patchml)
        rows += rows_of(mean, level)
        info[PATCHML_MEAN] = mean.info
    return rows, info, mismatch


def calibration_index(datasets: list[tuple[Path, list[Path]]], name: str | None) -> int | None:
    """Which dataset calibrates the conformal sets: `name` (an error if it has no predictions), else
    `imagenet_v1`, else the first ImageNetV1 dataset by name; None (no conformal rows) if there is none."""
    stems = [m.stem for m, _ in datasets]
    if name is not None:
        if name not in stems:
            raise InputError(f"--calibration {name}: no predictions for a dataset of that name "
                             f"(datasets: {', '.join(stems)})")
        return stems.index(name)
    if "imagenet_v1" in stems:
        return stems.index("imagenet_v1")
    for i, (manifest, _) in enumerate(datasets):
        if read_meta(manifest).get("kind") == "imagenet_v1":
            return i
    log.info("no ImageNetV1 dataset to calibrate conformal sets on: no aps_* / raps_* rows")
    return None


def _warn_groups(res: DatasetResult) -> None:
    """One log line when no design label count has enough samples for ASMA."""
    if res.estimates and not res.info["asma_range_present"]:
        small = ", ".join(f"{g}: {n}" for g, n in res.info["below_min_group_n"].items()) or "none present"
        log.warning(f"{res.name}: no ASMA: no label count of {res.info['design_counts']} has "
                    f"{res.info['min_group_n']} samples or more ({small}); see --min-group-n")


def evaluate_results(
    results: str | Path,
    n_boot: int = DEFAULT_BOOTSTRAP,
    level: float = DEFAULT_CI_LEVEL,
    seed: int = 0,
    force: bool = False,
    out: str | Path | None = None,
    min_group_n: int = DEFAULT_MIN_GROUP_N,
    sets: SetParams | None = None,
    workers: int = 1,
    only: list[str] | None = None,
) -> tuple[Path, dict[str, Any] | None]:
    """Write RESULTS/metrics.parquet; return (path, summary) — summary None when it was up to date.

    `only`: score just these datasets (by name; recorded, so the PatchML mean of a study is over its
    configured seeds, not over every seed an earlier config left in RESULTS); None: every dataset.

    `sets`: the oracle-free metrics' parameters (`set_params(EvaluateOptions)`; default: its defaults);
    `workers`: processes scoring models in parallel (`scoring_workers(EvaluateOptions)`), same results."""
    layout = ResultsLayout(results)
    out = Path(out) if out else layout.metrics
    check_replaceable(out, METRICS)  # `--out` onto a manifest or predictions: refused before any work
    _check_params(n_boot, level, seed, min_group_n)
    sets = replace(sets or SetParams(), map_bootstrap=min((sets or SetParams()).map_bootstrap, n_boot))
    only = sorted(set(only)) if only is not None else None
    datasets = discover(layout, only)
    params = {"n_boot": n_boot, "level": level, "seed": seed, "min_group_n": min_group_n, **sets.recorded(), ONLY: only}
    reason = None if force else why_stale(layout.root, params, out)
    if not force and reason is None:
        return out, None
    if out.exists() and reason is not None:
        log.info(f"{out}: redoing it: {reason}")
    if not datasets:
        log.warning(f"{layout.predictions_dir}: no predictions files: {out.name} has no rows")
    record = derived_from(_inputs(datasets), layout.root)  # before reading: a file replaced meanwhile shows
    rows, info, mismatch = _score_all(datasets, n_boot, level, seed, min_group_n, sets, workers)
    table = metrics_table(rows)
    meta = {"derived_from": record, **params, "ci_method": "stratified percentile bootstrap", "datasets": info}
    if mismatch:
        meta["patchml_mean_skipped"] = mismatch
    write_table(out, table, meta)
    return out, {"rows": table.num_rows, "datasets": info, "patchml_mean_skipped": mismatch}
