"""Beyond the oracle (SPEC 8): one model's per-sample columns for the metrics that are not handed g.

`scoring` asks this module, per model of a dataset, for
- bootstrap columns (`BOOT`): LRAP, coverage error, label ranking loss, and for each set
  (`SET_TYPES`: p >= tau, cumulative mass >= q, conformal APS and RAPS) its `sets.STATS`, and the
  published-convention size and coverage of APS / RAPS (`conformal_columns`); they join the
  top-1 / ASMA columns in the shared resample product;
- point-only columns: per metric family, which samples needed more than the stored top-K (and for
  conformal sets, which the top-K could not fix), and the curves over `SET_TAU_GRID` /
  `SET_MASS_GRID` (no interval: their cost would be 12 x 8 more columns);
- the conformal columns' shift with Q-hat over the calibration resamples (their intervals);
- mAP over classes with its own replicates (`ranking.class_ap_replicates`);
- on the calibration dataset, the model's conformal `Calibration` (and the temperature-scaled one).
It also lists the rows these become (`row_specs`). Pure functions on arrays: no file I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Iterator

import numpy as np

from mlreassess.constants import (
    DEFAULT_CONFORMAL_ALPHA,
    DEFAULT_MAP_BOOTSTRAP,
    DEFAULT_SET_MASS,
    DEFAULT_SET_TAU,
    NUM_CLASSES,
    SET_MASS_GRID,
    SET_TAU_GRID,
)
from mlreassess.metrics import conformal, conformal_columns, ranking, sets
from mlreassess.metrics.aggregate import Estimate
from mlreassess.metrics.conformal import Calibration
from mlreassess.metrics.conformal_columns import CONFORMAL, PUB_STATS, PUBLISHED
from mlreassess.metrics.core import LabelSets
from mlreassess.metrics.inputs import Prediction, Sample

SET_TYPES = ("thr", "mass", "aps", "raps")
RANKING = ("lrap", "coverage_error", "label_ranking_loss")
BOOT = (RANKING + tuple(f"{t}_{s}" for t in SET_TYPES for s in sets.STATS)
        + tuple(f"{t}_{s}" for t in PUBLISHED for s in PUB_STATS))
FAMILIES = ("rank",) + SET_TYPES + PUBLISHED  # which samples needed more than the stored top-K, per family
OPEN = CONFORMAL + PUBLISHED  # families whose values the top-K may leave open although no set extends
# metrics in classes, not percent (metrics.parquet `unit`), and the side their top-K bound is on
CLASS_UNIT = {"coverage_error"} | {f"{t}_size" for t in SET_TYPES + PUBLISHED}
LOWER_BOUND = CLASS_UNIT | {"label_ranking_loss"}  # a larger true value is possible; for the others a smaller one
# 2: `bound` null / upper / lower / neither apart from `qhat`, conformal intervals with the calibration
# resamples, the published-convention rows, label ranking loss (1: `bound` "conservative")
ROWS_VERSION = 2
_ROWS_PER_CHUNK = 8192  # rows ranked at a time from a full softmax (8192 x 1000 float64 = 65 MB)


@dataclass(frozen=True)
class SetParams:
    """The evaluate options of these metrics (`options.EvaluateOptions`), with the curve grids."""

    tau: float = DEFAULT_SET_TAU
    mass: float = DEFAULT_SET_MASS
    alpha: float = DEFAULT_CONFORMAL_ALPHA
    kreg: int | None = None  # RAPS; None: picked on a tuning split (their procedure)
    lam: float | None = None
    seed: int = 0  # the calibration split and the sets' randomisation
    map_bootstrap: int = DEFAULT_MAP_BOOTSTRAP
    calibration: str | None = None  # dataset to calibrate on; None: the ImageNetV1 one
    taus: tuple[float, ...] = SET_TAU_GRID
    masses: tuple[float, ...] = SET_MASS_GRID

    def recorded(self) -> dict:
        """What metrics.parquet records (and its fingerprint covers). `oracle_free_rows`: the version of
        these rows' meaning, so a file written before it changed is computed again, not misread."""
        return {"oracle_free_rows": ROWS_VERSION, "set_tau": self.tau, "set_mass": self.mass, "conformal_alpha": self.alpha, "raps_kreg": self.kreg,
                "raps_lambda": self.lam, "conformal_seed": self.seed, "map_bootstrap": self.map_bootstrap,
                "calibration": self.calibration, "set_taus": list(self.taus), "set_masses": list(self.masses)}


def curve_points(params: SetParams) -> list[tuple[str, float]]:
    """(set type, parameter) of every curve point that is not the headline parameter."""
    return ([("thr", t) for t in params.taus if t != params.tau]
            + [("mass", q) for q in params.masses if q != params.mass])


def point_names(params: SetParams) -> list[str]:
    """The point-only columns: per family its beyond-K flag, then each curve point's stats and flag."""
    names = [f"{f}_beyond" for f in FAMILIES] + [f"{f}_open" for f in OPEN]
    for t, p in curve_points(params):
        names += [f"{t}@{p!r}_{s}" for s in (*sets.STATS, "beyond")]
    return names


@dataclass
class Context:
    """What every model of one dataset shares: parameters, per-sample uniforms and splits (Sample order)."""

    params: SetParams
    u: np.ndarray  # (n,) the sets' randomisation (conformal.hashed_uniform)
    cal: np.ndarray  # (n,) bool: rows calibrating the conformal sets (the calibration dataset only)
    tune: np.ndarray  # (n,) bool: RAPS's tuning rows within `cal`
    evaluable: np.ndarray  # (n,) bool: rows whose conformal sets are scored
    map_counts: np.ndarray  # (B_map, n) uint8: the first resamples of the dataset's matrix
    calibrations: dict[str, Calibration] = field(default_factory=dict)
    is_calibration: bool = False
    names: list[str] = field(default_factory=list)
    stratum: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # (n,) each row's stratum
    n_strata: int = 0
    n_boot: int = 0  # resamples of the dataset (and of its calibration Q-hat)
    boot_seed: int = 0

    def __post_init__(self) -> None:
        self.names = point_names(self.params)


def context(sample: Sample, params: SetParams, counts: np.ndarray, is_calibration: bool,
            calibrations: dict[str, Calibration] | None = None, cal_ids=None, boot_seed: int = 0) -> Context:
    """The dataset's Context. On the calibration dataset the seeded half of its samples calibrates and
    the other half is scored; elsewhere every sample is scored but those whose id is in `cal_ids`."""
    ids = sample.sample_ids
    u = conformal.hashed_uniform(ids, params.seed, "u")
    n = len(ids)
    if is_calibration:
        cal = conformal.half_split(ids, params.seed)
        tune = conformal.tune_split(ids, params.seed, cal & (sample.label >= 0))
        evaluable = ~cal
    else:
        cal = tune = np.zeros(n, dtype=bool)
        evaluable = ~np.isin(ids.astype(str), np.asarray(sorted(cal_ids or ()), dtype=str))
    ends = np.asarray([b for _, b in sample.bounds], dtype=np.int64)
    stratum = np.searchsorted(ends, np.arange(n), side="right")
    return Context(params, u, cal, tune, evaluable, counts[: params.map_bootstrap], dict(calibrations or {}),
                   is_calibration, stratum=stratum, n_strata=len(sample.bounds), n_boot=int(counts.shape[0]),
                   boot_seed=int(boot_seed))


@dataclass
class ModelColumns:
    """One model's columns on a dataset (`model_columns`)."""

    boot: np.ndarray  # (n, len(BOOT)) float64, NaN where not applicable
    point: np.ndarray  # (n, len(ctx.names)) float64, NaN where not applicable
    has_prob: bool  # sets and mAP need probabilities
    complete: bool  # the full softmax was stored: every value is exact (conformal: with an exact Q-hat)
    calibration: Calibration | None
    map: Estimate | None
    families: dict[str, conformal_columns.Family] = field(default_factory=dict)  # conformal families scored
    shifts: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # family -> ((S, P, c), (B,) index)


# --- a model's ranking ---------------------------------------------------------------------------


def _pred_rows(n: int, pred: Prediction) -> np.ndarray:
    """(n,) row of each sample in the predictions (-1: no prediction)."""
    inv = np.full(n, -1, dtype=np.int64)
    inv[pred.rows] = np.arange(len(pred.rows))
    return inv


def _merged(pred: Prediction, at: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """(len(at), 1000) float32: the stored float32 top-K probabilities for their classes, the float16
    softmax for the rest, held just below the K-th (the top-K are the K largest by definition)."""
    full = np.zeros((len(at), NUM_CLASSES), dtype=np.float32)
    full[ok] = pred.softmax[at[ok]]
    if pred.prob is not None and pred.topk.shape[1]:
        top_p = pred.prob[at[ok]].astype(np.float32)
        sub = np.minimum(full[ok], np.nextafter(top_p[:, -1:], np.float32(-np.inf)))
        np.put_along_axis(sub, pred.topk[at[ok]], top_p, axis=1)
        full[ok] = sub
    return full


def ranked_rows(pred: Prediction, inv: np.ndarray, rows: np.ndarray) -> ranking.Ranked:
    """The Ranked of these sample rows: the stored top-K, or with a softmax every class (`_merged`)."""
    at = inv[rows]
    ok = at >= 0
    k = pred.topk.shape[1]
    if pred.softmax is None:
        idx = np.full((len(rows), k), -2, dtype=np.int64)
        idx[ok] = pred.topk[at[ok]]
        prob = None
        if pred.prob is not None:
            prob = np.zeros((len(rows), k), dtype=np.float64)
            prob[ok] = pred.prob[at[ok]]
        return ranking.Ranked(idx, prob, k)
    full = _merged(pred, at, ok)
    order = np.argsort(-full, axis=1, kind="stable")  # ties by class index, as core.canonical_topk
    idx = np.where(ok[:, None], order, -2)
    return ranking.Ranked(idx, np.take_along_axis(full, order, axis=1).astype(np.float64), k)


def _label_column(label: np.ndarray) -> LabelSets:
    return LabelSets(label[:, None].astype(np.int64), (label >= 0).astype(np.int64))


def _chunks(n: int, complete: bool) -> Iterator[np.ndarray]:
    step = _ROWS_PER_CHUNK if complete else max(n, 1)
    for a in range(0, n, step):
        yield np.arange(a, min(n, a + step))


# --- a model's columns ---------------------------------------------------------------------------

_B = {name: i for i, name in enumerate(BOOT)}


def model_columns(sample: Sample, pred: Prediction, ctx: Context) -> ModelColumns:
    """Every per-sample column of one model (NaN where a metric does not apply or no prediction)."""
    n = len(sample.label)
    inv = _pred_rows(n, pred)
    avail = inv >= 0
    complete = pred.softmax is not None or pred.topk.shape[1] >= NUM_CLASSES
    has_prob = pred.prob is not None or pred.softmax is not None
    calib = _calibrate(sample, pred, inv, ctx) if (ctx.is_calibration and has_prob) else ctx.calibrations.get(pred.model)
    out = ModelColumns(np.full((n, len(BOOT)), np.nan), np.full((n, len(ctx.names)), np.nan), has_prob, complete,
                       calib, None, {f.name: f for f in conformal_columns.families(calib if has_prob else None, complete)})
    keep = avail & (sample.labels.count > 0)  # what mAP ranks
    floor = _positive_floor(sample, pred, inv, keep) if (complete and has_prob) else None
    parts = []
    for rows in _chunks(n, complete):
        ranked = ranked_rows(pred, inv, rows)
        _chunk_columns(sample, ranked, rows, ctx, out, avail[rows])
        if has_prob:  # each chunk ranked once; a full softmax's entries pruned with the dataset's floor
            labels = LabelSets(sample.labels.pad[rows], sample.labels.count[rows])
            e = ranking.class_entries(ranked, labels, ranking.label_positions(ranked, labels), keep[rows], floor)
            parts.append(ranking.ClassEntries(rows[e.sample], e.cls, e.score, e.positive, e.n_classes, e.bounded))
    out.boot[~avail] = np.nan
    out.point[~avail] = np.nan
    col = {name: i for i, name in enumerate(ctx.names)}
    for t in out.families:  # conformal sets are scored on the evaluable rows only
        out.boot[np.ix_(~ctx.evaluable, [_B[c] for c in _family_columns(t)])] = np.nan
        out.point[np.ix_(~ctx.evaluable, [col[f"{t}_beyond"], col[f"{t}_open"]])] = np.nan
    needed = _topk_bounded(sample, pred, inv, keep) if (complete and parts) else None
    out.map = _map(ranking.merge_entries(parts), ctx, complete, needed) if parts else None
    return out


def _family_columns(family: str) -> list[str]:
    return [f"{family}_{s}" for s in (PUB_STATS if family in PUBLISHED else sets.STATS)]


def _calibrate(sample: Sample, pred: Prediction, inv: np.ndarray, ctx: Context) -> Calibration | None:
    """The model's calibration on the calibration half (samples with a single label and a prediction);
    with every probability stored, also the published convention's on temperature-scaled ones."""
    rows = np.flatnonzero(ctx.cal & (inv >= 0) & (sample.label >= 0))
    if not len(rows):
        return None
    ranked = ranked_rows(pred, inv, rows)
    lpos = ranking.label_positions(ranked, _label_column(sample.label[rows]))[:, 0]
    p = ctx.params
    args = (lpos, ctx.u[rows], p.alpha, ctx.tune[rows], p.kreg, p.lam, ctx.n_boot, ctx.boot_seed)
    calib = conformal.calibrate(ranked, sets.cumulative(ranked), *args)
    if not ranked.complete:
        return calib
    temperature = conformal.fit_temperature(ranked.prob, lpos)
    hot = conformal.scaled(ranked, temperature)
    return replace(calib, published=conformal.calibrate(hot, sets.cumulative(hot), *args, temperature=temperature))


def _chunk_columns(sample: Sample, ranked: ranking.Ranked, rows: np.ndarray, ctx: Context, out: ModelColumns,
                   avail: np.ndarray) -> None:
    labels = LabelSets(sample.labels.pad[rows], sample.labels.count[rows])
    pos = ranking.label_positions(ranked, labels)
    lrap, cover, beyond = ranking.lrap_and_coverage(ranked, labels, pos)
    loss, _ = ranking.label_ranking_loss(ranked, labels, pos)
    boot, point = out.boot, out.point
    boot[rows, _B["lrap"]], boot[rows, _B["coverage_error"]], boot[rows, _B["label_ranking_loss"]] = lrap, cover, loss
    col = {name: i for i, name in enumerate(ctx.names)}
    ok = labels.count > 0
    point[rows, col["rank_beyond"]] = np.where(ok, beyond | (pos >= ranked.stored).any(axis=1), np.nan)
    if ranked.prob is None:
        return
    cum = sets.cumulative(ranked)
    label = sample.label[rows]
    lpos = ranking.label_positions(ranked, _label_column(label))[:, 0]

    def put(built: sets.Sets, dest: np.ndarray, cols: list[int], flag_col: int) -> None:
        stats = sets.set_stats(built, pos, labels.count, lpos, label >= 0)
        for j, s in zip(cols, sets.STATS):
            dest[rows, j] = stats[s]
        point[rows, flag_col] = np.where(ok, built.extends | (built.size > ranked.stored), np.nan)

    p = ctx.params
    put(sets.threshold_sets(ranked, p.tau, cum), boot, [_B[f"thr_{s}"] for s in sets.STATS], col["thr_beyond"])
    put(sets.mass_sets(ranked, p.mass, cum), boot, [_B[f"mass_{s}"] for s in sets.STATS], col["mass_beyond"])
    for t, value in curve_points(p):
        b = sets.threshold_sets(ranked, value, cum) if t == "thr" else sets.mass_sets(ranked, value, cum)
        put(b, point, [col[f"{t}@{value!r}_{s}"] for s in sets.STATS], col[f"{t}@{value!r}_beyond"])
    facts = sets.SetFacts(pos, labels.count, lpos, label >= 0, ranked.depth)
    scored = avail & ctx.evaluable[rows]
    hot: dict = {}
    for t, fam in out.families.items():
        got = conformal_columns.score(fam, conformal_columns.ranking_for(fam, ranked, hot), ctx.u[rows], facts, scored,
                                      ctx.stratum[rows], ctx.n_strata)
        for s, values in got.stats.items():
            boot[rows, _B[f"{t}_{s}"]] = values
        where = ok if t in CONFORMAL else np.ones(len(rows), dtype=bool)  # published size: every image
        point[rows, col[f"{t}_beyond"]] = np.where(where, got.beyond, np.nan)
        point[rows, col[f"{t}_open"]] = np.where(where, got.open, np.nan)
        if got.shift is not None:
            index = fam.calibration.replicates[fam.method].index
            acc = out.shifts.get(t)
            out.shifts[t] = (got.shift if acc is None else acc[0] + got.shift, index)


def _map(entries: ranking.ClassEntries, ctx: Context, complete: bool, needed: np.ndarray | None) -> Estimate | None:
    """mAP over the classes with a positive (samples with a label set and a prediction), with
    replicates from the first `map_bootstrap` resamples; `beyond_k` = classes whose AP the stored
    top-K alone only bounds (`needed`: those classes when a softmax made them exact)."""
    classes, ap = ranking.class_ap(entries)
    if not len(classes):
        return None
    reps = 100.0 * ranking.class_ap_replicates(entries, ctx.map_counts) if len(ctx.map_counts) else np.zeros(0)
    beyond = int((entries.bounded if needed is None else needed)[classes].sum())
    return Estimate(100.0 * float(ap.mean()), len(classes), reps, bound="upper" if beyond and not complete else None,
                    beyond_k=beyond)


def _topk_bounded(sample: Sample, pred: Prediction, inv: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """(C,) the classes whose AP the stored top-K alone could not have given exactly."""
    ranked = ranked_rows(replace(pred, softmax=None), inv, np.arange(len(keep)))
    if ranked.complete:
        return np.zeros(NUM_CLASSES, dtype=bool)
    return ranking.class_entries(ranked, sample.labels, ranking.label_positions(ranked, sample.labels), keep).bounded


def _positive_floor(sample: Sample, pred: Prediction, inv: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """(C,) the lowest probability any positive of each class gets, when every class is ranked (a
    softmax: read unsorted; or a stored top-1000)."""
    floor = np.full(NUM_CLASSES, np.inf)
    for rows in _chunks(len(keep), True):
        pad = sample.labels.pad[rows]
        ok = (pad >= 0) & keep[rows][:, None]
        r = np.broadcast_to(np.arange(len(rows))[:, None], pad.shape)
        if pred.softmax is not None:
            at = inv[rows]
            values = _merged(pred, at, at >= 0)[r[ok], pad[ok]].astype(np.float64)
        else:
            ranked = ranked_rows(pred, inv, rows)
            pos = ranking.label_positions(ranked, LabelSets(pad, sample.labels.count[rows]))
            ok &= pos >= 0
            values = ranked.prob[r[ok], pos[ok]]
        np.minimum.at(floor, pad[ok], values)
    return floor


# --- the rows these columns become -----------------------------------------------------------------


@dataclass(frozen=True)
class RowSpec:
    """One metrics.parquet row of a model: `num` a `BOOT` column (boot) or a point column (a curve
    point, no interval), averaged over the samples of mask `den`; `flag` counts those past the top-K."""

    metric: str
    label_count: int | None
    num: str
    den: str
    flag: str
    param: float | None = None
    boot: bool = True


def _mask_of(set_type: str, stat: str) -> str:
    if set_type in PUBLISHED:  # Angelopoulos et al.'s convention: every held-out image
        return "eval_label" if stat == "label_coverage" else "eval_all"
    scope = "eval_" if set_type in CONFORMAL else "has_"
    return scope + ("label" if stat == "label_coverage" else "labels")


def row_specs(groups, has_prob: bool, families, params: SetParams) -> Iterator[RowSpec]:
    """Every row of one model: the whole dataset (label_count None), then each label count in `groups`.
    Sets and curves need probabilities; conformal sets a calibration (`families`: those scored);
    the published-convention rows are over the whole dataset only."""
    headline = {"thr": params.tau, "mass": params.mass, **{t: params.alpha for t in OPEN}}
    for g in (None, *groups):
        for m in RANKING:
            yield RowSpec(m, g, m, "has_labels", "rank_beyond")
        if not has_prob:
            continue
        for t in SET_TYPES:
            if t in CONFORMAL and t not in families:
                continue
            for s in sets.STATS:
                yield RowSpec(f"{t}_{s}", g, f"{t}_{s}", _mask_of(t, s), f"{t}_beyond", headline[t])
        for t in PUBLISHED:
            if g is None and t in families:
                for s in PUB_STATS:
                    yield RowSpec(f"{t}_{s}", g, f"{t}_{s}", _mask_of(t, s), f"{t}_beyond", headline[t])
        for t, value in curve_points(params):
            for s in sets.STATS:
                yield RowSpec(f"{t}_{s}", g, f"{t}@{value!r}_{s}", _mask_of(t, s), f"{t}@{value!r}_beyond", value, False)


def dataset_info(ctx: Context, models: list[str]) -> dict:
    """metrics.parquet metadata of a dataset: how its conformal sets were calibrated and scored."""
    info: dict = {"conformal_scored_samples": int(ctx.evaluable.sum())}
    if ctx.is_calibration:
        info["conformal_calibration"] = {
            "calibration_samples": int(ctx.cal.sum()), "tuning_samples": int(ctx.tune.sum()),
            "models": {m: ctx.calibrations[m].info() for m in models if m in ctx.calibrations}}
    else:
        info["conformal_models"] = [m for m in models if m in ctx.calibrations]
    return info
