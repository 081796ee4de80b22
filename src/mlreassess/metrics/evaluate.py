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
from mlreassess.errors import InputError
from mlreassess.io import read_meta, write_table
from mlreassess.metrics.inputs import discover, load_prediction, load_sample
from mlreassess.metrics.scoring import PATCHML_MEAN, DatasetResult, evaluate_dataset, mean_over_seeds, seed_mismatch
from mlreassess.metrics.table import metrics_table, rows_of
from mlreassess.options import EvaluateOptions
from mlreassess.progress import bar
from mlreassess.results import ResultsLayout

__all__ = ["PATCHML_MEAN", "evaluate_results", "fingerprint"]

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


def _up_to_date(out: Path, fp: str) -> bool:
    """Whether `out` exists and was made from inputs and parameters with fingerprint `fp`."""
    if not out.exists():
        return False
    try:
        return read_meta(out).get("inputs_fingerprint") == fp
    except InputError:
        return False  # unreadable old output: recompute


def _score_all(datasets: list[tuple[Path, list[Path]]], n_boot: int, level: float, seed: int, min_group_n: int):
    """(rows, info per dataset, why patchml_mean was not written) of every dataset, then of the PatchML mean."""
    rows, info, patchml = [], {}, []
    with bar(total=sum(len(ps) for _, ps in datasets), desc="evaluate", unit="file") as progress:
        for manifest, paths in datasets:
            sample = load_sample(manifest)
            preds = [partial(load_prediction, path, sample) for path in paths]  # read per block of models
            res = evaluate_dataset(sample, preds, n_boot, seed, progress=progress.update, min_group_n=min_group_n)
            _warn_groups(res)
            rows += rows_of(res, level)
            info[res.name] = res.info
            if res.kind == "patchml":
                patchml.append(res)
            del res
    mismatch = seed_mismatch(patchml)
    if mismatch:
        log.warning(f"{PATCHML_MEAN}: not written: only seeds made with the same PatchML parameters are "
                    f"averaged, and {mismatch} (evaluate such sets in separate RESULTS folders)")
    elif patchml:
        mean = mean_over_seeds(patchml)
        rows += rows_of(mean, level)
        info[PATCHML_MEAN] = mean.info
    return rows, info, mismatch


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
) -> tuple[Path, dict[str, Any] | None]:
    """Write RESULTS/metrics.parquet; return (path, summary) — summary None when it was up to date."""
    layout = ResultsLayout(results)
    out = Path(out) if out else layout.metrics
    _check_params(n_boot, level, seed, min_group_n)
    datasets = discover(layout)
    params = {"n_boot": n_boot, "level": level, "seed": seed, "min_group_n": min_group_n}
    fp = fingerprint([m for m, _ in datasets] + [p for _, ps in datasets for p in ps], params)
    if not force and _up_to_date(out, fp):
        return out, None
    rows, info, mismatch = _score_all(datasets, n_boot, level, seed, min_group_n)
    table = metrics_table(rows)
    meta = {"inputs_fingerprint": fp, **params, "ci_method": "stratified percentile bootstrap", "datasets": info}
    if mismatch:
        meta["patchml_mean_skipped"] = mismatch
    write_table(out, table, meta)
    return out, {"rows": table.num_rows, "datasets": info, "patchml_mean_skipped": mismatch}
