"""The rows of metrics.parquet: one per (model, dataset, metric, label_count), long format.

`groups` is set on the rows that average subgroups (`asma`, `asma_recall`): the label counts they
averaged, e.g. "2,3,4,6,9"; null elsewhere.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from mlreassess.metrics import bootstrap as bs
from mlreassess.metrics.scoring import DatasetResult

# row order within a model
METRICS = ("top1", "top5", "real", "real_1to5", "real_per_class", "asma", "asma_recall", "subgroup", "recall")
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
    ]
)
COLUMNS = tuple(SCHEMA.names)


def rows_of(result: DatasetResult, level: float) -> list[dict[str, Any]]:
    """One row per estimate of `result`, models sorted, with its percentile interval at `level`."""
    order = {m: i for i, m in enumerate(METRICS)}
    rows = []
    for model in sorted(result.estimates):
        ests = result.estimates[model]
        keys = sorted(ests, key=lambda k: (order[k[0]], -1 if k[1] is None else k[1]))
        if not keys:
            continue
        lows, highs = bs.percentile_interval(np.stack([ests[k].reps for k in keys], axis=1), level)
        for k, lo, hi in zip(keys, lows, highs):
            e = ests[k]
            rows.append(
                {
                    "model": model,
                    "dataset": result.name,
                    "metric": k[0],
                    "label_count": k[1],
                    "value_pct": e.value_pct,
                    "n": e.n,
                    "ci_low_pct": float(lo),
                    "ci_high_pct": float(hi),
                    "groups": e.groups,
                }
            )
    return rows


def metrics_table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=SCHEMA)
