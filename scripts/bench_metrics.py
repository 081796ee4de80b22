"""Benchmark `mlreassess evaluate`'s engine on synthetic top-k arrays shaped like the study.

Default: 300 models x (50k V1 + 10k V2 + 5 x 72k PatchML) samples, K = 10, 1,000 bootstrap
resamples. Predictions are generated lazily per model (random top-10 lists with probabilities,
each position showing one of the sample's labels ~60% of the time; --softmax adds a full
softmax), so memory stays bounded; generation time is reported separately. Every metric of
docs/metrics.md is computed, the oracle-free ones (ranking, sets, conformal, mAP) included.

    .venv/bin/python scripts/bench_metrics.py [--models 300] [--scale 1.0] [--bootstrap 1000] [--softmax]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import time

import numpy as np

from mlreassess.constants import DEFAULT_BOOTSTRAP, NUM_CLASSES
from mlreassess.metrics import core
from mlreassess.metrics.inputs import Prediction, make_sample
from mlreassess.metrics.scoring import evaluate_dataset, mean_over_seeds
from mlreassess.metrics.table import rows_of

V1_SHARES = {0: 3163, 1: 39394, 2: 5408, 3: 1319, 4: 411, 5: 161, 6: 88, 7: 41, 8: 13, 9: 2}  # ReaL, 50k
V2_SHARES = {1: 5083, 2: 2385, 3: 1306, 4: 628, 5: 237, 6: 232}  # paper Table 1, 10k
PATCHML_SHARES = {1: 900, 2: 26778, 3: 17870, 4: 13281, 5: 600, 6: 8766, 7: 300, 8: 200, 9: 5736}


def synthetic_dataset(name: str, kind: str, shares: dict[int, int], n: int, rng: np.random.Generator):
    counts = np.array(list(shares.keys()))
    probs = np.array(list(shares.values()), dtype=float)
    g = rng.choice(counts, size=n, p=probs / probs.sum())
    pad = np.full((n, max(counts.max(), 1)), -1, dtype=np.int64)
    for i, gi in enumerate(g):
        pad[i, :gi] = np.sort(rng.choice(NUM_CLASSES, size=gi, replace=False))
    labels = core.LabelSets(pad, g.astype(np.int64))
    label = np.where(g > 0, pad[:, 0], -1) if kind != "patchml" else np.full(n, -1)
    ids = np.array([f"s{i:07d}" for i in range(n)], dtype=object)
    return make_sample(name, kind, ids, label, labels)


def lazy_prediction(sample, model: str, seed: int, k: int, softmax: bool = False):
    def build() -> Prediction:
        # each position j < g shows the sample's j-th label with probability 0.6, else a random
        # class not already in the row; probabilities: a top-1 in U(.2, .95), then halving, and the
        # mass left spread over the other classes (as a label-smoothed softmax does)
        rng = np.random.default_rng(seed)
        n = len(sample.label)
        width = min(k, sample.labels.pad.shape[1])
        labels = np.full((n, k), -1, dtype=np.int64)
        labels[:, :width] = sample.labels.pad[:, :width]
        hit = (rng.random((n, k)) < 0.6) & (labels >= 0)
        filler = np.argsort(rng.random((n, NUM_CLASSES)), axis=1)[:, : 2 * k] if softmax else None
        topk = np.where(hit, labels, rng.integers(0, NUM_CLASSES, size=(n, k)) if filler is None else filler[:, k:])
        topk = _distinct_rows(topk, filler)
        p1 = rng.uniform(0.2, 0.95, size=(n, 1))
        prob = (p1 * 0.5 ** np.arange(k)).astype(np.float32) * 0.9
        full = None
        if softmax:
            full = np.full((n, NUM_CLASSES), 0.0, dtype=np.float32)
            full += ((1 - prob.sum(axis=1, keepdims=True)) / NUM_CLASSES) * rng.uniform(0.5, 1.5, (n, NUM_CLASSES))
            full = np.minimum(full, prob[:, -1:] * 0.99)
            np.put_along_axis(full, topk, prob, axis=1)
            full = full.astype(np.float16)
        return Prediction(model=model, path=None, rows=np.arange(n), topk=topk, **_extra(prob, full))

    return build


def _distinct_rows(topk: np.ndarray, filler: np.ndarray | None) -> np.ndarray:
    """Replace repeated classes in a row (a softmax's top-k never repeats one) with unused ones."""
    ordered = np.sort(topk, axis=1)
    bad = np.flatnonzero((ordered[:, 1:] == ordered[:, :-1]).any(axis=1))
    for i in bad:  # rare: a label drawn twice
        seen, row = set(), []
        for c in topk[i]:
            c = int(c)
            while c in seen:
                c = (c + 1) % NUM_CLASSES
            seen.add(c)
            row.append(c)
        topk[i] = row
    return topk


def _extra(prob, full) -> dict:
    """Prediction's probability fields, where this version of the package has them (baseline runs)."""
    fields = getattr(Prediction, "__dataclass_fields__", {})
    out = {"prob": prob} if "prob" in fields else {}
    if full is not None and "softmax" in fields:
        out["softmax"] = full
    return out


def _sets(args) -> dict:
    if args.map_bootstrap is None:
        return {}
    from mlreassess.metrics.beyond import SetParams  # only versions with these metrics have it

    return {"sets": SetParams(map_bootstrap=args.map_bootstrap)}


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _calibration(kind: str, calibrations: dict) -> dict:
    """V1 calibrates the conformal sets for the other datasets (versions of the package with them)."""
    if "calibrate" not in evaluate_dataset.__code__.co_varnames:
        return {}
    return {"calibrate": True} if kind == "imagenet_v1" else {"calibrations": calibrations}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=int, default=300)
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every dataset size")
    ap.add_argument("--bootstrap", type=int, default=DEFAULT_BOOTSTRAP)
    ap.add_argument("--topk", type=int, default=10)
    ap.add_argument("--softmax", action="store_true", help="also store a full softmax (exact oracle-free metrics)")
    ap.add_argument("--workers", type=int, default=1, help="processes scoring models (evaluate --scoring-workers)")
    ap.add_argument("--map-bootstrap", type=int, default=None, help="mAP's resamples (evaluate --map-bootstrap)")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    specs = [("imagenet_v1", "imagenet_v1", V1_SHARES, 50_000), ("imagenet_v2", "imagenet_v2", V2_SHARES, 10_000)]
    specs += [(f"patchml_seed{s}", "patchml", PATCHML_SHARES, 72_000) for s in range(1, 6)]
    total_samples = 0
    gen_s = eval_s = 0.0
    n_rows = 0
    patchml = []
    calibrations: dict = {}
    t_all = time.perf_counter()
    cpu_all = time.process_time()  # CPU seconds of this process (all threads): less sensitive to contention
    for name, kind, shares, n in specs:
        n = int(n * args.scale)
        total_samples += n
        sample = synthetic_dataset(name, kind, shares, n, rng)
        preds = [lazy_prediction(sample, f"model{m:03d}", m, args.topk, args.softmax) for m in range(args.models)]
        # time generation alone on one model, to subtract it from the engine's time
        t = time.perf_counter()
        preds[0]()
        gen_one = time.perf_counter() - t
        t = time.perf_counter()
        res = evaluate_dataset(sample, preds, n_boot=args.bootstrap, seed=0, **_calibration(kind, calibrations),
                               **({"workers": args.workers} if args.workers > 1 else {}), **_sets(args))
        calibrations = getattr(res, "calibrations", None) or calibrations
        rows = rows_of(res, 95.0)
        dt = time.perf_counter() - t
        gen_s += gen_one * args.models
        eval_s += dt
        n_rows += len(rows)
        if kind == "patchml":
            patchml.append(res)
        print(f"{name}: n={n:,} models={args.models} {dt:.1f} s (of which ~{gen_one * args.models:.1f} s synthetic generation)", flush=True)
    t = time.perf_counter()
    n_rows += len(rows_of(mean_over_seeds(patchml), 95.0))
    eval_s += time.perf_counter() - t
    wall = time.perf_counter() - t_all
    print(
        f"TOTAL: {args.models} models x {total_samples:,} samples, K={args.topk}, B={args.bootstrap}: "
        f"{eval_s:.1f} s scoring+bootstrap (incl. ~{gen_s:.1f} s generating synthetic predictions), {n_rows:,} metric rows, "
        f"wall {wall:.1f} s, CPU {time.process_time() - cpu_all:.1f} s (+ worker processes "
        f"{_children_cpu():.1f} s); {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, load {os.getloadavg()[0]:.2f}"
    )


if __name__ == "__main__":
    main()
