"""Every value a stage reads from a file is checked for type and range where it is read (issue 23):
a wrong one is one line naming the file and key, or a page without it; non-finite numbers never
reach JSON or the page."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from mlreassess.cli import main
from mlreassess.io import META_KEY, read_meta, read_table
from mlreassess.metrics.checks import PREDICTION_META
from mlreassess.report.html import write_results_page

V1 = {f"s{i}": (i % 3, [i % 3]) for i in range(6)}

# A payload and a wrong type for each key the readers use (each key gets those its rule refuses; the
# rules themselves are pinned by the hand-picked cases below).
CANDIDATES = [float("nan"), float("inf"), "<script>alert(1)</script>", [1, "x"], {"a": 1}, -1, True]
ALL_BAD = [(k, v) for k, (ok, _) in PREDICTION_META.items() for v in CANDIDATES if not ok(v)]
BAD = [(k, v) for k in PREDICTION_META for v in [v for key, v in ALL_BAD if key == k][:2]]  # two per key: enough


def test_the_rules_refuse_what_the_issue_found():
    refused = {(k, json.dumps(v)) for k, v in ALL_BAD}
    for key, value in [("input_size", ["a", "b", "c"]), ("elapsed_s", float("nan")), ("elapsed_s", float("inf")),
                       ("images_per_s", "<script>alert(1)</script>"), ("failed_samples", -1), ("crop", -1),
                       ("batch_size", True), ("mean", [1, "x"]), ("topk", -1)]:
        assert not PREDICTION_META[key][0](value), (key, value)
    assert ("elapsed_s", "NaN") in refused and ("input_size", '[1, "x"]') in refused


def _edit_meta(path, **changes) -> None:
    """Rewrite a parquet file's mlreassess metadata in place (what a hand edit does)."""
    meta = {**read_meta(path), **changes}
    table = read_table(path).replace_schema_metadata({META_KEY: json.dumps(meta).encode()})  # NaN: as Python writes it
    pq.write_table(table, path)


@pytest.fixture
def results(tmp_path, write_dataset, write_predictions):
    write_dataset(tmp_path, "v1", "imagenet_v1", V1)
    write_predictions(tmp_path, "v1", "imagenet_v1", "m", {s: [ls[0], 7, 8] for s, (_, ls) in V1.items()})
    return tmp_path


@pytest.mark.parametrize("key,value", BAD)
def test_a_bad_predictions_metadata_value_is_one_line_or_a_page(results, key, value, capsys):
    _edit_meta(results / "predictions" / "v1" / "m.parquet", **{key: value})
    code = main(["evaluate", "--results", str(results), "--bootstrap", "10", "--min-group-n", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "m.parquet" in err[0] and (repr(key) in err[0] or "path says" in err[0]), err
    assert main(["report", "--results", str(results)]) in (0, 2)  # a page, or one line: never a traceback
    err = capsys.readouterr().err.strip().splitlines()
    assert not any("Traceback" in line for line in err)
    page = results / "index.html"
    if page.exists():
        text = page.read_text()
        data = text.split('id="page-data">')[1].split("</script>")[0]
        json.loads(data, parse_constant=lambda c: pytest.fail(f"{c} in the page's data"))  # strict JSON
        assert "<script>alert" not in text


def test_the_page_leaves_out_run_details_it_cannot_trust(results, capsys, caplog):
    assert main(["evaluate", "--results", str(results), "--bootstrap", "10", "--min-group-n", "1"]) == 0
    _edit_meta(results / "predictions" / "v1" / "m.parquet", elapsed_s=float("inf"))
    # metrics.parquet is now stale (the file changed): the report evaluates again, and refuses the file.
    assert main(["report", "--results", str(results)]) == 2
    assert "'elapsed_s' is inf, not a finite number" in capsys.readouterr().err


def test_metadata_naming_another_model_than_its_file_is_refused(results, capsys):
    _edit_meta(results / "predictions" / "v1" / "m.parquet", model="someone_else")
    assert main(["evaluate", "--results", str(results), "--bootstrap", "10"]) == 2
    assert "says model 'someone_else' on dataset 'v1', not what its path says (v1/m.parquet)" in capsys.readouterr().err


def test_an_all_empty_real_manifest_is_scored_not_a_traceback(tmp_path, write_dataset, write_predictions):
    empty = {f"s{i}": (i % 3, []) for i in range(6)}
    write_dataset(tmp_path, "v1", "imagenet_v1", empty)
    write_predictions(tmp_path, "v1", "imagenet_v1", "m", {s: [1, 7, 8] for s in empty})
    assert main(["evaluate", "--results", str(tmp_path), "--bootstrap", "10"]) == 0
    metrics = pq.read_table(tmp_path / "metrics.parquet").to_pandas()
    assert "top1" in set(metrics["metric"]) and "real" not in set(metrics["metric"])  # no label set: no ReaL
    assert write_results_page(tmp_path).exists()


def test_a_redo_reason_names_the_entry_that_changed_not_two_blobs():
    from mlreassess.provenance import changed

    old = {"input:metrics.parquet": [10, 1], "items": ["table1"], "opts": {"a": 1, "b": {"c": 2}}}
    assert changed(old, {**old, "input:metrics.parquet": [10, 2]}) == "metrics.parquet changed"
    assert changed(old, {**old, "opts": {"a": 1, "b": {"c": 3}}}) == "opts.b.c 2 -> 3"
    assert changed(old, {**old, "opts": {"a": 1, "b": {"c": 2}, "d": 4}}) == "opts.d added"


def test_a_name_that_is_not_utf8_is_one_readable_line(results, capsys):
    import os

    (results / "predictions" / os.fsdecode(b"v\xff")).mkdir()
    (results / "predictions" / os.fsdecode(b"v\xff") / "m.parquet").write_bytes(
        (results / "predictions" / "v1" / "m.parquet").read_bytes())
    assert main(["evaluate", "--results", str(results), "--bootstrap", "10"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'v\\xff': not printable UTF-8 text" in err[0] and "\\udcff" not in err[0]
