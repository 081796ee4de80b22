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
- Their temperature scaling (`fit_temperature`, `scaled`) is done for the published-convention rows
  when every probability is stored (log-probabilities are the logits up to a per-sample constant).
- Past the stored top-K a calibration score is unknown; it is taken at its largest possible value
  (1 + lam * (1000 - kreg)+), which can only raise Q-hat, so the sets keep coverage >= 1 - alpha
  (a conservative conformal predictor); its smallest possible value gives the least Q-hat the
  top-K allows, so the exact Q-hat lies in [`*_qlow`, `*_qhat`]; `*_exact` says when they meet.
- Q-hat's sampling variability: `qhat_replicates`, Q-hat in bootstrap resamples of the calibration
  samples, drawn as order statistics (the k-th smallest of n draws is F^-1 of a Beta(k, n + 1 - k)).
- Randomness: u and the splits come from a hash of (seed, sample_id), so they do not depend on
  the order or the subset of samples, and every model sees the same ones.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field, fields
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


@dataclass(frozen=True)
class Qhat:
    """A Q-hat from these calibration scores: `high` (unknown scores at their largest: valid sets),
    `low` (at their smallest), equal when `exact`; and the scores themselves (for the replicates)."""

    high: float
    low: float
    exact: bool
    scores_high: np.ndarray
    scores_low: np.ndarray


def _qhat(ranked, cum, label_pos, u, kreg, lam, alpha, rows) -> Qhat:
    score, low = label_scores(ranked.rows(rows), cum[rows], label_pos[rows], u[rows], kreg, lam)
    q = quantile(score, alpha)
    unknown = label_pos[rows] < 0
    exact = bool(not unknown.any() or low[unknown].min() >= q)
    # every unknown score at or above q leaves the order statistic where it is: the low end is q too
    return Qhat(q, q if exact else quantile(low, alpha), exact, score, low)


def pick_kreg(label_pos: np.ndarray, alpha: float, depth: int) -> tuple[int, bool]:
    """Their pick_kreg: the 'higher' (1 - alpha) quantile of the true label's 0-based rank, plus 1
    (a label past the ranked classes counts as rank `depth`, the least it can be), and whether that
    is the value the full ranking gives (the quantile falls on a ranked label)."""
    if not len(label_pos):
        return 1, True
    ranks = np.where(label_pos >= 0, label_pos, depth)
    rank = int(np.quantile(ranks, 1.0 - alpha, method="higher"))
    return rank + 1, bool(rank < depth or (label_pos >= 0).all())


def pick_lambda(ranked, cum, label_pos, u, alpha: float, kreg: int) -> tuple[float, bool]:
    """Their pick_lamda_size: the grid value with the smallest mean set size on the tuning samples
    (calibrated and measured there; a set past the ranked classes counts its smallest size), and
    whether the full ranking must pick the same: true when every size is known, or when the pick's
    largest possible mean size is below every other value's smallest (Q-hat at its low end)."""
    sizes = []  # (what picks, smallest possible, largest possible) mean size per grid value
    for lam in LAMBDA_GRID:
        if not len(u):
            sizes.append((math.inf, math.inf, math.inf))
            continue
        q = _qhat(ranked, cum, label_pos, u, kreg, lam, alpha, np.arange(len(u)))
        high = conformal_sets(ranked, cum, u, q.high, kreg, lam)
        low = conformal_sets(ranked, cum, u, q.low, kreg, lam)
        sizes.append((float(np.mean(high.size + high.extra_lo)), float(np.mean(low.size + low.extra_lo)),
                      float(np.mean(high.size + high.extra_hi))))
    pick = int(np.argmin([s[0] for s in sizes]))  # the first smallest, as their loop keeps it
    known = [s[1] == s[2] for s in sizes]
    certain = all(i == pick or sizes[pick][2] < sizes[i][1] or (known[pick] and known[i]) for i in range(len(sizes)))
    return LAMBDA_GRID[pick], certain


@dataclass(frozen=True)
class QhatReplicates:
    """Q-hat in each bootstrap resample of the calibration samples: `values` (P, 2) the distinct
    (low, high) pairs, non-decreasing in both, and `index` (B,) the pair of resample b."""

    values: np.ndarray
    index: np.ndarray


def qhat_replicates(q: Qhat, alpha: float, n_boot: int, seed: int) -> QhatReplicates:
    """Q-hat of B resamples (with replacement) of the n calibration scores. The k-th smallest of n
    draws from the scores is F^-1 (the sorted scores) of the k-th smallest of n uniforms, a
    Beta(k, n + 1 - k) draw; one draw per resample serves the low and the high end (so the exact
    Q-hat of that resample lies between them). Seeded by (seed, n, k): paired across models."""
    n = len(q.scores_high)
    k = math.ceil((n + 1) * (1.0 - alpha) - 1e-9)
    if n == 0 or k > n or n_boot == 0:
        return QhatReplicates(np.array([[q.low, q.high]]), np.zeros(n_boot, dtype=np.int64))
    draw = np.random.default_rng([int(seed), n, k]).beta(k, n + 1 - k, size=n_boot)
    at = np.clip(np.ceil(n * draw).astype(np.int64) - 1, 0, n - 1)
    rank, index = np.unique(at, return_inverse=True)
    values = np.stack([np.sort(q.scores_low)[rank], np.sort(q.scores_high)[rank]], axis=1)
    return QhatReplicates(values, index.astype(np.int64).ravel())


# --- temperature scaling (their `platt`), from a full softmax -------------------------------------

_LOG_FLOOR = 2.0 ** -25  # a stored float16 zero: below half its smallest step


def fit_temperature(prob: np.ndarray, label_pos: np.ndarray, iterations: int = 50) -> float:
    """The temperature T minimising the calibration samples' negative log-likelihood of
    softmax(log p / T) (their `platt`, from the logits up to a per-sample constant). Newton's
    method on beta = 1 / T: the NLL is convex in beta (a log-sum-exp of linear functions).
    `prob` (n, C) every class's probability, `label_pos` (n,) the single label's column."""
    if not len(prob):
        return 1.0
    beta = 1.0
    for _ in range(iterations):
        grad, curv = _nll_slopes(prob, label_pos, beta)
        step = grad / curv if curv > 0 else -np.sign(grad) * beta
        new = float(np.clip(beta - step, beta / 4, beta * 4))  # a bounded step keeps beta > 0
        done = abs(new - beta) <= 1e-10 * beta
        beta = new
        if done:
            break
    return 1.0 / beta


def _nll_slopes(prob: np.ndarray, label_pos: np.ndarray, beta: float, chunk: int = 4096) -> tuple[float, float]:
    """First and second derivative in beta of the mean NLL: mean(E_w[l] - l_y), mean(Var_w[l])."""
    grad = curv = 0.0
    for a in range(0, len(prob), chunk):
        logp = np.log(np.maximum(prob[a : a + chunk], _LOG_FLOOR))
        w = np.exp(beta * (logp - logp.max(axis=1, keepdims=True)))
        w /= w.sum(axis=1, keepdims=True)
        mean = (w * logp).sum(axis=1)
        grad += float((mean - logp[np.arange(len(logp)), label_pos[a : a + chunk]]).sum())
        curv += float(((w * logp ** 2).sum(axis=1) - mean ** 2).sum())
    return grad / len(prob), curv / len(prob)


def scaled(ranked: Ranked, temperature: float) -> Ranked:
    """The ranking with probabilities softmax(log p / T) (every class ranked; order unchanged)."""
    logp = np.log(np.maximum(ranked.prob, _LOG_FLOOR)) / temperature
    p = np.exp(logp - logp.max(axis=1, keepdims=True))
    return Ranked(ranked.idx, p / p.sum(axis=1, keepdims=True), ranked.stored, ranked.n_classes)


@dataclass(frozen=True)
class Calibration:
    """One model's calibrated sets (alpha, kreg, lam and Q-hat of APS and RAPS) and what they rest on.

    `*_qhat` is the Q-hat the sets use (unknown calibration scores at their largest: valid sets);
    the exact Q-hat lies in [`*_qlow`, `*_qhat`] (`*_exact`: they are equal). `raps_params_exact`:
    kreg and lam are those the full ranking picks. `temperature`: the probabilities were scaled by
    it (None: as stored). `published`: the calibration of the published-convention rows (on
    temperature-scaled probabilities; None: this one). `replicates`: Q-hat per bootstrap resample."""

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
    aps_qlow: float = math.nan
    raps_qlow: float = math.nan
    raps_params_exact: bool = True
    temperature: float | None = None
    published: "Calibration | None" = None
    replicates: dict = field(default_factory=dict, compare=False)  # "aps" / "raps" -> QhatReplicates

    def info(self) -> dict[str, Any]:
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "replicates":
                continue
            if f.name == "published":
                v = None if v is None else v.info()
            out[f.name] = v if not isinstance(v, float) or math.isfinite(v) else None
        return out

    def family(self, method: str) -> tuple[float, float, int, float, bool, bool]:
        """(low Q-hat, Q-hat, kreg, lam, Q-hat exact, kreg / lam exact) of "aps" or "raps"."""
        if method == "aps":
            return self.aps_qlow, self.aps_qhat, APS_KREG, 0.0, self.aps_exact, True
        return self.raps_qlow, self.raps_qhat, self.kreg, self.lam, self.raps_exact, self.raps_params_exact


def calibrate(ranked: Ranked, cum: np.ndarray, label_pos: np.ndarray, u: np.ndarray, alpha: float,
              tune: np.ndarray, kreg: int | None = None, lam: float | None = None, n_boot: int = 0,
              seed: int = 0, temperature: float | None = None) -> Calibration:
    """Calibrate APS and RAPS on these rows (the calibration half, single label known and predicted).

    `tune`: (n,) bool, the rows set aside to pick RAPS's kreg / lam when not given. `n_boot`, `seed`:
    the Q-hat replicates (`qhat_replicates`). `temperature`: recorded (the rows are already scaled)."""
    auto = kreg is None or lam is None
    tune = tune if auto else np.zeros(len(u), dtype=bool)
    t = np.flatnonzero(tune)
    kreg_exact = lam_exact = True
    if kreg is None:
        kreg, kreg_exact = pick_kreg(label_pos[t], alpha, ranked.depth)
    if lam is None:
        lam, lam_exact = pick_lambda(ranked.rows(t), cum[t], label_pos[t], u[t], alpha, kreg)
    aps = _qhat(ranked, cum, label_pos, u, APS_KREG, 0.0, alpha, np.arange(len(u)))
    raps = _qhat(ranked, cum, label_pos, u, kreg, lam, alpha, np.flatnonzero(~tune))
    reps = {name: qhat_replicates(q, alpha, n_boot, seed) for name, q in (("aps", aps), ("raps", raps))}
    return Calibration(alpha, aps.high, raps.high, int(kreg), float(lam), len(u), len(t), int((label_pos < 0).sum()),
                       aps.exact, raps.exact, aps.low, raps.low, bool(kreg_exact and lam_exact), temperature,
                       replicates=reps)
