"""A RESULTS folder from someone else: every value the results page reads from a file holds HTML/JS.

Predictions metadata (each key in turn, then all of them), model, dataset and sample names, failures,
metrics metadata, the paper's numbers, table cells and figure names carry a payload; `evaluate` and
`report` run as users run them; headless Chromium opens the page with every row expanded, every
header clicked and the filter typed into, and checks that no injected script ran, no injected
element exists and the page's Content-Security-Policy never had to block anything (so the escaping
alone held).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pytest

from mlreassess.cli import main
from mlreassess.io import read_meta, read_table, write_table
from mlreassess.report import derived
from mlreassess.results import ResultsLayout
from test_report_html import write_canvas_pngs
from test_report_html_browser import CHROMEDRIVER, CHROMIUM, driver, downloads, load  # noqa: F401  (fixtures)

pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="headless Chromium not found")

# Tries every context the page puts text in: element content, quoted attributes, a <script>, a template.
PAYLOAD = ("\"'><img src=x onerror=\"window.__pwned=1\"><script>window.__pwned=2</script>"
           "<b class=injected>x</b>`${window.__pwned=3}`<svg onload=window.__pwned=4>")
NAME = "x'\"><b class=injected>n<img src=y onerror=window.__pwned=5>"  # no '/': it becomes file names too
V1, PM = "imagenet_v1", "patchml_seed1"
V1_SAMPLES = {f"ILSVRC2012_val_{i:08d}": (i % 7, [i % 7] + ([8] if i % 3 == 0 else [])) for i in range(1, 25)}
PM_SAMPLES = {f"k{2 + i % 2}_{i:06d}": (None, [i % 5, 5 + i % 4] + ([9] if i % 2 else [])) for i in range(12)}


def prediction_meta(model: str, dataset: str, n: int) -> dict:
    """What `infer` writes (inference.runner._meta and writers.write_predictions)."""
    return {"model": model, "dataset": dataset, "dataset_kind": "patchml" if dataset == PM else "imagenet_v1",
            "manifest": "/data/manifest.parquet", "weights": "pypi", "input_size": [3, 224, 224],
            "interpolation": "bicubic", "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "crop": "none",
            "crop_pct": 1.0, "test_input_size": None, "checkpoint_key": None, "precision": "fp32",
            "channels_last": False, "compile": False, "batch_size": 64, "forward_batch_size": 64, "device": "cpu",
            "topk": 5, "torch": "2.14.1", "timm": "1.0.20", "elapsed_s": 1.5, "images_per_s": 20.0,
            "failed_samples": [{"sample_id": "gone", "error": "unreadable"}], "world_size": 1,
            "recipe": {"weights": "pypi"}, "decode": "cpu", "n_samples": n}


META_KEYS = sorted(prediction_meta("m", V1, 1))


def write_results(root: Path, write_dataset, write_predictions, models=("lite0", "lite1")) -> None:
    write_dataset(root, V1, "imagenet_v1", V1_SAMPLES)
    write_canvas_pngs(write_dataset(root, PM, "patchml", PM_SAMPLES, counts=[2, 3], seed=1))
    for i, m in enumerate(models):
        for name, samples in ((V1, V1_SAMPLES), (PM, PM_SAMPLES)):
            path = write_predictions(root, name, name, m, {s: [(ls[0] + i) % 10, *range(10, 14)] for s, (_, ls) in samples.items()})
            table = read_table(path)
            write_table(path, table, prediction_meta(m, name, table.num_rows))


def set_meta(path: Path, key: str, value) -> None:
    write_table(path, read_table(path), {**read_meta(path), key: value})


def cli(*args: str) -> int:
    return main(list(args))


def open_everything(driver) -> None:
    """Every header clicked (sorts), every row expanded, the filter typed into and cleared."""
    driver.execute_script("""
      document.querySelectorAll('#leaderboard th.sortable').forEach(function (th) { th.click(); });
      var f = document.getElementById('filter');
      if (f) { f.value = 'x'; f.dispatchEvent(new Event('input')); f.value = ''; f.dispatchEvent(new Event('input')); }""")
    driver.set_script_timeout(20)
    driver.execute_async_script("""
      var done = arguments[arguments.length - 1];
      (function wait() {
        var t = document.getElementById('leaderboard');
        if (t && t.getAttribute('aria-busy') !== 'false') { return setTimeout(wait, 20); }
        document.querySelectorAll('#leaderboard button.expand[aria-expanded=false]').forEach(function (b) { b.click(); });
        done();
      })();""")


def assert_nothing_injected(driver, page: Path, expect_rows: bool = True) -> None:
    driver.get_log("browser")  # earlier pages' messages
    load(driver, page, offline=True)
    open_everything(driver)
    state = driver.execute_script("""return {
        pwned: window.__pwned === undefined ? null : window.__pwned,
        injected: document.querySelectorAll('.injected, svg').length,
        scripts: document.scripts.length,
        handlers: Array.from(document.querySelectorAll('*')).filter(function (e) {
          return Array.from(e.attributes).some(function (a) { return /^on/i.test(a.name); }); }).length,
        foreign_images: Array.from(document.images).filter(function (i) { return !/^data:image\\/png;base64,/.test(i.getAttribute('src') || 'data:image/png;base64,'); }).length,
        expanded: document.querySelectorAll('#leaderboard tr.detail').length,
        rows: document.querySelectorAll('#leaderboard tr[data-model]').length,
        text: document.body.textContent}""")
    blocked = [e["message"] for e in driver.get_log("browser") if "Content Security Policy" in e["message"]]
    assert state["pwned"] is None, "an injected script ran"
    assert state["injected"] == 0 and state["handlers"] == 0 and state["foreign_images"] == 0, state
    assert state["scripts"] == 2, "only the page's data block and its script"
    assert not blocked, blocked  # nothing reached the DOM for the policy to block: escaping held on its own
    if expect_rows:
        assert state["rows"] >= 1 and state["expanded"] == state["rows"], "every row opened"


@pytest.fixture(scope="module")
def base(tmp_path_factory, write_dataset, write_predictions) -> Path:
    root = tmp_path_factory.mktemp("clean")
    write_results(root, write_dataset, write_predictions)
    return root


@pytest.mark.slow
@pytest.mark.parametrize("key", META_KEYS)
def test_each_predictions_metadata_value_as_a_payload(driver, base, tmp_path, key):
    root = tmp_path / "r"
    shutil.copytree(base, root)
    for path in sorted((root / "predictions").rglob("lite0.parquet")):
        set_meta(path, key, PAYLOAD if key != "failed_samples" else [{"sample_id": PAYLOAD, "error": PAYLOAD}])
    rc = cli("evaluate", "--results", str(root), "--bootstrap", "20", "--min-group-n", "1")
    assert rc in (0, 2)  # 2: evaluate refused the file (a dataset or n_samples that is not one), in one line
    assert cli("report", "--results", str(root)) == 0
    assert_nothing_injected(driver, root / "index.html", expect_rows=rc == 0)


def test_every_file_the_page_reads_holds_a_payload(driver, tmp_path, write_dataset, write_predictions, capsys):
    root = tmp_path / "r"
    write_results(root, write_dataset, write_predictions, models=("lite0", NAME))
    for path in sorted((root / "predictions").rglob("*.parquet")):
        meta = read_meta(path)
        set_meta(path, "weights", PAYLOAD)
        set_meta(path, "failed_samples", [{"sample_id": PAYLOAD, "error": PAYLOAD}])
        for key in ("interpolation", "precision", "device", "crop"):
            set_meta(path, key, PAYLOAD)
        assert read_meta(path)["model"] == meta["model"]
    ResultsLayout(root).failures.write_text("\n".join(json.dumps(e) for e in [
        {"model": NAME, "dataset": V1, "error": PAYLOAD},
        {"model": PAYLOAD, "dataset": PAYLOAD, "error": PAYLOAD},
        {"model": "other", "dataset": NAME, "error": "x"}]) + "\n")
    reported = tmp_path / "reported.csv"
    reported.write_text("checkpoint,timm_checkpoint,metric,dataset,value,source_table\n"
                        f"\"{NAME}\",\"{NAME}\",top1,imagenet_v1,50.0,4\nlite0,lite0,asma,patchml_mean,40,3\n")
    assert cli("evaluate", "--results", str(root), "--bootstrap", "20", "--min-group-n", "1") == 0
    # metrics.parquet's own text: a groups value and a dataset kind (as a collaborator's file may hold)
    metrics = ResultsLayout(root).metrics
    table, meta = read_table(metrics), read_meta(metrics)
    groups = pa.array([PAYLOAD if g is not None else None for g in table.column("groups").to_pylist()], pa.string())
    meta["patchml_mean_skipped"] = PAYLOAD
    write_table(metrics, table.set_column(table.column_names.index("groups"), "groups", groups), meta)
    stamp = read_meta(metrics)
    assert cli("report", "--results", str(root), "--reported", str(reported)) == 0
    assert read_meta(metrics) == stamp, "metrics.parquet was current: used as it is"
    # a figure and a table under hostile names, recorded as the report's own (a forged record)
    figure = root / "figures" / f"{NAME}.png"
    shutil.copy(root / "manifests" / "images" / f"{sorted(PM_SAMPLES)[0]}.png", figure)
    table_md = root / "tables" / f"{NAME}.md"
    table_md.write_text(f"**{PAYLOAD}**\n\n| a |\n|---|\n| 1 |\n{PAYLOAD}\n")
    table_md.with_suffix(".csv").write_text(f"\"{PAYLOAD}\",b\n\"{PAYLOAD}\",2\n")
    derived.record([figure, table_md], [], root)
    from mlreassess.report.html import PageOptions, write_results_page

    page = write_results_page(root, PageOptions(reported_csv=reported))
    text = page.read_text()
    assert NAME not in text and PAYLOAD not in text  # never verbatim: always escaped
    assert_nothing_injected(driver, page)
    shown = driver.execute_script("return document.body.textContent")
    assert NAME in shown and PAYLOAD.split("<script>")[0] in shown, "the payloads are shown, as text"


def test_an_empty_results_folder_still_gets_a_page(driver, tmp_path):
    root = tmp_path / "empty"
    root.mkdir()
    assert cli("report", "--results", str(root)) == 0
    assert_nothing_injected(driver, root / "index.html", expect_rows=False)
