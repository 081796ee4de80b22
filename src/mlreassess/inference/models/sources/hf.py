"""Hugging Face `transformers` image classifiers: `hf:ORG/REPO` (the hub, or its cache) or a folder
written by `save_pretrained`, with the image processor's preprocessor_config.json (`hf:/ABS/DIR`, or
relative: `hf:./DIR`, or any name that is a folder where mlreassess runs).

Weights: `hub` (the repo's or folder's own weights), `file:PATH` (a state dict for the model its
config describes), `random`. Preprocessing from its image processor: size (the crop size when it
crops), resample, mean and std (rescale must be 1/255). Its `id2label` must name ImageNet-1k's
1,000 classes: in their order (by wnid, description or any synonym), in another order (each label
naming exactly one class: the logits are reordered), or after a "background" class (dropped, as
timm drops it); anything else is refused with one line.
"""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path

import torch
from timm.data import ImageNetInfo

from mlreassess.constants import NUM_CLASSES
from mlreassess.errors import InputError, MlreassessError
from mlreassess.inference.models.sources import base
from mlreassess.inference.models.sources.base import LoadedModel, ModelSpec
from mlreassess.options import InferOptions

PREFIX = "hf:"
WEIGHTS = ("hub", "file:PATH", "random")
PACKAGE = ("transformers", "hf")
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
WEIGHT_FILES = ("*.safetensors", "*.bin")


def _lib(spec: ModelSpec):
    return base.require("transformers", spec, "hf")


def _folder(spec: ModelSpec) -> Path | None:
    """The local folder the name names (absolute), None for a hub repo id. A folder: an absolute or
    `~` path, one starting with ./ or ../, or any name that exists where mlreassess runs (as
    transformers itself would take it: `hf:models/vit` is ./models/vit when that is there)."""
    rest = base.source_name(spec, PREFIX)
    path = Path(rest).expanduser()
    if rest.startswith(("/", "~", "./", "../")) or (rest and path.exists()):
        return path.resolve()
    return None


def _where(spec: ModelSpec) -> str:
    """The folder (absolute) or the hub repo id."""
    folder = _folder(spec)
    return str(folder) if folder is not None else base.source_name(spec, PREFIX)


def _is_dir(spec: ModelSpec) -> bool:
    return _folder(spec) is not None


def check(spec: ModelSpec) -> None:
    _lib(spec)
    folder = _folder(spec)
    if folder is not None:
        for needed in ("config.json", "preprocessor_config.json"):
            if not (folder / needed).is_file():
                raise InputError(f"model {spec.name!r}: {folder / needed} not found (save the model and its "
                                 "image processor there with save_pretrained)")
    elif not REPO_ID.match(_where(spec)):
        raise InputError(f"model {spec.name!r}: {_where(spec)!r} is neither a hub repo id (ORG/NAME) nor a folder here")
    base.check_weights(spec, WEIGHTS)


def _load(spec: ModelSpec, what: str, load):
    """`load()` (a transformers from_pretrained), its failure as one line saying what it is: a broken
    transformers install, the hub out of reach (with what to do offline), or the folder's own fault."""
    try:
        return load()
    except ImportError as exc:  # transformers imports a model's code lazily: a broken install shows here
        raise MlreassessError(f"model {spec.name!r}: transformers cannot load its {what}: the installed transformers "
                              f"is broken, not the model ({base.first_sentence(base.root_cause(exc))}); reinstall it "
                              "(pip install --force-reinstall 'mlreassess[hf]')") from None
    except Exception as exc:  # hub, cache, JSON and unknown-architecture errors alike
        if _folder(spec) is None:
            raise base.hub_unavailable(spec, what, exc, "hf:/ABS/DIR or hf:./DIR, written by save_pretrained") from None
        raise MlreassessError(f"model {spec.name!r}: cannot read its {what} ({base.first_sentence(exc)})") from None


def _config(spec: ModelSpec):
    return _load(spec, "config", lambda: _lib(spec).AutoConfig.from_pretrained(_where(spec)))


def _processor(spec: ModelSpec):
    return _load(spec, "image processor", lambda: _lib(spec).AutoImageProcessor.from_pretrained(_where(spec)))


def data_config(spec: ModelSpec, use_test_size: bool = False) -> dict:
    """From the image processor (transformers has no test size)."""
    return processor_config(_processor(spec), spec.name)


def processor_config(p, where: str) -> dict:
    """A transformers image processor's preprocessing as a data config."""
    if not getattr(p, "do_rescale", True) or not math.isclose(getattr(p, "rescale_factor", 1 / 255), 1 / 255):
        raise InputError(f"model {where!r}: its image processor does not rescale by 1/255, which mlreassess needs")
    if getattr(p, "rescale_offset", False):
        raise InputError(f"model {where!r}: its image processor's rescale_offset is not supported")
    mean, std = (p.image_mean, p.image_std) if getattr(p, "do_normalize", True) else ((0.0,) * 3, (1.0,) * 3)
    resample = getattr(p, "resample", 2)
    interpolation = base.PIL_FILTERS.get(int(getattr(resample, "value", resample)), "")
    if not interpolation:
        raise InputError(f"model {where!r}: its image processor's resample {resample!r} is not a PIL filter")
    (height, width), crop_pct = _processor_size(p, where)
    return base.data_config(height, width, interpolation, mean, std, crop_pct, where)


def _processor_size(p, where: str) -> tuple[tuple[int, int], float | None]:
    """((height, width) of the model's input, crop_pct or None)."""
    size = dict(getattr(p, "size", None) or {})
    crop = dict(getattr(p, "crop_size", None) or {}) if getattr(p, "do_center_crop", False) else {}
    if crop:
        side = size.get("shortest_edge") or min(size.get("height", 0), size.get("width", 0))
        if not side or crop.get("height") != crop.get("width"):
            raise InputError(f"model {where!r}: its image processor's size {size} and crop {crop} are not supported")
        return (crop["height"], crop["width"]), base.crop_pct_for(crop["height"], side)
    if "height" in size and "width" in size:
        return (size["height"], size["width"]), None
    if "shortest_edge" in size and getattr(p, "crop_pct", None) is not None:  # ConvNext / ResNet processors
        side = size["shortest_edge"]
        return (side, side), (p.crop_pct if side < 384 else None)  # they warp sizes of 384 and more
    raise InputError(f"model {where!r}: its image processor's size {size} gives images of varying shape")


# --- id2label -> ImageNet-1k class order ---------------------------------------------------------


def _normal(text: str) -> str:
    return " ".join(str(text).replace("_", " ").split()).casefold()


def _class_forms() -> tuple[dict[str, set[int]], dict[str, set[int]]]:
    """(wnids and whole descriptions, each synonym) -> the classes they name, from timm's copy of the
    ImageNet-1k synsets. A label is matched by the first kind if it can ('missile' is class 657's
    whole description, and a synonym of 744's too)."""
    info, whole, synonyms = ImageNetInfo(), {}, {}
    for c, wnid in enumerate(info.label_names()):
        description = info.index_to_description(c)
        for form in (wnid, description):
            whole.setdefault(_normal(form), set()).add(c)
        for form in description.split(","):
            synonyms.setdefault(_normal(form), set()).add(c)
    return whole, synonyms


def class_index(id2label: dict, where: str) -> list[int] | None:
    """For each ImageNet class, the logit that scores it (None: the logits are already in order)."""
    labels = [id2label.get(i, id2label.get(str(i))) for i in range(len(id2label))]
    whole, synonyms = _class_forms()
    forms = [_normal(label) if label is not None else "" for label in labels]
    named = [whole.get(f) or synonyms.get(f, set()) for f in forms]  # for reordering: the closest match only
    keep = [i for i, label in enumerate(labels) if not (label is not None and _normal(label) == "background")]
    if len(keep) != NUM_CLASSES:
        raise InputError(f"model {where!r}: its id2label has {len(labels)} labels, not ImageNet-1k's {NUM_CLASSES}"
                         f" (first: {labels[:2]})")
    # In order: each label names its own class in some form ('crane' is two classes, 'Cardigan' a corgi).
    if all(c in whole.get(forms[keep[c]], set()) | synonyms.get(forms[keep[c]], set()) for c in range(NUM_CLASSES)):
        return None if keep == list(range(NUM_CLASSES)) else keep
    index: dict[int, int] = {}
    for i in keep:
        if len(named[i]) != 1:
            what = "names no ImageNet-1k class" if not named[i] else f"names classes {sorted(named[i])}"
            raise InputError(f"model {where!r}: id2label[{i}] = {labels[i]!r} {what}; cannot map its logits safely")
        (c,) = named[i]
        if c in index:
            raise InputError(f"model {where!r}: id2label[{index[c]}] and id2label[{i}] both name class {c}")
        index[c] = i
    return [index[c] for c in range(NUM_CLASSES)]


class ImageNetHead(torch.nn.Module):
    """A transformers classifier whose forward takes pixel values and gives ImageNet-1k's logits in order."""

    def __init__(self, model: torch.nn.Module, index: list[int] | None):
        super().__init__()
        self.model = model
        self.register_buffer("index", None if index is None else torch.tensor(index), persistent=False)

    def forward(self, x):
        logits = self.model(pixel_values=x).logits
        return logits if self.index is None else logits.index_select(1, self.index)


# --- a model built by the caller (the Python API) ---------------------------------------------------


def is_model(obj) -> bool:
    """Whether `obj` is a transformers model (asked only when transformers is already imported: a
    caller who built one has imported it)."""
    lib = sys.modules.get("transformers")
    return lib is not None and isinstance(obj, lib.PreTrainedModel)


def is_processor(obj) -> bool:
    """Whether `obj` is a transformers image processor (either backend)."""
    lib = sys.modules.get("transformers")
    return lib is not None and isinstance(obj, lib.ImageProcessingMixin)


def wrap(model: torch.nn.Module, where: str) -> ImageNetHead:
    """The caller's transformers classifier as mlreassess runs a module: pixel values in, ImageNet-1k
    logits in class order out (its id2label read as for `hf:` names)."""
    return ImageNetHead(model, class_index(model.config.id2label, where))


# --- building --------------------------------------------------------------------------------------


def model_bytes(spec: ModelSpec) -> int | None:
    try:
        config = _config(spec)
    except MlreassessError:
        return None
    return base.meta_bytes(lambda: _lib(spec).AutoModelForImageClassification.from_config(config))


def build(spec: ModelSpec, opts: InferOptions, device: str | None = None) -> LoadedModel:
    config = _config(spec)
    index = class_index(config.id2label, spec.name)
    auto = _lib(spec).AutoModelForImageClassification
    model, source = base.load_weights(spec, opts, lambda: auto.from_config(config),
                                      hub=lambda: (_pretrained(spec, auto), f"hub:{_where(spec)}"))
    module = ImageNetHead(model.float().eval(), index).eval()
    return LoadedModel(spec=spec, module=module, weights=source, data_config=data_config(spec))


def _pretrained(spec: ModelSpec, auto) -> torch.nn.Module:
    """The repo's or folder's weights; a checkpoint without some of the model's tensors (a backbone
    without its classifier, which transformers would initialise at random) is refused."""
    model, info = _load(spec, "weights", lambda: auto.from_pretrained(_where(spec), output_loading_info=True))
    missing = list(info.get("missing_keys") or [])
    if missing:
        raise InputError(f"model {spec.name!r}: its checkpoint lacks {len(missing)} of the model's tensors "
                         f"({', '.join(missing[:3])}): it is not an ImageNet-1k classifier as saved")
    return model


def recipe_entries(spec: ModelSpec, opts: InferOptions) -> dict:
    """The class order its id2label gives, its mean and std, and for a folder's own weights their bytes."""
    labels = _config(spec).id2label
    config = data_config(spec)
    entries = {
        "id2label_sha256": base.text_sha256([str(labels.get(i, labels.get(str(i)))) for i in range(len(labels))]),
        "mean": list(config["mean"]),
        "std": list(config["std"]),
    }
    if spec.weights == "hub" and _is_dir(spec):  # the folder's own weights: their bytes
        entries["weights_sha256"] = base.folder_weights_sha256(Path(_where(spec)), WEIGHT_FILES)
    return entries
