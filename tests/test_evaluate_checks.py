"""`evaluate` refuses inputs it cannot score honestly, in one line naming the file (and sample)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from mlreassess.cli import main
from mlreassess.datasets.manifest import base_meta
from mlreassess.errors import InputError
from mlreassess.io import read_table, write_table
from mlreassess.metrics.evaluate import evaluate_results

V1 = {"a": (1, [1]), "b": (2, [2, 3])}
GOOD_PROB = [0.5, 0.2, 0.1]


def _predictions(results: Path, idx: dict, prob: dict | None = None, model: str = "m") -> Path:
    ids = sorted(idx)
    cols = {"sample_id": pa.array(ids, pa.string()), "topk_idx": pa.array([idx[s] for s in ids], pa.list_(pa.int32()))}
    if prob is not None:
        cols["topk_prob"] = pa.array([prob[s] for s in ids], pa.list_(pa.float32()))
    path = results / "predictions" / "v1" / f"{model}.parquet"
    write_table(path, pa.table(cols), {"model": model, "dataset": "v1", "n_samples": len(ids), "topk": len(idx[ids[0]])})
    return path


def _one_line_error(results: Path, capsys) -> str:
    assert main(["evaluate", "--results", str(results), "--bootstrap", "5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


@pytest.mark.parametrize(
    "prob_b, why",
    [
        ([float("nan"), 0.2, 0.1], r"topk_prob\[0\] is nan"),
        ([0.5, float("inf"), 0.1], r"topk_prob\[1\] is inf"),
        ([0.5, 0.2, -0.1], r"topk_prob\[2\] = -0.1 is negative"),
        ([1.5, 0.2, 0.1], r"topk_prob\[0\] = 1.5 is above 1"),
        ([0.2, 0.5, 0.1], r"topk_prob increases along the top-k \(0.2 then 0.5 at positions 0, 1\)"),
    ],
    ids=["nan", "inf", "negative", "above-one", "increasing"],
)
def test_probabilities_that_no_softmax_gives_are_refused(tmp_path, write_dataset, capsys, prob_b, why):
    write_dataset(tmp_path, "v1", "imagenet_v1", V1)
    path = _predictions(tmp_path, {"a": [1, 2, 3], "b": [2, 3, 4]}, {"a": GOOD_PROB, "b": prob_b})
    with pytest.raises(InputError, match=rf"^{path}: sample 'b': {why}: not the top-k of a softmax$"):
        evaluate_results(tmp_path, n_boot=5)
    line = _one_line_error(tmp_path, capsys)
    assert str(path) in line and "sample 'b'" in line


def test_a_class_twice_in_a_row_is_refused(tmp_path, write_dataset, capsys):
    # labels {2, 3}, top-2 [2, 2]: P = {2} scores 1/2, more than any real top-2 with one hit (1/3);
    # a repeated class is what a broken writer produces, never a softmax: refuse the file
    write_dataset(tmp_path, "v1", "imagenet_v1", V1)
    path = _predictions(tmp_path, {"a": [1, 2, 3], "b": [2, 2, 4]})  # without probabilities too
    with pytest.raises(InputError, match=rf"^{path}: sample 'b': class 2 appears twice in topk_idx"):
        evaluate_results(tmp_path, n_boot=5)
    assert "class 2 appears twice" in _one_line_error(tmp_path, capsys)


def test_ties_and_a_valid_softmax_pass(tmp_path, write_dataset):
    write_dataset(tmp_path, "v1", "imagenet_v1", V1)
    _predictions(tmp_path, {"a": [1, 2, 3], "b": [2, 3, 4]}, {"a": GOOD_PROB, "b": [0.4, 0.4, 0.2]})
    out, _ = evaluate_results(tmp_path, n_boot=5)
    assert read_table(out).num_rows > 0


def test_a_manifest_column_of_the_wrong_type_is_one_line(tmp_path, write_predictions, capsys):
    # `label` stored as text ("1"): refused before any reader would compare it with numbers
    table = pa.table({
        "sample_id": pa.array(["a", "b"], pa.string()),
        "path": pa.array([None, None], pa.string()),
        "label": pa.array(["1", "2"], pa.string()),
        "labels": pa.array([[1], [2, 3]], pa.list_(pa.int64())),
        "label_count": pa.array([1, 2], pa.int64()),
    })
    manifest = tmp_path / "manifests" / "v1.parquet"
    write_table(manifest, table, base_meta("imagenet_v1", "v1", None))
    write_predictions(tmp_path, "v1", "imagenet_v1", "m", {"a": [1, 2, 3], "b": [2, 3, 4]})
    with pytest.raises(InputError, match=rf"^{manifest}: column 'label' is string, expected int64"):
        evaluate_results(tmp_path, n_boot=5)
    line = _one_line_error(tmp_path, capsys)
    assert str(manifest) in line and "'label'" in line


def test_a_predictions_column_of_the_wrong_type_is_one_line(tmp_path, write_dataset, capsys):
    write_dataset(tmp_path, "v1", "imagenet_v1", V1)
    table = pa.table({"sample_id": ["a", "b"], "topk_idx": pa.array([["1", "2"], ["2", "3"]], pa.list_(pa.string()))})
    path = tmp_path / "predictions" / "v1" / "m.parquet"
    write_table(path, table, {"model": "m", "dataset": "v1", "n_samples": 2, "topk": 2})
    assert f"{path}: column 'topk_idx' is list<element: string>, expected list<int32>" in _one_line_error(tmp_path, capsys)
