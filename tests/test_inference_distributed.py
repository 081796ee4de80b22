"""Sweeps that must survive: torchrun (2 CPU ranks, gloo) gives one process's results, and a sweep
killed with SIGKILL resumes without redoing finished units or leaving files that look complete."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from mlreassess.inference.sweep import writers
from mlreassess.locks import LOCK_NAME
from mlreassess.results import ResultsLayout

from test_inference_run import make_images, make_manifest, save_weights

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("dist")
    ids = make_images(base / "images", n=11)
    # One unreadable sample: the sharded run must report it exactly like one process.
    (base / "images" / f"{sorted(ids)[4]}.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    a = make_manifest(base / "a.parquet", base / "images", ids, name="set_a")
    b = make_manifest(base / "b.parquet", base / "images", sorted(ids)[:6], name="set_b")
    models = base / "models.txt"
    models.write_text(f"test_convnext file:{save_weights(base / 'c.pth', 'test_convnext', 0)}\n"
                      f"test_resnet file:{save_weights(base / 'r.pth', 'test_resnet', 1)}\n")
    one = base / "one.txt"
    one.write_text(models.read_text().splitlines()[0] + "\n")
    return {"base": base, "a": a, "b": b, "models": models, "one": one, "bad": sorted(ids)[4]}


def env() -> dict:
    # One thread per process: two ranks on a 2-core machine, and no oversubscription.
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def infer_cmd(out: Path, *args: str, torchrun: int = 0) -> list[str]:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={torchrun}"] if torchrun else [sys.executable]
    return [*launcher, "-m", "mlreassess", "infer", *args, "--out", str(out), "--device", "cpu",
            "--workers", "0", "--batch-size", "3", "--no-progress"]


def run(cmd: list[str]) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env(), timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def assert_same_predictions(out1: Path, out2: Path, dataset: str, model: str) -> None:
    t1, m1 = writers.read_predictions(ResultsLayout(out1).prediction(dataset, model))
    t2, m2 = writers.read_predictions(ResultsLayout(out2).prediction(dataset, model))
    assert t1.column("sample_id").equals(t2.column("sample_id"))
    assert t1.column("topk_idx").equals(t2.column("topk_idx"))  # bit for bit
    np.testing.assert_allclose(np.array(t1.column("topk_prob").to_pylist()), np.array(t2.column("topk_prob").to_pylist()), rtol=1e-5)
    assert m1["failed_samples"] == m2["failed_samples"] and m1["n_samples"] == m2["n_samples"]


@pytest.mark.parametrize(
    "case, data, models",
    [("units", ["a", "b"], "models"),  # 4 units over 2 ranks: units are split
     ("samples", ["a"], "one")],  # 1 unit over 2 ranks: its samples are split, rank 0 merges
)
def test_torchrun_two_ranks_equals_one_process(setup, tmp_path, case, data, models):
    args = [a for d in data for a in ("--data", str(setup[d]))] + ["--models", str(setup[models])]
    single, multi = tmp_path / "single", tmp_path / "multi"
    run(infer_cmd(single, *args))
    proc = run(infer_cmd(multi, *args, torchrun=2))
    units = [(d, m) for d in ("set_a", "set_b")[: len(data)] for m in ("test_convnext", "test_resnet")[: 2 if models == "models" else 1]]
    assert f"infer: {len(units)} done, 0 skipped, 0 failed" in proc.stdout
    assert proc.stdout.count("infer:") == 1  # one summary, from rank 0
    for dataset, model in units:
        assert_same_predictions(single, multi, dataset, model)
        _, meta = writers.read_predictions(ResultsLayout(multi).prediction(dataset, model))
        assert meta["world_size"] == 2
        if dataset == "set_a":
            assert [f["sample_id"] for f in meta["failed_samples"]] == [setup["bad"]]
    produced = sorted(p.relative_to(multi).as_posix() for p in multi.rglob("*") if p.is_file() and p.name != LOCK_NAME)
    assert produced == sorted([f"manifests/{d}.parquet" for d in {u[0] for u in units}]
                              + [f"predictions/{d}/{m}.parquet" for d, m in units])


def test_kill_9_mid_sweep_then_rerun_finishes_without_redoing(setup, tmp_path):
    # Six datasets x one model = six units in one pass; kill as soon as the first output lands.
    data = []
    for i in range(6):
        data += ["--data", str(make_manifest(tmp_path / f"m{i}.parquet", setup["base"] / "images",
                                             [p.stem for p in (setup["base"] / "images").glob("*.jpg")], name=f"d{i}"))]
    out = tmp_path / "out"
    cmd = infer_cmd(out, *data, "--models", str(setup["one"]), "--batch-size", "1")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env())
    deadline = time.monotonic() + 300
    while not list(out.glob("predictions/*/*.parquet")):
        assert proc.poll() is None, "sweep ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.glob("predictions/*/*.parquet")}
    assert 1 <= len(finished) < 6, "the kill must land mid-sweep"
    assert all(writers.is_complete(p) for p in finished)
    # Whatever else the kill left (temporary files) never carries a final name.
    assert all(p.name.startswith(".") and p.suffix == ".tmp" for p in out.rglob("*") if p.is_file()
               and p not in finished and p.parent.name != "manifests" and p.name not in ("failures.jsonl", LOCK_NAME))

    rerun = run(cmd)
    assert f"infer: {6 - len(finished)} done, {len(finished)} skipped, 0 failed" in rerun.stdout
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in finished} == finished  # untouched
    assert not [p for p in out.rglob("*.tmp")]  # the killed run's temporary files are cleared
    outputs = sorted(out.glob("predictions/*/*.parquet"))
    assert [p.parent.name for p in outputs] == [f"d{i}" for i in range(6)]
    assert all(writers.is_complete(p) for p in outputs)
    reference, _ = writers.read_predictions(outputs[0])
    for p in outputs[1:]:  # same images in every dataset: same predictions
        assert writers.read_predictions(p)[0].equals(reference)
