"""How wide are evaluate's intervals, and how much do they move between bootstrap seeds?

For every predictions file of a RESULTS folder (or synthetic ones: --synthetic), and the metrics
top-1 and ReaL (timm's convention, every labelled image), compares at a 95% level:
- `stratified`: what `mlreassess evaluate` reports: percentile bootstrap resampling within each
  label-count group (`metrics.bootstrap.bootstrap_ci` with the label counts as strata);
- `plain`: the same percentile bootstrap over all samples at once (group sizes free to vary);
- `wilson`: the Wilson score interval of a proportion;
- `expected`: the width ratio stratified / plain a bootstrap of infinitely many resamples gives,
  sqrt(sum_g (n_g/n)^2 var_g / n_g / (var / n)): the part of the variance between the groups, which
  stratifying holds fixed, is what it leaves out.
Each bootstrap runs with `--seeds` seeds at `--bootstrap` resamples; the seed-to-seed variation of
the width is its standard deviation over the seeds divided by its mean.

    .venv/bin/python scripts/bench_intervals.py --results RESULTS [--bootstrap 1000] [--seeds 20]
    .venv/bin/python scripts/bench_intervals.py --synthetic [--bootstrap 1000] [--seeds 20]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from mlreassess.metrics import core
from mlreassess.metrics.bootstrap import bootstrap_ci
from mlreassess.metrics.inputs import discover, load_prediction, load_sample
from mlreassess.results import ResultsLayout

Z95 = 1.959963984540054
# Per label count: (images in ImageNet V1 val by ReaL, top-1 and ReaL accuracy of an ~80% model):
# the counts are Table 1's, the accuracies the shape the mini set's EfficientNet-Lite0 shows
# (multi-label images: top-1 lower, ReaL higher); for --synthetic.
V1_GROUPS = {0: (3163, 0.62, np.nan), 1: (39394, 0.83, 0.88), 2: (5408, 0.55, 0.86), 3: (1319, 0.42, 0.85),
             4: (411, 0.35, 0.88), 5: (161, 0.30, 0.90), 6: (144, 0.25, 0.92)}


def wilson_width(scores: np.ndarray) -> float:
    x = scores[~np.isnan(scores)]
    n, p = len(x), float(x.mean())
    return 100 * 2 * Z95 / (1 + Z95**2 / n) * np.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n))


def expected_ratio(scores: np.ndarray, strata: np.ndarray) -> float:
    ok = ~np.isnan(scores)
    x, s = scores[ok], strata[ok]
    n = len(x)
    within = sum((x[s == g].size / n) ** 2 * x[s == g].var() / x[s == g].size for g in np.unique(s))
    return float(np.sqrt(within / (x.var() / n)))


def widths(scores: np.ndarray, strata: np.ndarray | None, n_boot: int, seeds: int) -> np.ndarray:
    return np.array([np.subtract(*bootstrap_ci(scores, strata, n_boot=n_boot, seed=s)[::-1]) for s in range(seeds)])


def study(name: str, scores: np.ndarray, strata: np.ndarray, n_boot: int, seeds: int) -> None:
    strat, plain = widths(scores, strata, n_boot, seeds), widths(scores, None, n_boot, seeds)
    wilson = wilson_width(scores)
    n = int((~np.isnan(scores)).sum())
    print(f"{name}: n={n:,} value {100 * np.nanmean(scores):.2f}%  width stratified {strat.mean():.3f} "
          f"(seed-to-seed {100 * strat.std(ddof=1) / strat.mean():.1f}%), plain {plain.mean():.3f} "
          f"({100 * plain.std(ddof=1) / plain.mean():.1f}%), Wilson {wilson:.3f}; stratified/plain "
          f"{strat.mean() / plain.mean():.3f}, /Wilson {strat.mean() / wilson:.3f}, expected "
          f"{expected_ratio(scores, strata):.3f}", flush=True)


def from_results(results: Path, n_boot: int, seeds: int) -> None:
    for manifest, paths in discover(ResultsLayout(results)):
        sample = load_sample(manifest)
        for path in paths:
            pred = load_prediction(path, sample)
            topk = np.full((len(sample.label), pred.topk.shape[1]), 0, dtype=np.int64)
            topk[pred.rows] = pred.topk
            have = np.zeros(len(sample.label), bool)
            have[pred.rows] = True
            top1 = np.where(have & (sample.label >= 0), core.top1_correct(topk, sample.label), np.nan)
            real = np.where(have & (sample.labels.count > 0), core.real_correct(topk, sample.labels), np.nan)
            for metric, scores in (("top1", top1), ("real", real)):
                if np.isfinite(scores).any():
                    study(f"{sample.name} {pred.model} {metric}", scores.astype(float), sample.labels.count, n_boot, seeds)


def synthetic(n_boot: int, seeds: int) -> None:
    rng = np.random.default_rng(0)
    strata = np.concatenate([np.full(n, g) for g, (n, _, _) in V1_GROUPS.items()])
    for metric, col in (("top1", 1), ("real", 2)):
        scores = np.concatenate([(rng.random(n) < p).astype(float) if p == p else np.full(n, np.nan)
                                 for n, *ps in V1_GROUPS.values() for p in [ps[col - 1]]])
        study(f"synthetic V1 (50,000, ReaL label counts) {metric}", scores, strata, n_boot, seeds)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", type=Path)
    ap.add_argument("--synthetic", action="store_true")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--seeds", type=int, default=20)
    args = ap.parse_args()
    if args.results:
        from_results(args.results, args.bootstrap, args.seeds)
    if args.synthetic:
        synthetic(args.bootstrap, args.seeds)


if __name__ == "__main__":
    main()
