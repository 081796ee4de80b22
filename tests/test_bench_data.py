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
            "--source-root", str(src / "val"), "--batch-size", "8"]
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
