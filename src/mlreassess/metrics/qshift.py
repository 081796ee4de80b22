"""How conformal set statistics move with Q-hat: the calibration half's part of their intervals.

A conformal set is the leading run of classes whose score is <= Q-hat, so each sample's set, and
every statistic of it, is a step function of Q-hat. `shift_sums` evaluates, for each distinct Q-hat
of the calibration resamples (`conformal.QhatReplicates`: pairs (low, high) where the top-K only
brackets Q-hat), the per-stratum sums of a per-sample statistic minus their value at the point
estimate, without re-scoring every sample at every Q-hat: a sample's value changes only where one
of its scores is passed, so the sums are accumulated from those changes (events), O(events) work.
`scoring` adds the shift of resample b to the test resample b's sums (docs/metrics.md,
"Intervals"). Pure functions on arrays.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

# value(rows, a, b) -> (E, c): per-sample statistics of the sets in states a (low Q-hat) and b (high)
ValueFn = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def _first_reached(q: np.ndarray, state_scores: np.ndarray) -> np.ndarray:
    """(r, W) int32: the first index p with q[p] >= score (len(q): never); non-decreasing along W."""
    return np.searchsorted(q, state_scores, side="left").astype(np.int32)


def _states_at(first: np.ndarray, rows: np.ndarray, p: np.ndarray, span: int) -> np.ndarray:
    """(E,) the state of local row rows[e] at pair p[e]: how many of its scores q[p] reaches.

    Each row of `first` is sorted, so with the row offset r * span added the flat array is sorted
    and one searchsorted counts every (row, p) at once."""
    width = first.shape[1]
    flat = (first.astype(np.int64) + (np.arange(len(first), dtype=np.int64) * span)[:, None]).ravel()
    return np.searchsorted(flat, rows * span + p, side="right") - rows * width


def shift_sums(state_scores: np.ndarray, values: np.ndarray, point: np.ndarray, value: ValueFn,
               stratum: np.ndarray, n_strata: int) -> np.ndarray:
    """(S, P, c) per-stratum sums over these rows of value(at pair p) - value(at the point estimate).

    state_scores: (r, W) each row non-decreasing (`sets.conformal_state_scores`); values: (P, 2)
    the (low, high) Q-hat pairs, non-decreasing in both columns; point: (r, c) the rows' values at
    the point estimate; stratum: (r,) each row's stratum. NaN values count as 0 (not applicable)."""
    n_pairs = len(values)
    out = np.zeros((n_strata, n_pairs, point.shape[1]))
    if not len(state_scores) or not n_pairs:
        return out
    local = np.arange(len(state_scores))
    if np.array_equal(values[:, 0], values[:, 1]):
        a0 = b0 = (state_scores <= values[0, 1]).sum(axis=1)
        rows, p, a = _single_events(state_scores, values[:, 1])
        b = a
    else:
        rows, p, a, b, a0, b0 = _paired_events(state_scores, values)
    v0 = np.nan_to_num(value(local, a0, b0))
    if len(rows):
        v = np.nan_to_num(value(rows, a, b))
        prev = np.where((np.r_[-1, rows[:-1]] == rows)[:, None], np.vstack([v0[:1], v[:-1]]), v0[rows])
        np.add.at(out, (stratum[rows], p), v - prev)
    base = np.zeros((n_strata, point.shape[1]))
    np.add.at(base, stratum, v0 - np.nan_to_num(point))
    return np.cumsum(out, axis=1) + base[:, None, :]


def _single_events(state_scores: np.ndarray, q: np.ndarray):
    """(rows, p, state) of every change when one Q-hat moves along q: a score in (q[0], q[-1]] is
    passed at the first p with q[p] >= it, and the row's state is then its column + 1 (the scores
    before it are passed too). np.nonzero's row-major order is (row, p) order; of several columns
    passed at one p the last gives the state."""
    rows, cols = np.nonzero((state_scores > q[0]) & (state_scores <= q[-1]))
    p = np.searchsorted(q, state_scores[rows, cols], side="left")
    last = np.r_[(rows[1:] != rows[:-1]) | (p[1:] != p[:-1]), True] if len(rows) else np.zeros(0, dtype=bool)
    return rows[last], p[last], cols[last] + 1


def _paired_events(state_scores: np.ndarray, values: np.ndarray):
    """(rows, p, a, b, a0, b0) when the low and the high end move apart (the top-K brackets Q-hat):
    every (row, p) where either state changes, sorted, with both states there, and at p = 0."""
    n_pairs = len(values)
    first_lo, first_hi = _first_reached(values[:, 0], state_scores), _first_reached(values[:, 1], state_scores)
    local = np.arange(len(state_scores))
    span = n_pairs + 1
    key = np.unique(np.concatenate([(f.astype(np.int64) + local[:, None] * span)[(f > 0) & (f < n_pairs)]
                                    for f in (first_lo, first_hi)]))  # (row, p) of every change, sorted
    rows, p = key // span, key % span
    a, b = _states_at(first_lo, rows, p, span), _states_at(first_hi, rows, p, span)
    return rows, p, a, b, (first_lo == 0).sum(axis=1), (first_hi == 0).sum(axis=1)
