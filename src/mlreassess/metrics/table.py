"""The rows of metrics.parquet: one per (model, dataset, metric, label_count, param), long format.

`groups` is set on the rows that average subgroups (`asma`, `asma_recall`): the label counts they
averaged, e.g. "2,3,4,6,9"; null elsewhere. The oracle-free rows (docs/metrics.md, "Beyond the
oracle") add `param` (a set's tau / q / alpha; curve points are rows with other params and no
interval), `unit` ("pct", or "classes" for coverage error and set sizes), `bound` (null: exact, the
value the full softmax gives; "upper" / "lower": only the stored top-K was used and the exact value
is at most / at least this; "neither": it may lie on either side), `beyond_k`, and on conformal
rows `qhat` ("exact"; "conservative": the top-K only brackets Q-hat and the sets use its largest
value, valid sets) and `temperature` (the probabilities' temperature scaling; null: as stored).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyarrow as pa

from mlreassess.metrics import beyond
from mlreassess.metrics import bootstrap as bs
from mlreassess.metrics.sets import STATS
from mlreassess.metrics.scoring import DatasetResult

# row order within a model
METRICS = ("top1", "top5", "real", "real_1to5", "real_per_class", "asma", "asma_recall", "subgroup", "recall",
           *beyond.RANKING, "map", *(f"{t}_{s}" for t in beyond.SET_TYPES for s in STATS),
           *(f"{t}_{s}" for t in beyond.PUBLISHED for s in beyond.PUB_STATS))
SCHEMA = pa.schema(
    [
        ("model", pa.string()),
        ("dataset", pa.string()),
        ("metric", pa.string()),
        ("label_count", pa.int64()),
        ("value_pct", pa.float64()),
        ("n", pa.int64()),
        ("ci_low_pct", pa.float64()),
        ("ci_high_pct", pa.float64()),
        ("groups", pa.string()),
        ("param", pa.float64()),
        ("unit", pa.string()),
        ("bound", pa.string()),
        ("beyond_k", pa.int64()),
        ("qhat", pa.string()),
        ("temperature", pa.float64()),
    ]
)
COLUMNS = tuple(SCHEMA.names)


def unit_of(metric: str) -> str:
    return "classes" if metric in beyond.CLASS_UNIT else "pct"


# metrics whose interval is shifted by the bootstrap's bias (bootstrap.bias_shifted_interval)
BIAS_SHIFTED = ("map",)


def _intervals(ests: dict, keys: list, level: float) -> dict:
    """key -> (low, high): percentiles of the replicates, keys with equally many computed together;
    mAP's shifted by its bias; no replicates (curve points): no interval."""
    out = {}
    by_len: dict[int, list] = {}
    for k in keys:
        if k[0] in BIAS_SHIFTED and len(ests[k].reps):
            out[k] = bs.bias_shifted_interval(ests[k].reps, ests[k].value_pct, level)
            continue
        by_len.setdefault(len(ests[k].reps), []).append(k)
    for length, ks in by_len.items():
        if length == 0:
            out.update({k: (None, None) for k in ks})
            continue
        lows, highs = bs.percentile_interval(np.stack([ests[k].reps for k in ks], axis=1), level)
        out.update({k: (float(lo), float(hi)) for k, lo, hi in zip(ks, lows, highs)})
    return out


def _sort_key(order: dict, key: tuple) -> tuple:
    param = key[2] if len(key) > 2 else None
    return order[key[0]], -1 if key[1] is None else key[1], -math.inf if param is None else param


def rows_of(result: DatasetResult, level: float) -> list[dict[str, Any]]:
    """One row per estimate of `result`, models sorted, with its percentile interval at `level`."""
    order = {m: i for i, m in enumerate(METRICS)}
    rows = []
    for model in sorted(result.estimates):
        ests = result.estimates[model]
        keys = sorted(ests, key=lambda k: _sort_key(order, k))
        intervals = _intervals(ests, keys, level)
        for k in keys:
            e = ests[k]
            lo, hi = intervals[k]
            rows.append(
                {
                    "model": model,
                    "dataset": result.name,
                    "metric": k[0],
                    "label_count": k[1],
                    "value_pct": e.value_pct,
                    "n": e.n,
                    "ci_low_pct": lo,
                    "ci_high_pct": hi,
                    "groups": e.groups,
                    "param": e.param,
                    "unit": unit_of(k[0]),
                    "bound": e.bound,
                    "beyond_k": e.beyond_k,
                    "qhat": e.qhat,
                    "temperature": e.temperature,
                }
            )
    return rows


def metrics_table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=SCHEMA)


def curve_point_mask(metrics) -> "pd.Series":
    """Which rows of a metrics.parquet DataFrame are curve points (a `param` and no interval), as
    opposed to the headline rows of the set metrics; an older file without `param` has none."""
    if "param" not in metrics.columns:
        return metrics["metric"].isna() & False
    return metrics["param"].notna() & metrics["ci_low_pct"].isna() & metrics["metric"].isin(CURVE_METRICS)


CURVE_METRICS = tuple(f"{t}_{s}" for t in ("thr", "mass") for s in STATS)
