"""`mlreassess infer --plan`: the sweep as it would run (groups, passes, memory, loads, decodes, GPU
time from a throughput table), with nothing run, loaded or written; and `bench infer --csv`."""

from __future__ import annotations

import pytest
import torch
from test_inference_run import make_images, make_manifest

from mlreassess.cli import main
from mlreassess.errors import InputError
from mlreassess.inference.sweep.estimate import images_per_s, read_throughput

TIMM_HEADER = "model,infer_img_size,infer_samples_per_sec,infer_step_time,infer_batch_size,param_count,infer_gmacs,infer_macts\n"


@pytest.fixture(scope="module")
def two_sets(tmp_path_factory):
    base = tmp_path_factory.mktemp("plan")
    paths = []
    for n, name in enumerate(("set_a", "set_b")):
        ids = make_images(base / name, n=(5, 6)[n], seed=n)
        paths.append(make_manifest(base / f"{name}.parquet", base / name, ids, name=name))
    models = base / "models.txt"
    models.write_text("test_convnext random\ntest_convnext2 random\ntest_resnet random\n")  # two groups
    table = base / "throughput.csv"
    table.write_text(TIMM_HEADER + "test_convnext,160,1000.0,1,256,0.3,0.1,0.1\ntest_resnet,128,550.0,1,256,0.4,0.1,0.1\n")
    return {"base": base, "data": [a for p in paths for a in ("--data", str(p))], "models": models, "table": table}


def plan(two_sets, tmp_path, *extra) -> list[str]:
    args = ["infer", *two_sets["data"], "--models", str(two_sets["models"]), "--out", str(tmp_path / "res"),
            "--device", "cpu", "--plan", *extra]
    assert main(args) == 0
    return args


def test_the_plan_lists_groups_passes_loads_and_decodes_and_writes_nothing(two_sets, tmp_path, capsys):
    plan(two_sets, tmp_path, "--device-memory", "80", "--no-share-decode")
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("plan: 6 units to run (3 models x 2 datasets), 0 up to date, 0 stale; device with "
                             "80.0 GiB free, fp32, batch 128, models per pass auto (48.0 GiB for a pass's models)")
    assert out[1] == "groups (input size, interpolation, crop): 2; passes: 2; model loads: 3; compiles: 0"
    assert out[2] == "images decoded: 22 (33 if every unit decoded its dataset alone)"  # (5 + 6) x 2 passes
    assert "  160x160 bicubic: 2 models in 1 pass" in out
    assert out[-1].startswith("GPU time: no throughput table given")
    assert not (tmp_path / "res").exists()  # nothing written, not even the folder


def test_small_groups_share_one_decode_in_the_plan(two_sets, tmp_path, capsys):
    plan(two_sets, tmp_path, "--device-memory", "80")
    out = capsys.readouterr().out.splitlines()
    assert out[1] == "groups (input size, interpolation, crop): 2; passes: 1; model loads: 3; compiles: 0"
    assert out[2] == ("images decoded: 11 (33 if every unit decoded its dataset alone); 2 groups share 1 decodes "
                      "(small groups joined to others)")
    assert "  one decode for 160x160 bicubic + 160x160 bilinear: 3 models in 1 pass" in out


def test_a_small_device_cuts_a_group_into_more_passes(two_sets, tmp_path, capsys):
    plan(two_sets, tmp_path, "--device-memory", "0.000001", "--models-per-pass", "auto")
    out = capsys.readouterr().out.splitlines()
    assert out[1] == "groups (input size, interpolation, crop): 2; passes: 3; model loads: 3; compiles: 0"
    assert "  160x160 bicubic: 2 models in 2 passes" in out


def test_gpu_time_comes_from_the_throughput_table(two_sets, tmp_path, capsys):
    plan(two_sets, tmp_path, "--throughput", str(two_sets["table"]), "--compile")
    out = capsys.readouterr().out.splitlines()
    # test_convnext: 11 images at 1000/s; test_resnet at 160 px scaled from 128 px: 550 * (128/160)^2 = 352/s.
    seconds = 11 / 1000 + 11 / 352
    assert out[-1] == (f"GPU time at the table's forward speed: {seconds / 3600:.1f} GPU-hours for 2 models (1 scaled "
                       "from another input size); not in the table: 1 (test_convnext2)")
    assert out[1].endswith("compiles: 3")


def compile_tables(base, eager: dict, compiled: dict, compile_s: dict | None = None) -> list[str]:
    """--throughput and --compiled-throughput files: {architecture: images/s} at 160 px."""
    rows = lambda rates, extra: "".join(f"{m},160,{r},1,256,0.3,0.1,0.1{extra(m)}\n" for m, r in rates.items())  # noqa: E731
    (base / "eager.csv").write_text(TIMM_HEADER + rows(eager, lambda m: ""))
    header = TIMM_HEADER.strip() + (",compile_s\n" if compile_s else "\n")
    (base / "compiled.csv").write_text(header + rows(compiled, lambda m: f",{compile_s.get(m, '')}" if compile_s else ""))
    return ["--throughput", str(base / "eager.csv"), "--compiled-throughput", str(base / "compiled.csv")]


def test_compile_where_it_pays_compares_saved_forward_time_with_compile_time(two_sets, tmp_path, capsys):
    # 11 images each. test_convnext: 11 x (1/0.01 - 1/0.02) = 550 s saved against 60 s: compiled;
    # test_convnext2: 11 x (1/100 - 1/200) = 0.055 s: eager; test_resnet: slower compiled: eager.
    tables = compile_tables(tmp_path, {"test_convnext": 0.01, "test_convnext2": 100, "test_resnet": 100},
                            {"test_convnext": 0.02, "test_convnext2": 200, "test_resnet": 50})
    plan(two_sets, tmp_path, "--compile", "--compile-when", "pays", *tables)
    out = capsys.readouterr().out.splitlines()
    assert out[1].endswith("compiles: 1")
    assert ("compile where it pays: 1 of 3 models compiled (0.0 h of compiles expected); eager, their compile would "
            "cost more than it saves: 2 (test_convnext2, test_resnet)") in out
    assert "  every model compiled: " in "\n".join(out) and "  as planned: " in "\n".join(out)


def test_a_measured_compile_time_in_the_table_decides(two_sets, tmp_path, capsys):
    rates = {"test_convnext": 0.01, "test_convnext2": 100, "test_resnet": 100}
    tables = compile_tables(tmp_path, rates, {"test_convnext": 0.02, "test_convnext2": 200, "test_resnet": 200},
                            compile_s={"test_convnext": 1000})  # 550 s saved no longer pays
    plan(two_sets, tmp_path, "--compile", "--compile-when", "pays", *tables)
    assert capsys.readouterr().out.splitlines()[1].endswith("compiles: 0")


def test_compile_where_it_pays_needs_both_tables(two_sets, tmp_path, capsys):
    assert main(["infer", *two_sets["data"], "--models", str(two_sets["models"]), "--out", str(tmp_path), "--plan",
                 "--compile", "--compile-when", "pays", "--throughput", str(two_sets["table"])]) == 2
    assert "--compile-when pays: needs --throughput (eager images/s) and --compiled-throughput" in capsys.readouterr().err


def test_the_plan_counts_what_is_up_to_date(two_sets, tmp_path, capsys):
    one = ["infer", "--data", two_sets["data"][1], "--model", "test_resnet", "--weights", "random",
           "--out", str(tmp_path / "res"), "--device", "cpu", "--workers", "0", "--no-progress"]
    assert main(one) == 0
    capsys.readouterr()
    plan(two_sets, tmp_path)
    assert "5 units to run (3 models x 2 datasets), 1 up to date, 0 stale" in capsys.readouterr().out


@pytest.mark.parametrize("text,error", [
    ("model,speed\nx,1\n", "not a throughput table (needs columns model, infer_img_size, infer_samples_per_sec; "
                           "missing infer_img_size, infer_samples_per_sec)"),
    (TIMM_HEADER + "x,224,fast,1,1,1,1,1\n", "line 2: infer_img_size / infer_samples_per_sec are not numbers"),
    (TIMM_HEADER + "x,224,nan,1,1,1,1,1\n", "line 2: images/s must be positive"),
    (TIMM_HEADER + "x,224,-3,1,1,1,1,1\n", "line 2: images/s must be positive"),
    ("", "not a throughput table"),
])
def test_a_bad_throughput_table_is_one_line(tmp_path, text, error):
    path = tmp_path / "t.csv"
    path.write_text(text)
    with pytest.raises(InputError, match=f"{path}: {error}".replace("(", r"\(").replace(")", r"\)")):
        read_throughput(path)


def test_lookup_by_architecture_and_size(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text(TIMM_HEADER + "resnet50,224,3000,1,1,1,1,1\nresnet50,160,6000,1,1,1,1,1\n")
    table = read_throughput(path)
    assert images_per_s(table, "resnet50.a1_in1k", 224) == (3000.0, False)  # the pretrained tag is dropped
    assert images_per_s(table, "resnet50", 288) == (3000.0 * (224 / 288) ** 2, True)
    assert images_per_s(table, "vit_base_patch16_224", 224) == (None, False)


@pytest.mark.parametrize("value,why", [("lots", "expected a number of GiB"), ("-1", "above 0"), ("nan", "above 0"),
                                       ("inf", "below"), ("1e30", "below 1,048,576")])
def test_bad_plan_flags_are_refused(two_sets, tmp_path, capsys, value, why):
    with pytest.raises(SystemExit):
        main(["infer", *two_sets["data"], "--models", str(two_sets["models"]), "--out", str(tmp_path), "--plan",
              "--device-memory", value])
    assert why in capsys.readouterr().err


def test_plan_flags_without_plan_are_refused(two_sets, tmp_path, capsys):
    assert main(["infer", *two_sets["data"], "--models", str(two_sets["models"]), "--out", str(tmp_path),
                 "--device-memory", "80"]) == 2
    assert "--device-memory is for --plan" in capsys.readouterr().err


def test_bench_infer_appends_a_row_the_plan_reads(two_sets, tmp_path, capsys):
    csv = tmp_path / "mine.csv"
    for _ in range(2):
        assert main(["bench", "infer", "--model", "test_resnet", "--data", two_sets["data"][1], "--device", "cpu",
                     "--batch-size", "2", "--batches", "1", "--warmup", "1", "--workers", "0", "--csv", str(csv)]) == 0
    lines = csv.read_text().splitlines()
    assert lines[0].startswith("model,infer_img_size,infer_samples_per_sec,") and len(lines) == 3
    assert read_throughput(csv)["test_resnet"][160] > 0


def test_models_are_sized_in_forked_processes_only_before_cuda_starts(monkeypatch):
    """A child forked from a process with a CUDA context must not touch CUDA (a model's constructor
    may): once the device is set, the sizing pool starts from a fresh server process instead."""
    from mlreassess.inference.sweep import plan

    assert plan.pool_start_method() == ("forkserver" if torch.cuda.is_initialized() else "fork")
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    assert plan.pool_start_method() == "forkserver"


@pytest.mark.slow
def test_a_forkserver_pool_sizes_models_as_one_process_does(monkeypatch):
    from mlreassess.inference.models.registry import ModelSpec, model_bytes
    from mlreassess.inference.sweep import plan

    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    models = [ModelSpec(name, "random") for name in ("test_resnet", "test_vit", "test_convnext", "test_efficientnet")] * 8
    assert len(models) >= 2 * plan.POOL_MIN_MODELS  # enough for a pool of more than one worker
    assert plan.sizes_of(models) == [model_bytes(m) for m in models]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_cuda_models_are_sized_by_a_forkserver_pool_once_cuda_has_started():
    from mlreassess.inference.models.registry import ModelSpec, model_bytes
    from mlreassess.inference.sweep import plan

    torch.cuda.init()
    assert plan.pool_start_method() == "forkserver"
    models = [ModelSpec(name, "random") for name in ("test_resnet", "test_vit", "test_convnext", "test_efficientnet")] * 8
    assert plan.sizes_of(models) == [model_bytes(m) for m in models]
