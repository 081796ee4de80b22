"""The results page (`RESULTS/index.html`) without a browser: its data equals metrics.parquet, the
paper's numbers sit beside ours, missing datasets and failed models, canvases, self-containment.

`write_synthetic_results` also serves tests/test_report_html_browser.py.
"""

from __future__ import annotations

import base64
import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from PIL import Image

from mlreassess.cli import main
from mlreassess.io import read_meta, read_table, write_table
from mlreassess.report import REPORTED_CSV
from mlreassess.report.html import PageOptions, write_results_page
from mlreassess.report.html_canvases import pick_canvases
from mlreassess.report.tables import metric_column, ranks
from mlreassess.results import ResultsLayout

REPO = Path(__file__).resolve().parents[1]
PAPER_MODELS = [m for m in (REPO / "data_manifests" / "paper_checkpoints.txt").read_text().split() if m]
V1, V2, MEAN = "imagenet_v1", "imagenet_v2_matched-frequency", "patchml_mean"
SEEDS = tuple(f"patchml_seed{s}" for s in range(1, 6))
FULL = {V1: "imagenet_v1", V2: "imagenet_v2", **{s: "patchml" for s in SEEDS}}
GROUPS = {"imagenet_v1": (1, 2, 3, 4, 5), "imagenet_v2": (1, 2, 3, 4, 5), "patchml": (2, 3, 4, 6, 9)}


def _rows(rng, model: str, dataset: str, kind: str) -> list[dict]:
    """Whole-dataset and subgroup rows of one (model, dataset), with an interval around each value."""
    metrics = (["top1", "top5"] if kind != "patchml" else []) + ["real", "asma"]
    n = 1000 if kind != "patchml" else 2000
    out = []
    for metric, g in [(m, None) for m in metrics] + [("subgroup", g) for g in GROUPS[kind]]:
        v = float(rng.uniform(20, 95))
        out.append({"model": model, "dataset": dataset, "metric": metric, "label_count": g, "value_pct": v,
                    "n": n if g is None else n // 5, "ci_low_pct": v - float(rng.uniform(0.3, 3)),
                    "ci_high_pct": v + float(rng.uniform(0.3, 3))})
    return out


def write_synthetic_results(root: Path, models: list[str], datasets: dict[str, str] | None = None,
                            missing: dict[str, set[str]] | None = None, seed: int = 0) -> Path:
    """RESULTS/metrics.parquet for `models` x `datasets` (name -> kind), PatchML seeds averaged into
    patchml_mean as `evaluate` does; `missing`: model -> datasets it has no rows on."""
    rng = np.random.default_rng(seed)
    datasets = FULL if datasets is None else datasets
    missing = missing or {}
    rows = [r for m in models for d, k in datasets.items() if d not in missing.get(m, ()) for r in _rows(rng, m, d, k)]
    df = pd.DataFrame(rows)
    seeds = [d for d, k in datasets.items() if k == "patchml"]
    if seeds:
        sub = df[df["dataset"].isin(seeds)]
        keys = ["model", "metric", "label_count"]
        mean = sub.groupby(keys, dropna=False)[["value_pct", "ci_low_pct", "ci_high_pct"]].mean().reset_index()
        mean["n"] = sub.groupby(keys, dropna=False).size().to_numpy()
        mean["dataset"] = MEAN
        df = pd.concat([df, mean[df.columns]], ignore_index=True)
    df["label_count"] = df["label_count"].astype("Int64")
    meta = {"n_boot": 1000, "level": 95.0, "seed": 0,
            "datasets": {**{d: {"kind": k} for d, k in datasets.items()},
                         **({MEAN: {"kind": "patchml", "seeds": seeds}} if seeds else {})}}
    path = ResultsLayout(root).metrics
    write_table(path, pa.Table.from_pandas(df, preserve_index=False), meta)
    return path


def stamp_current(root: Path) -> None:
    """Mark the synthetic metrics.parquet as computed from the predictions and manifests in `root` now
    (the record `evaluate` writes), so the report uses it as it is instead of evaluating again."""
    from mlreassess.metrics.evaluate import _inputs
    from mlreassess.metrics.inputs import discover
    from mlreassess.provenance import derived_from

    layout = ResultsLayout(root)
    meta = read_meta(layout.metrics)
    meta["derived_from"] = derived_from(_inputs(discover(layout)), root)
    meta.update({"level": 95.0, "n_boot": 1000, "seed": 0, "min_group_n": 30})
    write_table(layout.metrics, read_table(layout.metrics), meta)


def write_canvas_pngs(manifest_path: Path, color=(20, 120, 200), size: int = 64) -> None:
    """manifests/images/<id>.png for every canvas of a PatchML manifest, rendered (as far as the
    page can tell) from its rows: flat colour, with the digest of each row."""
    from mlreassess.datasets.manifest import read_manifest
    from mlreassess.patchml.render import canvas_digest, canvases, encode_png

    manifest = read_manifest(manifest_path)
    folder = manifest_path.parent / "images"
    folder.mkdir(parents=True, exist_ok=True)
    for c in canvases(manifest.table):
        pixels = np.full((size, size, 3), color, np.uint8)
        (folder / f"{c.sample_id}.png").write_bytes(encode_png(pixels, canvas_digest(manifest.meta, c)))


def write_failures(root: Path, entries: list[tuple[str, str, str]]) -> None:
    lines = [json.dumps({"model": m, "dataset": d, "error": e, "time": "2024-01-01T00:00:00+00:00"}) for m, d, e in entries]
    ResultsLayout(root).failures.write_text("\n".join(lines) + "\n")


def page_payload(path: Path) -> dict:
    """The JSON data block of a written page."""
    text = path.read_text()
    m = re.search(r'<script type="application/json" id="page-data">(.*?)</script>', text, re.S)
    return json.loads(m.group(1))


def whole(metrics: pd.DataFrame) -> dict:
    m = metrics[metrics["label_count"].isna()]
    return {(r.model, r.dataset, r.metric): r for r in m.itertuples(index=False)}


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """4 paper checkpoints x V1, V2, 5 PatchML seeds; one without V2; one model that failed everywhere."""
    root = tmp_path_factory.mktemp("results")
    models = PAPER_MODELS[:4]
    write_synthetic_results(root, models, missing={models[3]: {V2}})
    write_failures(root, [("broken_net", V1, "RuntimeError: CUDA out of memory </script><b>x</b>"),
                          (models[0], V2, "a failure made good by a later rerun")])
    return root, models, write_results_page(root)


def test_leaderboard_data_equals_metrics(small):
    root, models, page = small
    d = page_payload(page)
    metrics = pd.read_parquet(root / "metrics.parquet")
    ref = whole(metrics)
    ids = [c["id"] for c in d["columns"]]
    assert ids == [f"{V1}/top1", f"{V1}/real", f"{V1}/asma", f"{V2}/top1", f"{V2}/real", f"{V2}/asma",
                   *[f"{s}/{m}" for s in SEEDS for m in ("real", "asma")], f"{MEAN}/real", f"{MEAN}/asma", "rank_shift"]
    assert [r["model"] for r in d["rows"]] == sorted(models + ["broken_net"])
    checked = 0
    for row in d["rows"]:
        for col, cell in zip(d["columns"], row["cells"]):
            if col["id"] == "rank_shift":
                continue
            r = ref.get((row["model"], col["dataset"], col["metric"]))
            if r is None:
                assert cell is None
                continue
            # exact: the CSV keeps them; no bound (these metrics never are one)
            assert cell == [r.value_pct, r.ci_low_pct, r.ci_high_pct, r.n, None, None]  # no bound, no Q-hat
            checked += 1
    assert checked == len(metrics[metrics["label_count"].isna() & metrics["metric"].isin(["top1", "real", "asma"])])


def test_rank_shift_and_paper_values(small):
    root, models, page = small
    d = page_payload(page)
    metrics = pd.read_parquet(root / "metrics.parquet")
    metrics["label_count"] = metrics["label_count"].astype("Int64")
    r = ranks(metric_column(metrics, V1, "top1"), metric_column(metrics, MEAN, "asma"))
    col = [c["id"] for c in d["columns"]].index("rank_shift")
    for row in d["rows"]:
        expect = r.loc[row["model"]] if row["model"] in r.index else None
        got = row["cells"][col]
        assert got == (None if expect is None else [expect.rank_shift, expect.top1_rank, expect.asma_rank])
    reported = pd.read_csv(REPORTED_CSV, dtype=str, keep_default_na=False)
    paper = reported[(reported.timm_checkpoint == models[0]) & (reported.source_table != "3")]
    row = next(r for r in d["rows"] if r["model"] == models[0])
    by_id = dict(zip([c["id"] for c in d["columns"]], row["paper"]))
    for p in paper.itertuples():
        dataset = {"imagenet_v1": V1, "imagenet_v2": V2, "patchml_mean": MEAN}[p.dataset]
        key = "rank_shift" if p.metric == "rank_shift" else f"{dataset}/{p.metric}"
        assert by_id[key] == float(p.value), key
    assert by_id[f"{SEEDS[0]}/asma"] is None, "a single seed has no paper value"


def test_failed_model_is_listed_with_its_error(small):
    _, models, page = small
    d = page_payload(page)
    broken = next(r for r in d["rows"] if r["model"] == "broken_net")
    assert broken["failed"] == [[V1, "RuntimeError: CUDA out of memory </script><b>x</b>"]]
    assert all(c is None for c in broken["cells"])
    assert next(r for r in d["rows"] if r["model"] == models[0])["failed"] == [], "made good since: not listed"
    text = page.read_text()
    assert text.count("</script>") == 2, "an error text cannot close the page's scripts"
    assert "CUDA out of memory &lt;/script&gt;&lt;b&gt;x&lt;/b&gt;" in text  # the failures table, escaped


def test_details_hold_subgroups_with_n_and_intervals(small):
    root, models, page = small
    d = page_payload(page)
    metrics = pd.read_parquet(root / "metrics.parquet")
    sub = metrics[(metrics.model == models[1]) & (metrics.dataset == SEEDS[0]) & (metrics.metric == "subgroup")]
    got = d["details"][models[1]]["subgroups"][SEEDS[0]]
    assert got == [[int(r.label_count), r.value_pct, r.ci_low_pct, r.ci_high_pct, r.n] for r in sub.itertuples()]
    assert list(d["details"][models[1]]["subgroups"])[:2] == [V1, V2]


def test_page_is_self_contained(small):
    _, _, page = small
    text = page.read_text()
    assert not re.search(r"""(?:src|href|action)\s*=\s*["']?\s*(?:[a-z][a-z0-9+.-]*:)?//""", text, re.I), "no URL with a host"
    assert not re.search(r"<script[^>]+src|<link[^>]+stylesheet|@import|url\(\s*['\"]?(?:https?:)?//", text, re.I)
    assert re.search(r'<link rel="icon" href="data:,">', text), "no favicon request either"


def test_only_v1_no_patchml(tmp_path):
    write_synthetic_results(tmp_path, ["a_model", "b_model"], {V1: "imagenet_v1"})
    d = page_payload(write_results_page(tmp_path))
    assert [c["id"] for c in d["columns"]] == [f"{V1}/top1", f"{V1}/real", f"{V1}/asma"]
    assert d["canvases"] is None and d["roles"] == {"v1": V1, "v2": None, "patchml": None}
    assert not (tmp_path / "figures" / "canvases").exists()


def test_no_metrics_yet_still_lists_failures_and_figures(tmp_path):
    from mlreassess.report import derived

    (tmp_path / "figures").mkdir()
    png = tmp_path / "figures" / "figure4.png"
    Image.new("RGB", (4, 3)).save(png)
    derived.record([png], [], tmp_path)  # as `report` records what it wrote (here: from nothing in RESULTS)
    write_failures(tmp_path, [("vit_x", "v1", "weights not found")])
    page = write_results_page(tmp_path, PageOptions(title="T & T"))
    text = page.read_text()
    assert "run <code>mlreassess evaluate" in text and "weights not found" in text
    assert re.findall(r'src="([^"]+)"', text) == ["data:image/png;base64," + base64.b64encode(png.read_bytes()).decode()]
    assert re.findall(r'<a href="([^"]+)"><img', text) == ["figures/figure4.png"]
    assert "<title>T &amp; T</title>" in text
    assert page_payload(page)["rows"][0]["failed"] == [["v1", "weights not found"]]


def test_pick_canvases_spreads_over_label_counts():
    t = pd.DataFrame({"sample_id": [f"s{i}" for i in range(12)], "label_count": [1, 1, 2, 2, 3, 3, 4, 4, 6, 6, 9, 9]})
    assert list(t.loc[pick_canvases(t, 4), "label_count"]) == [9, 4, 3, 1]
    assert list(t.loc[pick_canvases(t, 8), "label_count"]) == [9, 6, 4, 3, 2, 1, 9, 6]
    assert pick_canvases(t.iloc[:0], 4) == [] and pick_canvases(t, 0) == []


def test_canvases_are_bounded_and_shared(tmp_path, write_dataset, write_predictions):
    models = [f"m{i}" for i in range(5)]
    samples = {f"c{g}_{j}": (None, list(range(10 * j, 10 * j + g))) for g in (1, 2, 3, 4) for j in range(2)}
    from mlreassess.datasets.manifest import read_manifest
    from mlreassess.metrics.evaluate import evaluate_results
    from mlreassess.patchml.render import canvas_digest, canvases, encode_png

    manifest = read_manifest(write_dataset(tmp_path, "patchml_seed1", "patchml", samples))
    for c in canvases(manifest.table):  # no source images: the canvases come from these PNGs (of their rows)
        path = tmp_path / "manifests" / "images" / f"{c.sample_id}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode_png(np.full((32, 32, 3), (200, 10, 10), np.uint8), canvas_digest(manifest.meta, c)))
    for i, m in enumerate(models):  # model i gets sample c*_j's first i classes wrong: m0 is best
        write_predictions(tmp_path, "patchml_seed1", "patchml", m,
                          {s: [c + (100 if k < i else 0) for k, c in enumerate(range(10 * int(s[-1]), 10 * int(s[-1]) + 5))]
                           for s in samples})
    evaluate_results(tmp_path, n_boot=10, min_group_n=1)
    d = page_payload(write_results_page(tmp_path, PageOptions(top_models=2, canvases=3, canvas_models=("m4", "nope"))))
    c = d["canvases"]
    col = [x["id"] for x in d["columns"]].index(f"{MEAN}/asma")
    top2 = [m for _, m in sorted(((-r["cells"][col][0], r["model"]) for r in d["rows"]))[:2]]
    assert c["models"] == top2 + ([] if "m4" in top2 else ["m4"]), "top models, then the one asked for"
    files = sorted(p.name for p in (tmp_path / "figures" / "canvases").iterdir())
    assert files == ["canvas-1.png", "canvas-2.png", "canvas-3.png"]
    assert [i["file"] for i in c["items"]] == [f"figures/canvases/{f}" for f in files]
    assert all(i["src"] == "data:image/png;base64," + base64.b64encode((tmp_path / i["file"]).read_bytes()).decode()
               for i in c["items"])
    assert [i["label_count"] for i in c["items"]] == [4, 2, 1]
    first = c["bars"][c["models"][0]][0]  # canvas c4_0: labels 0..3; predictions 0..4 -> top-4 all right
    assert [b[2] for b in first] == [True] * 4 and math.isclose(first[0][1], 50.0)
    write_results_page(tmp_path, PageOptions(top_models=1, canvases=2))
    assert sorted(p.name for p in (tmp_path / "figures" / "canvases").iterdir()) == ["canvas-1.png", "canvas-2.png"]


def test_report_command_writes_the_page(tmp_path, capsys):
    write_synthetic_results(tmp_path, PAPER_MODELS[:3], {V1: "imagenet_v1", "patchml_seed1": "patchml"})
    assert main(["report", "table3", "--results", str(tmp_path)]) == 0
    assert f"results page: {tmp_path / 'index.html'}" in capsys.readouterr().err
    text = (tmp_path / "index.html").read_text()
    assert "Table 3: top-10 models by PatchML ASMA." in text
    assert len(page_payload(tmp_path / "index.html")["rows"]) == 3


def test_real_beside_the_papers_value_is_the_papers_convention(tmp_path):
    """Where evaluate wrote `real_1to5` (images with 1..5 labels), the ReaL column shows it."""
    path = write_synthetic_results(tmp_path, ["a_model"], {V1: "imagenet_v1"})
    metrics = pd.read_parquet(path)
    whole_real = metrics[(metrics.metric == "real") & metrics.label_count.isna()]
    paper_real = whole_real.assign(metric="real_1to5", value_pct=whole_real.value_pct - 1.25)
    both = pd.concat([metrics, paper_real], ignore_index=True)
    write_table(path, pa.Table.from_pandas(both, preserve_index=False), {"datasets": {V1: {"kind": "imagenet_v1"}}})
    d = page_payload(write_results_page(tmp_path))
    col = next(i for i, c in enumerate(d["columns"]) if c["id"] == f"{V1}/real")
    assert d["columns"][col]["metric"] == "real_1to5"
    assert d["rows"][0]["cells"][col][0] == pytest.approx(float(paper_real.value_pct.iloc[0]))
