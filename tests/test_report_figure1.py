"""Figure 1, the consensus table and the image explorer's data and thumbnails (issue 25), on a small
RESULTS with real JPEGs: what each shows is checked against the predictions by hand."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mlreassess.cli.main import main
from mlreassess.errors import MlreassessError
from mlreassess.report.figure1 import pick
from mlreassess.report.html import PageOptions, write_results_page
from mlreassess.report.thumbs import THUMB_SIDE, write_thumbs
from mlreassess.results import ResultsLayout
from test_report_html import page_payload

V1 = "imagenet_v1"
# sample -> (label, label set): what each model's top-5 below makes of it (model "a").
SAMPLES = {
    "s0": (0, [0, 1]),  # a: top-1 1, in the set, not the label: wrong-right
    "s1": (1, [1]),  # a: top-1 1 = label: right
    "s2": (2, [2, 3]),  # a: top-1 3: wrong-right
    "s3": (3, [3]),  # a: top-1 7: wrong-wrong
    "s4": (4, []),  # empty label set: neither
    "s5": (5, [5, 6]),  # a: top-1 6: wrong-right
}
TOP5 = {
    "a": {"s0": [1, 0, 2, 3, 4], "s1": [1, 2, 3, 4, 5], "s2": [3, 2, 9, 8, 7], "s3": [7, 3, 8, 9, 10],
          "s4": [5, 4, 1, 2, 3], "s5": [6, 5, 11, 12, 13]},
    "b": {"s0": [1, 0, 2, 3, 4], "s1": [1, 9, 8, 4, 5], "s2": [2, 9, 3, 8, 6], "s3": [3, 8, 7, 9, 10],
          "s4": [4, 5, 1, 2, 3], "s5": [5, 14, 15, 16, 17]},
    "c": {"s0": [0, 2, 1, 5, 6], "s1": [8, 1, 9, 7, 6], "s2": [2, 3, 9, 7, 8], "s3": [7, 3, 9, 11, 12],
          "s4": [4, 1, 2, 5, 6], "s5": [5, 6, 18, 19, 20]},
}
WRONG_RIGHT_A = ["s0", "s2", "s5"]
# Top-1 on the 6 labelled images: a 1, b 5 (s0 wrong), c 4 (s1, s3 wrong).


@pytest.fixture
def tiny(tmp_path, write_dataset, write_predictions):
    root = tmp_path / "results"
    write_dataset(root, V1, "imagenet_v1", SAMPLES, images=tmp_path / "images", label_set="real")
    for model, top in TOP5.items():
        write_predictions(root, V1, "imagenet_v1", model, top)
    assert main(["evaluate", "--results", str(root), "--bootstrap", "20"]) == 0
    return root


def test_figure1_shows_exactly_the_images_top1_wrong_label_set_right(tiny):
    assert main(["report", "figure1", "--results", str(tiny), "--figure1-model", "a"]) == 0
    assert (tiny / "figures" / "figure1.png").is_file() and (tiny / "figures" / "figure1.pdf").is_file()
    shown = pd.read_csv(tiny / "tables" / "figure1.csv", dtype=str)
    assert shown["sample_id"].tolist() == WRONG_RIGHT_A
    for row in shown.itertuples():
        top5 = [int(c) for c in row.top5.split()]
        assert top5 == TOP5["a"][row.sample_id] and int(row.label) == SAMPLES[row.sample_id][0]
        assert [int(c) for c in row.labels.split()] == SAMPLES[row.sample_id][1]


def test_figure1_default_model_is_the_best_by_top1(tiny, caplog):
    with caplog.at_level("INFO"):
        assert main(["report", "figure1", "--results", str(tiny)]) == 0
    assert pd.read_csv(tiny / "tables" / "figure1.csv", dtype=str)["sample_id"].tolist() == ["s0"]  # b's only one
    assert "whose top-1 by b is another of their labels" in caplog.text


def test_figure1_unknown_model_or_dataset_is_one_line(tiny, capsys):
    assert main(["report", "table1", "figure1", "--results", str(tiny), "--figure1-model", "nope"]) != 0
    err = capsys.readouterr().err
    assert "--figure1-model nope: not among the evaluated ones" in err and "Traceback" not in err
    assert not (tiny / "tables" / "table1.md").exists()  # refused before any item was written
    assert main(["report", "figure1", "--results", str(tiny), "--figure1-dataset", "v9"]) != 0
    assert "--figure1-dataset v9" in capsys.readouterr().err


def test_pick_is_seeded_and_in_sample_id_order():
    ids = np.array([f"s{i:03d}" for i in range(100)], dtype=object)
    mask = np.arange(100) % 3 == 0
    a, b = pick(ids, mask, 8, seed=0), pick(ids, mask, 8, seed=0)
    assert a.tolist() == b.tolist() and len(a) == 8 and mask[a].all()
    assert list(ids[a]) == sorted(ids[a]) and pick(ids, mask, 8, seed=1).tolist() != a.tolist()
    assert pick(ids, mask, 50).tolist() == np.flatnonzero(mask).tolist()  # fewer qualify than asked: all


def test_consensus_table_by_hand(tiny):
    assert main(["report", "consensus", "--results", str(tiny)]) == 0
    table = pd.read_csv(tiny / "tables" / "consensus.csv").set_index("Models agreeing")
    # Measured: images with a label and a non-empty set: s0 s1 s2 s3 s5 (5). Beyond the original label
    # the sets hold s0: 1, s2: 3, s5: 6 (3 missing).
    # In all three top-5s, other than the label: s0 {1, 2}, s1 {}, s2 {3, 8, 9}, s3 {7, 9}, s5 {}: 7
    # candidates, in the set: 1 (s0), 3 (s2) = 2; s5's 6 is in two top-5s only.
    row = table.loc["3 of 3"]
    assert (row["Images"], row["Candidates"], row["In the label set"], row["Label-set labels beyond the original"]) == (5, 7, 2, 3)
    assert row["Precision (%)"] == round(200 / 7, 2) and row["Recall (%)"] == round(200 / 3, 2)
    assert table.loc["2 of 3", "In the label set"] == 3  # with s5's 6: every label beyond the original found
    assert table.loc["1 of 3", "Candidates"] > table.loc["2 of 3", "Candidates"] >= row["Candidates"]


def test_explorer_data_and_thumbnails(tiny):
    d = page_payload(write_results_page(tiny))["explorer"]
    (view,) = d["datasets"]
    assert view["name"] == V1 and view["ids"] == sorted(SAMPLES) and view["missing"] == []
    assert sorted(view["models"]) == ["a", "b", "c"] and d["k"] == 5
    row = view["ids"].index("s3")
    assert view["top"]["a"][5 * row: 5 * row + 5] == TOP5["a"]["s3"]
    assert view["label"][row] == 3 and view["labels"][row] == [3]
    # s3: 7 and 9 are in all three top-5s, 8 and 10 in a's and b's (2 of 3 needed): most votes first, then class.
    assert view["cand"][row] == [7, 9, 8, 10] and view["cand_votes"] == 2
    folder = tiny / view["thumbs"]
    assert folder == ResultsLayout(tiny).thumbs_of(V1)
    for i in range(len(SAMPLES)):
        with Image.open(folder / f"{i}.jpg") as im:
            assert im.format == "JPEG" and max(im.size) <= THUMB_SIDE
    assert json.loads((folder / "thumbs.json").read_text())["missing"] == []


def test_thumbnails_are_kept_for_the_same_manifest_and_redone_for_another(tiny, write_dataset, tmp_path):
    layout = ResultsLayout(tiny)
    write_thumbs(layout, V1, progress=False)
    first = layout.thumbs_of(V1) / "0.jpg"
    os.utime(first, ns=(1, 1))
    write_thumbs(layout, V1, progress=False)
    assert first.stat().st_mtime_ns == 1  # kept
    write_dataset(tiny, V1, "imagenet_v1", {**SAMPLES, "s9": (9, [9])}, images=tmp_path / "images2", label_set="real")
    write_thumbs(layout, V1, progress=False)
    assert first.stat().st_mtime_ns != 1 and (layout.thumbs_of(V1) / "6.jpg").is_file()  # another manifest: all anew


def test_unreadable_image_has_no_thumbnail_and_is_retried(tiny, tmp_path):
    layout = ResultsLayout(tiny)
    image = tmp_path / "images" / "s2.JPEG"
    kept = image.read_bytes()
    image.write_bytes(b"not a jpeg")
    assert write_thumbs(layout, V1, progress=False).missing == (2,)
    assert not (layout.thumbs_of(V1) / "2.jpg").exists()
    image.write_bytes(kept)
    assert write_thumbs(layout, V1, progress=False).missing == ()


def test_thumbs_folder_linked_outside_is_refused_and_outside_untouched(tiny, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "0.jpg").write_bytes(b"keep")
    (tiny / "thumbs").symlink_to(outside)
    with pytest.raises(MlreassessError, match="thumbs"):
        write_thumbs(ResultsLayout(tiny), V1, progress=False)
    assert [p.name for p in outside.iterdir()] == ["0.jpg"] and (outside / "0.jpg").read_bytes() == b"keep"


def test_explorer_off(tiny):
    assert page_payload(write_results_page(tiny, PageOptions(explorer=False)))["explorer"] is None
    assert not (tiny / "thumbs").exists()


def test_report_refuses_a_thumbs_folder_linked_outside_before_writing(tiny, tmp_path, capsys):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (tiny / "thumbs").mkdir()
    (tiny / "thumbs" / V1).symlink_to(outside)
    assert main(["report", "table1", "--results", str(tiny)]) != 0
    err = capsys.readouterr().err
    assert "a symbolic link to" in err and "Traceback" not in err
    assert not (tiny / "tables" / "table1.md").exists() and list(outside.iterdir()) == []


def test_damaged_top5_values_show_no_class(tmp_path, write_dataset):
    import pyarrow as pa

    from mlreassess.io import write_table
    from mlreassess.report.inputs import model_topk

    write_dataset(tmp_path, V1, "imagenet_v1", {"s0": (0, [0]), "s1": (1, [1]), "s2": (2, [2])})
    table = pa.table({"sample_id": ["s0", "s1", "zz"],
                      "topk_idx": pa.array([[5, 1000, -7, 3], [1, 2, 3, 4], [1, 2, 3, 4]], pa.list_(pa.int64())),
                      "topk_prob": pa.array([[0.5, 0.2, 0.1, float("nan")], [0.4, 0.3, 0.2, 0.1], [1, 0, 0, 0]],
                                            pa.list_(pa.float64()))})
    write_table(ResultsLayout(tmp_path).prediction(V1, "m"), table, {"model": "m", "dataset": V1})
    top = model_topk(ResultsLayout(tmp_path), V1, "m", pd.Index(["s0", "s1", "s2"]))
    assert top.idx.tolist() == [[5, -1, -1, -1, -1], [1, 2, 3, 4, -1], [-1] * 5]  # zz is not a sample here
    assert top.prob[0].tolist() == [0.5, 0, 0, 0, 0] and top.seen.tolist() == [True, True, False]


@pytest.mark.parametrize("layout", ["hf-parquet", "webdataset"])
def test_thumbnails_from_shards_are_the_images_inference_reads(tmp_path, layout):
    """Parquet shards and tars (the fixtures of test_datasets_formats) give the same thumbnails as the
    decoded images themselves."""
    import io

    from test_datasets_formats import make_hf, make_wds
    from test_datasets_imagenet import REAL, N

    from mlreassess.datasets.imagenet import build_imagenet_val
    from mlreassess.datasets.manifest import write_manifest

    real = tmp_path / "real.json"
    real.write_text(json.dumps([REAL.get(i + 1, []) for i in range(N)]))
    data = (make_hf if layout == "hf-parquet" else make_wds)(tmp_path / "src")
    manifest = build_imagenet_val(tmp_path / "src", real=real)
    root = tmp_path / "R"
    write_manifest(ResultsLayout(root).manifest_copy(V1), manifest.table, manifest.meta)
    thumbs = write_thumbs(ResultsLayout(root), V1, progress=False)
    assert thumbs.missing == ()
    def small(sid):
        image = Image.open(io.BytesIO(data[sid])).convert("RGB")
        image.thumbnail((THUMB_SIDE, THUMB_SIDE))
        return np.asarray(image, dtype=int)

    expected = {sid: small(sid) for sid in manifest.sample_ids}
    for i, sid in enumerate(manifest.sample_ids):
        with Image.open(ResultsLayout(root).thumbs_of(V1) / f"{i}.jpg") as im:
            got = np.asarray(im, dtype=int)
        diffs = {other: np.abs(got - e).mean() for other, e in expected.items() if e.shape == got.shape}
        assert min(diffs, key=diffs.get) == sid, (sid, diffs)  # (noise images: a re-encoded JPEG of its own is nearest)
