"""Metrics: pure functions over arrays, and the `evaluate` stage that applies them to RESULTS.

- `core`: per-sample scores (top-1, top-k, ReaL, sample accuracy, recall@g) and ranks.
- `aggregate`: per-sample scores -> percent estimates (mean, subgroup accuracy, ASMA).
- `bootstrap`: the seeded, stratified resamples shared by every model of a dataset.
- `scoring`: every model of one dataset -> estimates with bootstrap replicates.
- `checks`: what a manifest or predictions file must hold to be scored (types, a softmax's top-k).
- `inputs`, `table`, `evaluate`: read manifests and predictions, lay out and write metrics.parquet
  (the only file I/O of this package).
"""
