"""`inference.model_runner`: the exact one-topk top-k, weights cast once (bit-identical to autocast),
compile once per model (own code object, static padded batches), and a fallback to eager that is
reported. Compiles use dynamo with the "eager" backend or a counting backend: no code generation."""

from __future__ import annotations

import copy
import logging
from pathlib import Path

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


# ---- out of memory, compile limits, CUDA errors ------------------------------------------------


def _batch_of(example_inputs) -> int:
    """The batch of the graph's input images (the other inputs are the module's parameters)."""
    return next(t.shape[0] for t in example_inputs if isinstance(t, torch.Tensor) and tuple(t.shape[1:]) == (3, 32, 32))


def _oom_above(limit: int, chained: bool):
    """A dynamo backend that runs graphs of at most `limit` samples and raises an out-of-memory error
    at compile time for larger ones (dynamo wraps it), typed or (`chained`) as the cause of another
    error, recording the batch of each compile."""
    compiled = []

    def backend(gm, example_inputs, **_):
        batch = _batch_of(example_inputs)
        compiled.append(batch)
        if batch > limit:
            oom = torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate 2.00 GiB (batch {batch})")
            if chained:
                raise RuntimeError("autotuning a kernel failed") from oom
            raise oom
        return gm.forward

    return backend, compiled


@pytest.mark.parametrize("chained", [False, True])
def test_an_out_of_memory_inside_the_first_compile_halves_the_batch_and_stays_compiled(monkeypatch, caplog, chained):
    """dynamo wraps an error raised while compiling (BackendCompilerFailed): an out-of-memory one must
    be taken as out of memory (retry smaller), not as a failed compile (eager for good, wrong reason)."""
    backend, compiled = _oom_above(4, chained)
    monkeypatch.setattr(MR, "COMPILE_BACKEND", backend)
    runner = ModelRunner(loaded(), "cpu", InferOptions(batch_size=8, topk=5, compile=True))
    with caplog.at_level(logging.WARNING):
        runner.warm_up(32, 32)
        got = run(runner, batches([8, 8, 3]))
    info = runner.describe_compile()
    assert info["fallback"] is None and "running eager" not in caplog.text
    assert compiled == [8, 4] and runner.state["chunk"] == 4 and info["batch_sizes"] == [8, 4]  # one recompile
    assert "out of memory at batch 8: retrying with batch 4" in caplog.text
    eager = run(ModelRunner(loaded(), "cpu", InferOptions(batch_size=8, topk=5)), batches([8, 8, 3]))
    np.testing.assert_array_equal(got[0], eager[0])


def test_an_out_of_memory_when_a_compiled_graph_runs_recompiles_once_for_the_smaller_batch(monkeypatch):
    """Raised by the compiled code itself (not wrapped): the batch halves, the model compiles once
    for that static shape, and every later batch (full or short) is split or padded to it."""
    compiled = []

    def backend(gm, example_inputs, **_):
        batch = _batch_of(example_inputs)
        compiled.append(batch)

        def forward(*args):
            if batch > 2:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")
            return gm.forward(*args)
        return forward

    monkeypatch.setattr(MR, "COMPILE_BACKEND", backend)
    runner = ModelRunner(loaded(), "cpu", InferOptions(batch_size=8, topk=5, compile=True))
    got = run(runner, batches([8, 8, 3, 1]))
    assert compiled == [8, 4, 2] and runner.state["chunk"] == 2  # two halvings, never one compile per batch
    assert runner.describe_compile()["fallback"] is None
    eager = run(ModelRunner(loaded(), "cpu", InferOptions(batch_size=8, topk=5)), batches([8, 8, 3, 1]))
    np.testing.assert_array_equal(got[0], eager[0])


class RaisesAbove(torch.nn.Module):
    """test_resnet that raises `error` for batches above `limit` (an eager model out of memory)."""

    def __init__(self, limit: int, error: Exception):
        super().__init__()
        self.inner, self.limit, self.error, self.calls = timm.create_model("test_resnet").eval(), limit, error, []

    def forward(self, x):
        self.calls.append(len(x))
        if len(x) > self.limit:
            raise self.error
        return self.inner(x)


def _raising_runner(limit: int, error: Exception, **opts) -> ModelRunner:
    model = loaded()
    module = RaisesAbove(limit, error)
    return ModelRunner(LoadedModel(model.spec, module, "random", model.data_config), "cpu",
                       InferOptions(batch_size=8, topk=3, **opts))


@pytest.mark.parametrize("error", [torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB"),
                                   RuntimeError("CUDA error: out of memory")])  # typed, and as older code raises it
def test_an_eager_out_of_memory_halves_the_batch_for_good(error):
    runner = _raising_runner(2, error)
    idx, _, _ = run(runner, batches([8, 5]))
    assert len(idx) == 13 and runner.state["chunk"] == 2
    assert runner.module.calls == [8, 4, 2, 2, 2, 2, 2, 2, 1]  # 8 fails, 4 fails, then chunks of 2 (5 = 2+2+1)


def test_a_warm_up_that_must_not_shrink_says_no_room_and_keeps_the_batch():
    """A model loaded beside others: out of memory means the others hold the memory, not that its
    batch is too large; halving it would keep it halved for the whole sweep."""
    runner = _raising_runner(4, torch.OutOfMemoryError("CUDA out of memory"), compile=False)
    with pytest.raises(MR.NoRoom, match="out of memory at batch 8"):
        runner.warm_up(32, 32, shrink=False)
    assert runner.state["chunk"] == 8
    runner.warm_up(32, 32)  # alone (its own pass): it may shrink
    assert runner.state["chunk"] == 4


@pytest.mark.parametrize("error", [torch.AcceleratorError("CUDA error: an illegal memory access was encountered"),
                                   RuntimeError("CUDA error: device-side assert triggered")])
def test_a_cuda_error_inside_a_compile_is_not_taken_for_a_failed_compile(monkeypatch, error):
    def backend(gm, example_inputs, **_):
        raise error

    monkeypatch.setattr(MR, "COMPILE_BACKEND", backend)
    runner = ModelRunner(loaded(), "cpu", InferOptions(batch_size=4, topk=3, compile=True))
    with pytest.raises(Exception) as info:
        run(runner, batches([4]))
    assert runner.describe_compile()["fallback"] is None and str(error) in str(info.value)


class Block(torch.nn.Module):
    """A block with a graph break in its forward: dynamo compiles the frames of `Block.forward`
    separately, and that code object is shared by every model made of blocks (timm's ViTs)."""

    def __init__(self, width: int):
        super().__init__()
        self.fc = torch.nn.Linear(width, width)

    def forward(self, x):
        x = self.fc(x)
        torch._dynamo.graph_break()
        return x.relu()


class Blocks(torch.nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.stem = torch.nn.Conv2d(3, width, 3)
        self.blocks = torch.nn.Sequential(Block(width), Block(width))
        self.head = torch.nn.Linear(width, 1000)

    def forward(self, x):
        return self.head(self.blocks(self.stem(x).mean((2, 3))))


def test_a_graph_break_in_a_code_object_many_models_share_does_not_exhaust_dynamos_limit(counting_backend):
    """Every model of another width adds a graph to the shared `Block.forward`: with dynamo's default
    limit (8) the ninth such model would fail to compile and run eager."""
    from torch._dynamo.eval_frame import _debug_get_cache_entry_list

    opts = InferOptions(batch_size=2, topk=1, compile=True)
    cfg = {"input_size": (3, 16, 16), "interpolation": "bilinear", "mean": (0.5,) * 3, "std": (0.5,) * 3}
    runners = [ModelRunner(LoadedModel(ModelSpec(f"blocks{w}", "random"), Blocks(w).eval(), "random", cfg), "cpu", opts)
               for w in range(3, 15)]
    inputs = [torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)]
    for r in runners:
        run(r, inputs)
    assert all(r.describe_compile()["fallback"] is None for r in runners)
    assert len(_debug_get_cache_entry_list(Block.forward.__code__)) >= 12 > 8  # the shared code object's graphs


def test_out_of_memory_and_fatal_cuda_errors_are_told_apart_also_when_wrapped():
    from torch._dynamo.exc import BackendCompilerFailed

    from mlreassess.inference.input.devices import fatal_device_error, out_of_memory

    oom = torch.OutOfMemoryError("CUDA out of memory")
    wrapped = BackendCompilerFailed(lambda *a: None, oom, None)
    # (recent torch makes the wrapper itself an OutOfMemoryError; older versions only hold one)
    found = out_of_memory(wrapped)
    assert isinstance(found, torch.OutOfMemoryError) and "CUDA out of memory" in str(found)
    assert not fatal_device_error(wrapped)
    try:
        try:
            raise oom
        except torch.OutOfMemoryError as exc:
            raise RuntimeError("while compiling") from exc
    except RuntimeError as chained:
        assert out_of_memory(chained) is oom
    illegal = torch.AcceleratorError("CUDA error: an illegal memory access was encountered")
    assert fatal_device_error(BackendCompilerFailed(lambda *a: None, illegal, None)) and out_of_memory(illegal) is None
    assert fatal_device_error(RuntimeError("cuDNN error: CUDNN_STATUS_EXECUTION_FAILED"))
    assert not fatal_device_error(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not fatal_device_error(ValueError("CUDA error text in a value error is not a CUDA error"))
    assert isinstance(out_of_memory(RuntimeError("CUDA error: out of memory")), torch.OutOfMemoryError)


# ---- CUDA ----------------------------------------------------------------------------------------

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


class HugeAbove(torch.nn.Module):
    """test_resnet that asks the CUDA caching allocator for a pebibyte above `limit` samples: a real,
    typed out-of-memory error."""

    def __init__(self, limit: int):
        super().__init__()
        self.inner, self.limit = timm.create_model("test_resnet").eval(), limit

    def forward(self, x):
        if len(x) > self.limit:
            torch.empty(1 << 50, dtype=torch.uint8, device=x.device)
        return self.inner(x)


@CUDA
@pytest.mark.gpu
def test_on_cuda_a_real_out_of_memory_halves_the_batch_and_gives_the_same_top_k():
    model = loaded()
    module = HugeAbove(2)
    module.inner.load_state_dict(model.module.state_dict())
    runner = ModelRunner(LoadedModel(model.spec, module, "random", model.data_config), "cuda",
                         InferOptions(batch_size=8, topk=5))
    got = run(runner, batches([8, 5]))
    assert runner.state["chunk"] == 2
    want = run(ModelRunner(loaded(), "cuda", InferOptions(batch_size=8, topk=5)), batches([8, 5]))
    np.testing.assert_array_equal(got[0], want[0])


DEVICE_ASSERT = """
import json, sys, torch
from mlreassess.inference.models.sources.in_memory import spec_for
from mlreassess.inference.sweep import runner
from mlreassess.options import InferOptions

class OutOfBounds(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(3, 1000)

    def forward(self, x):
        torch.zeros(4, device=x.device)[torch.full((1,), 10**6, device=x.device)].sum()  # a device-side assert
        return self.fc(x.mean((2, 3)))

cfg = {"input_size": (3, 32, 32), "interpolation": "bilinear", "mean": (0.5,) * 3, "std": (0.5,) * 3}
try:
    runner.run([sys.argv[1]], [spec_for(OutOfBounds(), "oob", cfg)], sys.argv[2],
               InferOptions(device="cuda", batch_size=4, workers=0, progress=False))
except Exception as exc:
    print(json.dumps({"type": type(exc).__name__, "message": str(exc)}))
"""


@CUDA
@pytest.mark.gpu
def test_on_cuda_a_device_side_assert_stops_the_sweep_in_one_line_naming_the_model(tmp_path):
    """A real sticky CUDA error, in a process of its own (it leaves that process's CUDA unusable)."""
    import json
    import os
    import subprocess
    import sys

    from test_inference_run import make_images, make_manifest

    from mlreassess.results import ResultsLayout

    manifest = make_manifest(tmp_path / "m.parquet", tmp_path / "images", make_images(tmp_path / "images", n=6))
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", DEVICE_ASSERT, str(manifest), str(tmp_path / "out")],
                          capture_output=True, text=True, env=env, timeout=300)
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    assert outcome["type"] == "DeviceFault" and "model 'oob'" in outcome["message"], done.stderr[-2000:]
    assert "\n" not in outcome["message"]
    (entry,) = [json.loads(line) for line in ResultsLayout(tmp_path / "out").failures.read_text().splitlines()]
    assert entry["model"] == "oob" and "CUDA error" in entry["error"]
