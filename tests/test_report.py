"""`mlreassess report`: table builders, every item on a small synthetic RESULTS, graceful skips."""

from __future__ import annotations

import logging
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest

from mlreassess.cli import main
from mlreassess.metrics.evaluate import evaluate_results
from mlreassess.report import ITEMS, build, figures, resolve_items, tables
from test_report_html import write_canvas_pngs


def test_label_count_row_and_table1():
    # counts 0,1,1,2,5,6,9 -> 0:1, 1:2, 2:1, 3:0, 4:0, 5:1, >5:2
    df = tables.table1({"d": np.array([0, 1, 1, 2, 5, 6, 9])})
    assert df.iloc[0].to_dict() == {"Dataset": "d", "0": 1, "1": 2, "2": 1, "3": 0, "4": 0, "5": 1, ">5": 2, "total": 7}


def test_table2_columns_are_the_counts_present():
    df = tables.table2({"patchml_seed1": np.array([2, 2, 3]), "patchml_seed2": np.array([2, 9])})
    assert list(df.columns) == ["Dataset", "2", "3", "9", "total"]
    assert df.iloc[1][["2", "3", "9"]].tolist() == [1, 0, 1]


def _metrics(rows):
    return pd.DataFrame(rows, columns=["model", "dataset", "metric", "label_count", "value_pct"]).astype({"label_count": "Int64"})


def test_table3_and_tables4_10_ranks():
    # V1 top-1: a 90, b 80, c 70 -> ranks 1, 2, 3; PatchML ASMA: a 10, b 30, c 20 -> ranks 3, 1, 2
    # shifts: a -2, b +1, c +1; Table 3 order by ASMA: b, c, a
    rows = []
    for m, t1, asma in (("a", 90, 10), ("b", 80, 30), ("c", 70, 20)):
        rows += [(m, "v1", "top1", None, t1), (m, "pm", "asma", None, asma)]
    df = tables.table3(_metrics(rows), "v1", "pm")
    assert df["Model checkpoint"].tolist() == ["b", "c", "a"]
    assert df["ImageNetV1 rank"].tolist() == [2, 3, 1]
    assert df["Rank shift"].tolist() == ["+1", "+1", "-2"]
    full = tables.tables4_10(_metrics(rows), "v1", None, "pm")
    assert full["Checkpoint"].tolist() == ["b", "c", "a"]
    assert full["Top-1 V2"].isna().all()  # V2 not run: blank column, not an error
    assert "| – |" in tables.to_markdown(full)


def test_reported_vs_reproduced_marks_unrun_rows():
    reported = pd.DataFrame(
        [("x.tag", "x.tag", "top1", "imagenet_v1", 80.0, "4"), ("y.tag", "y.tag", "top1", "imagenet_v1", 70.0, "4")],
        columns=["checkpoint", "timm_checkpoint", "metric", "dataset", "value", "source_table"],
    )
    df = tables.reported_vs_reproduced(reported, _metrics([("x.tag", "v1", "top1", None, 81.5)]), {"imagenet_v1": "v1"})
    assert df["Status"].tolist() == ["reproduced", "not run"]
    assert df["Difference"].iloc[0] == pytest.approx(1.5)
    assert pd.isna(df["Ours"].iloc[1])


def test_latex_escapes():
    tex = tables.to_latex(pd.DataFrame({"a_b": ["x_y"], ">5": [3]}), "Cap 50%", "tab:t")
    assert r"a\_b" in tex and r"x\_y" in tex and r"$>$5" in tex and r"50\%" in tex


def test_resolve_items():
    assert resolve_items([]) == list(ITEMS)
    assert resolve_items(["table5", "table4"]) == ["tables4-10"]
    with pytest.raises(Exception, match="unknown report item"):
        resolve_items(["table11"])


# The study's PatchML sets were "made" with patch counts 2, 3, 4 (their g=1 canvases: a repeated class).
PATCHML = {"counts": [2, 3, 4], "canvas_size": 448, "min_box_side": 100}
MIN_GROUP_N = 5  # the groups hold 3..13 samples: some are averaged, some only reported


@pytest.fixture(scope="module")
def study(tmp_path_factory, write_dataset, write_predictions) -> Path:
    """6 models on a tiny V1 (60), V2 (40) and 2 PatchML seeds (30 each), K = 10."""
    root = tmp_path_factory.mktemp("study")
    rng = np.random.default_rng(0)

    def dataset(name, kind, n, gmax, single, **params):
        samples = {}
        for i in range(n):
            g = int(rng.integers(1, gmax + 1))
            labels = sorted(rng.choice(50, size=g, replace=False).tolist())
            samples[f"{name[:2]}{i:04d}"] = (labels[0] if single else None, labels)
        write_dataset(root, name, kind, samples, **params)
        return samples

    swap = np.random.default_rng(1)  # its own stream: the other draws stay as they were

    sets = {
        "imagenet_v1": ("imagenet_v1", dataset("imagenet_v1", "imagenet_v1", 60, 6, True)),
        "imagenet_v2_matched-frequency": ("imagenet_v2", dataset("imagenet_v2_matched-frequency", "imagenet_v2", 40, 6, True,
                                                                 images=root / "v2_images")),
        "patchml_seed1": ("patchml", dataset("patchml_seed1", "patchml", 30, 4, False, seed=1, **PATCHML)),
        "patchml_seed2": ("patchml", dataset("patchml_seed2", "patchml", 30, 4, False, seed=2, **PATCHML)),
    }
    for m in range(6):
        skill = 0.3 + 0.1 * m
        for name, (kind, samples) in sets.items():
            preds = {}
            for sid, (_, labels) in samples.items():
                others = [c for c in rng.permutation(1000).tolist() if c not in labels][:10]
                top = [labels[j] if rng.random() < skill and j < len(labels) else others[j] for j in range(10)]
                if kind == "imagenet_v2" and top[1] in labels and swap.random() < 0.5:
                    top[:2] = top[1::-1]  # top-1 another of the labels (what Figure 1 shows); the top-g set unchanged
                preds[sid] = top
            write_predictions(root, name, kind, f"model_{m}", preds)
    write_canvas_pngs(root / "manifests" / "patchml_seed1.parquet", color=(40, 80, 120))  # PNGs of their rows
    evaluate_results(root, n_boot=50, min_group_n=MIN_GROUP_N)
    return root


@pytest.mark.slow
def test_report_writes_every_item(study: Path, capsys):
    assert main(["report", "--results", str(study)]) == 0
    out, log = capsys.readouterr()  # the CLI's log lines go to stderr
    assert "skipped" not in log, log
    assert "figure8: wrote figure8.png, figure8.pdf" in log
    assert "figure_sets: wrote figure_sets.png, figure_sets.pdf" in log
    assert f"report: 13 of 13 item(s) written to {study / 'tables'} and {study / 'figures'}" in out
    for stem in ("table1", "table2", "table3", "tables4-10", "reported_vs_reproduced", "consensus"):
        for ext in ("md", "csv", "tex"):
            assert (study / "tables" / f"{stem}.{ext}").stat().st_size > 0
    for i in (1, 4, 5, 6, 7, 8):
        for ext in ("png", "pdf"):
            assert (study / "figures" / f"figure{i}.{ext}").stat().st_size > 0
    assert "figure1: 8 of the " in log and " images of imagenet_v2_matched-frequency whose top-1 by model_5" in log
    pdf = (study / "figures" / "figure5.pdf").read_bytes()
    assert b"/FontFile2" in pdf  # TrueType fonts embedded (pdf.fonttype 42)
    t1 = pd.read_csv(study / "tables" / "table1.csv")
    assert t1["Dataset"].tolist() == ["imagenet_v1", "imagenet_v2_matched-frequency"]
    assert t1["total"].tolist() == [60, 40]
    full = pd.read_csv(study / "tables" / "tables4-10.csv")
    assert len(full) == 6 and full["ASMA PatchML"].is_monotonic_decreasing
    rvr = pd.read_csv(study / "tables" / "reported_vs_reproduced.csv")
    assert (rvr["Status"] == "not run").all()  # none of the paper's checkpoints ran here
    # captions say which ReaL and which label counts each ASMA averaged (seed 2's g=4 holds 3 canvases < 5)
    note = (study / "tables" / "tables4-10.md").read_text()
    assert "ReaL = over images with 1-5 labels, the paper's convention (metrics.parquet `real_1to5`" in note
    assert "PatchML: 2,3,4 (patchml_seed1); 2,3 (patchml_seed2)" in note
    assert "Label counts 2,3,4 are the sets' patch counts k" in (study / "tables" / "table2.md").read_text()


def test_report_degrades_without_inputs(tmp_path: Path, capsys, write_dataset, write_predictions):
    # a RESULTS with only V1 and a single model: V2 / PatchML items are skipped with a note
    write_dataset(tmp_path, "imagenet_v1", "imagenet_v1", {"a": (1, [1]), "b": (2, [2, 3])})
    write_predictions(tmp_path, "imagenet_v1", "imagenet_v1", "m", {"a": [1, 2, 3, 4, 5], "b": [3, 2, 1, 4, 5]})
    evaluate_results(tmp_path, n_boot=10)
    assert main(["report", "--results", str(tmp_path)]) == 0
    log = capsys.readouterr().err
    for item in ("table2", "table3", "figure5", "figure6", "figure7", "figure8"):
        assert f"{item}: skipped (" in log
    assert "Traceback" not in log
    assert (tmp_path / "tables" / "tables4-10.md").exists()


def test_report_table1_from_data_manifests(tmp_path: Path, write_dataset):
    write_dataset(tmp_path, "v2", "imagenet_v2", {"a": (1, [1]), "b": (2, [2, 3]), "c": (3, [3, 4])})
    out = tmp_path / "out"
    assert main(["report", "table1", "--out", str(out), "--data", str(tmp_path / "manifests" / "v2.parquet")]) == 0
    row = pd.read_csv(out / "table1.csv").iloc[0]
    assert (row["1"], row["2"], row["total"]) == (1, 2, 3)


def test_report_table1_default_reproduces_the_paper_v1_row(tmp_path: Path):
    # paper Table 1, ImageNetV1: 1: 39,394; 2: 5,408; 3: 1,319; 4: 411; 5: 161; >5: 144 (from ReaL)
    assert main(["report", "table1", "--out", str(tmp_path)]) == 0
    row = pd.read_csv(tmp_path / "table1.csv").iloc[0]
    assert [row[c] for c in ("1", "2", "3", "4", "5", ">5")] == [39394, 5408, 1319, 411, 161, 144]
    assert row["total"] == 50000 and row["0"] == 3163  # images with no ReaL label (not in the paper)
    assert "| 39,394 | 5,408 | 1,319 | 411 | 161 | 144 |" in (tmp_path / "table1.md").read_text()


def test_figures_leave_matplotlib_global_state_alone(tmp_path: Path):
    # Compare copies: reading the live rcParams["backend"] would itself pick a backend.
    before = matplotlib.rcParams.copy()
    paths = figures.save_figure(figures.figure4({"d": np.array([1, 2, 2, 3, 7])}), tmp_path, "figure4")
    assert matplotlib.rcParams.copy() == before  # no rcParams.update, no backend chosen
    assert [p.name for p in paths] == ["figure4.png", "figure4.pdf"]
    assert b"/FontFile2" in paths[1].read_bytes()  # the style still reached the PDF (pdf.fonttype 42)


def test_paper_tables_use_the_papers_real_convention():
    # `real` (every labelled image) 80, `real_1to5` (images with 1..5 labels, the paper's) 78:
    # Tables 4-10 print 78, and the paper's ReaL is compared with 78
    rows = [("x.tag", "v1", "top1", None, 70.0), ("x.tag", "v1", "real", None, 80.0), ("x.tag", "v1", "real_1to5", None, 78.0)]
    full = tables.tables4_10(_metrics(rows), "v1", None, None)
    assert full["ReaL V1"].tolist() == [78.0]
    reported = pd.DataFrame([("x.tag", "x.tag", "real", "imagenet_v1", 77.5, "4")],
                            columns=["checkpoint", "timm_checkpoint", "metric", "dataset", "value", "source_table"])
    df = tables.reported_vs_reproduced(reported, _metrics(rows), {"imagenet_v1": "v1"})
    assert df["Ours"].tolist() == [78.0] and df["Difference"].iloc[0] == pytest.approx(0.5)


def test_figure7_lines_come_from_models_with_patchml_results():
    # "v1only" has the best V1 top-1 but no PatchML results: it gets no line
    rows = [("v1only", "v1", "top1", None, 99.0)]
    for m, t1, asma in (("a", 90, 10), ("b", 80, 30)):
        rows += [(m, "v1", "top1", None, t1), (m, "pm", "asma", None, asma)]
        rows += [(m, "pm", "subgroup", g, asma + g) for g in (2, 3)]
    top_v1, top_asma = build.figure7_lines(_metrics(rows), "v1", "pm", [2, 3])
    assert list(top_v1) == ["a", "b"] and list(top_asma) == ["b", "a"]
    assert top_v1["a"] == {2: 12.0, 3: 13.0}


def test_figure7_every_legend_entry_is_visible_when_the_same_models_lead_both():
    lines = {m: {2: 50.0 + i, 3: 40.0 + i} for i, m in enumerate(("a", "b"))}
    fig = figures.figure7({2: np.array([40.0, 60.0]), 3: np.array([30.0, 50.0])}, [2, 3], lines, dict(lines))
    ax = fig.axes[0]
    drawn = [line for line in ax.get_lines() if not line.get_label().startswith("_") and len(line.get_xdata())]
    assert len(drawn) == 4 and len(ax.get_legend().get_texts()) == 5  # 4 lines + the boxes
    # the same values, but no line lies on top of another: the families are drawn side by side
    paths = {tuple(np.round(line.get_xydata().ravel(), 6)) for line in drawn}
    assert len(paths) == 4


def test_an_unreadable_reported_file_is_one_line(tmp_path: Path, capsys):
    garbage = tmp_path / "garbage.csv"
    garbage.write_bytes(b"\xff\xfe\x00\x81binary")
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("a,b\n1,2\n")
    for path, why in ((garbage, "cannot read the paper's reported numbers"), (wrong, "missing columns"),
                      (tmp_path / "absent.csv", "no such file (--reported)"), (tmp_path, "no such file")):
        assert main(["report", "reported_vs_reproduced", "--out", str(tmp_path / "out"), "--reported", str(path)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"{path}: " in err[0] and why in err[0], err
