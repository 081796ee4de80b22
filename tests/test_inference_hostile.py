"""`mlreassess infer` against files someone else made (issue 15): stale PNGs are never scored, paths
that leave the dataset root stop the run before any predictions file is written."""

from __future__ import annotations

import shutil

import pytest

from mlreassess.cli import main
from mlreassess.datasets.manifest import base_meta, core_table
from mlreassess.inference.sweep import writers
from mlreassess.io import write_table
from mlreassess.results import ResultsLayout
from test_inference_run import infer, model_args, tiny, write_sources  # noqa: F401  (tiny: a fixture)


@pytest.fixture(scope="module")
def two_seeds(tmp_path_factory):
    """Seed 1 rendered to PNGs, seed 2 composed only (same sources and parameters)."""
    base = tmp_path_factory.mktemp("seeds")
    write_sources(base, 6)
    common = ["--boxes", str(base / "boxes.csv"), "--images", str(base / "src"), "--counts", "2,3", "--canvas", "64",
              "--min-box-side", "4", "--workers", "1"]
    assert main(["patchml", *common, "--seed", "1", "--out", str(base / "one")]) == 0
    assert main(["patchml", *common, "--seed", "2", "--out", str(base / "two"), "--no-render"]) == 0
    return base


def test_another_seeds_manifest_over_old_pngs_is_scored_on_its_own_pixels(tiny, two_seeds, tmp_path):
    swapped = tmp_path / "swapped"
    shutil.copytree(two_seeds / "one", swapped)  # seed 1's PNGs ...
    shutil.copy(two_seeds / "two" / "manifest.parquet", swapped / "manifest.parquet")  # ... under seed 2's manifest
    fresh, stale = tmp_path / "fresh", tmp_path / "stale"
    assert infer("--data", str(two_seeds / "two" / "manifest.parquet"), *model_args(tiny, "test_resnet"), out=fresh) == 0
    assert infer("--data", str(swapped / "manifest.parquet"), *model_args(tiny, "test_resnet"), out=stale) == 0
    a, _ = writers.read_predictions(ResultsLayout(fresh).prediction("patchml_seed2", "test_resnet"))
    b, meta = writers.read_predictions(ResultsLayout(stale).prediction("patchml_seed2", "test_resnet"))
    assert a.equals(b) and not meta["failed_samples"]


def test_the_swap_without_source_images_fails_those_canvases_not_scores_old_pixels(tiny, two_seeds, tmp_path, capsys):
    swapped = tmp_path / "swapped"
    shutil.copytree(two_seeds / "one", swapped)
    shutil.copy(two_seeds / "two" / "manifest.parquet", swapped / "manifest.parquet")
    out = tmp_path / "out"
    assert infer("--data", str(swapped / "manifest.parquet"), *model_args(tiny, "test_resnet"), "--source-root",
                 str(tmp_path / "no-sources"), out=out) == 1
    assert "failed: test_resnet on patchml_seed2: no sample of patchml_seed2 could be read" in capsys.readouterr().out
    assert not ResultsLayout(out).prediction("patchml_seed2", "test_resnet").exists()


@pytest.mark.parametrize("bad", ["../x.JPEG", "/etc/passwd"])
def test_a_manifest_path_outside_the_root_stops_infer_before_any_output(tiny, tmp_path, capsys, bad):
    ids = tiny["ids"][:3]
    table = core_table(ids, [f"{ids[0]}.jpg", bad, f"{ids[2]}.jpg"], [1, 2, 3], [[1], [2], [3]])
    manifest = tmp_path / "m.parquet"
    write_table(manifest, table, base_meta("imagenet_v1", "m", tiny["root"]))
    out = tmp_path / "out"
    assert infer("--data", str(manifest), *model_args(tiny, "test_resnet"), out=out) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"sample {ids[1]!r}: path {bad!r}" in err[0] and str(manifest) in err[0]
    assert not (out / "predictions").exists() and not (out / "manifests").exists()


def test_an_in_memory_manifest_with_an_escaping_path_is_refused_too(tiny, tmp_path):
    from mlreassess.datasets.manifest import Manifest
    from mlreassess.errors import InputError
    from mlreassess.inference.input.pipeline import check_readable

    table = core_table(["a"], ["../../etc/passwd"], [1], [[1]])
    with pytest.raises(InputError, match="'..' part"):
        check_readable(Manifest(table, base_meta("imagenet_v1", "m", tiny["root"]), source=tmp_path / "m.parquet"))


def test_an_empty_manifest_stops_infer_in_one_line_before_any_output(tiny, tmp_path, capsys):
    manifest = tmp_path / "e.parquet"
    write_table(manifest, core_table([], [], [], []), base_meta("imagenet_v1", "e", tiny["root"]))
    out = tmp_path / "out"
    assert infer("--data", str(manifest), *model_args(tiny, "test_resnet"), out=out) == 2
    assert capsys.readouterr().err.strip() == f"mlreassess: error: {manifest}: the manifest has no samples: nothing to predict"
    assert not (out / "manifests").exists() and not (out / "failures.jsonl").exists()
