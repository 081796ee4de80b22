"""RESULTS/predictions + RESULTS/manifests -> RESULTS/metrics.parquet (the only file I/O of metrics/).

Orchestration only: `inputs` reads and checks the files, `scoring` computes every model's
estimates per dataset (and the PatchML mean over seeds), `table` lays them out as rows.
"""

from __future__ import annotations

import hashlib
import json
import logging
from functools import partial
from pathlib import Path
from typing import Any, Iterable

from mlreassess.constants import DEFAULT_BOOTSTRAP, DEFAULT_CI_LEVEL, DEFAULT_MIN_GROUP_N
from mlreassess.cpus import capped_workers
from mlreassess.errors import InputError
from mlreassess.io import read_meta, write_table
from mlreassess.metrics.beyond import SetParams
from mlreassess.metrics.inputs import discover, load_prediction, load_sample
from mlreassess.metrics.scoring import PATCHML_MEAN, DatasetResult, evaluate_dataset, mean_over_seeds, seed_mismatch
from mlreassess.metrics.table import metrics_table, rows_of
from mlreassess.options import EvaluateOptions
from mlreassess.progress import bar
from mlreassess.results import ResultsLayout

__all__ = ["PATCHML_MEAN", "evaluate_results", "fingerprint", "scoring_workers", "set_params"]

log = logging.getLogger(__name__)


def fingerprint(inputs: Iterable[Path], params: dict[str, Any]) -> str:
    """Hash of the input files' names, sizes and modification times, and the parameters."""
    h = hashlib.sha256(json.dumps(params, sort_keys=True).encode())
    for p in sorted(inputs):
        st = p.stat()
        h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _check_params(n_boot: int, level: float, seed: int, min_group_n: int) -> None:
    EvaluateOptions(bootstrap=n_boot, ci=level, seed=seed, min_group_n=min_group_n)  # the schema checks the bounds


def scoring_workers(opts: EvaluateOptions) -> int:
    """Processes for `evaluate_results`: --workers, capped at the CPUs available."""
    return capped_workers(opts.workers)


def set_params(opts: EvaluateOptions) -> SetParams:
    """The oracle-free metrics' parameters from the evaluate options (mAP's resamples: at most --bootstrap)."""
    return SetParams(tau=opts.set_tau, mass=opts.set_mass, alpha=opts.conformal_alpha, kreg=opts.raps_kreg,
                     lam=opts.raps_lambda, seed=opts.conformal_seed, calibration=opts.calibration,
                     map_bootstrap=min(opts.map_bootstrap, opts.bootstrap))


def _up_to_date(out: Path, fp: str) -> bool:
    """Whether `out` exists and was made from inputs and parameters with fingerprint `fp`."""
    if not out.exists():
        return False
    try:
        return read_meta(out).get("inputs_fingerprint") == fp
    except InputError:
        return False  # unreadable old output: recompute


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
) -> tuple[Path, dict[str, Any] | None]:
    """Write RESULTS/metrics.parquet; return (path, summary) — summary None when it was up to date.

    `sets`: the oracle-free metrics' parameters (`set_params(EvaluateOptions)`; default: its defaults);
    `workers`: processes scoring models in parallel (`scoring_workers(EvaluateOptions)`), same results."""
    layout = ResultsLayout(results)
    out = Path(out) if out else layout.metrics
    _check_params(n_boot, level, seed, min_group_n)
    sets = sets or SetParams()
    datasets = discover(layout)
    params = {"n_boot": n_boot, "level": level, "seed": seed, "min_group_n": min_group_n, **sets.recorded()}
    fp = fingerprint([m for m, _ in datasets] + [p for _, ps in datasets for p in ps], params)
    if not force and _up_to_date(out, fp):
        return out, None
    rows, info, mismatch = _score_all(datasets, n_boot, level, seed, min_group_n, sets, workers)
    table = metrics_table(rows)
    meta = {"inputs_fingerprint": fp, **params, "ci_method": "stratified percentile bootstrap", "datasets": info}
    if mismatch:
        meta["patchml_mean_skipped"] = mismatch
    write_table(out, table, meta)
    return out, {"rows": table.num_rows, "datasets": info, "patchml_mean_skipped": mismatch}
