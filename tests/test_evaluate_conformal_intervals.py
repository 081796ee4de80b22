"""Conformal rows' intervals include the calibration half's variability (docs/metrics.md, "Intervals"):
over independent draws of a synthetic V1 (each with its own conformal seed), the expected value of
APS / RAPS size and coverage falls inside the interval at about the nominal rate; with Q-hat held
fixed (the intervals before) it does not."""

from __future__ import annotations

import numpy as np
import pytest

from mlreassess.metrics import core, scoring
from mlreassess.metrics.beyond import SetParams
from mlreassess.metrics.bootstrap import percentile_interval
from mlreassess.metrics.inputs import Prediction, make_sample
from mlreassess.metrics.scoring import evaluate_dataset

METRICS = ("aps_size", "aps_label_coverage", "raps_size", "raps_label_coverage")
TRIALS, N, B = 20, 800, 200


def _draw(seed: int):
    """A V1 of N images and a model's softmax: a confident model with a flat tail (so APS sizes move
    a lot with Q-hat); labels its boosted class 85% of the time, else from a tempered copy."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(N, 1000))
    boosted = rng.integers(0, 1000, N)
    logits[np.arange(N), boosted] += rng.normal(9.0, 2.0, N)
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p = (p / p.sum(axis=1, keepdims=True)).astype(np.float16).astype(np.float32)
    truth = np.exp(logits / 1.1)
    truth /= truth.sum(axis=1, keepdims=True)
    label = np.where(rng.random(N) < 0.85, boosted, (truth.cumsum(axis=1) > rng.random((N, 1))).argmax(axis=1))
    ids = np.array([f"s{seed}_{i:05d}" for i in range(N)], dtype=object)
    sample = make_sample("imagenet_v1", "imagenet_v1", ids, label, core.label_sets([[int(x)] for x in label]))
    p = p[_positions(ids, sample)]  # in the Sample's order
    top = np.argsort(-p, axis=1, kind="stable")[:, :10]
    return sample, Prediction("m", None, np.arange(N), top, np.take_along_axis(p, top, axis=1), p.astype(np.float16))


def _positions(ids: np.ndarray, sample) -> np.ndarray:
    where = {sid: i for i, sid in enumerate(ids)}
    return np.array([where[s] for s in sample.sample_ids])


def _intervals() -> dict[str, list[tuple[float, float, float]]]:
    out: dict[str, list] = {m: [] for m in METRICS}
    for seed in range(TRIALS):
        sample, pred = _draw(seed)
        res = evaluate_dataset(sample, [pred], n_boot=B, seed=seed, calibrate=True,
                               sets=SetParams(seed=seed, kreg=2, lam=0.01, map_bootstrap=0))
        for m in METRICS:
            e = res.estimates["m"][(m, None)]
            out[m].append((e.value_pct, *percentile_interval(e.reps, 95.0)))
    return out


def _inside(got: list[tuple[float, float, float]]) -> int:
    target = np.mean([v for v, _, _ in got])  # the expected value over draws (and splits)
    return sum(lo <= target <= hi for _, lo, hi in got)


@pytest.mark.slow
def test_intervals_cover_the_expected_value_over_calibration_splits(monkeypatch):
    got = _intervals()
    inside = {m: _inside(v) for m, v in got.items()}
    assert sum(inside.values()) >= 0.88 * TRIALS * len(METRICS), inside  # nominal 95%
    assert min(inside.values()) >= 0.8 * TRIALS, inside
    monkeypatch.setattr(scoring, "_shift", lambda *args: 0.0)  # Q-hat held fixed: the intervals before
    fixed = {m: _inside(v) for m, v in _intervals().items()}
    assert fixed["aps_size"] + fixed["raps_size"] <= 0.8 * 2 * TRIALS, fixed
    widths = {m: np.mean([hi - lo for _, lo, hi in v]) for m, v in got.items()}
    spread = {m: np.std([v for v, _, _ in got[m]]) for m in METRICS}
    for m in ("aps_size", "raps_size"):  # about 2 x 1.96 sd of the values over draws, not several times it
        assert 2.5 * spread[m] < widths[m] < 6 * spread[m], (m, widths[m], spread[m])
