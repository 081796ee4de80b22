"""The study config of `mlreassess run CONFIG.yaml`: schema, defaults and up-front validation.

Every problem is reported before any work starts, as one line naming the config file and the
key (`configs/x.yaml: datasets.imagenet_v1.root: /data/val: no such folder`). Relative paths
resolve against the config file's folder, so a config works from any working directory.

Schema (every section optional except `out` and at least one dataset):

    out: DIR                          # the RESULTS folder of every stage
    datasets:
      imagenet_v1: {root: DIR, name: imagenet_v1, real: FILE|null, skip_bad: false}
      imagenet_v2: {root: DIR, variant: matched-frequency, labels: FILE|null, name: null, skip_bad: false}
      patchml: {boxes: FILE, images: DIR, seeds: [1, 2, 3, 4, 5], counts: null,
                canvas: null, min_box_side: null, source_pattern: null, render: false}
      manifests: [FILE, ...]          # manifests built elsewhere (`mlreassess data`, your own)
    models: [NAME, ...]
    models_file: FILE                 # `NAME [WEIGHTS]` per line, '#' starts a comment
    inference: {device, batch_size, precision, channels_last, compile, topk, weights, workers, crop,
                save_softmax}         # as the `mlreassess infer` options of the same names
    evaluate: true
    report: true
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlreassess.errors import InputError

@dataclass(frozen=True)
class V1Config:
    root: Path
    name: str = "imagenet_v1"
    real: Path | None = None
    skip_bad: bool = False


@dataclass(frozen=True)
class V2Config:
    root: Path
    variant: str = "matched-frequency"
    labels: Path | None = None
    name: str | None = None
    skip_bad: bool = False

    @property
    def dataset(self) -> str:
        return self.name or f"imagenet_v2_{self.variant}"


@dataclass(frozen=True)
class PatchMLConfig:
    boxes: Path
    images: Path  # the source images (canvases are rendered from them)
    seeds: tuple[int, ...] = (1, 2, 3, 4, 5)
    counts: tuple[int, ...] | None = None  # None: the patchml stage's default (the paper's P)
    canvas: int | None = None
    min_box_side: int | None = None
    source_pattern: str | None = None
    render: bool = False  # also write the canvases as PNG files


@dataclass(frozen=True)
class InferenceConfig:
    device: str | None = None
    batch_size: int | None = None
    precision: str | None = None
    channels_last: bool = False
    compile: bool = False
    topk: int | None = None
    weights: str | None = None
    workers: int | None = None
    crop: str | None = None
    save_softmax: bool = False


@dataclass(frozen=True)
class RunConfig:
    source: Path
    out: Path
    v1: V1Config | None = None
    v2: V2Config | None = None
    patchml: PatchMLConfig | None = None
    manifests: tuple[Path, ...] = ()
    models: tuple[str, ...] = ()
    models_file: Path | None = None  # `NAME [WEIGHTS]` per line (mlreassess.inference.models)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    evaluate: bool = True
    report: bool = True


# --- small typed readers: each names the key it reads -------------------------------------------


class _Section:
    """A mapping from the config, read key by key; `done()` rejects keys nobody asked for."""

    def __init__(self, data: Any, key: str, where: Path):
        if not isinstance(data, dict):
            raise InputError(f"{where}: {key or 'top level'}: expected a mapping, got {type(data).__name__}")
        self.data, self.key, self.where, self.seen = data, key, where, set()

    def _name(self, k: str) -> str:
        return f"{self.key}.{k}" if self.key else k

    def error(self, k: str, problem: str) -> InputError:
        return InputError(f"{self.where}: {self._name(k)}: {problem}")

    def raw(self, k: str, default: Any = None, required: bool = False) -> Any:
        self.seen.add(k)
        if self.data.get(k) is None:
            if required:
                raise InputError(f"{self.where}: {self._name(k)}: required key missing")
            return default
        return self.data[k]

    def section(self, k: str) -> "_Section | None":
        value = self.raw(k)
        return None if value is None else _Section(value, self._name(k), self.where)

    def string(self, k: str, default: str | None = None, required: bool = False, choices=None) -> str | None:
        value = self.raw(k, default, required)
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            raise self.error(k, f"expected a non-empty string, got {value!r}")
        if choices is not None and value not in choices:
            raise self.error(k, f"{value!r} is not one of {', '.join(map(str, choices))}")
        return value

    def boolean(self, k: str, default: bool) -> bool:
        value = self.raw(k, default)
        if not isinstance(value, bool):
            raise self.error(k, f"expected true or false, got {value!r}")
        return value

    def integer(self, k: str, default: int | None = None, minimum: int = 1) -> int | None:
        value = self.raw(k, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.error(k, f"expected an integer >= {minimum}, got {value!r}")
        return value

    def int_list(self, k: str, default: tuple[int, ...] | None = None, minimum: int = 0) -> tuple[int, ...] | None:
        value = self.raw(k, default)
        if value is None:
            return None
        if isinstance(value, int) and not isinstance(value, bool):
            value = [value]
        if (
            not isinstance(value, (list, tuple))
            or not value
            or any(isinstance(v, bool) or not isinstance(v, int) or v < minimum for v in value)
        ):
            raise self.error(k, f"expected a non-empty list of integers >= {minimum}, got {value!r}")
        if len(set(value)) != len(value):
            raise self.error(k, f"duplicate values in {list(value)}")
        return tuple(value)

    def path(self, k: str, kind: str, required: bool = False) -> Path | None:
        """A file or folder (`kind` = 'file' | 'dir') that must exist; relative to the config's folder."""
        value = self.string(k, required=required)
        if value is None:
            return None
        path = resolve_path(value, self.where)
        if kind == "dir" and not path.is_dir():
            raise self.error(k, f"{path}: no such folder")
        if kind == "file" and not path.is_file():
            raise self.error(k, f"{path}: no such file")
        return path

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.seen)
        if unknown:
            known = ", ".join(sorted(self.seen))
            raise InputError(f"{self.where}: {self._name(unknown[0])}: unknown key (known here: {known})")


def resolve_path(value: str | os.PathLike, config_file: Path) -> Path:
    """`~` expanded; relative paths taken from the config file's folder (not the working directory)."""
    path = Path(os.path.expanduser(str(value)))
    if not path.is_absolute():
        path = config_file.parent / path
    return Path(os.path.normpath(path.absolute()))


# --- the sections ---------------------------------------------------------------------------------


def _v1(s: _Section) -> V1Config:
    cfg = V1Config(
        root=s.path("root", "dir", required=True),
        name=s.string("name", "imagenet_v1"),
        real=s.path("real", "file"),
        skip_bad=s.boolean("skip_bad", False),
    )
    s.done()
    return cfg


def _v2(s: _Section) -> V2Config:
    from mlreassess.datasets.imagenetv2 import VARIANTS

    cfg = V2Config(
        root=s.path("root", "dir", required=True),
        variant=s.string("variant", "matched-frequency", choices=VARIANTS),
        labels=s.path("labels", "file"),
        name=s.string("name"),
        skip_bad=s.boolean("skip_bad", False),
    )
    s.done()
    return cfg


def _patchml(s: _Section) -> PatchMLConfig:
    cfg = PatchMLConfig(
        boxes=s.path("boxes", "file", required=True),
        images=s.path("images", "dir", required=True),  # inference renders the canvases from them
        seeds=s.int_list("seeds", (1, 2, 3, 4, 5)),
        counts=s.int_list("counts", None, minimum=1),
        canvas=s.integer("canvas"),
        min_box_side=s.integer("min_box_side", minimum=0),
        source_pattern=s.string("source_pattern"),
        render=s.boolean("render", False),
    )
    s.done()
    return cfg


def _manifests(s: _Section) -> tuple[Path, ...]:
    value = s.raw("manifests", [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or any(not isinstance(v, str) or not v for v in value):
        raise s.error("manifests", f"expected a list of manifest files, got {value!r}")
    paths = tuple(resolve_path(v, s.where) for v in value)
    for i, path in enumerate(paths):
        if not path.is_file():
            raise s.error(f"manifests[{i}]", f"{path}: no such file")
    return paths


def _inference(s: _Section | None) -> InferenceConfig:
    if s is None:
        return InferenceConfig()
    cfg = InferenceConfig(
        device=s.string("device"),
        batch_size=s.integer("batch_size"),
        precision=s.string("precision"),
        channels_last=s.boolean("channels_last", False),
        compile=s.boolean("compile", False),
        topk=s.integer("topk"),
        weights=_weights(s),
        workers=s.integer("workers", minimum=0),
        crop=s.string("crop"),
        save_softmax=s.boolean("save_softmax", False),
    )
    for key in ("device", "precision", "crop"):
        _check_infer_choice(s, key, getattr(cfg, key))
    s.done()
    return cfg


def _weights(s: _Section) -> str | None:
    """A weight source; a relative `file:PATH` resolves against the config's folder like every path."""
    value = s.string("weights")
    if value is not None and value.startswith("file:"):
        path = resolve_path(value[len("file:") :], s.where)
        if not path.is_file():
            raise s.error("weights", f"{path}: no such weights file")
        value = f"file:{path}"
    return value


def _check_infer_choice(s: _Section, key: str, value: str | None) -> None:
    """Check `value` against the choices of `mlreassess infer --<key>` (defined there, once)."""
    if value is None:
        return
    import argparse

    from mlreassess.cli.infer import add_model_arguments

    parser = argparse.ArgumentParser(exit_on_error=False)
    add_model_arguments(parser, multiple=True)
    try:
        parser.parse_args([f"--{key.replace('_', '-')}", value])
    except argparse.ArgumentError as exc:
        raise s.error(key, exc.message) from None


def parse_config(data: Any, source: Path) -> RunConfig:
    """Validate a loaded YAML document; `source` is the file (for messages and relative paths)."""
    top = _Section(data if data is not None else {}, "", source)
    out = resolve_path(top.string("out", required=True), source)
    datasets = top.section("datasets")
    if datasets is None:
        raise InputError(f"{source}: datasets: required key missing (imagenet_v1, imagenet_v2 and/or patchml)")
    v1 = _v1(datasets.section("imagenet_v1")) if datasets.raw("imagenet_v1") is not None else None
    v2 = _v2(datasets.section("imagenet_v2")) if datasets.raw("imagenet_v2") is not None else None
    pml = _patchml(datasets.section("patchml")) if datasets.raw("patchml") is not None else None
    manifests = _manifests(datasets)
    datasets.done()
    if not (v1 or v2 or pml or manifests):
        raise InputError(f"{source}: datasets: empty (give imagenet_v1, imagenet_v2, patchml and/or manifests)")

    models = top.raw("models", [])
    if isinstance(models, str):
        models = [models]
    if not isinstance(models, list) or any(not isinstance(m, str) or not m.strip() for m in models):
        raise InputError(f"{source}: models: expected a list of model names, got {models!r}")
    models_file = top.path("models_file", "file")
    if not models and models_file is None:
        raise InputError(f"{source}: models: no models (give `models` and/or `models_file`)")

    cfg = RunConfig(
        source=source,
        out=out,
        v1=v1,
        v2=v2,
        patchml=pml,
        manifests=manifests,
        models=tuple(m.strip() for m in models),
        models_file=models_file,
        inference=_inference(top.section("inference")),
        evaluate=top.boolean("evaluate", True),
        report=top.boolean("report", True),
    )
    if cfg.report and not cfg.evaluate:
        raise InputError(f"{source}: report: true needs evaluate: true (the report reads metrics.parquet)")
    top.done()
    return cfg


def load_config(path: str | os.PathLike) -> RunConfig:
    """Read and validate a YAML config file."""
    import yaml

    path = Path(path).absolute()
    if not path.is_file():
        raise InputError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        raise InputError(f"{path}: not valid YAML{at} ({getattr(exc, 'problem', exc)})") from None
    return parse_config(data, path)
