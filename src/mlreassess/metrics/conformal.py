"""Split-conformal calibration of APS and RAPS sets (Angelopoulos et al., "Uncertainty sets for image
classifiers using conformal prediction", and their conformal_classification code).

- Conformal score of a sample whose true label y sits at rank r: the probability mass ranked above
  y, plus u * p_y (u ~ U(0, 1), the randomisation), plus lam * (r - kreg)+ (RAPS; lam = 0 is APS).
  The "true label" is the original single label, as in the papers (ReaL sets only enter the
  evaluation of the sets).
- Q-hat = the ceil((n + 1)(1 - alpha))-th smallest calibration score (infinite when that exceeds
  n), which guarantees coverage >= 1 - alpha of the single label on exchangeable data. (Their code
  takes numpy's 'higher' (1 - alpha) quantile, about one sample lower.)
- RAPS's kreg and lam, unless given, are picked as their code does on a tuning split (33% of the
  calibration half, their Table 1 setting): kreg = the 'higher' (1 - alpha) quantile of the true
  label's 0-based rank, plus 1; lam = the value of (0.001, 0.01, 0.1, 0.2, 0.5) giving the
  smallest mean set size there. Q-hat then comes from the rest of the calibration half.
- Not done: their temperature scaling (it needs logits; the stored probabilities are used as they are).
- Past the stored top-K a calibration score is unknown; it is taken at its largest possible value
  (1 + lam * (1000 - kreg)+), which can only raise Q-hat, so the sets keep coverage >= 1 - alpha
  (a conservative conformal predictor); `Calibration.exact` says whether Q-hat is the exact one.
- Randomness: u and the splits come from a hash of (seed, sample_id), so they do not depend on
  the order or the subset of samples, and every model sees the same ones.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from mlreassess.metrics.ranking import Ranked
from mlreassess.metrics.sets import conformal_scores, conformal_sets

LAMBDA_GRID = (0.001, 0.01, 0.1, 0.2, 0.5)  # their pick_lamda_size grid
TUNE_FRACTION = 0.33  # their Table 1 pct_paramtune
APS_KREG = 1  # their Table 1 APS: kreg 1, lam 0 (no penalty)


def hashed_uniform(ids, seed: int, stream: str) -> np.ndarray:
    """(n,) floats in [0, 1) from blake2b(seed, stream, sample_id): order- and subset-independent."""
    out = np.empty(len(ids), dtype=np.float64)
    prefix = f"{int(seed)}\0{stream}\0".encode()
    for i, sid in enumerate(ids):
        digest = hashlib.blake2b(prefix + str(sid).encode(), digest_size=8).digest()
        out[i] = (int.from_bytes(digest, "little") >> 11) / float(1 << 53)
    return out


def half_split(ids, seed: int) -> np.ndarray:
    """(n,) bool: the calibration half, the floor(n / 2) samples first in the seeded hash order."""
    order = np.argsort(hashed_uniform(ids, seed, "split"), kind="stable")
    cal = np.zeros(len(ids), dtype=bool)
    cal[order[: len(ids) // 2]] = True
    return cal


def tune_split(ids, seed: int, cal: np.ndarray) -> np.ndarray:
    """(n,) bool: RAPS's tuning part of the calibration half, the first ceil(33%) in another hash order."""
    rows = np.flatnonzero(cal)
    order = rows[np.argsort(hashed_uniform(np.asarray(ids, dtype=object)[rows], seed, "tune"), kind="stable")]
    tune = np.zeros(len(ids), dtype=bool)
    tune[order[: math.ceil(TUNE_FRACTION * len(rows))]] = True
    return tune


def quantile(scores: np.ndarray, alpha: float) -> float:
    """The ceil((n + 1)(1 - alpha))-th smallest score; inf when that rank exceeds n."""
    n = len(scores)
    k = math.ceil((n + 1) * (1.0 - alpha) - 1e-9)
    if n == 0 or k > n:
        return math.inf
    return float(np.partition(scores, k - 1)[k - 1])


@dataclass(frozen=True)
class Calibration:
    """One model's calibrated sets (alpha, kreg, lam and Q-hat of APS and RAPS) and what they rest on."""

    alpha: float
    aps_qhat: float
    raps_qhat: float
    kreg: int
    lam: float
    n_cal: int  # calibration samples (APS's Q-hat); RAPS's is n_cal - n_tune
    n_tune: int  # tuning samples used to pick kreg / lam (0 when both were given)
    beyond_k: int  # calibration samples whose single label lies past the ranked classes
    aps_exact: bool
    raps_exact: bool

    def info(self) -> dict[str, Any]:
        return {k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in asdict(self).items()}


def label_scores(ranked: Ranked, cum: np.ndarray, label_pos: np.ndarray, u: np.ndarray, kreg: int, lam: float):
    """(score, low) per sample of its single label: score exact where the label is ranked, else its
    largest possible value; low = its smallest possible value (equal to score where ranked)."""
    d, n = ranked.depth, len(u)
    found = label_pos >= 0
    rows = np.arange(n)
    at = np.where(found, label_pos, 0)
    exact = conformal_scores(ranked, cum, u, kreg, lam)[rows, at] if d else np.zeros(n)
    high = 1.0 + lam * max(0, ranked.n_classes - kreg)
    low = (cum[:, -1] if d else np.zeros(n)) + lam * max(0, d + 1 - kreg)
    return np.where(found, exact, high), np.where(found, exact, low)


def _qhat(ranked, cum, label_pos, u, kreg, lam, alpha, rows) -> tuple[float, bool]:
    score, low = label_scores(ranked.rows(rows), cum[rows], label_pos[rows], u[rows], kreg, lam)
    q = quantile(score, alpha)
    unknown = label_pos[rows] < 0
    return q, bool(not unknown.any() or low[unknown].min() >= q)


def pick_kreg(label_pos: np.ndarray, alpha: float, depth: int) -> int:
    """Their pick_kreg: the 'higher' (1 - alpha) quantile of the true label's 0-based rank, plus 1
    (a label past the ranked classes counts as rank `depth`, the least it can be)."""
    ranks = np.where(label_pos >= 0, label_pos, depth)
    return int(np.quantile(ranks, 1.0 - alpha, method="higher")) + 1 if len(ranks) else 1


def pick_lambda(ranked, cum, label_pos, u, alpha: float, kreg: int) -> float:
    """Their pick_lamda_size: the grid value with the smallest mean set size on the tuning samples
    (calibrated and measured there; a set past the ranked classes counts its smallest size)."""
    best, best_size = LAMBDA_GRID[0], math.inf
    for lam in LAMBDA_GRID:
        q, _ = _qhat(ranked, cum, label_pos, u, kreg, lam, alpha, np.arange(len(u)))
        sets = conformal_sets(ranked, cum, u, q, kreg, lam)
        size = float(np.mean(sets.size + sets.extra_lo)) if len(u) else math.inf
        if size < best_size:
            best, best_size = lam, size
    return best


def calibrate(ranked: Ranked, cum: np.ndarray, label_pos: np.ndarray, u: np.ndarray, alpha: float,
              tune: np.ndarray, kreg: int | None = None, lam: float | None = None) -> Calibration:
    """Calibrate APS and RAPS on these rows (the calibration half, single label known and predicted).

    `tune`: (n,) bool, the rows set aside to pick RAPS's kreg / lam when not given."""
    auto = kreg is None or lam is None
    tune = tune if auto else np.zeros(len(u), dtype=bool)
    t = np.flatnonzero(tune)
    if kreg is None:
        kreg = pick_kreg(label_pos[t], alpha, ranked.depth)
    if lam is None:
        lam = pick_lambda(ranked.rows(t), cum[t], label_pos[t], u[t], alpha, kreg)
    aps_q, aps_exact = _qhat(ranked, cum, label_pos, u, APS_KREG, 0.0, alpha, np.arange(len(u)))
    raps_q, raps_exact = _qhat(ranked, cum, label_pos, u, kreg, lam, alpha, np.flatnonzero(~tune))
    return Calibration(alpha, aps_q, raps_q, int(kreg), float(lam), len(u), len(t), int((label_pos < 0).sum()),
                       aps_exact, raps_exact)
