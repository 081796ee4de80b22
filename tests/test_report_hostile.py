"""`report` and the results page on RESULTS folders someone else made (issue 15): files that are not
what their names say, forged records, partial folders. Each is one line or a page, never a hang or a
traceback."""

from __future__ import annotations

import json
import os

import pyarrow as pa
import pytest

from mlreassess.cli import main
from mlreassess.errors import InputError
from mlreassess.io import read_meta, read_table, write_table
from mlreassess.metrics.evaluate import evaluate_results
from mlreassess.report import derived
from mlreassess.report.html import write_results_page
from mlreassess.results import ResultsLayout

V1 = {f"s{i}": (i % 3, [i % 3]) for i in range(6)}


@pytest.fixture
def results(tmp_path, write_dataset, write_predictions):
    write_dataset(tmp_path, "v1", "imagenet_v1", V1)
    write_predictions(tmp_path, "v1", "imagenet_v1", "m", {s: [ls[0], 7, 8] for s, (_, ls) in V1.items()})
    evaluate_results(tmp_path, n_boot=10, min_group_n=1)
    return tmp_path


def test_a_figure_that_is_a_fifo_is_not_read(results):
    figures = ResultsLayout(results).figures
    figures.mkdir()
    os.mkfifo(figures / "figure5.png")  # would block
    derived.record([figures / "figure5.png"], [], results)
    text = write_results_page(results).read_text()
    assert 'id="figures"' not in text


def test_a_figure_linked_to_a_device_outside_is_refused_not_read(results):
    figures = ResultsLayout(results).figures
    figures.mkdir()
    (figures / "figure4.png").symlink_to("/dev/zero")  # would never end
    derived.record([figures / "figure4.png"], [], results)
    with pytest.raises(InputError, match=r"figure4.png: a symbolic link to /dev/zero, outside"):
        write_results_page(results)


def test_a_forged_record_naming_a_file_outside_the_folder_is_never_opened(results, caplog):
    tables = ResultsLayout(results).tables
    tables.mkdir()
    (tables / "table9.md").write_text("**T**\n")
    (tables / derived.SIDECAR).write_text(json.dumps({"table9.md": {"/dev/zero": [0, 0, 0, "x"]}}))
    text = write_results_page(results).read_text()
    assert "table9" not in text and "its record names '/dev/zero', not a file of this folder" in caplog.text
    (tables / derived.SIDECAR).write_text(json.dumps({"table9.md": {"../../x": [0, 0, 0, "x"]}}))
    write_results_page(results)
    assert "its record names '../../x'" in caplog.text


@pytest.mark.parametrize("sidecar", ["not json", "[1, 2]", '{"table9.md": "x"}', '{"table9.md": {"metrics.parquet": 3}}'])
def test_a_damaged_record_leaves_the_file_out(results, sidecar):
    tables = ResultsLayout(results).tables
    tables.mkdir()
    (tables / "table9.md").write_text("**T**\n")
    (tables / derived.SIDECAR).write_text(sidecar)
    assert "table9" not in write_results_page(results).read_text()


@pytest.mark.parametrize("raw, message", [(b"not json", "not valid JSON"), (b"[1, 2]", "list, not a JSON object"),
                                          (b"\xff\xfe", "not valid JSON")])
def test_metadata_that_is_not_a_json_object_is_one_line(tmp_path, raw, message):
    import pyarrow.parquet as pq

    path = tmp_path / "x.parquet"
    pq.write_table(pa.table({"a": [1]}).replace_schema_metadata({b"mlreassess": raw}), path)
    with pytest.raises(InputError, match=message):
        read_meta(path)


@pytest.mark.parametrize("value", ["oops", "inf", "-Infinity", "nan"])
def test_a_bad_reported_csv_is_one_line_even_when_only_the_page_reads_it(results, tmp_path, capsys, value):
    bad = tmp_path / "reported.csv"
    bad.write_text(f"checkpoint,timm_checkpoint,metric,dataset,value,source_table\nx,x,top1,imagenet_v1,{value},4\n")
    assert main(["report", "--results", str(results), "figure4", "--reported", str(bad)]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "reported.csv: line 2: value '" in last and "' is not a finite number" in last


def test_failures_jsonl_with_junk_lines_still_gives_a_page(results, caplog):
    ResultsLayout(results).failures.write_bytes(b'[1, 2]\n"x"\nnull\n\xff\xfe\n{"model": "a", "dataset": "v1", "error": 3}\n')
    page = write_results_page(results)
    assert "a" in json.dumps(json.loads(page.read_text().split('id="page-data">')[1].split("</script>")[0])["failures"])
    assert caplog.text.count("is not a failure record") == 4


def test_a_partial_results_folder_still_gets_a_page(tmp_path, write_dataset):
    write_dataset(tmp_path, "v1", "imagenet_v1", V1)  # a manifest copy, nothing else
    assert main(["report", "--results", str(tmp_path)]) == 0
    assert ResultsLayout(tmp_path).index_html.exists()
    (ResultsLayout(tmp_path).predictions_of("v1")).mkdir(parents=True)  # infer started, wrote nothing
    assert main(["report", "--results", str(tmp_path)]) == 0


def test_a_metrics_file_that_is_not_parquet_is_one_line(tmp_path, capsys):
    ResultsLayout(tmp_path).metrics.write_text("hello")
    assert main(["report", "--results", str(tmp_path)]) == 2
    assert "metrics.parquet" in capsys.readouterr().err.strip().splitlines()[-1]


def test_a_manifest_copy_with_placements_outside_the_canvas_stops_the_report(results, write_dataset, capsys):
    path = write_dataset(results, "patchml_seed1", "patchml", {"k2_000000": (None, [1, 2])}, counts=[2])
    table, meta = read_table(path), read_meta(path)
    i = table.column_names.index("positions")
    table = table.set_column(i, "positions", pa.array([[[0, 0], [440, 0]]], pa.list_(pa.list_(pa.int64()))))
    write_table(path, table, meta)
    assert main(["report", "--results", str(results), "table2"]) == 2
    assert "canvas 'k2_000000': patch 1 at [440, 0]" in capsys.readouterr().err
