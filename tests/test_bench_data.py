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
