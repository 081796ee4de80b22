"""PatchML stage 2 (Algorithm 1): properties of the composed canvases on random pools."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlreassess.errors import InputError
from mlreassess.patchml.layout import PATCHML_COLUMNS, _bounded, compose, compose_k, fit_sizes, grid_for
from mlreassess.patchml.pool import Pool


def make_pool(sides: list[tuple[int, int]], labels: list[int]) -> Pool:
    """One patch per (w, h); every patch has its own (image, box), so patches are identifiable."""
    boxes = [(i % 7, i % 5, i % 7 + w - 1, i % 5 + h - 1) for i, (w, h) in enumerate(sides)]
    return Pool(
        image_ids=[f"img{i:04d}" for i in range(len(sides))],
        boxes=np.array(boxes, dtype=np.int64).reshape(-1, 4),
        labels=np.array(labels, dtype=np.int64),
    )


@st.composite
def pools(draw):
    n = draw(st.integers(0, 40))
    sides = draw(st.lists(st.tuples(st.integers(1, 600), st.integers(1, 600)), min_size=n, max_size=n))
    labels = draw(st.lists(st.integers(0, 12), min_size=n, max_size=n))  # few classes: duplicates happen
    return make_pool(sides, labels)


def test_grid_geometry_of_the_paper():
    assert [(g.columns, g.cell) for g in map(lambda k: grid_for(k, 448), (1, 2, 3, 4, 6, 9))] == [
        (1, 448), (2, 224), (2, 224), (2, 224), (3, 149), (3, 149)
    ]
    assert grid_for(10, 448).columns == 4
    with pytest.raises(InputError, match="do not fit"):
        grid_for(4, 1)
    with pytest.raises(InputError, match="at least 1"):
        grid_for(0, 448)


def test_fit_sizes_keeps_aspect_and_fills_the_cell():
    w, h = fit_sizes(np.array([100, 50, 300, 1, 224]), np.array([50, 100, 301, 1000, 224]), 224)
    assert w.tolist() == [224, 112, 223, 1, 224]  # 300*224/301 = 223.26 -> 223; 1*224/1000 -> 1 px minimum
    assert h.tolist() == [112, 224, 224, 224, 224]


def test_bounded_draws_are_in_range_and_cover_it():
    bitgen = np.random.PCG64(1)
    bounds = np.array([[1, 2], [3, 7]] * 2000)
    x = _bounded(bitgen, bounds)
    assert x.shape == bounds.shape and (x >= 0).all() and (x < bounds).all()
    assert (x[:, 0][bounds[:, 0] == 1] == 0).all()
    counts = np.bincount(x[1::2, 1], minlength=7)  # 2000 draws in [0, 7)
    assert (counts > 2000 / 7 * 0.7).all()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pool=pools(),
    seed=st.integers(0, 2**32),
    canvas=st.integers(3, 448),
    counts=st.lists(st.sampled_from([1, 2, 3, 4, 5, 6, 9]), min_size=1, max_size=4, unique=True),
)
def test_canvas_properties(pool, seed, canvas, counts):
    if len(pool) < min(counts):
        with pytest.raises(InputError, match="too few for a canvas"):
            compose(pool, seed, counts, canvas)
        return
    table = compose(pool, seed, counts, canvas)
    rows = table.to_pylist()
    by_patch = {(pool.image_ids[i], tuple(pool.boxes[i].tolist())): int(pool.labels[i]) for i in range(len(pool))}
    src_w = {pid: (b[2] - b[0] + 1, b[3] - b[1] + 1) for pid, b in ((p, p[1]) for p in by_patch)}
    for k in counts:
        rows_k = [r for r in rows if r["k"] == k]
        assert len(rows_k) == len(pool) // k  # while >= k patches remain
        used = [(s, tuple(b)) for r in rows_k for s, b in zip(r["src_ids"], r["src_boxes"])]
        assert len(used) == len(set(used))  # no patch twice within a k
        assert set(used) <= set(by_patch)
        cell = grid_for(k, canvas).cell
        for r in rows_k:
            assert r["sample_id"].startswith(f"k{k}_") and r["path"] is None and r["label"] is None
            assert len(r["src_ids"]) == len(r["sizes"]) == len(r["positions"]) == k
            plabels = [by_patch[(s, tuple(b))] for s, b in zip(r["src_ids"], r["src_boxes"])]
            assert r["patch_labels"] == plabels
            assert r["labels"] == sorted(set(plabels)) and r["label_count"] == len(set(plabels))
            rects = []
            for (s, b), (w, h), (x, y) in zip(zip(r["src_ids"], r["src_boxes"]), r["sizes"], r["positions"]):
                sw, sh = src_w[(s, tuple(b))]
                assert max(w, h) == cell and min(w, h) >= 1  # longer side fills the cell
                # aspect ratio kept up to rounding of the shorter side (or its 1 px minimum)
                if sw >= sh:
                    assert abs(h * sw - sh * cell) * 2 <= sw or h == 1
                else:
                    assert abs(w * sh - sw * cell) * 2 <= sh or w == 1
                assert 0 <= x and 0 <= y and x + w <= canvas and y + h <= canvas
                rects.append((x, y, x + w, y + h))
            for i in range(len(rects)):
                for j in range(i + 1, len(rects)):
                    a, b = rects[i], rects[j]
                    assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1], "patches overlap"


def _random_pool(n: int, seed: int = 0) -> Pool:
    rng = np.random.default_rng(seed)
    sides = [tuple(int(v) for v in rng.integers(100, 500, size=2)) for _ in range(n)]
    return make_pool(sides, [int(v) for v in rng.integers(0, 1000, size=n)])


def test_same_seed_same_table_other_seed_different():
    pool = _random_pool(200)
    a = compose(pool, 7)
    assert a.equals(compose(pool, 7))
    b = compose(pool, 8)
    assert not a.equals(b)
    assert a.column("sample_id").equals(b.column("sample_id"))  # same shape, other draws
    assert a.column_names[-len(PATCHML_COLUMNS):] == list(PATCHML_COLUMNS)


def test_each_k_depends_only_on_seed_and_k():
    pool = _random_pool(120)
    alone = compose_k(pool, 3, 4)
    with_others = {b: compose_k(pool, 3, b) for b in (2, 4, 9)}[4]
    assert np.array_equal(alone.patches, with_others.patches) and np.array_equal(alone.positions, with_others.positions)
    both = compose(pool, 3, [9, 4])
    only4 = compose(pool, 3, [4])
    rows4 = [r for r in both.to_pylist() if r["k"] == 4]
    assert rows4 == only4.to_pylist()


def test_offsets_use_the_whole_free_range():
    # 20x10 boxes in 224 cells -> 224x112 patches: x offset always 0, y offset in 0..112.
    pool = make_pool([(20, 10)] * 2000, [0] * 2000)
    b = compose_k(pool, 5, 2)
    assert (b.sizes == [224, 112]).all()
    assert (b.positions[:, :, 0] == [0, 224]).all()
    oy = b.positions[:, :, 1].ravel()
    assert oy.min() == 0 and oy.max() == 112 and len(np.unique(oy)) > 100


def test_rejects_bad_parameters():
    pool = _random_pool(10)
    with pytest.raises(InputError, match="repeated"):
        compose(pool, 1, [2, 2])
    with pytest.raises(InputError, match="non-negative"):
        compose(pool, -1)
