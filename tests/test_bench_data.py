"""`mlreassess bench data`: the input pipeline alone over several manifests, CPU ms per sample last."""

from __future__ import annotations

import re

import pytest
from test_patchml_render import PARAMS, make_sources

from mlreassess.cli import main
from mlreassess.datasets.manifest import read_manifest
from mlreassess.inference.sweep.bench import cpu_seconds
from mlreassess.patchml import generate


@pytest.fixture(scope="module")
def two_seeds(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench_data")
    src = make_sources(tmp / "src")
    for seed in (1, 2):  # manifests only, no PNGs: the canvases come from the patch cache
        generate(src / "boxes.csv", seed, tmp / f"s{seed}", workers=1, **PARAMS)
    return src, [tmp / f"s{seed}" / "manifest.parquet" for seed in (1, 2)]


@pytest.mark.parametrize("extra", [[], ["--no-patch-cache"], ["--workers", "2"], ["--decode", "gpu", "--device", "cpu"],
                                   ["--decode", "gpu", "--device", "cpu", "--no-patch-cache"]])
def test_bench_data_over_two_seeds(two_seeds, capsys, extra):
    src, manifests = two_seeds
    n = sum(len(read_manifest(m)) for m in manifests)
    args = ["bench", "data", "--model", "test_convnext", "--data", str(manifests[0]), "--data", str(manifests[1]),
            "--source-root", str(src / "val"), "--batch-size", "8", "--min-samples", "0"]
    assert main(args + (extra if extra[:1] == ["--workers"] else ["--workers", "0", *extra])) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert f"2 manifests, {n} samples," in lines[0] and "unreadable" not in lines[0]
    assert ("patch cache 0.0 MiB" in lines[0]) == ("--no-patch-cache" in extra)
    assert f"decode {'gpu' if '--decode' in extra else 'cpu'} on " in lines[0]
    assert re.fullmatch(r"cpu_ms_per_sample \d+\.\d\d", lines[-1]) and float(lines[-1].split()[1]) > 0


def test_cpu_seconds_grows():
    before = cpu_seconds()
    sum(i * i for i in range(200_000))
    assert cpu_seconds() > before


@pytest.mark.parametrize("decode", ["cpu", "gpu"])
def test_bench_data_reads_again_until_past_start_up(two_seeds, capsys, decode):
    """A short manifest is read again (in order, one pipeline) until --min-samples are read, and the
    rate after each read's warm-up batches is said apart from the whole (start-up included)."""
    src, manifests = two_seeds
    n = len(read_manifest(manifests[0]))
    want = 5 * n - 3  # five reads needed
    assert main(["bench", "data", "--model", "test_convnext", "--data", str(manifests[0]), "--source-root",
                 str(src / "val"), "--batch-size", "4", "--workers", "1", "--min-samples", str(want),
                 "--decode", decode, "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert f"1 manifests, {5 * n} samples (5 reads of each)" in lines[0]
    steady = re.fullmatch(r"past start-up: ([\d.]+) samples/s \(after each read's first batches\)", lines[-2])
    assert steady and float(steady.group(1)) > 0
    assert main(["bench", "data", "--model", "test_convnext", "--data", str(manifests[0]), "--min-samples", "-1"]) == 2


def test_warm_up_drains_what_the_loader_keeps_in_flight():
    from mlreassess.inference.sweep.bench import warmup_batches

    assert warmup_batches(0) == 2 and warmup_batches(30) == 60  # twice the queue: drained at half the speed
    assert warmup_batches(30, 100) == 100 and warmup_batches(30, 3) == 60  # asked for fewer: the queue wins


def test_a_shared_pass_decodes_once_for_every_model_and_names_one_that_fails(two_seeds, monkeypatch):
    """`end_to_end` of several runners (gpu_bench's shared-decode pass): every model sees every batch
    of one pipeline (warm-up and timed), and a model that fails sinks the benchmark by name (a
    rate of fewer models than asked would be wrong, not short)."""
    from mlreassess.errors import InputError
    from mlreassess.inference.models.model_runner import ModelRunner
    from mlreassess.inference.models.registry import ModelSpec
    from mlreassess.inference.sweep import bench
    from mlreassess.options import InferOptions

    src, manifests = two_seeds
    manifest = read_manifest(manifests[0])
    opts = InferOptions(weights="random", device="cpu", batch_size=2, workers=1, source_root=str(src / "val"))
    loaded = [bench.load_runner(ModelSpec(m, "random"), opts, "cpu") for m in ("test_convnext", "test_convnext2")]
    runners, prep = [r for r, _, _ in loaded], loaded[0][1]
    pipelines, seen = [], {r.name: 0 for r in runners}
    real_pipeline, real_predict = bench.pipeline_for, ModelRunner.predict
    monkeypatch.setattr(bench, "pipeline_for", lambda decode: lambda *a, **k: pipelines.append(1) or real_pipeline(decode)(*a, **k))
    monkeypatch.setattr(ModelRunner, "predict", lambda self, x: seen.__setitem__(self.name, seen[self.name] + 1)
                        or real_predict(self, x))
    e2e = bench.end_to_end(runners, prep, manifest, opts, batches=3)
    assert len(pipelines) == 1 and e2e.images_per_s > 0
    assert seen == {r.name: e2e.warmup + 3 for r in runners} and e2e.warmup == bench.warmup_batches(e2e.in_flight)

    def broken(self, x):
        if self.name == "test_convnext2":
            raise RuntimeError("boom")
        return real_predict(self, x)

    monkeypatch.setattr(ModelRunner, "predict", broken)
    with pytest.raises(InputError, match="model 'test_convnext2' failed during the benchmark: RuntimeError: boom"):
        bench.end_to_end(runners, prep, manifest, opts, batches=1)
