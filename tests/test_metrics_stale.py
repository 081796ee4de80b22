"""metrics.parquet, the report's tables and figures and the results page name what they were made
from, and their readers check it (issue 15): a stale one is redone, or refused, never shown as current."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pyarrow as pa
import pytest

from mlreassess.cli import main
from mlreassess.errors import InputError
from mlreassess.io import read_meta, read_table, write_table
from mlreassess.metrics.evaluate import evaluate_results, why_stale
from mlreassess.report.html import why_page_stale
from mlreassess.results import ResultsLayout

V1 = {f"s{i}": (i % 3, [i % 3]) for i in range(12)}


def preds(shift: int) -> dict:
    return {s: [(ls[0] + shift) % 5, 7, 8] for s, (_, ls) in V1.items()}


@pytest.fixture
def results(tmp_path, write_dataset, write_predictions) -> Path:
    write_dataset(tmp_path, "v1", "imagenet_v1", V1)
    write_predictions(tmp_path, "v1", "imagenet_v1", "good", preds(0))  # top-1 100%
    write_predictions(tmp_path, "v1", "imagenet_v1", "old_weights", preds(1))  # top-1 0%
    evaluate_results(tmp_path, n_boot=10, min_group_n=1)
    return tmp_path


def models_in(results: Path) -> set[str]:
    return set(read_table(ResultsLayout(results).metrics).column("model").to_pylist())


def report(results: Path, *items: str) -> int:
    return main(["report", "--results", str(results), *items])


def test_a_retired_predictions_file_takes_its_rows_out_of_metrics_before_the_report_uses_them(results, caplog):
    """The failed redo: after the runner retires the stale predictions file, neither evaluate nor
    report may present the old weights' numbers as the model's result."""
    layout = ResultsLayout(results)
    layout.prediction("v1", "old_weights").unlink()  # what the runner does when the redo fails
    assert why_stale(results) == "predictions/v1/old_weights.parquet is gone"
    with caplog.at_level(logging.INFO, logger="mlreassess"):
        assert report(results, "tables4-10") == 0
    assert models_in(results) == {"good"}
    assert "not current (predictions/v1/old_weights.parquet is gone): evaluating again with its parameters " \
           "(n_boot 10, level 95.0, seed 0, min_group_n 1)" in caplog.text
    assert read_meta(layout.metrics)["n_boot"] == 10  # the parameters it was made with, not the defaults
    assert "old_weights" not in (layout.tables / "tables4-10.csv").read_text()


def test_every_predictions_file_gone_leaves_metrics_with_no_rows(results, caplog):
    layout = ResultsLayout(results)
    for p in layout.predictions_of("v1").glob("*.parquet"):
        p.unlink()
    assert report(results) == 0
    assert models_in(results) == set() and "no predictions files" in caplog.text
    assert "Leaderboard" in layout.index_html.read_text()


def test_added_or_edited_predictions_are_evaluated_before_the_report(results, write_predictions):
    write_predictions(results, "v1", "imagenet_v1", "new", preds(0))
    assert why_stale(results) == "predictions/v1/new.parquet is new"
    assert report(results, "tables4-10") == 0 and models_in(results) == {"good", "old_weights", "new"}
    path = ResultsLayout(results).prediction("v1", "good")
    st = path.stat()
    write_predictions(results, "v1", "imagenet_v1", "good", preds(2))  # same size, ...
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # ... same time: only the bytes differ
    assert why_stale(results) == "predictions/v1/good.parquet changed"


def test_a_copied_results_folder_is_still_current(results, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(results, copy, copy_function=shutil.copy)  # new times, same bytes
    assert why_stale(copy) is None


def test_metrics_from_before_the_record_are_redone(results):
    path = ResultsLayout(results).metrics
    meta = read_meta(path)
    del meta["derived_from"]
    write_table(path, read_table(path), meta)
    assert "no record of the files it was made from" in why_stale(results)


def test_metrics_without_their_predictions_are_shown_unchecked_and_say_so(results, caplog):
    shutil.rmtree(ResultsLayout(results).predictions_dir)
    assert report(results, "tables4-10") == 0
    assert "reporting it as it is, unchecked" in caplog.text
    assert "could not be checked against its predictions" in ResultsLayout(results).index_html.read_text()


@pytest.mark.parametrize("column, values, message", [
    ("value_pct", ["80"] * 2, "column 'value_pct' is string, expected number values"),
    ("n", ["1"] * 2, "column 'n' is string, expected integer values"),
    ("model", [1, 2], "column 'model' is int64, expected string values"),
    ("value_pct", [float("inf"), 1.0], "column 'value_pct' holds an infinite value"),
])
def test_wrongly_typed_metrics_are_one_line(tmp_path, capsys, column, values, message):
    columns = {"model": ["a", "b"], "dataset": ["v1", "v1"], "metric": ["top1", "top1"],
               "label_count": pa.array([None, None], pa.int64()), "value_pct": [1.0, 2.0], "n": [1, 1],
               "ci_low_pct": [0.0, 0.0], "ci_high_pct": [3.0, 3.0]}
    columns[column] = values
    write_table(ResultsLayout(tmp_path).metrics, pa.table(columns), {"datasets": {"v1": {"kind": "imagenet_v1"}}})
    assert report(tmp_path) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("mlreassess: error:") and message in err[-1]
    assert not (tmp_path / "tables").exists(), "refused before any item was written"


def test_wrongly_shaped_metrics_metadata_is_one_line(results, capsys):
    path = ResultsLayout(results).metrics
    write_table(path, read_table(path), {**read_meta(path), "datasets": {"v1": "imagenet_v1"}})
    assert report(results) == 2
    assert "metadata 'datasets' is not a mapping" in capsys.readouterr().err


@pytest.mark.parametrize("edit, message", [
    (lambda t, m: (t.slice(0, 5), m), "holds 5 rows, its metadata says 12 (cut short or edited)"),
    (lambda t, m: (t, {k: v for k, v in m.items() if k != "n_samples"}), "its metadata lacks n_samples"),
    (lambda t, m: (t, {**m, "model": ["x"]}), "its metadata 'model' is ['x'], not a model name"),
])
def test_an_unfinished_predictions_file_is_refused_as_infer_would_redo_it(results, capsys, edit, message):
    from mlreassess.inference.sweep.writers import is_complete

    path = ResultsLayout(results).prediction("v1", "good")
    table, meta = edit(read_table(path), read_meta(path))
    write_table(path, table, meta)
    assert not is_complete(path)  # infer's view of it
    assert main(["evaluate", "--results", str(results), "--bootstrap", "10", "--min-group-n", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].endswith("redoing it: predictions/v1/good.parquet changed")
    assert len(err) == 2 and f"{path}: not a finished predictions file" in err[1] and message in err[1]


def test_empty_manifest_and_empty_predictions_are_one_line(tmp_path, write_dataset, capsys):
    write_dataset(tmp_path, "v1", "imagenet_v1", {})
    empty = pa.table({"sample_id": pa.array([], pa.string()), "topk_idx": pa.array([], pa.list_(pa.int32()))})
    write_table(ResultsLayout(tmp_path).prediction("v1", "m"), empty, {"model": "m", "dataset": "v1", "n_samples": 0, "topk": 5})
    with pytest.raises(InputError, match="the manifest has no samples"):
        evaluate_results(tmp_path, n_boot=10)
    write_dataset(tmp_path, "v1", "imagenet_v1", V1)
    with pytest.raises(InputError, match=r"m\.parquet: holds no predictions \(0 rows\)"):
        evaluate_results(tmp_path, n_boot=10)


def test_an_empty_manifest_and_a_label_file_of_empty_lists_through_report(tmp_path, write_dataset, caplog):
    write_dataset(tmp_path, "imagenet_v1", "imagenet_v1", {})
    write_dataset(tmp_path, "imagenet_v2_matched-frequency", "imagenet_v2", {"3/a": (3, []), "3/b": (3, [])})
    assert report(tmp_path) == 0
    assert "figure4: skipped (no image with a label in imagenet_v1, imagenet_v2_matched-frequency" in caplog.text
    assert (tmp_path / "tables" / "table1.csv").read_text().splitlines()[1:] == [
        "imagenet_v1,0,0,0,0,0,0,0,0", "imagenet_v2_matched-frequency,2,0,0,0,0,0,0,2"]


# ---- the report's own outputs and the page ---------------------------------------------------------


def test_a_skipped_items_old_files_go_and_the_page_shows_only_current_tables(results, caplog):
    layout = ResultsLayout(results)
    assert report(results) == 0
    made = sorted(p.name for p in layout.tables.glob("*.md"))
    assert "tables4-10.md" in made
    for p in layout.predictions_of("v1").glob("*.parquet"):
        p.unlink()  # nothing left to score: tables4-10 is skipped now
    caplog.clear()
    assert report(results) == 0
    assert not (layout.tables / "tables4-10.md").exists() and "removed its old tables4-10.md" in caplog.text
    (layout.tables / "tables4-10.md").write_text("**Tables 4-10: every checkpoint.**\n\n| a |\n|---|\n| 9 |\n")
    page = main(["report", "--results", str(results), "table1"]) == 0 and layout.index_html.read_text()
    assert "tables4-10.md left out: no record of what it was made from" in caplog.text
    assert "tables/tables4-10.md" not in page


def test_a_table_made_from_older_metrics_is_left_out_of_the_page(results, write_predictions, caplog):
    layout = ResultsLayout(results)
    assert report(results, "tables4-10") == 0
    write_predictions(results, "v1", "imagenet_v1", "new", preds(0))
    evaluate_results(results, n_boot=10, min_group_n=1)  # new metrics; tables4-10 not remade
    from mlreassess.report.html import write_results_page

    text = write_results_page(results).read_text()
    assert "tables/tables4-10.md left out: metrics.parquet changed" in caplog.text and "tables4-10.md" not in text


def test_the_page_names_what_it_was_made_from(results, write_predictions):
    assert report(results, "table1") == 0
    assert why_page_stale(results) is None
    write_predictions(results, "v1", "imagenet_v1", "new", preds(0))
    evaluate_results(results, n_boot=10, min_group_n=1)
    assert why_page_stale(results) == "metrics.parquet changed"
    ResultsLayout(results).failures.write_text('{"model": "x", "dataset": "v1", "error": "e"}\n')
    assert report(results, "table1") == 0 and why_page_stale(results) is None
    ResultsLayout(results).failures.unlink()
    assert why_page_stale(results) == "failures.jsonl is gone"


def test_a_reordered_copy_of_the_same_manifest_is_the_same_manifest(tmp_path, write_dataset):
    from mlreassess.datasets.manifest import read_manifest
    from mlreassess.inference.sweep import writers

    layout = ResultsLayout(tmp_path)
    manifest = read_manifest(write_dataset(tmp_path, "v1", "imagenet_v1", V1))
    reordered = manifest.table.take(pa.array(list(range(len(manifest)))[::-1]))
    other = type(manifest)(reordered, manifest.meta, tmp_path / "elsewhere.parquet")
    assert writers.check_manifest_copy(layout, other) == "same"
    assert writers.pixels_sha256(other) == writers.pixels_sha256(manifest)
