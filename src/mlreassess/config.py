"""The study config of `mlreassess run CONFIG.yaml`: schema, defaults and up-front validation.

Every problem is reported before any work starts, as one line naming the config file and the
key (`configs/x.yaml: datasets.imagenet_v1.root: /data/val: no such folder`). Relative paths
resolve against the config file's folder, so a config works from any working directory.

Schema (every section optional except `out` and at least one dataset):

    out: DIR                          # the RESULTS folder of every stage
    datasets:
      imagenet_v1: {root: DIR, ...}   # the `mlreassess data imagenet-val` options
      imagenet_v2: {root: DIR, ...}   # the `mlreassess data imagenetv2` options
      patchml: {boxes: FILE, images: DIR, seeds: [1, 2, 3, 4, 5], render: false, ...}
                                      # the `mlreassess patchml` options, `seeds` for `--seed`
      manifests: [FILE, ...]          # manifests built elsewhere (`mlreassess data`, your own)
    models: [NAME, ...]
    models_file: FILE                 # `NAME [WEIGHTS]` per line, '#' starts a comment
    inference: {...}                  # the `mlreassess infer` options
    evaluate: true | false | {...}    # the `mlreassess evaluate` options
    report: true

Keys are the options' names with '_' for '-' (`--batch-size` -> `batch_size`); their types,
choices, defaults and bounds come from `mlreassess.options`, the one schema the CLI also uses.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mlreassess.constants import PATCHML_DEFAULT_SEEDS
from mlreassess.errors import InputError, short_repr
from mlreassess.io import read_text
from mlreassess.options import (
    EvaluateOptions,
    ImagenetV2Options,
    ImagenetValOptions,
    InferOptions,
    Option,
    PatchMLOptions,
    options_of,
    problem,
)

# Caps on the YAML document, so an alias bomb or a huge file stops with one line, not a hang.
MAX_CONFIG_BYTES = 1 << 20
MAX_CONFIG_NODES = 100_000


@dataclass(frozen=True)
class PatchMLConfig:
    """The PatchML sets of a study: one per seed, all with the same other options."""

    options: PatchMLOptions  # made with the first seed; `for_seed` gives the others
    seeds: tuple[int, ...] = PATCHML_DEFAULT_SEEDS
    render: bool = False  # also write the canvases as PNG files

    def for_seed(self, seed: int) -> PatchMLOptions:
        return dataclasses.replace(self.options, seed=seed)


@dataclass(frozen=True)
class RunConfig:
    source: Path
    out: Path
    v1: ImagenetValOptions | None = None
    v2: ImagenetV2Options | None = None
    patchml: PatchMLConfig | None = None
    manifests: tuple[Path, ...] = ()
    models: tuple[str, ...] = ()
    models_file: Path | None = None  # `NAME [WEIGHTS]` per line (mlreassess.inference.models.registry)
    inference: InferOptions = field(default_factory=InferOptions)
    evaluate: EvaluateOptions | None = field(default_factory=EvaluateOptions)  # None: no evaluate step
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

    def string(self, k: str, default: str | None = None, required: bool = False) -> str | None:
        value = self.raw(k, default, required)
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            raise self.error(k, f"expected a non-empty string, got {short_repr(value)}")
        return value

    def boolean(self, k: str, default: bool) -> bool:
        value = self.raw(k, default)
        if not isinstance(value, bool):
            raise self.error(k, f"expected true or false, got {short_repr(value)}")
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
            raise self.error(k, f"expected a non-empty list of integers >= {minimum}, got {short_repr(value)}")
        if len(set(value)) != len(value):
            raise self.error(k, f"duplicate values in {list(value)}")
        return tuple(value)

    def path(self, k: str, kind: str, required: bool = False) -> Path | None:
        """A file or folder (`kind` = 'file' | 'dir') that must exist; relative to the config's folder."""
        value = self.string(k, required=required)
        return None if value is None else self.existing(k, value, kind)

    def existing(self, k: str, value: str, kind: str) -> Path:
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


def _option_value(s: _Section, opt: Option) -> Any:
    """One schema option from the YAML section: type, choices and bounds checked, paths resolved."""
    value = s.raw(opt.name)
    if value is None:  # absent: the schema's default, unless it has none
        if opt.default is None and not opt.optional:
            raise s.error(opt.name, "required key missing")
        return None
    if opt.base is tuple and isinstance(value, int) and not isinstance(value, bool):
        value = (value,)
    elif opt.base is tuple and isinstance(value, list):
        value = tuple(value)
    if opt.spec.path is not None and isinstance(value, str) and value and value not in opt.spec.words:
        value = str(s.existing(opt.name, value, opt.spec.path))
    bad = problem(opt, value)
    if bad:
        raise s.error(opt.name, bad)
    return value


def read_options(s: _Section, cls: type, **given: Any) -> Any:
    """An instance of schema `cls` from the YAML keys of its options (`given` fills the others)."""
    values = {o.name: _option_value(s, o) for o in options_of(cls) if o.spec.yaml and o.name not in given}
    try:
        return cls(**{k: v for k, v in values.items() if v is not None}, **given)
    except InputError as exc:  # a check across keys (a name, a pattern): still name the file and section
        raise InputError(f"{s.where}: {s.key}: {exc}") from None


def _patchml(s: _Section) -> PatchMLConfig:
    seeds = s.int_list("seeds", PATCHML_DEFAULT_SEEDS)
    render = s.boolean("render", False)
    if s.raw("images") is None:  # inference renders the canvases from the source images
        raise s.error("images", "required key missing")
    cfg = PatchMLConfig(read_options(s, PatchMLOptions, seed=seeds[0]), seeds, render)
    s.done()
    return cfg


def _section(s: _Section | None, cls: type, **given: Any) -> Any:
    if s is None:
        return cls(**given)
    options = read_options(s, cls, **given)
    s.done()
    return options


def _manifests(s: _Section) -> tuple[Path, ...]:
    value = s.raw("manifests", [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or any(not isinstance(v, str) or not v for v in value):
        raise s.error("manifests", f"expected a list of manifest files, got {short_repr(value)}")
    return tuple(s.existing(f"manifests[{i}]", v, "file") for i, v in enumerate(value))


def _inference(s: _Section | None) -> InferOptions:
    """The `inference:` section; a relative `file:PATH` weight source resolves like every path."""
    weights = s.string("weights") if s is not None else None
    if weights is not None and weights.startswith("file:"):
        path = resolve_path(weights[len("file:") :], s.where)
        if not path.is_file():
            raise s.error("weights", f"{path}: no such weights file")
        weights = f"file:{path}"
    return _section(s, InferOptions, **({"weights": weights} if weights else {}))


def _evaluate(top: _Section) -> EvaluateOptions | None:
    """`evaluate: true | false | {bootstrap, ci, seed, min_group_n}`."""
    value = top.raw("evaluate", True)
    if isinstance(value, bool):
        return EvaluateOptions() if value else None
    return _section(top.section("evaluate"), EvaluateOptions)


def _datasets(top: _Section, source: Path) -> dict[str, Any]:
    datasets = top.section("datasets")
    if datasets is None:
        raise InputError(f"{source}: datasets: required key missing (imagenet_v1, imagenet_v2 and/or patchml)")
    found = {
        "v1": _section(datasets.section("imagenet_v1"), ImagenetValOptions) if datasets.raw("imagenet_v1") is not None else None,
        "v2": _section(datasets.section("imagenet_v2"), ImagenetV2Options) if datasets.raw("imagenet_v2") is not None else None,
        "patchml": _patchml(datasets.section("patchml")) if datasets.raw("patchml") is not None else None,
        "manifests": _manifests(datasets),
    }
    datasets.done()
    if not any(found.values()):
        raise InputError(f"{source}: datasets: empty (give imagenet_v1, imagenet_v2, patchml and/or manifests)")
    return found


def _models(top: _Section, source: Path) -> dict[str, Any]:
    models = top.raw("models", [])
    if isinstance(models, str):
        models = [models]
    if not isinstance(models, list) or any(not isinstance(m, str) or not m.strip() for m in models):
        raise InputError(f"{source}: models: expected a list of model names, got {short_repr(models)}")
    models_file = top.path("models_file", "file")
    if not models and models_file is None:
        raise InputError(f"{source}: models: no models (give `models` and/or `models_file`)")
    return {"models": tuple(m.strip() for m in models), "models_file": models_file}


def parse_config(data: Any, source: Path) -> RunConfig:
    """Validate a loaded YAML document; `source` is the file (for messages and relative paths)."""
    top = _Section(data if data is not None else {}, "", source)
    out = resolve_path(top.string("out", required=True), source)
    cfg = RunConfig(
        source=source,
        out=out,
        **_datasets(top, source),
        **_models(top, source),
        inference=_inference(top.section("inference")),
        evaluate=_evaluate(top),
        report=top.boolean("report", True),
    )
    if cfg.report and cfg.evaluate is None:
        raise InputError(f"{source}: report: true needs evaluate: true (the report reads metrics.parquet)")
    top.done()
    return cfg


def _count_nodes(node: yaml.Node, limit: int) -> int:
    """Nodes of the document with aliases expanded (each alias counts its whole subtree again)."""
    total, stack = 0, [node]
    while stack:
        n = stack.pop()
        total += 1
        if total > limit:
            return total
        if isinstance(n, yaml.SequenceNode):
            stack.extend(n.value)
        elif isinstance(n, yaml.MappingNode):
            stack.extend(x for pair in n.value for x in pair)
    return total


def _first_duplicate_key(node: yaml.Node) -> yaml.Node | None:
    """The second occurrence of a key repeated in one mapping (YAML keeps the last silently), or None."""
    stack = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, yaml.MappingNode):
            seen = set()
            for key, value in n.value:
                if isinstance(key, yaml.ScalarNode):
                    if key.value in seen:
                        return key
                    seen.add(key.value)
                stack.append(value)
        elif isinstance(n, yaml.SequenceNode):
            stack.extend(n.value)
    return None


def load_config(path: str | os.PathLike) -> RunConfig:
    """Read and validate a YAML config file."""
    path = Path(path).absolute()
    if not path.is_file():
        raise InputError(f"{path}: config file not found")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise InputError(f"{path}: config file larger than {MAX_CONFIG_BYTES // 1024} KiB")
    try:
        node = yaml.compose(read_text(path), Loader=yaml.SafeLoader)
        if node is not None and _count_nodes(node, MAX_CONFIG_NODES) > MAX_CONFIG_NODES:
            raise InputError(f"{path}: config expands to more than {MAX_CONFIG_NODES:,} YAML nodes (aliases?)")
        twice = _first_duplicate_key(node) if node is not None else None
        if twice is not None:
            raise InputError(f"{path}: line {twice.start_mark.line + 1}: key {twice.value!r} appears twice in one "
                             "mapping (YAML would keep only the last)")
        data = yaml.safe_load(read_text(path))
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        raise InputError(f"{path}: not valid YAML{at} ({getattr(exc, 'problem', exc)})") from None
    return parse_config(data, path)
