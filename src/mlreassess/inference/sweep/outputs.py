"""What a predictions file records about its run (`run_meta`), the models of a pass as loaded
(`Loaded`), and the summary of a sweep."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import timm
import torch

from mlreassess.datasets.manifest import Manifest
from mlreassess.inference.input.preprocess import Preprocess
from mlreassess.inference.models.model_runner import ModelRunner
from mlreassess.options import InferOptions



@dataclass
class Summary:
    done: list[tuple[str, str]] = field(default_factory=list)  # (dataset, model)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str, str]] = field(default_factory=list)  # (dataset, model, error)
    images: int = 0  # samples predicted, summed over models
    passes: int = 0  # model-major passes (each loads its models once)
    dataset_passes: int = 0  # datasets streamed through a pass (each decodes the dataset once)
    elapsed_s: float = 0.0

    def merge(self, other: "Summary") -> None:
        self.done += other.done
        self.skipped += other.skipped
        self.failed += other.failed
        self.images += other.images
        self.passes += other.passes
        self.dataset_passes += other.dataset_passes

    def lines(self) -> list[str]:
        rate = self.images / self.elapsed_s if self.elapsed_s > 0 else 0.0
        out = [
            f"infer: {len(self.done)} done, {len(self.skipped)} skipped, {len(self.failed)} failed in "
            f"{self.passes} pass{'es' if self.passes != 1 else ''} ({self.dataset_passes} dataset decodes); "
            f"{self.images:,} images in {self.elapsed_s:.1f} s ({rate:.1f} images/s over all models)"
        ]
        out += [f"  failed: {m} on {d}: {e}" for d, m, e in sorted(self.failed)]
        return out


def run_meta(loaded: Loaded, manifest: Manifest, preprocess: Preprocess, opts: InferOptions, elapsed_s: float,
          n: int, failed: list[dict], world: int) -> dict[str, Any]:
    runner = loaded.runner
    cfg = runner.loaded.data_config
    return {
        "model": runner.name,
        "dataset": manifest.name,
        "dataset_kind": manifest.kind,
        "manifest": str(manifest.source.resolve()) if manifest.source else None,
        "weights": runner.loaded.weights,
        "input_size": [int(v) for v in cfg["input_size"]],
        "interpolation": preprocess.interpolation,
        "mean": [float(v) for v in cfg["mean"]],
        "std": [float(v) for v in cfg["std"]],
        "crop": preprocess.crop,
        "crop_pct": preprocess.crop_pct,
        "test_input_size": opts.test_input_size,
        "checkpoint_key": opts.checkpoint_key if runner.loaded.spec.weights.startswith("file:") else None,
        "precision": opts.precision,
        "weights_cast_once": runner.cast_tensors,
        "weights_bytes": runner.weights_bytes,
        "activation_bytes": runner.activation_bytes,
        "channels_last": opts.channels_last,
        "compile": runner.describe_compile(),
        "load_s": round(loaded.load_s, 3),
        "batch_size": opts.batch_size,
        "forward_batch_size": runner.state["chunk"],
        "device": runner.device,
        "topk": opts.topk,
        "torch": torch.__version__,
        "timm": timm.__version__,
        "elapsed_s": round(elapsed_s, 3),
        "images_per_s": round(n / elapsed_s, 2) if elapsed_s > 0 else None,
        "failed_samples": failed,
        "world_size": world,
        "pid": os.getpid(),
    }


@dataclass
class Loaded:
    """A model of the pass on the device, and how long its build (and warm-up) took."""

    runner: ModelRunner
    load_s: float
