"""Check a top-K-only evaluation against the full-softmax evaluation of the same predictions (issue 24).

Every row of the top-K metrics.parquet is matched with the softmax one (model, dataset, metric,
label_count, param) and its `bound` checked: `upper` -> the exact value is not above it, `lower` ->
not below, null -> equal (within --tol); `neither` claims no side and is only counted. The
softmax rows must all be exact (null `bound`). Prints the counts per kind and the largest
violation; exits 1 if any row violates or the two files do not hold the same rows.

    python scripts/check_topk_bounds.py TOPK/metrics.parquet SOFTMAX/metrics.parquet [--tol 1e-9]
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import pandas as pd

KEY = ["model", "dataset", "metric", "label_count", "param"]


def violations(topk: pd.DataFrame, exact: pd.DataFrame) -> pd.DataFrame:
    """The rows matched on KEY with `side` (exact / upper / lower / neither) and `excess`: how far the
    exact value lies on the wrong side of the top-K value (0 when it keeps to its bound; NaN for neither)."""
    both = topk.merge(exact, on=KEY, suffixes=("", "_exact"), how="outer", indicator=True)
    v, e = both["value_pct"].to_numpy(float), both["value_pct_exact"].to_numpy(float)
    side = both["bound"].fillna("exact").to_numpy(object)
    diff = np.where(np.isnan(v) & np.isnan(e), 0.0, e - v)  # NaN in both (nothing to score) is equal
    excess = np.select([side == "upper", side == "lower", side == "exact"],
                       [np.maximum(diff, 0), np.maximum(-diff, 0), np.abs(diff)], np.nan)
    return both.assign(side=side, excess=np.where(np.isnan(diff) & (side != "neither"), np.inf, excess))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("topk")
    ap.add_argument("softmax")
    ap.add_argument("--tol", type=float, default=1e-9)
    args = ap.parse_args(argv)
    got = violations(pd.read_parquet(args.topk), pd.read_parquet(args.softmax))
    unmatched = int((got["_merge"] != "both").sum())
    not_exact = int(got["bound_exact"].notna().sum())
    got = got[got["_merge"] == "both"]
    bad = got[got["excess"] > args.tol]
    print(f"{len(got)} rows matched, {unmatched} unmatched, {not_exact} softmax rows not exact")
    for side, rows in got.groupby("side"):
        worst = rows["excess"].max()
        print(f"  {side}: {len(rows)} rows" + ("" if side == "neither" else f", max violation {worst:.3g}"))
    for r in bad.itertuples():
        print(f"  VIOLATION {r.model} {r.dataset} {r.metric} g={r.label_count} param={r.param}: "
              f"{r.side} {r.value_pct!r}, exact {r.value_pct_exact!r}")
    return 1 if len(bad) or unmatched or not_exact else 0


if __name__ == "__main__":
    sys.exit(main())
