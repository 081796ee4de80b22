"""The patch cache paints the same pixels as render_row and the PNGs, and is shared, bounded, cleaned up."""

from __future__ import annotations

import os
import pickle
import shutil

import numpy as np
import pytest
from PIL import Image

from mlreassess.datasets.manifest import Manifest, read_manifest
from mlreassess.errors import InputError
from mlreassess.patchml import generate
from mlreassess.patchml.cache import build_cache
from mlreassess.patchml.render import render_row
from test_patchml_render import PARAMS, make_sources


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    """Seeds 1-3 of one source folder (different counts for seed 3), PNGs for seed 1 only."""
    tmp = tmp_path_factory.mktemp("cache")
    src = make_sources(tmp / "src")
    out = {}
    for seed, counts in ((1, [2, 3, 4]), (2, [2, 3, 4]), (3, [2, 6, 9])):
        images = src / "val" if seed == 1 else None
        params = {**PARAMS, "counts": counts, "canvas_size": 96 if seed < 3 else 120}
        generate(src / "boxes.csv", seed, tmp / f"s{seed}", images=images, workers=1, **params)
        out[seed] = read_manifest(tmp / f"s{seed}" / "manifest.parquet")
    return src, tmp, out


def test_canvases_equal_render_row_and_pngs_for_several_seeds_and_counts(sets):
    src, tmp, ms = sets
    manifests = [ms[1], ms[2], ms[3]]
    cache = build_cache(manifests, source_root=src / "val")
    assert cache.nbytes > 0 and os.path.getsize(cache.file) == cache.nbytes
    for m, manifest in enumerate(manifests):
        assert len(set(manifest.table.column("k").to_pylist())) == 3
        for i in range(len(manifest)):
            assert cache.cached(m, i)
            expected = np.asarray(render_row(manifest, i, source_root=src / "val"))
            assert np.array_equal(cache.canvas(m, i), expected)
    for i, sid in enumerate(ms[1].sample_ids):  # and the PNGs `mlreassess patchml --images` wrote
        png = np.asarray(Image.open(tmp / "s1" / "images" / f"{sid}.png"))
        assert np.array_equal(np.asarray(cache.image(0, i)), png)


def test_patches_are_shared_between_seeds(sets):
    src, _, ms = sets
    one = build_cache([ms[1]], source_root=src / "val")
    two = build_cache([ms[1], ms[2]], source_root=src / "val")
    assert two.nbytes < 2 * one.nbytes  # same boxes, same cell sizes: most patches are shared


def test_pickled_cache_maps_the_same_file_without_the_pixels(sets):
    src, _, ms = sets
    cache = build_cache([ms[2]], source_root=src / "val", workers=2)
    before = cache.canvas(0, 0)
    blob = pickle.dumps(cache)
    assert len(blob) < cache.nbytes or cache.nbytes < 4096
    copy = pickle.loads(blob)
    assert copy.file == cache.file and np.array_equal(copy.canvas(0, 0), before)


def test_bound_leaves_later_canvases_out(sets):
    src, _, ms = sets
    full = build_cache([ms[1]], source_root=src / "val")
    small = build_cache([ms[1]], source_root=src / "val", max_bytes=full.nbytes // 3)
    flags = [small.cached(0, i) for i in range(len(ms[1]))]
    assert flags[0] and not flags[-1] and flags == sorted(flags, reverse=True)
    assert small.nbytes <= full.nbytes // 3
    for i in (i for i, f in enumerate(flags) if f):
        assert np.array_equal(small.canvas(0, i), full.canvas(0, i))


def test_unreadable_source_fails_only_its_canvases(sets, tmp_path):
    src, _, ms = sets
    copy = tmp_path / "val"
    shutil.copytree(src / "val", copy)
    bad = ms[1].table.column("src_ids").to_pylist()[0][0]
    (copy / f"{bad}.JPEG").write_bytes(b"not a jpeg")
    cache = build_cache([ms[1]], source_root=copy)
    uses = [bad in ids for ids in ms[1].table.column("src_ids").to_pylist()]
    for i, use in enumerate(uses):
        if use:
            with pytest.raises(InputError, match=f"{bad}.JPEG"):
                cache.canvas(0, i)
        else:
            cache.canvas(0, i)


def test_file_removed_with_the_cache_and_mixed_sources_refused(sets, tmp_path):
    src, _, ms = sets
    cache = build_cache([ms[1]], source_root=src / "val")
    folder = os.path.dirname(cache.file)
    del cache
    assert not os.path.exists(folder)
    with pytest.raises(InputError, match="one source folder"):
        build_cache([ms[1], Manifest(table=ms[2].table, meta={**ms[2].meta, "resample": "nearest"})], source_root=src / "val")
