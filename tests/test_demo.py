"""`mlreassess demo`: the hand annotations, the offline photographs, the index page, end to end."""

from __future__ import annotations

import re
import socket
import time
from pathlib import Path

import pytest

from mlreassess import demo
from mlreassess.cli import main
from mlreassess.patchml.pool import read_boxes_csv

ANNOTATIONS = demo.ANNOTATIONS


@pytest.fixture(scope="module")
def rows():
    return demo.read_images_csv(ANNOTATIONS / "images.csv")


@pytest.fixture
def offline(monkeypatch):
    """Any attempt to open a network connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("the demo tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_photos_load_offline_from_the_scikit_image_wheel(rows, offline):
    for row in rows:
        image = demo.load_photo(row["skimage"])
        assert image.mode == "RGB" and min(image.size) >= 256, row["id"]


def test_annotations_are_consistent_with_the_photos(rows):
    records, bad = read_boxes_csv(ANNOTATIONS / "boxes.csv")
    assert not bad
    ids = [r["id"] for r in rows]
    assert sorted({r.image_id for r in records}) == ids, "boxes.csv and images.csv list the same images"
    for row in rows:
        width, height = demo.load_photo(row["skimage"]).size
        boxes = [r for r in records if r.image_id == row["id"]]
        for r in boxes:
            x0, y0, x1, y1 = r.box
            assert 0 <= x0 < x1 < width and 0 <= y0 < y1 < height, f"{row['id']}: box {r.box} outside {width}x{height}"
            assert r.label in row["labels"], f"{row['id']}: a box's class is missing from the image's label set"
        assert row["label"] in {r.label for r in boxes}, f"{row['id']}: the main object has no box"
    # Every box survives the demo's patch filter, so the pool is all 12 boxes.
    assert len(records) == 12
    assert min(min(r.box[2] - r.box[0], r.box[3] - r.box[1]) + 1 for r in records) >= demo.MIN_BOX_SIDE


def test_images_csv_errors_name_file_and_line(tmp_path):
    bad = tmp_path / "images.csv"
    bad.write_text("ImageId,skimage,label,labels\ncat,chelsea,n02123045,n02124075\n")
    with pytest.raises(Exception, match=r"images\.csv: line 2: the single label n02123045 is not among the labels"):
        demo.read_images_csv(bad)
    bad.write_text("ImageId,skimage,label,labels\ncat,chelsea,n99999999,n99999999\n")
    with pytest.raises(Exception, match=r"images\.csv: line 2: unknown wnid 'n99999999'"):
        demo.read_images_csv(bad)


def test_photos_manifest_labels_by_sample_id_and_is_stable(rows, tmp_path):
    from mlreassess.datasets.manifest import read_manifest

    folder = tmp_path / "photos"
    demo.materialise_photos(rows, folder)
    path = demo.photos_manifest(rows, folder, tmp_path / "m.parquet")
    m = read_manifest(path)
    assert m.kind == "imagenet_v1" and m.name == demo.PHOTOS_DATASET
    by_id = {r["id"]: r for r in rows}
    for sid, p, label, labels in zip(*(m.table.column(c).to_pylist() for c in ("sample_id", "path", "label", "labels"))):
        assert (folder / p).is_file()
        assert label == by_id[sid]["label"] and labels == sorted(by_id[sid]["labels"])
    before = path.stat().st_mtime_ns
    demo.photos_manifest(rows, folder, path)
    assert path.stat().st_mtime_ns == before, "an unchanged manifest is not rewritten (keeps the rerun a no-op)"


def test_index_opens_with_the_figures(tmp_path):
    (tmp_path / "figures").mkdir()
    (tmp_path / "tables").mkdir()
    from PIL import Image

    from mlreassess.report import derived

    for name in ("figure8.png", "figure4.png"):
        Image.new("RGB", (4, 3)).save(tmp_path / "figures" / name)
    derived.record([tmp_path / "figures" / n for n in ("figure8.png", "figure4.png")] + [tmp_path / "tables" / "table1.md"],
                   [], tmp_path)  # as `report` records what it wrote
    (tmp_path / "tables" / "table1.md").write_text("**Table 1: counts.**\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\nA note.\n")
    (tmp_path / "tables" / "table1.csv").write_text("a,b\n1,2\n")
    md, page = demo.write_index(tmp_path)
    text = page.read_text()
    assert text.index("<img") < text.index("<table"), "figures come before tables"
    # Figure 8 (the paper's canvases with green/red bars) leads; then the others in paper order.
    assert re.findall(r'<a href="([^"]+)"><img src="data:image/png;base64,', text) == ["figures/figure8.png", "figures/figure4.png"]
    assert "Table 1: counts." in text and "A note." in text
    assert md.read_text().index("![") < md.read_text().index("| a | b |")


@pytest.mark.slow
def test_demo_end_to_end_offline_under_five_minutes(tmp_path, capsys, offline):
    start = time.perf_counter()
    assert main(["demo", "--out", str(tmp_path / "out")]) == 0
    elapsed = time.perf_counter() - start
    assert elapsed < 300, f"demo took {elapsed:.0f} s"
    out = tmp_path / "out"
    err = capsys.readouterr().err
    assert f"open {out / 'index.html'}" in err
    page = (out / "index.html").read_text()
    for name in ("figures/figure4.png", "figures/figure7.png", "figures/figure8.png", demo.ANNOTATED_FIGURE):
        assert f'<a href="{name}"><img src="data:image/png;base64,' in page and (out / name).is_file(), name

    import pyarrow.parquet as pq

    metrics = pq.read_table(out / "metrics.parquet").to_pandas()
    asma = metrics[(metrics.metric == "asma") & metrics.label_count.isna()]
    assert set(asma.model) == set(demo.MODELS)
    assert {"demo_photos", "patchml_seed1", "patchml_seed2", "patchml_seed3"} <= set(asma.dataset)
    # Two photographs are unmistakable (a tripod, a cup of espresso): every model must get them.
    from mlreassess.datasets.labels import class_index

    for model in demo.MODELS:
        pred = pq.read_table(out / f"predictions/demo_photos/{model}.parquet").to_pandas().set_index("sample_id")
        assert pred.loc["camera", "topk_idx"][0] == class_index("n04485082", "tripod"), model
        assert pred.loc["coffee", "topk_idx"][0] == class_index("n07920052", "espresso"), model

    assert main(["demo", "--out", str(out)]) == 0
    assert "run: nothing to do" in capsys.readouterr().err
