"""open_clip models, zero-shot: `open_clip:ARCH/PRETRAINED` (`open_clip:ViT-B-32/laion2b_s34b_b79k`),
`open_clip:ARCH` (with --weights file:PATH or random), `open_clip:hf-hub:ORG/REPO`, or
`open_clip:local-dir:/ABS/DIR` (a folder with open_clip_config.json and its weights).

The model is its image tower followed by a fixed linear classifier: for each of the 1,000 classes,
the mean of the normalised text embeddings of that class's name in every prompt template,
normalised (CLIP's zero-shot recipe, open_clip's `build_zero_shot_classifier`); logits are the
cosine similarities times the model's learned logit scale (100 for CLIP models). Texts, by default
(`--prompts openai`, `--class-names openai`): the 80 ImageNet templates and the curated class names
of OpenAI's CLIP (its notebook "Prompt_Engineering_for_ImageNet.ipynb"), as open_clip ships them in
`open_clip.zero_shot_metadata`; `--prompts simple` takes its 7-template subset; FILEs give others.

Encoding 80,000 prompts costs minutes on a GPU (hours on a CPU), so each classifier is computed once
and kept in the user cache (`base.cache_dir()/zero-shot/<key>.safetensors`), keyed by the sha256 of
the text tower's tensors, the tokenizer, the templates, the class names and open_clip's version:
any change is a new key, so the cache is never stale and is shared by every RESULTS folder and the
Python API. The templates and class names are part of each output's recipe.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import safetensors.torch
import torch

from mlreassess.constants import NUM_CLASSES
from mlreassess.errors import InputError
from mlreassess.inference.models.sources import base
from mlreassess.inference.models.sources.base import LoadedModel, ModelSpec
from mlreassess.io import atomic_path
from mlreassess.options import ZERO_SHOT_TEXTS, InferOptions

log = logging.getLogger(__name__)

PREFIX = "open_clip:"
WEIGHTS = ("hub", "file:PATH", "random")
PACKAGE = ("open_clip", "open-clip")
SCHEMAS = ("hf-hub:", "local-dir:")  # open_clip names that bring their own config and weights
WEIGHT_FILES = ("*.safetensors", "*.bin", "*.pth")  # what open_clip looks for in a local-dir: folder
CLASSES_PER_BATCH = 10  # class names encoded together (x templates prompts per text-tower forward)


def _lib(spec: ModelSpec):
    return base.require("open_clip", spec, "open-clip")


def _parts(spec: ModelSpec) -> tuple[str, str | None]:
    """(open_clip model name, pretrained tag or None): 'ViT-B-32/laion2b_s34b_b79k' -> ('ViT-B-32', 'laion2b_s34b_b79k')."""
    rest = base.source_name(spec, PREFIX)
    if rest.startswith(SCHEMAS):
        return rest, None
    arch, _, tag = rest.partition("/")
    return arch, tag or None


def _local_dir(spec: ModelSpec) -> Path | None:
    name, _ = _parts(spec)
    return Path(name[len("local-dir:"):]).expanduser() if name.startswith("local-dir:") else None


def check(spec: ModelSpec) -> None:
    oc = _lib(spec)
    name, tag = _parts(spec)
    folder = _local_dir(spec)
    if folder is not None:
        if not folder.is_absolute() or not (folder / "open_clip_config.json").is_file():
            raise InputError(f"model {spec.name!r}: {folder / 'open_clip_config.json'} not found (an absolute folder "
                             "written with open_clip's config and weights)")
    elif not name.startswith(SCHEMAS):
        if name not in oc.list_models():
            raise InputError(f"unknown model {spec.name!r} ({name!r} is not an open_clip model; see open_clip.list_models())")
        tags = oc.list_pretrained_tags_by_model(name)
        if tag is not None and tag not in tags:
            raise InputError(f"model {spec.name!r}: open_clip has no pretrained tag {tag!r} for {name} (known: {', '.join(tags)})")
        if tag is None and spec.weights == "hub":
            raise InputError(f"model {spec.name!r}: --weights hub needs a pretrained tag (open_clip:{name}/TAG, one of "
                             f"{', '.join(tags) or 'none'}) or use file:PATH")
    base.check_weights(spec, WEIGHTS)


# --- preprocessing ---------------------------------------------------------------------------------


def _configs(spec: ModelSpec) -> tuple[dict, dict]:
    """(model config, preprocessing overrides), read without building the model or fetching weights."""
    oc = _lib(spec)
    name, tag = _parts(spec)
    if name.startswith(SCHEMAS):
        if name.startswith("local-dir:"):
            path = _local_dir(spec) / "open_clip_config.json"
        else:
            path = _fetch(spec, lambda: oc.pretrained.download_pretrained_from_hf(name[len("hf-hub:"):],
                                                                                   filename="open_clip_config.json"),
                          "config")
        try:
            config = json.loads(Path(path).read_text())
            return config["model_cfg"], config.get("preprocess_cfg", {})
        except (OSError, ValueError, KeyError) as exc:
            raise InputError(f"model {spec.name!r}: {path}: not an open_clip config ({type(exc).__name__}: {exc})") from None
    return oc.get_model_config(name), (oc.get_pretrained_cfg(name, tag) if tag else {})


def _fetch(spec: ModelSpec, get, what: str = "weights"):
    try:
        return get()
    except Exception as exc:  # hub / network / cache errors
        raise base.hub_unavailable(spec, what, exc, "open_clip:local-dir:/ABS/DIR, with open_clip_config.json") from None


def data_config(spec: ModelSpec, use_test_size: bool = False) -> dict:
    """open_clip's eval preprocessing (image size, interpolation, mean, std; resize_mode 'shortest' =
    resize the shorter side and crop the centre, crop_pct 1.0)."""
    oc = _lib(spec)
    model_cfg, overrides = _configs(spec)
    preprocess = oc.transform.merge_preprocess_dict(oc.transform.PreprocessCfg(), overrides)  # as create_model does
    size = model_cfg.get("vision_cfg", {}).get("image_size", preprocess["size"])
    return _data_config(spec, preprocess, size)


def _data_config(spec: ModelSpec, preprocess: dict, size) -> dict:
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    return base.data_config(height, width, preprocess["interpolation"], preprocess["mean"], preprocess["std"], None,
                            spec.name)


# --- the texts ---------------------------------------------------------------------------------------


def templates(opts: InferOptions, spec: ModelSpec) -> list[str]:
    """The prompt templates, as format strings with one `{}` for the class name."""
    oc = _lib(spec)
    if opts.prompts in ZERO_SHOT_TEXTS:
        shipped = oc.OPENAI_IMAGENET_TEMPLATES if opts.prompts == "openai" else oc.SIMPLE_IMAGENET_TEMPLATES
        return [t("{}") for t in shipped]
    lines = _lines(opts.prompts, "--prompts")
    for i, line in enumerate(lines, 1):
        if line.count("{}") != 1 or line.replace("{}", "").count("{") or line.replace("{}", "").count("}"):
            raise InputError(f"{opts.prompts}: line {i}: a template needs exactly one {{}} and no other braces: {line!r}")
    if not lines:
        raise InputError(f"{opts.prompts}: no templates in it")
    return lines


def class_names(opts: InferOptions, spec: ModelSpec) -> list[str]:
    """The 1,000 class names, in class-index order."""
    if opts.class_names in ZERO_SHOT_TEXTS:
        return list(_lib(spec).IMAGENET_CLASSNAMES)
    names = _lines(opts.class_names, "--class-names")
    if len(names) != NUM_CLASSES:
        raise InputError(f"{opts.class_names}: {len(names)} class names, not {NUM_CLASSES} (one per line, in class-index order)")
    return names


def _lines(path: str, flag: str) -> list[str]:
    try:
        text = Path(path).expanduser().read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read it for {flag} ({getattr(exc, 'strerror', None) or exc})") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


# --- the model ---------------------------------------------------------------------------------------


class ZeroShotHead(torch.nn.Module):
    """An open_clip model's image tower and a zero-shot classifier: images -> 1,000 ImageNet logits."""

    def __init__(self, model: torch.nn.Module, classifier: torch.Tensor):
        super().__init__()
        self.model = model
        self.register_buffer("classifier", classifier)  # (embedding dim, 1000), columns normalised
        self.register_buffer("scale", model.logit_scale.detach().exp().reshape(()))

    def forward(self, x):
        features = self.model.encode_image(x, normalize=True)
        return self.scale * features @ self.classifier.to(features.dtype)


def model_bytes(spec: ModelSpec) -> int | None:
    oc, (name, tag) = _lib(spec), _parts(spec)
    if name.startswith("hf-hub:"):
        return None  # its config is only known once fetched
    return base.meta_bytes(lambda: oc.create_model(name, pretrained=None, load_weights=False, device="meta"))


def build(spec: ModelSpec, opts: InferOptions, device: str | None = None) -> LoadedModel:
    oc, (name, tag) = _lib(spec), _parts(spec)
    hub = (lambda: (_fetch(spec, lambda: oc.create_model(name, pretrained=tag, require_pretrained=True)),
                    f"hub:open_clip:{name}" + (f"/{tag}" if tag else "")))
    model, source = base.load_weights(spec, opts, lambda: oc.create_model(name, pretrained=None, load_weights=False),
                                      hub=hub)
    model = model.float().eval()
    weights = classifier(spec, model, oc.get_tokenizer(name), opts, device)
    config = _data_config(spec, model.visual.preprocess_cfg, model.visual.preprocess_cfg["size"])
    return LoadedModel(spec=spec, module=ZeroShotHead(model, weights).eval(), weights=source, data_config=config)


def _text_key(spec: ModelSpec, model, tokenizer, texts: tuple[list[str], list[str]]) -> str:
    """The classifier's cache key: everything its values depend on."""
    oc = _lib(spec)
    text_tower = base.weights_sha256(model, skip=lambda n: n.startswith("visual.") or n.startswith("logit_"))
    what = {"open_clip": oc.__version__, "text_tower": text_tower, "templates": texts[0], "class_names": texts[1],
            "tokenizer": [type(tokenizer).__name__, getattr(tokenizer, "context_length", None),
                          getattr(getattr(tokenizer, "tokenizer", None), "name_or_path", None)]}
    return base.text_sha256([json.dumps(what, sort_keys=True)])


def classifier(spec: ModelSpec, model, tokenizer, opts: InferOptions, device: str | None) -> torch.Tensor:
    """The (embedding dim, 1000) zero-shot weights: from the cache, or encoded (on `device`) and cached."""
    texts = (templates(opts, spec), class_names(opts, spec))
    path = base.cache_dir() / "zero-shot" / f"{_text_key(spec, model, tokenizer, texts)}.safetensors"
    if path.is_file():
        try:
            weights = safetensors.torch.load_file(str(path))["classifier"]
            if weights.ndim == 2 and weights.shape[1] == NUM_CLASSES:
                return weights
        except Exception as exc:  # a damaged cache file is rebuilt
            log.warning(f"{path}: unreadable zero-shot classifier, rebuilding it ({type(exc).__name__})")
    log.info(f"model {spec.name}: encoding {len(texts[0]) * NUM_CLASSES:,} prompts for its zero-shot classifier "
             f"(once; kept in {path.parent})")
    device = device or "cpu"
    try:
        with torch.no_grad():  # not inference_mode: the result becomes a buffer that is moved and cast later
            weights = _lib(spec).build_zero_shot_classifier(model.to(device), tokenizer, texts[1], texts[0],
                                                            num_classes_per_batch=CLASSES_PER_BATCH, device=device)
    finally:
        model.to("cpu")
    weights = weights.float().cpu().contiguous()
    with atomic_path(path) as tmp:
        safetensors.torch.save_file({"classifier": weights}, str(tmp), metadata={"model": spec.name})
    return weights


def recipe_entries(spec: ModelSpec, opts: InferOptions) -> dict:
    """The prompt templates and class names: hashes first (what a rerun's message names), then the
    texts themselves, so an output says which it was made with."""
    texts = templates(opts, spec), class_names(opts, spec)
    entries = {
        "prompts_sha256": base.text_sha256(texts[0]),
        "class_names_sha256": base.text_sha256(texts[1]),
        "zero_shot_texts": {"templates": texts[0], "class_names": texts[1]},
    }
    folder = _local_dir(spec)
    if folder is not None and spec.weights == "hub":  # the folder's own weights: their bytes
        entries["weights_sha256"] = base.folder_weights_sha256(folder, WEIGHT_FILES)
    return entries
