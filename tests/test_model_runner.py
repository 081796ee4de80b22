"""`inference.model_runner`: the exact one-topk top-k, weights cast once (bit-identical to autocast),
compile once per model (own code object, static padded batches), and a fallback to eager that is
reported. Compiles use dynamo with the "eager" backend or a counting backend: no code generation."""

from __future__ import annotations

import copy
import logging

import numpy as np
import pytest
import timm
import torch

import mlreassess.inference.models.model_runner as MR
from mlreassess.inference.models.model_runner import ModelRunner, cast_once, topk_stable
from mlreassess.inference.models.registry import LoadedModel, ModelSpec
from mlreassess.options import InferOptions


def stable_sort_topk(probs: torch.Tensor, k: int):
    values, indices = torch.sort(probs, dim=1, descending=True, stable=True)
    return indices[:, :k].to(torch.int32), values[:, :k]


@pytest.mark.parametrize("classes", [1000, 7, 1])
def test_topk_equals_a_stable_descending_sort_with_ties(classes):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn((64, classes), generator=g).to(torch.bfloat16).float()  # bf16: many exact ties
    probs = logits.softmax(1)
    probs[0] = 1.0 / classes  # all tied
    probs[1, : classes // 2] = 0.0  # ties at zero, after the others
    k = min(10, classes)
    idx, val = topk_stable(probs, k)
    want_idx, want_val = stable_sort_topk(probs, k)
    assert idx.dtype == torch.int32 and val.dtype == torch.float32
    assert torch.equal(idx, want_idx) and torch.equal(val, want_val)
    assert idx[0].tolist() == list(range(k))  # equal probabilities: lower class index first


@pytest.mark.parametrize("name,precision", [(n, p) for n in ("test_resnet", "test_vit", "test_efficientnet")
                                            for p in ("bf16", "fp16")] + [("tf_efficientnet_lite0", "bf16")])
def test_weights_cast_once_give_autocasts_logits_bit_for_bit(name, precision):
    torch.manual_seed(0)
    model = timm.create_model(name).eval()
    x = torch.randn(3, *model.pretrained_cfg["input_size"])
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    with torch.inference_mode(), torch.autocast("cpu", dtype=dtype):
        want = model(x)
    cast = copy.deepcopy(model)
    assert cast_once(cast, precision) > 0
    assert all(p.dtype == torch.float32 for m in cast.modules() if isinstance(m, torch.nn.LayerNorm) for p in m.parameters())
    with torch.inference_mode(), torch.autocast("cpu", dtype=dtype):
        got = cast(x)
    assert torch.equal(want, got)
    assert cast_once(copy.deepcopy(model), "fp32") == 0


def test_a_parameter_shared_with_another_module_is_not_cast():
    linear = torch.nn.Linear(4, 4)
    other = torch.nn.LayerNorm(4)
    other.weight = linear.weight  # tied
    cast_once(torch.nn.Sequential(linear, other), "bf16")
    assert linear.weight.dtype == torch.float32 and linear.bias.dtype == torch.bfloat16


def loaded(name: str = "test_resnet", seed: int = 0) -> LoadedModel:
    torch.manual_seed(seed)
    module = timm.create_model(name).eval()
    cfg = {**module.pretrained_cfg, "input_size": (3, 32, 32), "crop_pct": 1.0}
    return LoadedModel(ModelSpec(name, "random"), module, "random", cfg)


def batches(sizes, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g) for n in sizes]


def run(runner: ModelRunner, inputs) -> tuple:
    with torch.inference_mode():
        for b in inputs:
            runner.predict(b)
    return runner.collect()


@pytest.fixture
def counting_backend(monkeypatch):
    """A dynamo backend that counts the graphs it is given and runs them as they are."""
    graphs = []

    def backend(gm, example_inputs, **_):
        graphs.append([tuple(t.shape) for t in example_inputs if isinstance(t, torch.Tensor)])
        return gm.forward

    monkeypatch.setattr(MR, "COMPILE_BACKEND", backend)
    return graphs


def test_a_compiled_model_compiles_once_for_full_and_short_batches(counting_backend):
    opts = InferOptions(batch_size=8, topk=5, compile=True)
    compiled = ModelRunner(loaded(), "cpu", opts)
    compiled.warm_up(32, 32)
    inputs = batches([8, 8, 3])  # a short last batch is padded to 8, not compiled again
    got = run(compiled, inputs)
    assert len(counting_backend) == 1 and compiled.describe_compile()["fallback"] is None
    assert compiled.describe_compile()["seconds"] is not None
    eager = run(ModelRunner(loaded(), "cpu", InferOptions(batch_size=8, topk=5)), inputs)
    np.testing.assert_array_equal(got[0], eager[0])
    np.testing.assert_allclose(got[1], eager[1], rtol=1e-6)


class Small(torch.nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, width, 3)
        self.fc = torch.nn.Linear(width, 1000)

    def forward(self, x):
        return self.fc(self.conv(x).mean((2, 3)))


def test_many_models_of_one_class_each_compile_instead_of_falling_back(counting_backend):
    """dynamo's recompile limit (8) counts graphs per code object, and every instance of a class
    shares its forward's: the ninth model of a class must still compile, not run eager silently."""
    opts = InferOptions(batch_size=2, topk=1, compile=True)
    cfg = {"input_size": (3, 32, 32), "interpolation": "bilinear", "mean": (0.5,) * 3, "std": (0.5,) * 3}
    runners = [ModelRunner(LoadedModel(ModelSpec(f"small{w}", "random"), Small(w).eval(), "random", cfg), "cpu", opts)
               for w in range(2, 12)]
    for r in runners:
        run(r, batches([2]))
    assert len(counting_backend) == 10
    assert all(r.describe_compile()["fallback"] is None for r in runners)


def test_a_compile_that_fails_falls_back_to_eager_and_says_so(monkeypatch, caplog):
    def broken(gm, example_inputs):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(MR, "COMPILE_BACKEND", broken)
    runner = ModelRunner(loaded(), "cpu", InferOptions(batch_size=4, topk=3, compile=True))
    inputs = batches([4, 2])
    with caplog.at_level(logging.WARNING):
        got = run(runner, inputs)
    fallback = runner.describe_compile()["fallback"]
    assert fallback and "no compiler here" in fallback
    assert "torch.compile failed, running eager" in caplog.text
    eager = run(ModelRunner(loaded(), "cpu", InferOptions(batch_size=4, topk=3)), inputs)
    np.testing.assert_array_equal(got[0], eager[0])


def test_compile_settings_are_in_the_predictions_metadata(tmp_path, counting_backend):
    from test_inference_run import infer, make_images, make_manifest

    ids = make_images(tmp_path / "images", n=5)
    manifest = make_manifest(tmp_path / "m.parquet", tmp_path / "images", ids)
    assert infer("--data", str(manifest), "--model", "test_resnet", "--weights", "random", "--compile",
                 "--compile-mode", "reduce-overhead", out=tmp_path / "out") == 0
    from mlreassess.results import ResultsLayout
    from mlreassess.inference.sweep import writers

    _, meta = writers.read_predictions(ResultsLayout(tmp_path / "out").prediction("tiny", "test_resnet"))
    assert meta["compile"]["mode"] == "reduce-overhead" and meta["compile"]["fallback"] is None
    assert meta["compile"]["seconds"] >= 0 and len(counting_backend) == 1
