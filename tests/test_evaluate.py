"""`mlreassess evaluate` on small synthetic RESULTS folders with hand-computed expected metrics."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from mlreassess.cli import main
from mlreassess.errors import InputError
from mlreassess.io import read_meta, read_table, write_table
from mlreassess.metrics import aggregate, core
from mlreassess.metrics.evaluate import evaluate_results
from mlreassess.metrics.inputs import Prediction, make_sample
from mlreassess.metrics.scoring import evaluate_dataset, mean_over_seeds


# The four samples of test_metrics_core, with K = 5:
V1 = {"s0": (1, [1]), "s1": (1, [1, 5]), "s2": (7, []), "s3": (None, [3, 5, 9])}
V1_PRED = {"s0": [1, 2, 3, 8, 9], "s1": [2, 1, 3, 8, 9], "s2": [4, 5, 6, 8, 9], "s3": [3, 4, 5, 8, 9]}
# Hand-computed (see test_metrics_core): top1 s0 1, s1 0, s2 0 (s3 no label) -> 33.33 (n 3)
# top5: s0 1, s1 1 (label at pos 1), s2 0 -> 66.67; ReaL: s0 1, s1 0, s3 1 (s2 empty) -> 66.67
# sample acc: g1 s0 1, g2 s1 1/3, g3 s3 1/2; recall: 1, 1/2, 2/3; groups 4, 5 absent
# real_1to5 = ReaL over samples with 1..5 labels: here the same three samples as real
# asma_recall = unweighted mean of the recall subgroups: (100 + 50 + 66.67) / 3
# (every group holds one sample: these need --min-group-n 1)
EXPECTED_V1 = {
    ("top1", None): (100 / 3, 3),
    ("top5", None): (200 / 3, 3),
    ("real", None): (200 / 3, 3),
    ("real_1to5", None): (200 / 3, 3),
    ("asma_recall", None): ((100 + 50 + 200 / 3) / 3, 3),
    ("real", 1): (100.0, 1),
    ("real", 2): (0.0, 1),
    ("real", 3): (100.0, 1),
    ("subgroup", 1): (100.0, 1),
    ("subgroup", 2): (100 / 3, 1),
    ("subgroup", 3): (50.0, 1),
    ("asma", None): ((100 + 100 / 3 + 50) / 3, 3),
    ("recall", 1): (100.0, 1),
    ("recall", 2): (50.0, 1),
    ("recall", 3): (200 / 3, 1),
    ("recall", None): ((1 + 0.5 + 2 / 3) / 3 * 100, 3),
}


ORACLE_METRICS = ("top1", "top5", "real", "real_1to5", "asma", "asma_recall", "subgroup", "recall")


def as_dict(table, model: str, dataset: str) -> dict:
    rows = [r for r in table.to_pylist() if r["model"] == model and r["dataset"] == dataset]
    return {(r["metric"], r["label_count"]): r for r in rows}


@pytest.fixture
def v1_results(tmp_path: Path, write_dataset, write_predictions) -> Path:
    write_dataset(tmp_path, "v1", "imagenet_v1", V1)
    write_predictions(tmp_path, "v1", "imagenet_v1", "modelA", V1_PRED)
    return tmp_path


def test_hand_computed_metrics_table(v1_results: Path):
    out, summary = evaluate_results(v1_results, n_boot=50, min_group_n=1)
    assert out == v1_results / "metrics.parquet" and summary is not None
    table = read_table(out)
    assert table.column_names == ["model", "dataset", "metric", "label_count", "value_pct", "n", "ci_low_pct",
                                  "ci_high_pct", "groups", "param", "unit", "bound", "beyond_k", "qhat", "temperature"]
    # the oracle-free rows (tests/test_evaluate_beyond.py) come after these
    got = {k: r for k, r in as_dict(table, "modelA", "v1").items() if k[0] in ORACLE_METRICS}
    assert set(got) == set(EXPECTED_V1)
    for key, (value, n) in EXPECTED_V1.items():
        assert got[key]["value_pct"] == pytest.approx(value), key
        assert got[key]["n"] == n, key
        # every stratum (label count 0, 1, 2, 3) holds one sample, so every stratified resample
        # equals the data: all intervals collapse onto the value
        assert got[key]["ci_low_pct"] == pytest.approx(value) and got[key]["ci_high_pct"] == pytest.approx(value), key
    # the rows that average subgroups say which label counts they averaged; no other row has groups
    assert got[("asma", None)]["groups"] == got[("asma_recall", None)]["groups"] == "1,2,3"
    assert {k for k, r in got.items() if r["groups"] is not None} == {("asma", None), ("asma_recall", None)}
    meta = read_meta(out)
    assert meta["datasets"]["v1"]["asma_range_present"] == [1, 2, 3]  # 4 and 5 absent: skipped
    assert meta["datasets"]["v1"]["design_counts"] == [1, 2, 3, 4, 5]
    assert meta["datasets"]["v1"]["label_count_n"] == {"0": 1, "1": 1, "2": 1, "3": 1}
    assert meta["min_group_n"] == 1


def test_default_min_group_n_reports_small_groups_without_averaging_them(v1_results: Path, caplog):
    # every group has 1 sample < 30: subgroup rows stay, but there is no ASMA to average
    caplog.set_level(logging.WARNING, logger="mlreassess")
    out, summary = evaluate_results(v1_results, n_boot=10)
    got = as_dict(read_table(out), "modelA", "v1")
    assert got[("subgroup", 2)]["value_pct"] == pytest.approx(100 / 3) and got[("subgroup", 2)]["n"] == 1
    assert ("asma", None) not in got and ("asma_recall", None) not in got
    assert summary["datasets"]["v1"]["below_min_group_n"] == {"1": 1, "2": 1, "3": 1}
    assert "v1: no ASMA" in caplog.text and "--min-group-n" in caplog.text


def test_a_group_below_min_group_n_is_reported_not_averaged(tmp_path: Path, write_dataset, write_predictions):
    # g=1: a, b, c (top-1 right, right, wrong) -> 66.67, n 3; g=2: d {1,2} top-2 [1,2] -> 1, e {3,4} top-2 [3,9] -> 1/3
    #   -> 66.67, n 2. With --min-group-n 3 ASMA averages g=1 only: 66.67 over "1"; g=2 keeps its row.
    #   With --min-group-n 2 both: (66.67 + 66.67) / 2, groups "1,2".
    write_dataset(tmp_path, "v1", "imagenet_v1", {"a": (1, [1]), "b": (2, [2]), "c": (3, [3]),
                                                  "d": (1, [1, 2]), "e": (3, [3, 4])})
    write_predictions(tmp_path, "v1", "imagenet_v1", "m", {"a": [1, 5, 6, 7, 8], "b": [2, 5, 6, 7, 8],
                                                          "c": [9, 5, 6, 7, 8], "d": [1, 2, 6, 7, 8],
                                                          "e": [3, 9, 6, 7, 8]})
    got = as_dict(read_table(evaluate_results(tmp_path, n_boot=10, min_group_n=3)[0]), "m", "v1")
    assert got[("subgroup", 2)]["value_pct"] == pytest.approx(200 / 3) and got[("subgroup", 2)]["n"] == 2
    assert got[("asma", None)]["value_pct"] == pytest.approx(200 / 3)
    assert got[("asma", None)]["groups"] == "1" and got[("asma", None)]["n"] == 3
    got = as_dict(read_table(evaluate_results(tmp_path, n_boot=10, min_group_n=2)[0]), "m", "v1")
    assert got[("asma", None)]["value_pct"] == pytest.approx(200 / 3) and got[("asma", None)]["groups"] == "1,2"
    assert got[("asma", None)]["n"] == 5


def test_real_counts_every_labelled_image_real_1to5_only_one_to_five_labels(tmp_path: Path, write_dataset,
                                                                            write_predictions):
    # a {1}: top-1 1 -> right; b {2}: top-1 7 -> wrong; c 6 labels {10..15}: top-1 10 -> right; z no labels: skipped
    # real (Beyer, timm) over a, b, c: 2/3 = 66.67; real_1to5 (the paper) over a, b: 1/2 = 50
    write_dataset(tmp_path, "v1", "imagenet_v1", {"a": (1, [1]), "b": (2, [2]), "c": (10, list(range(10, 16))),
                                                  "z": (4, [])})
    write_predictions(tmp_path, "v1", "imagenet_v1", "m", {"a": [1, 2, 3, 4, 5], "b": [7, 2, 3, 4, 5],
                                                          "c": [10, 2, 3, 4, 5], "z": [4, 2, 3, 1, 5]})
    got = as_dict(read_table(evaluate_results(tmp_path, n_boot=10)[0]), "m", "v1")
    assert (got[("real", None)]["value_pct"], got[("real", None)]["n"]) == (pytest.approx(200 / 3), 3)
    assert (got[("real_1to5", None)]["value_pct"], got[("real_1to5", None)]["n"]) == (pytest.approx(50.0), 2)


def test_missing_samples_are_excluded_and_counted(v1_results: Path, write_predictions):
    partial = {k: v for k, v in V1_PRED.items() if k != "s1"}
    write_predictions(v1_results, "v1", "imagenet_v1", "modelB", partial)
    out, summary = evaluate_results(v1_results, n_boot=20, min_group_n=1)
    got = as_dict(read_table(out), "modelB", "v1")
    assert got[("top1", None)]["value_pct"] == pytest.approx(50.0) and got[("top1", None)]["n"] == 2  # s0 1, s2 0
    assert ("subgroup", 2) not in got  # its only sample is missing
    assert got[("asma", None)]["value_pct"] == pytest.approx(75.0)  # (100 + 50) / 2
    assert summary["datasets"]["v1"]["missing_samples"] == {"modelB": 1}
    assert as_dict(read_table(out), "modelA", "v1")[("top1", None)]["n"] == 3  # modelA unaffected


def test_labels_are_looked_up_by_sample_id_not_position(tmp_path: Path, write_dataset):
    # predictions stored in another row order than the manifest give the same metrics
    write_dataset(tmp_path, "v1", "imagenet_v1", V1)
    ids = ["s3", "s1", "s0", "s2"]
    table = pa.table({"sample_id": ids, "topk_idx": pa.array([V1_PRED[s] for s in ids], pa.list_(pa.int32()))})
    write_table(tmp_path / "predictions" / "v1" / "m.parquet", table, {"model": "m", "dataset": "v1", "n_samples": 4, "topk": 5})
    got = as_dict(read_table(evaluate_results(tmp_path, n_boot=10, min_group_n=1)[0]), "m", "v1")
    assert got[("asma", None)]["value_pct"] == pytest.approx(EXPECTED_V1[("asma", None)][0])


def test_unknown_sample_is_a_clear_error(v1_results: Path, write_predictions):
    path = write_predictions(v1_results, "v1", "imagenet_v1", "modelC", {**V1_PRED, "zz": [1, 2, 3, 4, 5]})
    with pytest.raises(InputError, match=r"modelC\.parquet: sample 'zz' is not in the manifest"):
        evaluate_results(v1_results, n_boot=10)
    assert path.exists()


def test_topk_shorter_than_g_is_a_clear_error(v1_results: Path, write_predictions):
    write_predictions(v1_results, "v1", "imagenet_v1", "short", {k: v[:2] for k, v in V1_PRED.items()})
    with pytest.raises(InputError, match=r"short\.parquet: stored top-2 predictions, but v1 needs top-3"):
        evaluate_results(v1_results, n_boot=10)


def test_predictions_without_manifest(tmp_path: Path, write_predictions):
    write_predictions(tmp_path, "nodata", "imagenet_v1", "m", V1_PRED)
    with pytest.raises(InputError, match="without their manifest"):
        evaluate_results(tmp_path, n_boot=10)


def test_cli_error_is_one_line(tmp_path: Path, capsys):
    assert main(["evaluate", "--results", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no predictions/ folder" in err[0]
    assert f"mlreassess infer --out {tmp_path}" in err[0]  # the option infer has


def test_rerun_skips_until_an_input_changes(v1_results: Path, write_predictions):
    out, first = evaluate_results(v1_results, n_boot=10)
    assert first is not None
    assert evaluate_results(v1_results, n_boot=10)[1] is None  # unchanged: skipped
    assert evaluate_results(v1_results, n_boot=20)[1] is not None  # parameter changed
    assert evaluate_results(v1_results, n_boot=20, min_group_n=1)[1] is not None  # so is --min-group-n
    assert read_meta(v1_results / "metrics.parquet")["min_group_n"] == 1
    pred = v1_results / "predictions" / "v1" / "modelA.parquet"
    st = pred.stat()
    os.utime(pred, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert evaluate_results(v1_results, n_boot=20, min_group_n=1)[1] is None  # touched, same bytes: current
    write_predictions(v1_results, "v1", "imagenet_v1", "modelA", {**V1_PRED, "s0": [2, 1, 3, 8, 9]})
    os.utime(pred, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # same time as before, other bytes
    assert evaluate_results(v1_results, n_boot=20, min_group_n=1)[1] is not None  # edited in place
    assert evaluate_results(v1_results, n_boot=20, force=True)[1] is not None


def test_patchml_seeds_and_their_mean(tmp_path: Path, write_dataset, write_predictions):
    # Both sets were made with patch counts k = 2, 3 (their design label counts); --min-group-n 1.
    # seed 1: c0 labels {1,2}, top-2 [1,3] -> m=1 -> 1/3; c1 labels {4,5,6}, top-3 [4,5,6] -> 1
    #   subgroup 2: 33.33, 3: 100 -> ASMA 66.67 over "2,3"; ReaL: c0 1, c1 1 -> 100; no single labels: no top-1 row
    # seed 2: c0 labels {1,2}, top-2 [1,2] -> 1; c1 two patches of class 7: labels {7}, g=1, top-1 [8] -> 0
    #   subgroup 1: 0 (reported), 2: 100 -> ASMA 100 over "2" only: g=1 is not a design count
    #   (the old every-g convention gave (0 + 100) / 2 = 50); ReaL 50
    # mean over seeds: ASMA (66.67 + 100) / 2, ReaL 75, subgroup 2 = (33.33 + 100) / 2, subgroup 1 only seed 2,
    #   n = seeds; the seeds averaged different groups, so the mean's ASMA row names each
    design = {"counts": [2, 3], "canvas_size": 448, "min_box_side": 100}
    write_dataset(tmp_path, "patchml_seed1", "patchml", {"c0": (None, [1, 2]), "c1": (None, [4, 5, 6])}, seed=1, **design)
    write_dataset(tmp_path, "patchml_seed2", "patchml", {"c0": (None, [1, 2]), "c1": (None, [7, 7])}, seed=2, **design)
    write_predictions(tmp_path, "patchml_seed1", "patchml", "m", {"c0": [1, 3, 9], "c1": [4, 5, 6]})
    write_predictions(tmp_path, "patchml_seed2", "patchml", "m", {"c0": [1, 2, 9], "c1": [8, 7, 9]})
    out, summary = evaluate_results(tmp_path, n_boot=30, min_group_n=1)
    table = read_table(out)
    s1, s2, mean = (as_dict(table, "m", d) for d in ("patchml_seed1", "patchml_seed2", "patchml_mean"))
    assert ("top1", None) not in s1 and ("top5", None) not in s1 and ("real_1to5", None) not in s1
    assert s1[("asma", None)]["value_pct"] == pytest.approx((100 / 3 + 100) / 2) and s1[("asma", None)]["groups"] == "2,3"
    assert s2[("subgroup", 1)]["value_pct"] == 0.0 and s2[("subgroup", 1)]["n"] == 1  # reported
    assert s2[("asma", None)]["value_pct"] == pytest.approx(100.0) and s2[("asma", None)]["groups"] == "2"
    assert mean[("asma", None)]["value_pct"] == pytest.approx(((100 / 3 + 100) / 2 + 100) / 2)
    assert mean[("asma", None)]["n"] == 2
    assert mean[("asma", None)]["groups"] == "2,3 (patchml_seed1); 2 (patchml_seed2)"
    assert mean[("real", None)]["value_pct"] == pytest.approx(75.0)
    assert mean[("subgroup", 2)]["value_pct"] == pytest.approx((100 / 3 + 100) / 2)
    assert mean[("subgroup", 1)]["value_pct"] == pytest.approx(0.0) and mean[("subgroup", 1)]["n"] == 1
    assert summary["datasets"]["patchml_mean"]["seeds"] == ["patchml_seed1", "patchml_seed2"]
    assert summary["datasets"]["patchml_seed2"]["asma_range_present"] == [2]
    assert summary["datasets"]["patchml_seed2"]["outside_design"] == {"1": 1}
    assert summary["datasets"]["patchml_seed2"]["design_counts"] == [2, 3]


def test_patchml_mean_refuses_seeds_made_with_other_parameters(tmp_path: Path, write_dataset, write_predictions,
                                                               caplog):
    # same seeds' content, but seed 2 was composed from boxes of at least 20 px, seed 1 of 100 px
    caplog.set_level(logging.WARNING, logger="mlreassess")
    for seed, side in ((1, 100), (2, 20)):
        name = f"patchml_seed{seed}"
        write_dataset(tmp_path, name, "patchml", {"c0": (None, [1, 2])}, seed=seed, counts=[2], canvas_size=448,
                      min_box_side=side)
        write_predictions(tmp_path, name, "patchml", "m", {"c0": [1, 2, 3]})
    out, summary = evaluate_results(tmp_path, n_boot=10, min_group_n=1)
    assert {r["dataset"] for r in read_table(out).to_pylist()} == {"patchml_seed1", "patchml_seed2"}  # no mean
    why = "patchml_seed1 and patchml_seed2 differ in min_box_side (100 vs 20)"
    assert summary["patchml_mean_skipped"] == why and read_meta(out)["patchml_mean_skipped"] == why
    assert "patchml_mean: not written" in caplog.text and why in caplog.text
    # the function itself refuses too; another canvas side is refused the same way
    seeds = [evaluate_dataset(_patchml_sample(f"s{i}", {"canvas_size": side}), []) for i, side in ((1, 448), (2, 224))]
    with pytest.raises(InputError, match=r"refusing to average .*differ in canvas_size \(448 vs 224\)"):
        mean_over_seeds(seeds)
    assert mean_over_seeds([seeds[0], evaluate_dataset(_patchml_sample("s3", {"canvas_size": 448}), [])]).name == "patchml_mean"


def _patchml_sample(name: str, meta: dict):
    return make_sample(name, "patchml", ["c0"], [-1], core.label_sets([[1, 2]]), meta={"counts": [2], **meta})


def test_intervals_are_deterministic_and_bracket_the_value(tmp_path: Path, write_dataset, write_predictions):
    rng = np.random.default_rng(0)
    samples = {f"x{i:03d}": (int(rng.integers(0, 10)), [int(rng.integers(0, 10))]) for i in range(200)}
    samples = {k: (v[0], [v[0]]) for k, v in samples.items()}
    write_dataset(tmp_path, "v1", "imagenet_v1", samples)
    preds = {k: [int(rng.integers(0, 10)) if rng.random() < 0.5 else v[0], 11, 12, 13, 14] for k, v in samples.items()}
    write_predictions(tmp_path, "v1", "imagenet_v1", "m", preds)
    a = read_table(evaluate_results(tmp_path, n_boot=200, seed=5)[0]).to_pylist()
    b = read_table(evaluate_results(tmp_path, n_boot=200, seed=5, force=True)[0]).to_pylist()
    assert a == b
    top1 = next(r for r in a if r["metric"] == "top1")
    assert top1["ci_low_pct"] < top1["value_pct"] < top1["ci_high_pct"]


def test_tied_probabilities_give_the_same_metrics_in_any_stored_order(tmp_path: Path, write_dataset):
    # labels {3}: classes 7 and 3 tie at 0.4 -> canonical top-1 is 3 (lower index) -> top-1 100%
    write_dataset(tmp_path, "v1", "imagenet_v1", {"a": (3, [3])})
    for model, order in (("m1", [7, 3, 9, 1, 2]), ("m2", [3, 7, 9, 1, 2])):
        table = pa.table({"sample_id": ["a"], "topk_idx": pa.array([order], pa.list_(pa.int32())),
                          "topk_prob": pa.array([[0.4, 0.4, 0.1, 0.05, 0.05]], pa.list_(pa.float32()))})
        write_table(tmp_path / "predictions" / "v1" / f"{model}.parquet", table,
                    {"model": model, "dataset": "v1", "n_samples": 1, "topk": 5})
    table = read_table(evaluate_results(tmp_path, n_boot=10)[0])
    assert as_dict(table, "m1", "v1")[("top1", None)]["value_pct"] == 100.0
    assert [r["value_pct"] for r in as_dict(table, "m1", "v1").values()] == [r["value_pct"] for r in as_dict(table, "m2", "v1").values()]


def test_batched_scoring_equals_the_one_vector_functions():
    # `evaluate`'s engine (all models at once, stratum sums) and `aggregate` on one model's per-sample
    # scores go through the same ratio / mean-of-groups functions: same values, same n
    rng = np.random.default_rng(2)
    n = 300
    g = rng.integers(0, 8, size=n)
    lists = [sorted(rng.choice(20, size=int(k), replace=False).tolist()) for k in g]
    labels = core.label_sets(lists)
    label = np.array([ls[0] if ls else -1 for ls in lists])
    sample = make_sample("v2", "imagenet_v2", [f"s{i:03d}" for i in range(n)], label, labels)
    topk = rng.integers(0, 20, size=(n, 8))
    rows = sample.index.get_indexer([f"s{i:03d}" for i in range(n)])
    # ~37 samples per label count: a threshold of 38 leaves some groups out, on both sides alike
    est = evaluate_dataset(sample, [Prediction("m", None, rows, topk)], n_boot=5, min_group_n=38).estimates["m"]
    in_range = np.isin(labels.count, (1, 2, 3, 4, 5))
    acc = core.sample_accuracy(topk, labels, in_range)
    value, used = aggregate.asma(acc, labels.count, (1, 2, 3, 4, 5), min_n=38)
    assert 0 < len(used) < 5
    assert est[("asma", None)].groups == ",".join(map(str, used))
    assert est[("asma", None)].value_pct == pytest.approx(value, abs=1e-9)
    assert est[("asma", None)].n == sum(used.values())
    for gv in used:
        assert est[("subgroup", gv)].value_pct == pytest.approx(aggregate.subgroup_accuracy(acc, labels.count, gv)[0], abs=1e-9)
    assert est[("top1", None)].value_pct == pytest.approx(aggregate.mean_pct(core.top1_correct(topk, label))[0], abs=1e-9)
    assert est[("real", None)].value_pct == pytest.approx(aggregate.mean_pct(core.real_correct(topk, labels))[0], abs=1e-9)
