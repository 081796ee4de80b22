"""qshift.shift_sums (the calibration resamples' part of conformal intervals) against evaluating
every sample at every Q-hat pair directly."""

from __future__ import annotations

import numpy as np
import pytest

from mlreassess.metrics import qshift


def _value(scores: np.ndarray):
    # a statistic of (state a, state b) per row that is not monotone: depends on both and on the row
    weight = scores[:, :1] * 10

    def value(rows, a, b):
        a, b = np.asarray(a), np.asarray(b)
        out = np.stack([a * weight[rows, 0], (b - a) ** 2, np.where(b % 2 == 1, np.nan, b)], axis=1)
        return out.astype(np.float64)
    return value


@pytest.mark.parametrize("seed,single", [(0, True), (1, False), (2, False)])
def test_shift_sums_equal_direct_evaluation(seed: int, single: bool):
    rng = np.random.default_rng(seed)
    r, w = 60, 7
    scores = np.sort(rng.random((r, w)), axis=1)
    scores[:5] = 0.5  # ties within rows and with the pairs
    high = np.sort(np.r_[rng.random(9), 0.5])
    low = high.copy() if single else np.minimum(high, np.sort(rng.random(10)) * 0.9)
    low = np.maximum.accumulate(low)
    values = np.stack([low, high], axis=1)
    stratum = rng.integers(0, 3, size=r)
    value = _value(scores)
    a0, b0 = (scores <= 0.4).sum(axis=1), (scores <= 0.6).sum(axis=1)
    point = value(np.arange(r), a0, b0)
    got = qshift.shift_sums(scores, values, point, value, stratum, 3)
    for p, (lo, hi) in enumerate(values):
        direct = np.nan_to_num(value(np.arange(r), (scores <= lo).sum(axis=1), (scores <= hi).sum(axis=1)))
        for s in range(3):
            want = direct[stratum == s].sum(axis=0) - np.nan_to_num(point[stratum == s]).sum(axis=0)
            np.testing.assert_allclose(got[s, p], want, atol=1e-9, err_msg=f"pair {p} stratum {s}")


def test_no_rows_or_one_pair():
    value = _value(np.ones((1, 1)))
    assert qshift.shift_sums(np.zeros((0, 3)), np.array([[0.5, 0.5]]), np.zeros((0, 3)), value,
                             np.zeros(0, dtype=np.int64), 2).shape == (2, 1, 3)
    scores = np.array([[0.1, 0.9]])
    point = value(np.arange(1), np.array([1]), np.array([1]))
    got = qshift.shift_sums(scores, np.array([[0.5, 0.5]]), point, value, np.zeros(1, dtype=np.int64), 1)
    np.testing.assert_allclose(got, 0.0)  # the only pair is the point: no shift
