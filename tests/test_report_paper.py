"""The paper's reported numbers: parser, name mapping, and the committed csv it produced."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mlreassess.report.paper import checkpoint_name, checkpoints_in_order, parse_paper_tables, to_csv_text

REPO = Path(__file__).resolve().parents[1]
PAPER = REPO.parent / "shared" / "paper" / "reassessing-imagenet-multilabel.txt"

SNIPPET = """text before
| Model Checkpoint | ImageNetV1 | PatchML | Rank | |
|---|---|---|---|---|
| | Top-1 | Rank | ASMA | |
| volo_d5_448_in1k | 87.05 | 56 | 70.30 | +53 |
more text
| Checkpoint Name | Top-1 Accuracy | ReaL Accuracy | ASMA | Rank | ||||
|---|---|---|---|---|---|---|---|---|
| V1 | V2 | V1 | V2 | V1 | V2 | PatchML | ||
| volo_d5_448.sail_in1k | 87.05 | 78.07 | 90.46 | 91.65 | 71.63 | 72.39 | 70.3 | +53 |
| Checkpoint Name | Top-1 Accuracy | ReaL Accuracy | ASMA | Rank | ||||
|---|---|---|---|---|---|---|---|---|
| V1 | V2 | V1 | V2 | V1 | V2 | PatchML | ||
| tf_mobilenetv3_small_100.in1k | 63.83 | 49.73 | 70.43 | 59.91 | 48.55 | 44.43 | 7.09 | -13 |
"""


def test_parse_snippet():
    rows = parse_paper_tables(SNIPPET)
    t3 = [r for r in rows if r.source_table == "3"]
    assert [(r.metric, r.value) for r in t3] == [("top1", 87.05), ("top1_rank", 56), ("asma", 70.3), ("rank_shift", 53)]
    assert t3[0].checkpoint == "volo_d5_448_in1k" and t3[0].timm_checkpoint == "volo_d5_448.sail_in1k"
    last = [r for r in rows if r.source_table == "5"]  # second chunk = Table 5
    assert [(r.metric, r.dataset, r.value) for r in last][-2:] == [("asma", "patchml_mean", 7.09), ("rank_shift", "patchml_mean", -13)]
    assert checkpoints_in_order(rows) == ["volo_d5_448.sail_in1k", "tf_mobilenetv3_small_100.in1k"]
    assert "tf_mobilenetv3_small_100.in1k,tf_mobilenetv3_small_100.in1k,rank_shift,patchml_mean,-13,5" in to_csv_text(rows)


def test_parse_without_tables_is_an_error():
    with pytest.raises(ValueError, match="not found"):
        parse_paper_tables("no tables here")


def test_checkpoint_name_adds_timm_default_tag():
    assert checkpoint_name("tf_efficientnet_lite0") == "tf_efficientnet_lite0.in1k"
    assert checkpoint_name("volo_d5_448.sail_in1k") == "volo_d5_448.sail_in1k"
    assert checkpoint_name("no_such_model_xyz") == "no_such_model_xyz"


def test_committed_csv_matches_the_paper(tmp_path: Path):
    if not PAPER.exists():
        pytest.skip(f"paper text not found at {PAPER}")
    subprocess.run([sys.executable, str(REPO / "scripts" / "parse_paper_tables.py"), "--paper", str(PAPER),
                    "--out-dir", str(tmp_path)], check=True, capture_output=True)
    for name in ("paper_reported.csv", "paper_checkpoints.txt"):
        assert (tmp_path / name).read_text() == (REPO / "data_manifests" / name).read_text(), name
    names = (tmp_path / "paper_checkpoints.txt").read_text().split()
    assert len(names) == 315 == len(set(names))  # 7 tables x 45 rows, no repeats
