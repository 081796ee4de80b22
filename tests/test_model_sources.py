"""Model sources (inference/models/sources/): torchvision, transformers and open_clip models end to end.

Each test builds a tiny model from a config with random weights (nothing is downloaded), runs
`mlreassess infer` on it, and checks the stored predictions against a plain forward pass written
here with that library's own preprocessing (torchvision's weights preset, transformers' image
processor, open_clip's eval transform and zero-shot classifier). Also: what makes their
predictions stale (id2label, prompt templates, class names), and the one-line refusals.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils._python_dispatch import TorchDispatchMode
from test_inference_run import infer, make_images, make_manifest

from mlreassess.errors import InputError, MlreassessError
from mlreassess.inference.models import registry as models
from mlreassess.inference.sweep import writers
from mlreassess.inference.models.registry import ModelSpec
from mlreassess.inference.models.sources import base, hf
from mlreassess.results import ResultsLayout, model_file_name


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sources")
    ids = make_images(folder / "images")
    return {"root": folder / "images", "ids": sorted(ids), "manifest": make_manifest(folder / "tiny.parquet", folder / "images", ids)}


def stored(out: Path, model: str) -> tuple[np.ndarray, np.ndarray, dict]:
    table, meta = writers.read_predictions(ResultsLayout(out).prediction("tiny", model))
    return np.array(table["topk_idx"].to_pylist()), np.array(table["topk_prob"].to_pylist()), meta


def assert_topk_of(idx: np.ndarray, prob: np.ndarray, reference: np.ndarray, atol: float = 2e-5) -> None:
    """The stored top-k is a top-k of the reference softmax: its probabilities are the reference's
    at those classes, best first, and no other class beats the k-th (ties within float noise)."""
    assert idx.shape == prob.shape and len(idx) == len(reference)
    top = -np.sort(-reference, axis=1)[:, : idx.shape[1]]
    assert (top[:, 0] - top[:, -1] > 1000 * atol).all(), "the test's model is too close to uniform to test a top-k"
    np.testing.assert_allclose(np.take_along_axis(reference, idx, 1), prob, atol=atol)
    rest = reference.copy()
    np.put_along_axis(rest, idx, -1.0, 1)
    assert (rest.max(1) <= prob[:, -1] + atol).all()
    assert (np.diff(prob, axis=1) <= atol).all()


def softmax(logits: torch.Tensor) -> np.ndarray:
    return logits.float().softmax(1).numpy()


def pil(images, sid: str) -> Image.Image:
    return Image.open(images["root"] / f"{sid}.jpg").convert("RGB")


# ---- torchvision -----------------------------------------------------------------------------------


def torchvision_model(path: Path):
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.get_model("resnet18", weights=None).eval()
    with torch.no_grad():  # random init gives near-uniform logits: spread them so the top-k is clear
        model.fc.weight.mul_(10)
    torch.save(model.state_dict(), path)
    return model


@pytest.mark.parametrize("crop", ["none", "center"])
def test_torchvision_predictions_equal_a_plain_forward_with_its_preset(images, tmp_path, crop):
    from torchvision import transforms as T
    from torchvision.models import ResNet18_Weights

    model = torchvision_model(tmp_path / "w.pth")
    name = "torchvision:resnet18"
    out = tmp_path / "out"
    assert infer("--data", str(images["manifest"]), "--model", name, "--weights", f"file:{tmp_path / 'w.pth'}",
                 "--crop", crop, out=out) == 0
    preset = ResNet18_Weights.DEFAULT.transforms()  # resize 256, crop 224, bilinear, ImageNet mean/std
    if crop == "none":  # resize-only: the whole image to the preset's crop size
        preset = T.Compose([T.Resize((224, 224), interpolation=preset.interpolation), T.ToTensor(),
                            T.Normalize(preset.mean, preset.std)])
    with torch.no_grad():
        reference = softmax(model(torch.stack([preset(pil(images, s)) for s in images["ids"]])))
    idx, prob, meta = stored(out, name)
    assert_topk_of(idx, prob, reference)
    assert meta["input_size"] == [3, 224, 224] and meta["interpolation"] == "bilinear"
    assert meta["recipe"]["mean"] == [0.485, 0.456, 0.406]
    assert meta["crop_pct"] == (pytest.approx(224 / 256) if crop == "center" else None)


def test_torchvision_random_weights_and_bad_names(images, tmp_path):
    assert infer("--data", str(images["manifest"]), "--model", "torchvision:squeezenet1_1", "--weights", "random",
                 out=tmp_path) == 0
    assert stored(tmp_path, "torchvision:squeezenet1_1")[2]["weights"] == "random"
    with pytest.raises(InputError, match="not a torchvision classification model.*close matches: resnet50"):
        models.check_specs([ModelSpec("torchvision:resnet5", "random")])
    with pytest.raises(InputError, match="'pypi' is not one of hub, file:PATH, random"):
        models.check_specs([ModelSpec("torchvision:resnet18", "pypi")])
    import torchvision

    real = torchvision.models.resnet18()  # what the empty build on the meta device must count
    assert models.model_bytes(ModelSpec("torchvision:resnet18", "hub")) == base.state_bytes(real)


def test_crop_pct_makes_timm_resize_exactly_like_torchvision():
    import math

    for crop, resize in [(224, 232), (224, 256), (200, 241), (299, 342), (384, 384)]:
        assert math.floor(crop / base.crop_pct_for(crop, resize)) == resize


# ---- transformers ----------------------------------------------------------------------------------


def imagenet_id2label(order=None, wnids: bool = False) -> dict[int, str]:
    """ImageNet-1k's descriptions ('tench, Tinca tinca') or wnids, in `order` (class of each logit)."""
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    order = range(1000) if order is None else order
    return {i: info.label_names()[c] if wnids else info.index_to_description(c) for i, c in enumerate(order)}


def save_vit(folder: Path, id2label: dict, seed: int = 0) -> Path:
    """A tiny random ViT image classifier and its (PIL) image processor, as save_pretrained writes them."""
    pytest.importorskip("transformers", reason="the hf extra (pip install 'mlreassess[hf]') is not installed")
    from transformers import ViTConfig, ViTForImageClassification
    from transformers.models.vit import ViTImageProcessorPil

    torch.manual_seed(seed)
    config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=64, num_labels=len(id2label), id2label=id2label,
                       label2id={v: k for k, v in id2label.items()})
    model = ViTForImageClassification(config).eval()
    with torch.no_grad():
        model.classifier.weight.mul_(30)
    model.save_pretrained(folder)
    ViTImageProcessorPil(size={"height": 32, "width": 32}, image_mean=[0.4, 0.5, 0.6], image_std=[0.2, 0.25, 0.3]).save_pretrained(folder)
    return folder


def hf_reference(folder: Path, images) -> np.ndarray:
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    processor = AutoImageProcessor.from_pretrained(folder, backend="pil")
    model = AutoModelForImageClassification.from_pretrained(folder).eval()
    pixels = processor([pil(images, s) for s in images["ids"]], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        return softmax(model(pixel_values=pixels).logits)


def test_hf_predictions_equal_a_plain_forward_with_its_image_processor(images, tmp_path):
    folder = save_vit(tmp_path / "vit", imagenet_id2label())
    name = f"hf:{folder}"
    out = tmp_path / "out"
    assert infer("--data", str(images["manifest"]), "--model", name, out=out) == 0
    idx, prob, meta = stored(out, name)
    assert_topk_of(idx, prob, hf_reference(folder, images))
    assert meta["weights"] == f"hub:{folder}" and meta["input_size"] == [3, 32, 32]
    assert meta["mean"] == pytest.approx([0.4, 0.5, 0.6]) and meta["interpolation"] == "bilinear"
    assert (out / "predictions" / "tiny" / f"{model_file_name(name)}.parquet").is_file()


def test_hf_id2label_in_another_order_is_mapped_and_a_change_redoes_the_predictions(images, tmp_path, caplog):
    order = list(reversed(range(1000)))  # logit i scores ImageNet class 999 - i (by wnid: 'crane' is two classes)
    folder = save_vit(tmp_path / "vit", imagenet_id2label(order, wnids=True))
    name, out = f"hf:{folder}", tmp_path / "out"
    assert infer("--data", str(images["manifest"]), "--model", name, out=out) == 0
    reference = hf_reference(folder, images)[:, order]  # the model's probabilities in ImageNet class order
    idx, prob, _ = stored(out, name)
    assert_topk_of(idx, prob, reference)
    # The same weights with id2label in ImageNet's own order: a rerun says why it redoes them.
    config = json.loads((folder / "config.json").read_text())
    config["id2label"] = {str(i): label for i, label in imagenet_id2label().items()}
    (folder / "config.json").write_text(json.dumps(config))
    with caplog.at_level(logging.INFO):
        assert infer("--data", str(images["manifest"]), "--model", name, out=out) == 0
    assert "redoing it: id2label changed" in caplog.text
    idx2, prob2, _ = stored(out, name)
    assert_topk_of(idx2, prob2, hf_reference(folder, images))
    assert not np.array_equal(idx, idx2)


def test_id2label_mapping_rules():
    names = imagenet_id2label()
    assert hf.class_index(names, "m") is None  # in order
    wnids = {i: w for i, w in enumerate(__import__("timm").data.ImageNetInfo().label_names())}
    assert hf.class_index(wnids, "m") is None  # wnids, in order
    with_background = {0: "background", **{i + 1: n for i, n in names.items()}}
    assert hf.class_index(with_background, "m") == list(range(1, 1001))  # the background logit dropped
    first_names = {i: n.split(",")[0] for i, n in names.items()}  # 'crane' twice, 'crayfish' a synonym: fine in place...
    assert hf.class_index(first_names, "m") is None
    swapped = dict(first_names)
    swapped[0], swapped[1] = first_names[1], first_names[0]  # ...but not once the order is another
    with pytest.raises(InputError, match=r"id2label\[124\] = 'crayfish' names classes \[123, 124\]"):
        hf.class_index(swapped, "m")
    with pytest.raises(InputError, match=r"id2label\[0\] = 'LABEL_0' names no ImageNet-1k class"):
        hf.class_index({i: f"LABEL_{i}" for i in range(1000)}, "m")
    with pytest.raises(InputError, match="has 10 labels, not ImageNet-1k's 1000"):
        hf.class_index({i: names[i] for i in range(10)}, "m")
    twice = {**names, 5: names[4]}
    with pytest.raises(InputError, match=r"id2label\[4\] and id2label\[5\] both name class 4"):
        hf.class_index(twice, "m")


def test_hf_refusals_are_one_line(tmp_path, monkeypatch):
    folder = save_vit(tmp_path / "vit", {i: f"LABEL_{i}" for i in range(1000)})
    with pytest.raises(InputError, match="names no ImageNet-1k class"):
        models.build(ModelSpec(f"hf:{folder}", "hub"))
    (folder / "preprocessor_config.json").unlink()
    with pytest.raises(InputError, match="preprocessor_config.json not found"):
        models.check_specs([ModelSpec(f"hf:{folder}", "hub")])
    with pytest.raises(InputError, match=r"'a/b/c' is neither a hub repo id \(ORG/NAME\) nor a folder here"):
        models.check_specs([ModelSpec("hf:a/b/c", "hub")])
    (tmp_path / "org" / "repo").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)  # a name that is a folder here is that folder (as transformers takes it), not the hub's
    with pytest.raises(InputError, match=f"{tmp_path / 'org' / 'repo' / 'config.json'} not found"):
        models.check_specs([ModelSpec("hf:org/repo", "hub")])


@pytest.mark.parametrize("name", ["hf:models/vit", "hf:./models/vit", "hf:models/../models/vit"])
def test_a_relative_hf_folder_is_the_folder_not_a_hub_repo(tmp_path, monkeypatch, name):
    folder = save_vit(tmp_path / "models" / "vit", imagenet_id2label())
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # were it taken for a hub repo, it would fail here
    spec = ModelSpec(name, "hub")
    models.check_specs([spec])
    assert models.data_config(spec)["input_size"] == (3, 32, 32)
    loaded = models.build(spec, device="cpu")
    assert loaded.weights == f"hub:{folder}"
    assert models.recipe_entries(spec)["weights_sha256"] == base.folder_weights_sha256(folder, hf.WEIGHT_FILES)
    with pytest.raises(InputError, match=r"'\./nowhere' not found|nowhere/config\.json not found"):
        models.check_specs([ModelSpec("hf:./nowhere", "hub")])


def test_offline_hub_errors_are_one_whole_line_with_what_to_do(tmp_path, monkeypatch):
    pytest.importorskip("transformers", reason="the hf extra is not installed")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # an empty cache
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    spec = ModelSpec("hf:google/vit-base-patch16-224", "hub")
    with pytest.raises(MlreassessError) as err:
        models.data_config(spec)
    assert str(err.value) == (
        "model 'hf:google/vit-base-patch16-224': cannot fetch its image processor (OSError: Can't load image processor "
        "for 'google/vit-base-patch16-224'); HF_HUB_OFFLINE is set and it is not in the local cache; pre-download it "
        "where there is network and copy HF_HOME's hub cache here, or pass a local folder (hf:/ABS/DIR or hf:./DIR, "
        "written by save_pretrained)")
    pytest.importorskip("open_clip", reason="the open-clip extra is not installed")
    clip = ModelSpec("open_clip:hf-hub:timm/vit_base_patch32_clip_224.openai", "hub")
    with pytest.raises(MlreassessError) as err:
        models.data_config(clip)
    message = str(err.value)
    assert message.startswith(f"model {clip.name!r}: cannot fetch its config (FileNotFoundError: Failed to download file "
                              "(open_clip_config.json) for timm/vit_base_patch32_clip_224")
    assert message.endswith("HF_HUB_OFFLINE is set and it is not in the local cache; pre-download it where there is "
                            "network and copy HF_HOME's hub cache here, or pass a local folder "
                            "(open_clip:local-dir:/ABS/DIR, with open_clip_config.json)")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    hint = base.hub_unavailable(spec, "weights", OSError("x"), "hf:/ABS/DIR")
    assert "no network here? set HF_HUB_OFFLINE=1 to fail at once instead of retrying" in str(hint)


def test_first_sentence_keeps_whole_words():
    exc = OSError("Can't load it. If you were trying to load it from 'https://huggingface.co/models', make sure. Otherwise")
    assert base.first_sentence(exc) == "OSError: Can't load it"
    long = ValueError("word " * 100)
    assert base.first_sentence(long, 30) == "ValueError: word word word word word word ..."
    assert base.first_sentence(RuntimeError("")) == "RuntimeError"


def test_a_broken_transformers_install_is_reported_as_such_not_as_missing_weights(tmp_path):
    """A fresh interpreter where the model's code cannot be imported (as when a dependency of it is
    missing or broken): transformers raises ImportError from its lazy import."""
    import subprocess
    import sys

    folder = save_vit(tmp_path / "vit", imagenet_id2label())
    code = ("import sys; sys.modules['transformers.models.vit.modeling_vit'] = None\n"
            "from mlreassess.inference.models import registry as models\n"
            "from mlreassess.inference.models.registry import ModelSpec\n"
            "from mlreassess.errors import MlreassessError\n"
            "try:\n"
            f"    models.build(ModelSpec('hf:{folder}', 'hub'), device='cpu')\n"
            "except MlreassessError as exc:\n"
            "    print(exc)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300).stdout.strip()
    assert out.startswith(f"model 'hf:{folder}': transformers cannot load its weights: the installed transformers is "
                          "broken, not the model (")
    assert "not available" not in out and "download" not in out
    assert out.endswith("reinstall it (pip install --force-reinstall 'mlreassess[hf]')")


# ---- open_clip -------------------------------------------------------------------------------------

TINY_CLIP = {
    "model_cfg": {
        "embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
        "text_cfg": {"context_length": 24, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    },
    "preprocess_cfg": {"mean": [0.45, 0.45, 0.4], "std": [0.27, 0.26, 0.28], "interpolation": "bicubic",
                       "resize_mode": "shortest"},
}


def save_clip(folder: Path, seed: int = 0) -> Path:
    pytest.importorskip("open_clip", reason="the open-clip extra (pip install 'mlreassess[open-clip]') is not installed")
    import open_clip
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    (folder / "open_clip_config.json").write_text(json.dumps(TINY_CLIP))
    torch.manual_seed(seed)
    model = open_clip.create_model(f"local-dir:{folder}", load_weights=False)
    with torch.no_grad():
        model.logit_scale.fill_(np.log(10.0))  # a softmax spread enough that ranks 2..10 are apart
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "open_clip_model.safetensors"))
    return folder


def clip_reference(folder: Path, images, templates: list[str], classes: list[str], resize_mode: str) -> np.ndarray:
    import open_clip

    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{folder}")
    if resize_mode != "shortest":
        cfg = model.visual.preprocess_cfg
        preprocess = open_clip.image_transform(cfg["size"], is_train=False, mean=cfg["mean"], std=cfg["std"],
                                               interpolation=cfg["interpolation"], resize_mode=resize_mode)
    model.eval()
    tokenizer = open_clip.get_tokenizer(f"local-dir:{folder}")
    with torch.no_grad():
        classifier = open_clip.build_zero_shot_classifier(model, tokenizer, classes, templates)
        features = model.encode_image(torch.stack([preprocess(pil(images, s)) for s in images["ids"]]), normalize=True)
        return softmax(model.logit_scale.exp() * features @ classifier)


@pytest.fixture
def clip_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(base.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache" / "zero-shot"


@pytest.mark.parametrize("crop, resize_mode", [("center", "shortest"), ("none", "squash")])
def test_open_clip_zero_shot_predictions_equal_a_plain_forward(images, tmp_path, clip_cache, crop, resize_mode):
    folder = save_clip(tmp_path / "clip")
    import open_clip

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a photo of a {}.\nitap of the {}.\n")
    name, out = f"open_clip:local-dir:{folder}", tmp_path / "out"
    assert infer("--data", str(images["manifest"]), "--model", name, "--prompts", str(prompts), "--crop", crop, out=out) == 0
    reference = clip_reference(folder, images, ["a photo of a {}.", "itap of the {}."], list(open_clip.IMAGENET_CLASSNAMES),
                               resize_mode)
    idx, prob, meta = stored(out, name)
    assert_topk_of(idx, prob, reference)
    assert meta["recipe"]["zero_shot_texts"]["templates"] == ["a photo of a {}.", "itap of the {}."]
    assert meta["recipe"]["zero_shot_texts"]["class_names"][:2] == ["tench", "goldfish"]
    assert len(list(clip_cache.glob("*.safetensors"))) == 1  # the classifier, kept


def test_open_clip_classifier_is_cached_and_texts_redo_the_predictions(images, tmp_path, clip_cache, monkeypatch, caplog):
    folder = save_clip(tmp_path / "clip")
    import open_clip

    prompts, classes = tmp_path / "prompts.txt", tmp_path / "classes.txt"
    prompts.write_text("a photo of a {}.\n")
    classes.write_text("".join(f"{n}\n" for n in open_clip.IMAGENET_CLASSNAMES))
    name, out = f"open_clip:local-dir:{folder}", tmp_path / "out"
    args = ("--data", str(images["manifest"]), "--model", name, "--prompts", str(prompts), "--class-names", str(classes))
    assert infer(*args, out=out) == 0
    first = stored(out, name)[0]
    # Built once: another RESULTS folder takes the classifier from the cache, encoding nothing.
    monkeypatch.setattr(open_clip, "build_zero_shot_classifier", lambda *a, **k: pytest.fail("not from the cache"))
    assert infer(*args, out=tmp_path / "out2") == 0
    np.testing.assert_array_equal(stored(tmp_path / "out2", name)[0], first)
    monkeypatch.undo()
    monkeypatch.setenv(base.CACHE_ENV, str(clip_cache.parent))
    with caplog.at_level(logging.INFO):
        prompts.write_text("a blurry photo of a {}.\n")  # another template
        assert infer(*args, out=out) == 0
        assert "redoing it: prompts changed" in caplog.text
        names = classes.read_text().splitlines()
        names[0], names[1] = names[1], names[0]  # another class-name list
        classes.write_text("\n".join(names) + "\n")
        assert infer(*args, out=out) == 0
        assert "redoing it: class_names changed" in caplog.text
    assert len(list(clip_cache.glob("*.safetensors"))) == 3
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert infer(*args, out=out) == 0  # nothing changed: nothing redone
    assert "redoing" not in caplog.text


def test_open_clip_refusals(tmp_path):
    pytest.importorskip("open_clip", reason="the open-clip extra is not installed")
    with pytest.raises(InputError, match="not an open_clip model"):
        models.check_specs([ModelSpec("open_clip:ViT-X-99/laion", "hub")])
    with pytest.raises(InputError, match="no pretrained tag 'nope'"):
        models.check_specs([ModelSpec("open_clip:ViT-B-32/nope", "hub")])
    with pytest.raises(InputError, match="--weights hub needs a pretrained tag"):
        models.check_specs([ModelSpec("open_clip:ViT-B-32", "hub")])
    with pytest.raises(InputError, match="open_clip_config.json not found"):
        models.check_specs([ModelSpec(f"open_clip:local-dir:{tmp_path}", "hub")])
    bad = tmp_path / "p.txt"
    bad.write_text("a photo of {}{}.\n")
    spec = ModelSpec("open_clip:ViT-B-32/openai", "hub")
    from mlreassess.options import InferOptions

    with pytest.raises(InputError, match="line 1: a template needs exactly one"):
        models.recipe_entries(spec, InferOptions(prompts=str(bad)))
    with pytest.raises(InputError, match="2 class names, not 1000"):
        bad.write_text("cat\ndog\n")
        models.recipe_entries(spec, InferOptions(class_names=str(bad)))
    assert models.data_config(spec)["input_size"] == (3, 224, 224)  # from the config: nothing fetched


# ---- every source ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name, package, extra", [("hf:google/vit-base-patch16-224", "transformers", "hf"),
                                                   ("open_clip:ViT-B-32/openai", "open_clip", "open-clip")])
def test_a_missing_library_is_one_line_naming_the_extra(monkeypatch, name, package, extra):
    import sys

    monkeypatch.setitem(sys.modules, package, None)  # what an environment without it gives: ImportError
    with pytest.raises(MlreassessError, match=rf"needs the {package} package .*pip install 'mlreassess\[{extra}\]'"):
        models.check_specs([ModelSpec(name, "hub")])


def test_every_registered_source_has_the_whole_interface():
    from mlreassess.inference.models.sources import in_memory
    from mlreassess.inference.models.sources import timm as timm_source

    for prefix, source in [*models.SOURCES.items(), ("", timm_source), (None, in_memory)]:
        assert source.PREFIX == prefix
        for fn in ("check", "data_config", "model_bytes", "build", "recipe_entries"):
            assert callable(getattr(source, fn)), f"{source.__name__}.{fn}"
    assert models.source_of(ModelSpec("resnet50", "hub")) is timm_source
    assert models.source_of(ModelSpec("hf-hub:timm/x", "hub")) is timm_source  # timm's own hub names


def test_model_file_names_are_safe_distinct_and_stable():
    names = ["resnet50.a1_in1k", "torchvision:resnet50", "hf:org/repo", "hf:org_repo", "hf:/abs/dir", "hf:/abs_dir",
             "open_clip:ViT-B-32/laion2b_s34b_b79k", "open_clip:ViT-B-32_laion2b_s34b_b79k", "hf:/a/../b", "..", ".x",
             "%2Ex", "x" * 300, "x" * 301, "é"]
    stems = [model_file_name(n) for n in names]
    assert len(set(stems)) == len(stems)
    assert stems[:3] == ["resnet50.a1_in1k", "torchvision%3Aresnet50", "hf%3Aorg%2Frepo"]
    for stem in stems:
        assert "/" not in stem and stem not in (".", "..") and not stem.startswith(".") and len(stem) <= 200
    assert [model_file_name(n) for n in names] == stems  # stable
    for bad in ["", "  ", "a\nb", "a\0b"]:
        with pytest.raises(InputError, match="printable"):
            model_file_name(bad)


# ---- weights into a meta-device build ---------------------------------------------------------------


@pytest.mark.parametrize("name", ["test_resnet", "test_efficientnet", "test_vit_relpos", "test_coatnet"])
def test_file_weights_fill_an_uninitialised_build_with_identical_predictions(tmp_path, name):
    """No random init before the file's tensors overwrite it, and the same outputs as timm's own
    build + load (test_vit_relpos / test_coatnet have computed, non-persistent buffers)."""
    import timm

    torch.manual_seed(3)
    reference = timm.create_model(name).eval()
    torch.save(reference.state_dict(), tmp_path / "w.pth")
    assert base.refillable(base.empty(lambda: timm.create_model(name)))  # the fast path is the one taken
    loaded = models.build(ModelSpec(name, f"file:{tmp_path / 'w.pth'}")).module
    x = torch.randn(2, 3, *reference.pretrained_cfg["input_size"][1:], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(loaded(x), reference(x))
    assert all(not t.is_meta for t in [*loaded.parameters(), *loaded.buffers()])


class _Shapes(torch.nn.Module):
    """Value writes of every kind (torch.nn.init by keyword and by position, tensor methods) next to
    in-place ops that change a shape."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)  # kaiming_uniform_(tensor=..., a=...) via reset_parameters
        w = torch.empty(2, 5)
        torch.nn.init.trunc_normal_(w, std=0.02)
        self.register_buffer("w", w.mul_(2).unsqueeze_(0))  # (1, 2, 5)
        self.register_buffer("v", torch.zeros(3, 2).t_())  # (2, 3)


class _AtenOps(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.names = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.add(func._schema.name)
        return func(*args, **(kwargs or {}))


def test_an_empty_build_skips_value_writes_and_keeps_every_shape():
    """On the meta device a value write is only checked, never done: the build skips it (that was
    most of its CPU time) but still runs what changes a shape, so sizes and shapes stay exact."""
    with _AtenOps() as seen:
        module = base.empty(_Shapes)
    assert {"aten::unsqueeze_", "aten::t_"} <= seen.names
    assert not seen.names & {"aten::uniform_", "aten::normal_", "aten::erfinv_", "aten::mul_", "aten::clamp_"}
    real = _Shapes()
    assert {k: t.shape for k, t in module.state_dict().items()} == {k: t.shape for k, t in real.state_dict().items()}
    assert base.meta_bytes(_Shapes) == base.state_bytes(real)
    assert not torch.empty(2).is_meta  # nothing of the build's modes is left behind


@pytest.mark.parametrize("name", ["test_resnet", "test_vit_relpos", "test_coatnet", "resnet50", "swin_tiny_patch4_window7_224"])
def test_meta_sizes_equal_a_real_build(name):
    import timm

    assert base.meta_bytes(lambda: timm.create_model(name)) == base.state_bytes(timm.create_model(name))


def test_a_module_keeping_a_plain_tensor_is_built_normally():
    class Odd(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(2, 2)
            self.offset = torch.ones(2)  # neither parameter nor buffer: a state dict cannot restore it

    state = Odd().state_dict()
    assert not base.refillable(base.empty(Odd))
    module = base.build_filled(base.empty(Odd), Odd, state, lambda m, s, assign: m.load_state_dict(s, assign=assign))
    assert torch.equal(module.offset, torch.ones(2)) and torch.equal(module.lin.weight, state["lin.weight"])


def test_a_checkpoint_torch_refuses_to_unpickle_is_one_line(tmp_path):
    import argparse

    from mlreassess.inference.models import weights as W

    path = tmp_path / "ckpt.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "args": argparse.Namespace(lr=0.1)}, path)
    with pytest.raises(InputError) as info:
        W.read_checkpoint(path, "test_resnet")
    message = str(info.value)
    assert "\n" not in message and str(path) in message and "argparse.Namespace" in message
    assert "weights_only=False" in message and "--weights file:" in message


# ---- configs/zero-shot.yaml -------------------------------------------------------------------------


def test_the_zero_shot_config_parses_and_its_models_pass_the_checks(tmp_path):
    pytest.importorskip("open_clip")
    from mlreassess.config import load_config
    from mlreassess.pipeline import model_specs

    repo = Path(__file__).resolve().parents[1]
    for d in ("data/imagenet/ILSVRC/Data/CLS-LOC/val", "data/imagenetv2", "configs"):
        (tmp_path / d).mkdir(parents=True)
    (tmp_path / "data/imagenet/LOC_val_solution.csv").write_text("ImageId,PredictionString\n")
    (tmp_path / "data/imagenetv2/imagenetv2-multilabels.json").write_text("{}")
    shutil.copy(repo / "configs" / "zero-shot.yaml", tmp_path / "configs")
    cfg = load_config(tmp_path / "configs" / "zero-shot.yaml")
    specs = model_specs(cfg)  # names, tags and weight sources checked as `run` checks them (offline)
    sources = {models.source_of(s).__name__.rsplit(".", 1)[-1] for s in specs}
    assert sources == {"open_clip", "timm"} and len(specs) == 9
    assert (cfg.inference.prompts, cfg.inference.class_names) == ("openai", "openai")


def test_a_prompts_file_in_a_config_resolves_against_the_config(tmp_path):
    from mlreassess.config import load_config

    (tmp_path / "m.parquet").write_bytes(b"")
    text = "out: o\ndatasets:\n  manifests: [m.parquet]\nmodels: [resnet18]\ninference:\n  prompts: texts/prompts.txt\n"
    (tmp_path / "c.yaml").write_text(text)
    with pytest.raises(InputError, match=r"c\.yaml: inference\.prompts: .*texts/prompts\.txt"):
        load_config(tmp_path / "c.yaml")
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "prompts.txt").write_text("a photo of a {}.\n")
    assert load_config(tmp_path / "c.yaml").inference.prompts == str(tmp_path / "texts" / "prompts.txt")


@pytest.mark.parametrize("config, problem", [
    ({"input_size": (3, 224, 224), "mean": (float("nan"), 0.5, 0.5)}, "mean .* is not three finite numbers"),
    ({"input_size": (3, 224, 224), "std": (0.5, 0.0, 0.5)}, "std .* must be positive"),
    ({"input_size": (3, 10**6, 224)}, "input size 1000000x224 is not two sides of 1..4096 px"),
    ({"input_size": (3, 224, 224), "crop_pct": 7}, r"crop_pct 7.0 is not in \(0, 1\]"),
    ({"input_size": (3, 224, 224), "mean": ("a", "b", "c")}, "must be numbers"),
    ({"input_size": (3, 224, 224), "interpolation": "magic"}, "interpolation 'magic' is not one of"),
    ({"input_size": 224}, "input_size 224 is not"),
    ({"input_size": (3, 224, 224), "sizes": 1}, r"keys \['sizes'\] are not known"),
])
def test_a_bad_data_config_is_one_line(config, problem):
    from mlreassess.inference.models.sources import transforms

    with pytest.raises(InputError, match=problem):
        transforms.config_from(config, "m")


def test_an_installed_library_that_fails_to_import_says_so(tmp_path, monkeypatch):
    import sys

    fake = tmp_path / "site" / "transformers"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise AttributeError(\"module 'torch' has no attribute 'compiler_fake'\")\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.delitem(sys.modules, "transformers", raising=False)
    with pytest.raises(MlreassessError) as err:
        models.check_specs([ModelSpec("hf:google/vit-base-patch16-224", "hub")])
    assert str(err.value) == ("model 'hf:google/vit-base-patch16-224': the installed transformers package fails to import "
                              "(AttributeError: module 'torch' has no attribute 'compiler_fake'); reinstall it: "
                              "pip install --force-reinstall 'mlreassess[hf]'")
