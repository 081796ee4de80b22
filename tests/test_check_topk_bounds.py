"""scripts/check_topk_bounds.py (issue 24's must-show): each side of a wrong-side row is caught, a
kept bound passes, and rows missing from one file fail."""

from __future__ import annotations

import runpy
from pathlib import Path

import pandas as pd
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "check_topk_bounds.py"


def _rows(values: dict, bounds: dict | None = None) -> pd.DataFrame:
    bounds = bounds or {}
    return pd.DataFrame([{"model": "m", "dataset": "d", "metric": k, "label_count": None, "param": None,
                          "value_pct": v, "bound": bounds.get(k)} for k, v in values.items()])


@pytest.fixture(scope="module")
def check():
    return runpy.run_path(str(SCRIPT))["main"]


def _run(check, tmp_path, topk, exact) -> int:
    topk.to_parquet(tmp_path / "t.parquet")
    exact.to_parquet(tmp_path / "e.parquet")
    return check([str(tmp_path / "t.parquet"), str(tmp_path / "e.parquet")])


def test_kept_bounds_pass(check, tmp_path, capsys):
    topk = _rows({"lrap": 91.0, "size": 2.8, "top1": 80.0, "pub": 3.0, "none": float("nan")},
                 {"lrap": "upper", "size": "lower", "pub": "neither"})
    exact = _rows({"lrap": 90.7, "size": 13.4, "top1": 80.0, "pub": 8.6, "none": float("nan")})
    assert _run(check, tmp_path, topk, exact) == 0
    out = capsys.readouterr().out
    assert "5 rows matched" in out and "upper: 1 rows" in out and "neither: 1 rows" in out


@pytest.mark.parametrize("bound,exact_value", [("upper", 91.5), ("lower", 2.0), (None, 91.0 + 1e-6)])
def test_a_wrong_side_fails(check, tmp_path, capsys, bound, exact_value):
    topk = _rows({"x": 91.0}, {"x": bound})
    assert _run(check, tmp_path, topk, _rows({"x": exact_value})) == 1
    assert "VIOLATION" in capsys.readouterr().out


def test_unmatched_or_inexact_softmax_rows_fail(check, tmp_path):
    assert _run(check, tmp_path, _rows({"x": 1.0, "y": 2.0}), _rows({"x": 1.0})) == 1
    assert _run(check, tmp_path, _rows({"x": 1.0}), _rows({"x": 1.0}, {"x": "upper"})) == 1
