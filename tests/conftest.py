"""Shared fixtures. Real ImageNet data lives in ../shared/data (never copied into the repo)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MLREASSESS_SHARED_DATA", REPO.parent / "shared" / "data"))
MINI_ROOT = SHARED_DATA / "imagenet-val-mini"
BOXES_ROOT = SHARED_DATA / "imagenet-val-boxes"


@pytest.fixture(scope="session")
def mini_root() -> Path:
    if not (MINI_ROOT / "LOC_val_solution.csv").exists():
        pytest.skip(f"real ImageNet mini set not found at {MINI_ROOT} (../shared/data absent)")
    return MINI_ROOT


@pytest.fixture(scope="session")
def boxes_root() -> Path:
    if not (BOXES_ROOT / "LOC_val_solution.csv").exists():
        pytest.skip(f"full ImageNet val boxes not found at {BOXES_ROOT} (../shared/data absent)")
    return BOXES_ROOT


def _write_jpeg(path: Path, color=(128, 64, 32), size=(8, 6)) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, "JPEG")
    return path


@pytest.fixture
def write_jpeg():
    """write_jpeg(path, color=(r, g, b), size=(w, h)) -> path: a tiny real JPEG for layout fixtures."""
    return _write_jpeg
