"""`mlreassess evaluate`'s oracle-free rows (docs/metrics.md, "Beyond the oracle") on small synthetic
RESULTS folders: hand-computed values, exact with a stored softmax, bounds without, conformal
coverage on held-out data, options and bad inputs."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from mlreassess.cli import main
from mlreassess.errors import InputError
from mlreassess.inference.sweep.writers import predictions_table
from mlreassess.io import read_meta, read_table, write_table
from mlreassess.metrics.beyond import SetParams
from mlreassess.metrics.evaluate import evaluate_results, why_stale

sklearn_metrics = pytest.importorskip("sklearn.metrics")

# test_evaluate's four samples, K = 5 with p = .5 / (j + 1) = [.5, .25, .167, .125, .1]:
V1 = {"s0": (1, [1]), "s1": (1, [1, 5]), "s2": (7, []), "s3": (None, [3, 5, 9])}
V1_PRED = {"s0": [1, 2, 3, 8, 9], "s1": [2, 1, 3, 8, 9], "s2": [4, 5, 6, 8, 9], "s3": [3, 4, 5, 8, 9]}
# LRAP: s0 1; s1 label 1 at rank 2 -> 1/2, label 5 not stored -> at best rank 6 with 2 labels -> 2/6:
#   5/12 (an upper bound); s3 ranks 1, 3, 5 -> (1 + 2/3 + 3/5) / 3 = 34/45; s2 has no labels.
# Coverage error: s0 1, s1 >= 5 + 1 = 6 (a lower bound), s3 5 -> 4 classes.
# Threshold sets (tau .1): every stored class passes and no mass is left for an unseen one
# (the five hold 1.14 > 1): S = the 5 stored. precision 1/5, 1/5, 3/5 -> 33.33; size 5;
# label coverage s0 1, s1 1, s2 0 (label 7 not stored) -> 66.67 over 3.
EXPECTED = {
    "lrap": (100 * (1 + 5 / 12 + 34 / 45) / 3, 3, "pct", "upper", 1),
    "coverage_error": ((1 + 6 + 5) / 3, 3, "classes", "lower", 1),
    "thr_precision": (100 / 3, 3, "pct", None, 0),
    "thr_recall": (100 * (1 + 1 / 2 + 1) / 3, 3, "pct", None, 0),
    "thr_f1": (100 * (2 / 6 + 2 / 7 + 6 / 8) / 3, 3, "pct", None, 0),
    "thr_size": (5.0, 3, "classes", None, 0),
    "thr_label_coverage": (200 / 3, 3, "pct", None, 0),
}


def rows_of(table, model: str, dataset: str) -> list[dict]:
    return [r for r in table.to_pylist() if r["model"] == model and r["dataset"] == dataset]


def headline(table, model: str, dataset: str) -> dict:
    """(metric, label_count) -> row, the headline parameter's rows (those with an interval)."""
    return {(r["metric"], r["label_count"]): r for r in rows_of(table, model, dataset)
            if r["ci_low_pct"] is not None}


def test_hand_computed_oracle_free_rows(tmp_path: Path, write_dataset, write_predictions):
    write_dataset(tmp_path, "v1", "imagenet_v1", V1)
    write_predictions(tmp_path, "v1", "imagenet_v1", "modelA", V1_PRED)
    table = read_table(evaluate_results(tmp_path, n_boot=20, min_group_n=1)[0])
    got = headline(table, "modelA", "v1")
    for metric, (value, n, unit, bound, beyond) in EXPECTED.items():
        row = got[(metric, None)]
        assert row["value_pct"] == pytest.approx(value, abs=1e-9), metric
        assert (row["n"], row["unit"], row["bound"], row["beyond_k"]) == (n, unit, bound, beyond), metric
    assert got[("thr_f1", None)]["param"] == 0.1 and got[("mass_f1", None)]["param"] == 0.9
    # broken down by label count: g = 2 is s1 alone
    assert got[("lrap", 2)]["value_pct"] == pytest.approx(100 * 5 / 12) and got[("lrap", 2)]["n"] == 1
    # curve points: other taus, no interval
    curve = [r for r in rows_of(table, "modelA", "v1") if r["metric"] == "thr_f1" and r["label_count"] is None]
    assert sorted(r["param"] for r in curve) == [0.02, 0.05, 0.1, 0.2, 0.3, 0.5]
    assert all((r["ci_low_pct"] is None) == (r["param"] != 0.1) for r in curve)


def synthetic_results(tmp_path: Path, write_dataset, n: int, softmax: bool, seed: int = 0, datasets=("imagenet_v1",)):
    """RESULTS with one model whose labels are drawn from its own (tempered) softmax over 1000 classes."""
    rng = np.random.default_rng(seed)
    for d, name in enumerate(datasets):
        logits = rng.normal(size=(n, 1000)) * 3.0
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p = (p / p.sum(axis=1, keepdims=True)).astype(np.float16).astype(np.float32)  # exact in float16
        truth = np.exp(logits / 1.5)
        truth /= truth.sum(axis=1, keepdims=True)
        ids = [f"ILSVRC2012_val_{d}{i:07d}" for i in range(n)]
        samples = {}
        for i, sid in enumerate(ids):
            drawn = rng.choice(1000, size=int(rng.integers(1, 4)), p=truth[i])
            samples[sid] = (int(drawn[0]), sorted(set(int(x) for x in drawn)))
        kind = "imagenet_v1" if name.startswith("imagenet_v1") else "imagenet_v2"
        write_dataset(tmp_path, name, kind, samples)
        order = np.argsort(-p, axis=1, kind="stable")[:, :10]
        table = predictions_table(ids, order, np.take_along_axis(p, order, axis=1), p if softmax else None)
        write_table(tmp_path / "predictions" / name / "m.parquet", table,
                    {"model": "m", "dataset": name, "n_samples": table.num_rows, "topk": 10})
    return tmp_path


def test_with_the_softmax_every_row_is_exact_and_equals_scikit_learn(tmp_path: Path, write_dataset):
    results = synthetic_results(tmp_path, write_dataset, 300, softmax=True, datasets=("imagenet_v2_x",))
    table = read_table(evaluate_results(results, n_boot=20)[0])
    got = headline(table, "m", "imagenet_v2_x")
    assert all(r["bound"] is None for r in rows_of(table, "m", "imagenet_v2_x"))
    assert 0 < got[("lrap", None)]["beyond_k"] < 300  # labels past the top-10, scored exactly from the softmax
    pred = read_table(results / "predictions" / "imagenet_v2_x" / "m.parquet")
    scores = np.array(pred.column("softmax").combine_chunks().flatten().to_numpy(zero_copy_only=False),
                      dtype=np.float64).reshape(300, 1000)
    manifest = {r["sample_id"]: r["labels"] for r in read_table(results / "manifests" / "imagenet_v2_x.parquet").to_pylist()}
    y = np.zeros((300, 1000), dtype=bool)
    for i, sid in enumerate(pred.column("sample_id").to_pylist()):
        y[i, manifest[sid]] = True
    assert got[("lrap", None)]["value_pct"] == pytest.approx(100 * sklearn_metrics.label_ranking_average_precision_score(y, scores), abs=1e-9)
    assert got[("coverage_error", None)]["value_pct"] == pytest.approx(sklearn_metrics.coverage_error(y, scores), abs=1e-9)
    assert got[("label_ranking_loss", None)]["value_pct"] == pytest.approx(
        100 * sklearn_metrics.label_ranking_loss(y, scores), abs=1e-9)
    present = y.any(axis=0)
    ap = sklearn_metrics.average_precision_score(y[:, present], scores[:, present], average="macro")
    assert got[("map", None)]["value_pct"] == pytest.approx(100 * ap, abs=1e-9)
    assert got[("map", None)]["n"] == int(present.sum())


def all_rows(table, model: str) -> dict:
    """(dataset, metric, label_count, param) -> row, every row of the model."""
    return {(r["dataset"], r["metric"], r["label_count"], r["param"]): r for r in table.to_pylist() if r["model"] == model}


def check_bounds(exact: dict, bound: dict) -> dict:
    """Every row of the top-K-only run against the softmax run: `upper` means the exact value is not
    above it, `lower` not below, null equal; "neither" claims nothing. Returns the count per bound."""
    assert set(exact) == set(bound)
    seen: dict = {}
    for key, row in bound.items():
        want = exact[key]["value_pct"]
        seen[row["bound"]] = seen.get(row["bound"], 0) + 1
        if row["bound"] == "upper":
            assert want <= row["value_pct"] + 1e-9, key
        elif row["bound"] == "lower":
            assert want >= row["value_pct"] - 1e-9, key
        elif row["bound"] is None:
            assert row["value_pct"] == pytest.approx(want, abs=1e-9), key
        else:
            assert row["bound"] == "neither", key
    return seen


@pytest.mark.parametrize("seed", [1, 4])
def test_without_the_softmax_every_row_bounds_the_exact_one(tmp_path: Path, write_dataset, seed: int):
    # V1 (calibration) and V2; every metric, label count and curve point
    datasets = ("imagenet_v1", "imagenet_v2_x")
    exact = read_table(evaluate_results(synthetic_results(tmp_path / "a", write_dataset, 400, True, seed, datasets),
                                        n_boot=20)[0])
    bound = read_table(evaluate_results(synthetic_results(tmp_path / "b", write_dataset, 400, False, seed, datasets),
                                        n_boot=20)[0])
    ex, bd = all_rows(exact, "m"), all_rows(bound, "m")
    seen = check_bounds(ex, bd)
    assert seen.get("upper", 0) > 20 and seen.get("lower", 0) > 5 and seen.get(None, 0) > 20
    assert all(r["bound"] is None for r in ex.values())  # with the softmax every row is exact
    h = headline(bound, "m", "imagenet_v1")
    assert h[("lrap", None)]["bound"] == "upper" and h[("coverage_error", None)]["bound"] == "lower"
    assert h[("label_ranking_loss", None)]["bound"] == "lower"
    assert h[("lrap", None)]["beyond_k"] == headline(exact, "m", "imagenet_v1")[("lrap", None)]["beyond_k"] > 0
    m = headline(exact, "m", "imagenet_v2_x")[("map", None)]
    assert h and m["beyond_k"] > 0 and m["bound"] is None
    for key, row in bd.items():  # qhat / temperature on the conformal rows only
        conformal = key[1].startswith(("aps_", "raps_"))
        assert (row["qhat"] is not None) == conformal and (ex[key]["qhat"] == "exact" if conformal else True), key
        if key[1].startswith(("aps_pub_", "raps_pub_")):
            assert row["temperature"] is None and row["bound"] == "neither" and ex[key]["temperature"] > 0, key
        elif conformal:
            assert row["temperature"] is None and ex[key]["temperature"] is None, key
    # APS calibrated from the top-10: Q-hat only bracketed -> conservative sets, bounds on both sides
    assert h[("aps_size", None)]["qhat"] == "conservative" and h[("aps_size", None)]["bound"] == "lower"
    assert h[("aps_exact", None)]["bound"] in ("upper", "neither")


def test_conformal_sets_cover_the_single_label_at_the_nominal_level(tmp_path: Path, write_dataset):
    # V1 (2,000): a seeded half calibrates, the other half is scored; V2 (1,000) from the same model.
    # sd of a held-out coverage ~ sqrt(.09/1000 + .09/1000) = 1.34 points: 4 sd = 5.4
    results = synthetic_results(tmp_path, write_dataset, 2000, softmax=True, seed=2,
                                datasets=("imagenet_v1", "imagenet_v2_x"))
    out, _ = evaluate_results(results, n_boot=20)
    table = read_table(out)
    for dataset, n_scored in (("imagenet_v1", 1000), ("imagenet_v2_x", 2000)):
        got = headline(table, "m", dataset)
        for method in ("aps", "raps"):
            row = got[(f"{method}_label_coverage", None)]
            assert row["n"] == n_scored and row["param"] == 0.1 and row["bound"] is None
            assert abs(row["value_pct"] - 90.0) < 5.4, (dataset, method, row["value_pct"])
    calib = read_meta(out)["datasets"]["imagenet_v1"]["conformal_calibration"]
    assert calib["calibration_samples"] == 1000 and calib["models"]["m"]["aps_exact"]
    assert read_meta(out)["datasets"]["imagenet_v2_x"]["conformal_models"] == ["m"]


def test_no_v1_no_conformal_rows_and_an_unknown_calibration_dataset_is_an_error(tmp_path: Path, write_dataset):
    results = synthetic_results(tmp_path, write_dataset, 50, softmax=False, datasets=("imagenet_v2_x",))
    table = read_table(evaluate_results(results, n_boot=5)[0])
    metrics = {r["metric"] for r in table.to_pylist()}
    assert "thr_f1" in metrics and not any(m.startswith(("aps_", "raps_")) for m in metrics)
    with pytest.raises(InputError, match="--calibration imagenet_v1: no predictions"):
        evaluate_results(results, n_boot=5, sets=SetParams(calibration="imagenet_v1"))
    # any dataset can be named: V2 then calibrates on its own seeded half
    table = read_table(evaluate_results(results, n_boot=5, sets=SetParams(calibration="imagenet_v2_x"), force=True)[0])
    assert headline(table, "m", "imagenet_v2_x")[("aps_size", None)]["n"] == 25


def test_cli_flags_change_the_rows_and_make_the_output_stale(tmp_path: Path, write_dataset, capsys):
    results = synthetic_results(tmp_path, write_dataset, 60, softmax=False, datasets=("imagenet_v2_x",))
    assert main(["evaluate", "--results", str(results), "--bootstrap", "10"]) == 0
    assert main(["evaluate", "--results", str(results), "--bootstrap", "10", "--set-tau", "0.2", "--map-bootstrap", "0"]) == 0
    assert "up to date" not in capsys.readouterr().err
    table = read_table(results / "metrics.parquet")
    got = headline(table, "m", "imagenet_v2_x")
    assert got[("thr_f1", None)]["param"] == 0.2
    assert ("map", None) not in got  # --map-bootstrap 0: mAP without an interval
    assert [r for r in rows_of(table, "m", "imagenet_v2_x") if r["metric"] == "map"][0]["ci_low_pct"] is None
    assert read_meta(results / "metrics.parquet")["set_tau"] == 0.2
    for bad in (["--set-tau", "0"], ["--set-mass", "1.0"], ["--conformal-alpha", "0.9"], ["--calibration", ".."]):
        assert main(["evaluate", "--results", str(results), *bad]) == 2, bad


def _rewrite_softmax(path: Path, softmax: pa.Array) -> None:
    table = read_table(path)
    table = table.set_column(table.column_names.index("softmax"), "softmax", softmax)
    write_table(path, table, read_meta(path))


@pytest.mark.parametrize("problem", ["nan", "negative", "width"])
def test_a_broken_softmax_is_refused_naming_the_file(tmp_path: Path, write_dataset, problem: str):
    results = synthetic_results(tmp_path, write_dataset, 20, softmax=True, datasets=("imagenet_v2_x",))
    path = results / "predictions" / "imagenet_v2_x" / "m.parquet"
    values = np.full((20, 999 if problem == "width" else 1000), 0.001, dtype=np.float16)
    values[3, 7] = {"nan": np.nan, "negative": -0.5, "width": 0.001}[problem]
    flat = pa.array(values.ravel(), pa.float16())
    _rewrite_softmax(path, pa.chunked_array([pa.FixedSizeListArray.from_arrays(flat, values.shape[1])]))
    with pytest.raises(InputError, match=r"m\.parquet: .*softmax"):
        evaluate_results(results, n_boot=5)


def test_predictions_without_probabilities_get_ranking_rows_only(tmp_path: Path, write_dataset):
    results = synthetic_results(tmp_path, write_dataset, 40, softmax=False, datasets=("imagenet_v2_x",))
    path = results / "predictions" / "imagenet_v2_x" / "m.parquet"
    write_table(path, read_table(path).drop(["topk_prob"]), read_meta(path))
    metrics = {r["metric"] for r in read_table(evaluate_results(results, n_boot=5)[0]).to_pylist()}
    assert {"lrap", "coverage_error"} <= metrics and not metrics & {"map", "thr_f1", "mass_f1"}


def test_missing_predictions_are_left_out_of_every_new_row(tmp_path: Path, write_dataset):
    results = synthetic_results(tmp_path, write_dataset, 40, softmax=True, datasets=("imagenet_v2_x",))
    path = results / "predictions" / "imagenet_v2_x" / "m.parquet"
    write_table(path, read_table(path).slice(0, 30), {**read_meta(path), "n_samples": 30})  # 10 unreadable
    got = headline(read_table(evaluate_results(results, n_boot=5)[0]), "m", "imagenet_v2_x")
    assert got[("lrap", None)]["n"] == got[("thr_f1", None)]["n"] == 30
    assert not math.isnan(got[("map", None)]["value_pct"])


def test_worker_processes_give_the_same_table(tmp_path: Path, write_dataset):
    results = synthetic_results(tmp_path, write_dataset, 80, softmax=False, datasets=("imagenet_v1", "imagenet_v2_x"))
    for m in ("m2", "m3"):  # three models per dataset, read lazily from their files
        for name in ("imagenet_v1", "imagenet_v2_x"):
            src = results / "predictions" / name / "m.parquet"
            write_table(src.with_name(f"{m}.parquet"), read_table(src), {**read_meta(src), "model": m})
    serial = read_table(evaluate_results(results, n_boot=10, out=tmp_path / "serial.parquet")[0])
    parallel = read_table(evaluate_results(results, n_boot=10, out=tmp_path / "parallel.parquet", workers=2)[0])
    assert serial.num_rows > 0 and serial.equals(parallel)


def test_a_stored_top_1000_is_as_exact_as_the_softmax(tmp_path: Path, write_dataset):
    results = synthetic_results(tmp_path, write_dataset, 60, softmax=True, datasets=("imagenet_v2_x",))
    src = results / "predictions" / "imagenet_v2_x" / "m.parquet"
    pred = read_table(src)
    ids = pred.column("sample_id").to_pylist()
    p = np.asarray(pred.column("softmax").combine_chunks().flatten().to_numpy(zero_copy_only=False),
                   dtype=np.float32).reshape(len(ids), 1000)
    order = np.argsort(-p, axis=1, kind="stable")
    write_table(src.with_name("all.parquet"), predictions_table(ids, order, np.take_along_axis(p, order, axis=1)),
                {"model": "all", "dataset": "imagenet_v2_x", "n_samples": len(ids), "topk": 1000})
    table = read_table(evaluate_results(results, n_boot=5)[0])
    soft, full = headline(table, "m", "imagenet_v2_x"), headline(table, "all", "imagenet_v2_x")
    for key in (("lrap", None), ("coverage_error", None), ("map", None), ("mass_size", None), ("thr_f1", None)):
        assert full[key]["value_pct"] == pytest.approx(soft[key]["value_pct"], abs=1e-9), key
        assert full[key]["bound"] is None and full[key]["beyond_k"] == 0  # nothing lies past a top-1000


def test_published_convention_rows_equal_an_independent_computation(tmp_path: Path, write_dataset):
    """aps_pub_*: Angelopoulos et al.'s convention, computed here without mlreassess's sets: the
    temperature minimising the calibration half's NLL (a grid), APS scores of the scaled softmax,
    the finite-sample quantile, size over every held-out image (an empty label set too)."""
    from mlreassess.metrics.conformal import half_split, hashed_uniform

    results = synthetic_results(tmp_path, write_dataset, 600, softmax=True, seed=5)
    manifest = results / "manifests" / "imagenet_v1.parquet"
    rows = read_table(manifest).to_pylist()
    for r in rows[::7]:  # some images without a label set (as ReaL's empty lists)
        r["labels"], r["label_count"] = [], 0
    write_table(manifest, pa.Table.from_pylist(rows, schema=read_table(manifest).schema), read_meta(manifest))
    table = read_table(evaluate_results(results, n_boot=20)[0])
    got = headline(table, "m", "imagenet_v1")
    pred = read_table(results / "predictions" / "imagenet_v1" / "m.parquet")
    ids = np.array(pred.column("sample_id").to_pylist(), dtype=object)
    p = np.asarray(pred.column("softmax").combine_chunks().flatten().to_numpy(zero_copy_only=False),
                   dtype=np.float64).reshape(len(ids), 1000)
    truth = {r["sample_id"]: (r["label"], r["labels"]) for r in rows}
    label = np.array([truth[i][0] for i in ids])
    cal = half_split(ids, 0)
    logp = np.log(np.maximum(p, 2.0 ** -25))

    def nll(t):
        z = logp[cal] / t
        z -= z.max(axis=1, keepdims=True)
        return np.mean(np.log(np.exp(z).sum(axis=1)) - z[np.arange(cal.sum()), label[cal]])

    coarse = np.arange(0.3, 3.0, 0.02)
    t0 = coarse[np.argmin([nll(t) for t in coarse])]
    fine = np.arange(t0 - 0.02, t0 + 0.02, 0.0005)
    t_grid = fine[np.argmin([nll(t) for t in fine])]  # the NLL is convex in 1 / T: one minimum
    t = got[("aps_pub_size", None)]["temperature"]
    assert abs(t - t_grid) <= 0.0005 + 1e-9 and t != 1.0
    z = np.exp(logp / t - (logp / t).max(axis=1, keepdims=True))
    q = z / z.sum(axis=1, keepdims=True)
    u = hashed_uniform(ids, 0, "u")
    order = np.argsort(-q, axis=1, kind="stable")
    sq = np.take_along_axis(q, order, axis=1)
    scores = np.cumsum(sq, axis=1) - sq * (1 - u[:, None])  # mass above + u p (their randomised APS)
    at = np.argmax(order == label[:, None], axis=1)
    cal_scores = np.sort(scores[cal, :][np.arange(cal.sum()), at[cal]])
    qhat = cal_scores[int(np.ceil((cal.sum() + 1) * 0.9)) - 1]
    size = (scores <= qhat).sum(axis=1)
    held = ~cal
    assert got[("aps_pub_size", None)]["n"] == held.sum() > got[("aps_size", None)]["n"]
    assert got[("aps_pub_size", None)]["value_pct"] == pytest.approx(size[held].mean(), abs=1e-9)
    assert got[("aps_pub_label_coverage", None)]["value_pct"] == pytest.approx(100 * (at[held] < size[held]).mean(), abs=1e-9)
    assert got[("aps_pub_size", None)]["bound"] is None and got[("aps_pub_size", None)]["qhat"] == "exact"
    assert got[("aps_size", None)]["temperature"] is None  # the other rows: the probabilities as stored
    assert ("aps_pub_size", 1) not in got  # whole-dataset rows only


def test_a_metrics_file_from_before_the_rows_changed_meaning_is_computed_again(tmp_path: Path, write_dataset):
    # an older file's `bound` "conservative" would read as exact on today's page: it is redone
    results = synthetic_results(tmp_path, write_dataset, 40, softmax=False, datasets=("imagenet_v2_x",))
    out, _ = evaluate_results(results, n_boot=5)
    assert evaluate_results(results, n_boot=5)[1] is None  # up to date
    meta = read_meta(out)
    assert meta["oracle_free_rows"] == 2
    del meta["oracle_free_rows"]
    write_table(out, read_table(out), meta)
    assert why_stale(results, {"oracle_free_rows": 2}) == "oracle_free_rows null -> 2"
    assert evaluate_results(results, n_boot=5)[1] is not None
    assert read_meta(out)["oracle_free_rows"] == 2
