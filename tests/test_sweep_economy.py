"""The sweep's economics on the CPU: small groups sharing one decode, compile where it pays, models
built ahead in order."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image

from mlreassess.inference.input.preprocess import Preprocess, SharedDecode, decode_of
from mlreassess.inference.models.registry import LoadedModel, ModelSpec
from mlreassess.inference.sweep import passes
from mlreassess.inference.sweep.builds import Builds
from mlreassess.inference.sweep.compile_rule import CACHED_COMPILE_SHARE, DEFAULT_COMPILE_S, Tables, compile_choices
from mlreassess.inference.sweep.passes import Unit, make_passes
from mlreassess.inference.sweep.stream import runners_for
from mlreassess.options import InferOptions

P224, P160, P288 = Preprocess(224, 224, "bicubic"), Preprocess(160, 160, "bilinear"), Preprocess(288, 288, "bicubic")


# ---- one decode for several groups ------------------------------------------------------------------


def test_a_shared_decode_gives_each_group_exactly_its_own_pixels():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (97, 131, 3), dtype=np.uint8))
    center = Preprocess(96, 96, "bicubic", "center", 0.875, "center")
    decode = decode_of([P224, center, P160, P224])
    assert decode.parts == (center, P160, P224)  # distinct, in Preprocess order
    batch = torch.stack([decode(image), decode(image.transpose(Image.FLIP_LEFT_RIGHT))])
    assert batch.shape == (2, 3, 1, decode.width)  # one image to the pipeline and its batch slots
    for part in decode.parts:
        own = torch.stack([part(image), part(image.transpose(Image.FLIP_LEFT_RIGHT))])
        assert torch.equal(decode.part(batch, part), own)
    assert decode_of([P224]) is P224  # one group: its own decode
    with pytest.raises(KeyError):
        decode.part(batch, P288)


class _Seen:
    def __init__(self, name):
        self.name, self.device, self.shapes = name, "cpu", []

    def predict(self, x):
        self.shapes.append(tuple(x.shape))


def test_each_model_of_a_shared_pass_is_fed_its_groups_part():
    decode = SharedDecode((P160, P224))
    a, b, c = _Seen("a"), _Seen("b"), _Seen("c")
    batch = torch.zeros((4, 3, 1, decode.width), dtype=torch.uint8)
    for r in runners_for(decode, [(a, P160), (b, P224), (c, P224)]):
        r.predict(batch)
    assert (a.shapes, b.shapes, c.shapes) == ([(4, 3, 160, 160)], [(4, 3, 224, 224)], [(4, 3, 224, 224)])
    assert runners_for(P224, [(b, P224)]) == [b]  # a group's own decode: the runners as they are


def _units(groups: dict[Preprocess, int], datasets=(0, 1)) -> list[Unit]:
    return [Unit(d, ModelSpec(f"{prep.interpolation}{prep.height}_{n}", "random"), prep)
            for prep, count in groups.items() for n in range(count) for d in datasets]


def test_small_groups_join_a_pass_instead_of_decoding_alone():
    big = Preprocess(224, 224, "bilinear")
    units = _units({big: 6, P160: 2, P288: 3, Preprocess(256, 256, "bicubic"): 1})
    shared = make_passes(units, 11)
    apart = make_passes(units, 11, share_decode=False)
    assert len(apart) == 4 and len(shared) < len(apart)
    assert sum(len(p.units) for p in shared) == len(units)
    for p in shared:  # every pass's groups are its decode's parts, within the pixel cap
        preps = {u.preprocess for u in p.units}
        assert set(p.preprocess.parts if isinstance(p.preprocess, SharedDecode) else [p.preprocess]) == preps
        assert sum(q.height * q.width for q in preps) <= passes.SHARED_DECODE_MAX_PIXELS
    # The large group (more than SHARED_DECODE_MAX_MODELS models) hosts, guests largest images first,
    # while its pass has room for their models (6 + 3 + 1 of 11): the last opens a pass of its own.
    assert [{u.preprocess for u in p.units} for p in shared] == [{big, P288, Preprocess(256, 256, "bicubic")}, {P160}]


def test_a_guest_never_makes_a_pass_exceed_its_model_count():
    units = _units({P224: 4, P160: 3})
    assert [len(p.models) for p in make_passes(units, 5)] == [4, 3]  # 4 + 3 > 5: P160 decodes alone
    assert [len(p.models) for p in make_passes(units, 7)] == [7]


def test_one_model_passes_decode_for_their_own_group():
    shared = make_passes(_units({P224: 4, P160: 1}), 10)
    assert isinstance(shared[0].preprocess, SharedDecode)
    assert [p.preprocess for p in passes.one_model_passes(shared)] == [P224] * 4 + [P160]


def test_tags_of_one_architecture_load_one_after_another():
    names = ["resnet50.b", "convnext_tiny.a", "resnet50.a", "convnext_tiny.b", "resnet18.a"]
    units = [Unit(0, ModelSpec(n, "random"), P224) for n in names]
    assert [m.name for m in make_passes(units, 10)[0].models] == [
        "convnext_tiny.a", "convnext_tiny.b", "resnet18.a", "resnet50.a", "resnet50.b"]


# ---- compile where it pays ----------------------------------------------------------------------------


def _choices(models: list[str], images: int, eager: dict, compiled: dict, compile_s: dict | None = None,
             when: str = "pays"):
    units = [Unit(0, ModelSpec(n, "random"), P224) for n in models]
    tables = Tables({a: {224: r} for a, r in eager.items()}, {a: {224: r} for a, r in compiled.items()},
                    {a: {224: s} for a, s in (compile_s or {}).items()})
    opts = InferOptions(compile=True, compile_when=when)
    return compile_choices(make_passes(units, 10), [range(images)], opts, tables)


def test_a_model_compiles_when_its_saved_forward_time_exceeds_its_compile_time():
    # 100,000 images: 1000 s eager, 500 s compiled: 500 s saved > 60 s; the fast model saves 5 s.
    got = _choices(["big.a", "fast.a"], 100_000, {"big": 100, "fast": 10_000}, {"big": 200, "fast": 20_000})
    assert got["big.a"].compile and got["big.a"].cost_s == DEFAULT_COMPILE_S
    assert not got["fast.a"].compile and got["fast.a"].saved_s == pytest.approx(5.0)
    assert _choices(["big.a"], 100_000, {"big": 100}, {"big": 200}, {"big": 600})["big.a"].compile is False


def test_the_tags_of_one_architecture_are_decided_together_the_later_ones_cheaper():
    # Each tag alone saves 50 s (< 60 s); three together save 150 s against 60 + 2 x 15 s of compiles.
    got = _choices(["mid.a", "mid.b", "mid.c"], 10_000, {"mid": 100}, {"mid": 200})
    assert all(c.compile for c in got.values())
    assert [got[m].cost_s for m in ("mid.a", "mid.b", "mid.c")] == [
        DEFAULT_COMPILE_S, DEFAULT_COMPILE_S * CACHED_COMPILE_SHARE, DEFAULT_COMPILE_S * CACHED_COMPILE_SHARE]
    assert not _choices(["mid.a"], 10_000, {"mid": 100}, {"mid": 200})["mid.a"].compile


def test_a_model_missing_from_a_table_compiles_as_asked_and_always_compiles_every_model():
    assert _choices(["other.a"], 10, {"big": 100}, {"big": 200})["other.a"].compile
    assert _choices(["fast.a"], 10, {"fast": 1e6}, {"fast": 2e6}, when="always")["fast.a"].compile


# ---- models built ahead -----------------------------------------------------------------------------


class _Maker:
    """A build that records its order (and fails for `fail`)."""

    def __init__(self, fail: str = ""):
        self.order, self.fail = [], fail

    def __call__(self, spec: ModelSpec) -> LoadedModel:
        self.order.append(spec.name)
        if spec.name == self.fail:
            raise OSError(f"{spec.name}: no weights")
        return LoadedModel(spec, torch.nn.Linear(4, 4), "random", {})


def _wait_for(cond, seconds: float = 10.0) -> None:
    end = time.monotonic() + seconds
    while not cond() and time.monotonic() < end:
        time.sleep(0.01)


def test_models_are_built_ahead_in_the_order_the_passes_load_them():
    a, b, c, d = (ModelSpec(n, "random") for n in "abcd")
    make = _Maker(fail="c")
    builds = Builds(make, budget_bytes=0)  # no memory for waiting models: one built ahead at a time
    try:
        builds.expect([a, b, c, d])
        _wait_for(lambda: make.order == ["a"])
        time.sleep(0.1)
        assert make.order == ["a"]  # b waits until a is taken
        assert builds.take(a).spec == a
        _wait_for(lambda: len(make.order) == 2)
        with pytest.raises(OSError, match="c: no weights"):
            builds.take(c)  # b, never taken, is dropped; c's error comes at its take, as a load error
        assert builds.take(d).spec == d
        assert make.order == ["a", "b", "c", "d"]
        assert builds.take(b).spec == b and make.order[-1] == "b"  # no longer expected: built here
        assert set(builds.seconds) == {"a", "b", "c", "d"}
    finally:
        builds.close()


def test_close_waits_for_the_builder_thread_to_end():
    """A builder thread left alive at interpreter exit aborted `infer` after it had finished (rc 134,
    "terminate called without an active exception"), one run in two: close joins it, also mid-build."""
    started, release = threading.Event(), threading.Event()

    def slow(spec: ModelSpec) -> LoadedModel:
        started.set()
        release.wait(5)
        return LoadedModel(spec, torch.nn.Linear(2, 2), "random", {})

    builds = Builds(slow)
    builds.expect([ModelSpec("a", "random")])
    assert started.wait(5)
    threading.Timer(0.2, release.set).start()
    builds.close()  # returns once the build under way has finished
    assert release.is_set() and not builds._thread.is_alive()


def test_infer_with_build_ahead_exits_cleanly_every_time(tmp_path, write_jpeg):
    """The whole CLI in a fresh process, five times: exit status 0 each time (the abort came at exit)."""
    import subprocess
    import sys

    images = tmp_path / "images"
    for i in range(4):
        write_jpeg(images / f"n01440764_{i}.JPEG")
    manifest = tmp_path / "m.parquet"
    from mlreassess.datasets.manifest import base_meta, core_table, write_manifest
    ids = [f"s{i}" for i in range(4)]
    write_manifest(manifest, core_table(ids, [f"n01440764_{i}.JPEG" for i in range(4)], [0] * 4, [[0]] * 4),
                   base_meta("imagenet_v1", "tiny", images))
    for run in range(5):
        proc = subprocess.run([sys.executable, "-m", "mlreassess", "infer", "--data", str(manifest), "--model", "resnet18",
                               "--weights", "random", "--out", str(tmp_path / f"R{run}"), "--device", "cpu", "--workers", "0",
                               "--no-progress"], capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert proc.returncode == 0, proc.stderr[-2000:]
