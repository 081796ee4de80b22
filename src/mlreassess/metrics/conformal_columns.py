"""One model's conformal set columns (SPEC 8): APS and RAPS, and the same in the published convention.

For each family (`families`): the sets' per-sample statistics, bounded when the stored top-K only
brackets Q-hat (`sets.range_stats` between the sets of the low and the high Q-hat), which samples
needed more than the top-K (`beyond`) and which the top-K could not fix (`open`), and how the
stratum sums move with Q-hat over the calibration resamples (`qshift.shift_sums`, for the
intervals). The published-convention families (`aps_pub`, `raps_pub`: Angelopoulos et al.'s
size and coverage, over every held-out image) use the calibration made on temperature-scaled
probabilities when the softmax was stored (`Calibration.published`). Pure functions on arrays.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from mlreassess.metrics import qshift, sets
from mlreassess.metrics.conformal import Calibration, scaled
from mlreassess.metrics.ranking import Ranked

CONFORMAL = ("aps", "raps")
PUBLISHED = tuple(f"{t}_pub" for t in CONFORMAL)
PUB_STATS = ("label_coverage", "size")  # their "coverage" (of the single label) and "size"


@dataclass(frozen=True)
class Family:
    """A conformal family scored for a model: its row prefix, method and calibration."""

    name: str  # "aps", "raps", "aps_pub", "raps_pub"
    method: str  # "aps" or "raps"
    calibration: Calibration
    stats: tuple[str, ...]

    @property
    def temperature(self) -> float | None:
        return self.calibration.temperature

    def qhat_state(self) -> str:
        """metrics.parquet's `qhat`: "exact", or "conservative" (the top-K only brackets Q-hat, or
        RAPS's kreg / lambda: the sets use the largest Q-hat it allows, valid sets)."""
        _, _, _, _, exact, params_exact = self.calibration.family(self.method)
        return "exact" if exact and params_exact else "conservative"

    @property
    def params_exact(self) -> bool:
        return self.calibration.family(self.method)[5]


def families(calibration: Calibration | None, complete: bool) -> list[Family]:
    """The conformal families of a model on a dataset: none without a calibration; the published
    ones need every probability here too when their calibration was temperature-scaled."""
    if calibration is None:
        return []
    out = [Family(m, m, calibration, sets.STATS) for m in CONFORMAL]
    pub = calibration.published or calibration
    if pub.temperature is None or complete:
        out += [Family(f"{m}_pub", m, pub, PUB_STATS) for m in CONFORMAL]
    return out


def ranking_for(fam: Family, ranked: Ranked, cache: dict) -> Ranked:
    """The ranking the family's sets are made from: temperature-scaled for the published ones (once
    per temperature: `cache`)."""
    if fam.temperature is None:
        return ranked
    if fam.temperature not in cache:
        cache[fam.temperature] = scaled(ranked, fam.temperature)
    return cache[fam.temperature]


@dataclass
class FamilyColumns:
    stats: dict[str, np.ndarray]  # per-sample statistic (`Family.stats`) of the chunk's rows
    beyond: np.ndarray  # (r,) bool: the set needed more than the stored top-K
    open: np.ndarray  # (r,) bool: the top-K does not fix the value (a bound)
    shift: np.ndarray | None  # (S, P, len(stats)): `qshift.shift_sums` of the scored rows


def score(fam: Family, ranked: Ranked, u: np.ndarray, facts: sets.SetFacts, scored: np.ndarray,
          stratum: np.ndarray, n_strata: int) -> FamilyColumns:
    """The family's columns on these rows (`ranked`, already scaled by `fam.temperature` if any: see
    `ranking_for`; the sets' uniforms `u`, `facts`); `scored`: (r,) the rows whose values enter the
    sums (a prediction, held out); `stratum`: (r,) theirs."""
    cum = sets.cumulative(ranked)
    qlow, qhat, kreg, lam, _, _ = fam.calibration.family(fam.method)
    reps = fam.calibration.replicates.get(fam.method)
    top = max(qhat, float(reps.values[:, 1].max())) if reps is not None else qhat
    # the extended set at the largest Q-hat met: its optimistic statistics bound every smaller one's
    ext = None if ranked.complete else sets.set_stats(sets.conformal_sets(ranked, cum, u, top, kreg, lam),
                                                      facts.pos, facts.g, facts.label_pos, facts.has_label)
    facts = replace(facts, depth=ranked.depth, ext=ext)
    state_scores = sets.conformal_state_scores(ranked, cum, u, kreg, lam)
    a, b = sets.conformal_state(state_scores, qlow), sets.conformal_state(state_scores, qhat)

    def value(rows: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        return _values(fam, facts.rows(rows), lo, hi)

    point = value(np.arange(len(u)), a, b)
    shift = None
    if reps is not None and len(reps.index):
        at = np.flatnonzero(scored)
        shift = qshift.shift_sums(state_scores[at], reps.values, point[at], lambda r, lo, hi: value(at[r], lo, hi),
                                  stratum[at], n_strata)
    beyond = (b > ranked.stored) | (a != b)
    open_ = (a != b) | (b > ranked.depth) | (not fam.params_exact)
    return FamilyColumns({s: point[:, j] for j, s in enumerate(fam.stats)}, beyond, open_, shift)


def _values(fam: Family, facts: sets.SetFacts, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(E, len(fam.stats)): the statistics' bounds over the sets between states a and b. The
    published size is over every held-out image (a label set or not): its smallest, at a."""
    if fam.stats == PUB_STATS:
        cover = sets.leading_stats(facts, b)["label_coverage"]
        return np.stack([cover, np.minimum(a, facts.depth).astype(np.float64)], axis=1)
    got = sets.range_stats(facts, a, b)
    return np.stack([got[s] for s in fam.stats], axis=1)
