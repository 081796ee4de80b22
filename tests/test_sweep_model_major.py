"""Model-major passes: each model loaded once per sweep however many datasets, predictions
bit-identical to one dataset at a time, decode workers kept across a group's passes, models that
do not fit the device moved to a pass of their own, and a stale output retired before its redo (so
a failed redo leaves no stale result)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_inference_run import infer, make_images, make_manifest, save_weights

import mlreassess.inference.input.pipeline as data
import mlreassess.inference.sweep.execute as execute
import mlreassess.inference.sweep.runner as runner
from mlreassess.cli import main
from mlreassess.inference.sweep import writers
from mlreassess.results import ResultsLayout

THREE = ("test_convnext", "test_convnext2", "test_convnext3")  # one preprocessing group (160 bicubic)


@pytest.fixture(scope="module")
def three_sets(tmp_path_factory):
    """Three datasets of different images, and three models with weight files, of one group."""
    base = tmp_path_factory.mktemp("three_sets")
    manifests = []
    for n, name in enumerate(("set_a", "set_b", "set_c")):
        ids = make_images(base / name, n=(5, 6, 8)[n], seed=n)  # counts coprime with 7 (make_images names)
        manifests.append(make_manifest(base / f"{name}.parquet", base / name, ids, name=name))
    models = base / "models.txt"
    models.write_text("".join(f"{m} file:{save_weights(base / f'{m}.pth', m, seed)}\n" for seed, m in enumerate(THREE)))
    return {"base": base, "manifests": manifests, "models": models}


def data_args(manifests) -> list[str]:
    return [a for m in manifests for a in ("--data", str(m))]


def predictions(out: Path, dataset: str, model: str):
    table, meta = writers.read_predictions(ResultsLayout(out).prediction(dataset, model))
    return table.column("topk_idx").to_pylist(), table.column("topk_prob").to_pylist(), meta


def count_weight_reads(monkeypatch) -> list[str]:
    reads = []
    real = torch.load
    monkeypatch.setattr(torch, "load", lambda f, *a, **k: reads.append(Path(f).name) or real(f, *a, **k))
    return reads


def test_each_weights_file_is_read_once_and_outputs_match_one_dataset_at_a_time(three_sets, tmp_path, monkeypatch):
    reads = count_weight_reads(monkeypatch)
    together = tmp_path / "together"
    assert infer(*data_args(three_sets["manifests"]), "--models", str(three_sets["models"]), out=together) == 0
    assert sorted(reads) == sorted(f"{m}.pth" for m in THREE)  # once each, not once per dataset
    for manifest in three_sets["manifests"]:
        alone = tmp_path / f"alone_{manifest.stem}"
        assert infer("--data", str(manifest), "--models", str(three_sets["models"]), out=alone) == 0
        for model in THREE:
            idx, prob, meta = predictions(together, manifest.stem, model)
            idx1, prob1, _ = predictions(alone, manifest.stem, model)
            assert idx == idx1 and prob == prob1  # bit for bit
            assert meta["load_s"] >= 0 and meta["weights_bytes"] > 0 and meta["compile"] is None


def test_a_groups_decode_workers_serve_all_its_passes_and_datasets(three_sets, tmp_path, monkeypatch):
    made = []
    real = data.InputPipeline.__init__
    monkeypatch.setattr(data.InputPipeline, "__init__", lambda self, *a, **k: made.append(a[0]) or real(self, *a, **k))
    args = [*data_args(three_sets["manifests"]), "--models", str(three_sets["models"]), "--models-per-pass", "1"]
    assert main(["infer", *args, "--out", str(tmp_path), "--device", "cpu", "--workers", "1", "--no-progress",
                 "--batch-size", "4"]) == 0
    # Three passes (one model each) over three datasets: one pipeline (one set of workers) for all.
    assert len(made) == 1 and sorted(made[0]) == [0, 1, 2]
    _, _, meta = predictions(tmp_path, "set_b", "test_convnext2")
    assert meta["dataset_passes"] == 3 and meta["decoded_with"] == ["test_convnext2"]


def test_models_that_do_not_fit_run_in_a_pass_of_their_own(three_sets, tmp_path, monkeypatch, capsys, caplog):
    loaded_together = []
    monkeypatch.setattr(execute, "_room_for_more", lambda loaded, sweep: loaded_together.append(sorted(loaded)) or len(loaded) < 2)
    assert infer(*data_args(three_sets["manifests"]), "--models", str(three_sets["models"]), out=tmp_path) == 0
    assert "infer: 9 done, 0 skipped, 0 failed in 2 passes (6 dataset decodes);" in capsys.readouterr().out
    assert "1 model(s) of the pass do not fit the device with the others: they run next" in caplog.text
    reference = tmp_path / "reference"
    monkeypatch.undo()
    assert infer(*data_args(three_sets["manifests"]), "--models", str(three_sets["models"]), out=reference) == 0
    for model in THREE:
        assert predictions(tmp_path, "set_a", model)[:2] == predictions(reference, "set_a", model)[:2]


def test_a_model_out_of_memory_beside_others_runs_next_with_its_full_batch(three_sets, tmp_path, monkeypatch, capsys,
                                                                          caplog):
    """Loaded after others, a model's warm-up that runs out of memory meets their memory, not its own
    size: it goes to the next pass (loaded alone) instead of halving its batch for the whole sweep."""
    import mlreassess.inference.models.model_runner as MR

    monkeypatch.setattr(MR, "COMPILE_BACKEND", "eager")  # --compile warms models up on a CPU device too
    calls = []
    real = MR.ModelRunner.logits

    def logits(self, x):
        calls.append(self.name)
        if self.name == "test_convnext2" and calls.count(self.name) == 1:  # beside test_convnext, the first time
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")
        return real(self, x)

    monkeypatch.setattr(MR.ModelRunner, "logits", logits)
    assert infer(*data_args(three_sets["manifests"]), "--models", str(three_sets["models"]), "--compile",
                 out=tmp_path) == 0
    assert "infer: 9 done, 0 skipped, 0 failed in 2 passes" in capsys.readouterr().out
    assert "model test_convnext2 does not fit beside 1 other model(s)" in caplog.text
    for model in THREE:
        assert predictions(tmp_path, "set_c", model)[2]["forward_batch_size"] == 4  # --batch-size, never halved


def _cuda_error():
    return torch.AcceleratorError("CUDA error: an illegal memory access was encountered\nCUDA kernel errors might be "
                                  "asynchronously reported at some other API call")


@pytest.mark.parametrize("where", ["predict", "warm_up"])
def test_a_cuda_error_stops_the_sweep_in_one_line_blaming_only_the_model_that_met_it(three_sets, tmp_path, monkeypatch,
                                                                                    capsys, where):
    """An illegal address leaves the CUDA context unusable: every later model would fail with it and be
    recorded as failing. The sweep stops at once, names the model, records it alone, writes nothing more."""
    import mlreassess.inference.models.model_runner as MR

    monkeypatch.setattr(MR, "COMPILE_BACKEND", "eager")
    real = getattr(MR.ModelRunner, where)

    def faulty(self, *args, **kwargs):
        if self.name == "test_convnext2":
            raise _cuda_error()
        return real(self, *args, **kwargs)

    monkeypatch.setattr(MR.ModelRunner, where, faulty)
    layout = ResultsLayout(tmp_path)
    assert infer(*data_args(three_sets["manifests"]), "--models", str(three_sets["models"]), "--compile",
                 out=tmp_path) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model 'test_convnext2'" in err[0] and "illegal memory access" in err[0]
    assert "the sweep stops here" in err[0]
    entries = [json.loads(line) for line in layout.failures.read_text().splitlines()]
    assert {e["model"] for e in entries} == {"test_convnext2"} and all("CUDA error" in e["error"] for e in entries)
    assert not list(layout.root.glob("predictions/*/*.parquet"))  # nothing written after (or beside) the error


def test_a_failed_redo_retires_the_stale_output_and_records_the_failure(three_sets, tmp_path, capsys):
    manifest = three_sets["manifests"][0]
    good = three_sets["base"] / "test_convnext.pth"
    broken = tmp_path / "broken.pth"
    broken.write_bytes(b"not a checkpoint")
    layout = ResultsLayout(tmp_path / "out")
    assert infer("--data", str(manifest), "--model", "test_convnext", "--weights", f"file:{good}", out=layout.root) == 0
    path, retired = layout.prediction("set_a", "test_convnext"), layout.retired("set_a", "test_convnext")
    assert infer("--data", str(manifest), "--model", "test_convnext", "--weights", f"file:{broken}", out=layout.root) == 1
    assert not path.exists() and writers.is_complete(retired)  # out of what evaluate reads, kept for a person
    (entry,) = [json.loads(line) for line in layout.failures.read_text().splitlines()]
    assert entry["model"] == "test_convnext" and entry["retired"] == str(retired) and "broken.pth" in entry["error"]
    assert main(["evaluate", "--results", str(layout.root)]) != 0 or not _model_rows(layout, "test_convnext")
    capsys.readouterr()
    # A successful redo writes the output and drops the retired copy and the failure.
    assert infer("--data", str(manifest), "--model", "test_convnext", "--weights", f"file:{good}", out=layout.root) == 0
    assert writers.is_complete(path) and not retired.exists() and not layout.failures.exists()
    assert not (layout.root / "retired").exists()


def _model_rows(layout: ResultsLayout, model: str) -> list:
    import pandas as pd

    if not layout.metrics.exists():
        return []
    metrics = pd.read_parquet(layout.metrics)
    return metrics[metrics["model"] == model].to_dict("records")


def test_a_stale_output_is_moved_aside_before_the_redo_starts(three_sets, tmp_path, monkeypatch):
    """Interrupted mid-redo, the old output is never left where evaluate would read it as current."""
    manifest = three_sets["manifests"][0]
    layout = ResultsLayout(tmp_path)
    assert infer("--data", str(manifest), "--model", "test_convnext", "--weights", "random", out=tmp_path) == 0

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(execute, "_one_pass", interrupted)
    assert infer("--data", str(manifest), "--model", "test_convnext", "--weights", "random", "--topk", "3",
                 out=tmp_path) != 0  # Ctrl-C: the CLI says "interrupted"
    assert not layout.prediction("set_a", "test_convnext").exists()
    assert writers.is_complete(layout.retired("set_a", "test_convnext"))


def test_temporary_files_a_killed_run_left_are_cleared(three_sets, tmp_path, caplog):
    manifest = three_sets["manifests"][0]
    assert infer("--data", str(manifest), "--model", "test_convnext", "--weights", "random", out=tmp_path) == 0
    layout = ResultsLayout(tmp_path)
    left = [layout.predictions_of("set_a") / f".test_convnext2.parquet.{'a' * 32}.tmp",
            layout.manifests_dir / f".set_a.parquet.{'b' * 32}.tmp"]
    for p in left:
        p.write_bytes(b"half a file")
    kept = layout.predictions_of("set_a") / "notes.tmp"  # not one of ours: left alone
    kept.write_text("mine")
    assert infer("--data", str(manifest), "--model", "test_convnext", "--weights", "random", out=tmp_path) == 0
    assert not any(p.exists() for p in left) and kept.exists()
    assert "removed 2 temporary file(s) an interrupted run left behind" in caplog.text


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (pinned slots, side-stream copies)")


@CUDA
@pytest.mark.gpu
def test_on_cuda_pinned_slots_and_side_stream_copies_give_the_cpu_batches(three_sets):
    from mlreassess.datasets.manifest import read_manifest
    from mlreassess.inference.input.preprocess import Preprocess

    manifest = read_manifest(three_sets["manifests"][2])
    prep = Preprocess(32, 32, "bicubic")
    rows = list(range(len(manifest))) * 5  # more batches than slots: each slot reused
    want = torch.cat([b[1] for b in data.pil_batches(manifest, rows, prep, "cpu", 2, 2)])
    pipeline = data.InputPipeline({0: manifest}, prep, "cuda", 2, 2)  # two workers, forked before pinning
    try:
        assert not pipeline.slots.pinned
        got = torch.cat([images.clone() for _, images, _ in pipeline.batches(0, rows)])
        assert pipeline.slots.pinned
        again = torch.cat([images.clone() for _, images, _ in pipeline.batches(0, rows)])  # the same workers
    finally:
        pipeline.close()
    assert got.device.type == "cuda" and torch.equal(got.cpu(), want) and torch.equal(again.cpu(), want)


def test_batch_slots_are_pinned_only_after_the_workers_are_forked(three_sets, monkeypatch):
    """cudaHostRegister may mark the slots' pages do-not-fork: a worker forked after it would find no
    mapping there and die on its first write. A fake registration records when it ran."""
    import multiprocessing

    from mlreassess.datasets.manifest import read_manifest
    from mlreassess.inference.input import slots as S
    from mlreassess.inference.input.preprocess import Preprocess

    manifest = read_manifest(three_sets["manifests"][2])
    prep = Preprocess(32, 32, "bicubic")
    rows = list(range(len(manifest))) * 3
    want = torch.cat([b[1] for b in data.pil_batches(manifest, rows, prep, "cpu", 2, 0)])
    registered = []
    monkeypatch.setattr(S, "host_register", lambda pointer, nbytes: registered.append(
        (len(multiprocessing.active_children()), nbytes)) or 0)
    monkeypatch.setattr(S, "host_unregister", lambda pointer: 0)
    monkeypatch.setattr(data, "uses_pinned_memory", lambda device: True)  # the CUDA path, on the CPU
    pipeline = data.InputPipeline({0: manifest}, prep, "cpu", 2, 2)
    try:
        assert registered == [] and not pipeline.slots.pinned  # not at construction: no worker yet
        got = torch.cat([images.clone() for _, images, _ in pipeline.batches(0, rows)])
        assert registered == [(len(multiprocessing.active_children()), pipeline.slots.nbytes)]
        assert registered[0][0] >= 2 and pipeline.slots.pinned  # both workers were running when it ran
        again = torch.cat([images.clone() for _, images, _ in pipeline.batches(0, rows)])
        assert len(registered) == 1  # persistent workers, slots registered once
    finally:
        pipeline.close()
    assert not pipeline.slots.pinned and torch.equal(got, want) and torch.equal(again, want)


def test_torchrun_ranks_of_one_machine_share_the_shared_memory(monkeypatch):
    """Every local rank has its pipeline's slots in the one /dev/shm: each may take its part of half."""
    from mlreassess.errors import InputError
    from mlreassess.inference.input.slots import HELD, prefetch_that_fits

    mb = 1 << 20
    free = 4 * (4 + HELD) * mb  # 32 MiB: half is room for prefetch 2 (12 MiB of slots) of one process
    assert prefetch_that_fits(2, 4, mb, free) == 2
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert prefetch_that_fits(2, 4, mb, free) == 1  # a quarter each: 8 MiB, prefetch 1's (1 x 4 + 4) MiB
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    with pytest.raises(InputError, match="shared by 4 local ranks"):
        prefetch_that_fits(2, 4, mb, free)


@CUDA
@pytest.mark.gpu
def test_a_cuda_sweep_gives_the_cpu_sweeps_top_k(three_sets, tmp_path):
    args = [*data_args(three_sets["manifests"]), "--models", str(three_sets["models"])]
    assert infer(*args, out=tmp_path / "cpu") == 0
    assert infer(*args, "--device", "cuda", out=tmp_path / "cuda") == 0
    for model in THREE:
        idx, prob, meta = predictions(tmp_path / "cuda", "set_c", model)
        idx_cpu, prob_cpu, _ = predictions(tmp_path / "cpu", "set_c", model)
        assert np.mean(np.array(idx)[:, 0] == np.array(idx_cpu)[:, 0]) == 1.0
        np.testing.assert_allclose(prob, prob_cpu, atol=1e-4)
        assert meta["activation_bytes"] > 0


def test_batch_slots_shrink_to_the_shared_memory_there_is_or_say_what_to_change(three_sets, tmp_path, monkeypatch, capsys):
    from mlreassess.inference.input.slots import HELD, prefetch_that_fits

    mb = 1 << 20
    assert prefetch_that_fits(2, 4, mb, None) == 2  # nothing known: as asked
    assert prefetch_that_fits(2, 4, mb, 2 * (2 * 4 + HELD) * mb) == 2
    assert prefetch_that_fits(2, 4, mb, 2 * (1 * 4 + HELD) * mb) == 1  # fewer batches ahead per worker
    assert infer("--data", str(three_sets["manifests"][0]), "--model", "test_convnext", "--weights", "random",
                 out=tmp_path) == 0
    capsys.readouterr()
    monkeypatch.setattr(runner, "shared_memory_free", lambda: 64 * mb)  # a container's default /dev/shm
    assert main(["infer", "--data", str(three_sets["manifests"][0]), "--model", "test_convnext", "--weights", "random",
                 "--topk", "3", "--batch-size", "4096", "--device", "cpu", "--workers", "0", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "/dev/shm has 0.06 GiB free" in err[0] and "--shm-size" in err[0]
    # Refused before anything changed: the earlier output (stale: another --topk) is not retired.
    assert writers.is_complete(ResultsLayout(tmp_path).prediction("set_a", "test_convnext"))
    assert not (tmp_path / "retired").exists()
