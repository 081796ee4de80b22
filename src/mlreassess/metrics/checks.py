"""What a file must hold before `evaluate` scores it; each refusal is one line naming the file (and sample).

(Manifests' column types are checked by their reader, `datasets.manifest.read_manifest`.)
- Predictions: column types, then what a softmax's top-k always is: class indices in 0..999, none
  twice in a row (a repeated true class would count twice, and raise ASMA), probabilities finite,
  in 0..1 and never increasing along the row (best first).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from mlreassess.constants import NUM_CLASSES
from mlreassess.errors import InputError, short_repr

_PROB_SLACK = 1e-6  # float32 rounding of a softmax may overshoot 1 by an ulp or two

_INT, _STR, _FLOAT = pa.types.is_integer, (lambda t: pa.types.is_string(t) or pa.types.is_large_string(t)), pa.types.is_floating


def _list_of(is_item):
    return lambda t: (pa.types.is_list(t) or pa.types.is_large_list(t)) and is_item(t.value_type)


# column -> (type check, what it must be)
PREDICTION_TYPES = {
    "sample_id": (_STR, "string"),
    "topk_idx": (_list_of(_INT), "list<int32> (class indices, best first)"),
    "topk_prob": (_list_of(_FLOAT), "list<float32> (softmax probabilities)"),
    "softmax": (lambda t: (pa.types.is_fixed_size_list(t) or pa.types.is_list(t)) and _FLOAT(t.value_type),
                "fixed_size_list<float16>[1000] (the full softmax)"),
}


def _check_types(path: Path, schema: pa.Schema, types: dict, required: tuple[str, ...], what: str) -> None:
    for name, (ok, expected) in types.items():
        if name not in schema.names:
            if name in required:
                raise InputError(f"{path}: not a {what} (no {name!r} column)")
            continue
        actual = schema.field(name).type
        if not ok(actual):
            raise InputError(f"{path}: column {name!r} is {actual}, expected {expected}")


def check_prediction_types(path: Path, table: pa.Table) -> None:
    _check_types(path, table.schema, PREDICTION_TYPES, ("sample_id", "topk_idx"), "predictions file")


def _refuse(path: Path, ids: np.ndarray, bad: np.ndarray, why) -> None:
    """Raise naming the first sample (row) with a True in `bad` (n, m); `why(i, j)` words the problem."""
    if bad.size and bad.any():
        i, j = (int(x) for x in np.argwhere(bad)[0])
        raise InputError(f"{path}: sample {ids[i]!r}: {why(i, j)}: not the top-k of a softmax")


def check_topk_classes(path: Path, ids: np.ndarray, topk: np.ndarray) -> None:
    """Class indices in 0..NUM_CLASSES-1, none twice in one row."""
    _refuse(path, ids, (topk < 0) | (topk >= NUM_CLASSES),
            lambda i, j: f"class index {topk[i, j]} in topk_idx is out of range 0..{NUM_CLASSES - 1}")
    if topk.shape[1] < 2:
        return
    ordered = np.sort(topk, axis=1)
    _refuse(path, ids, ordered[:, 1:] == ordered[:, :-1],
            lambda i, j: f"class {ordered[i, j]} appears twice in topk_idx")


def check_topk_probs(path: Path, ids: np.ndarray, prob: np.ndarray) -> None:
    """Probabilities finite, in 0..1, and non-increasing along each row (ties allowed)."""
    _refuse(path, ids, ~np.isfinite(prob), lambda i, j: f"topk_prob[{j}] is {prob[i, j]}")
    _refuse(path, ids, prob < 0, lambda i, j: f"topk_prob[{j}] = {prob[i, j]:.6g} is negative")
    _refuse(path, ids, prob > 1 + _PROB_SLACK, lambda i, j: f"topk_prob[{j}] = {prob[i, j]:.6g} is above 1")
    if prob.shape[1] < 2:
        return
    _refuse(path, ids, prob[:, 1:] > prob[:, :-1],
            lambda i, j: f"topk_prob increases along the top-k ({prob[i, j]:.6g} then {prob[i, j + 1]:.6g} "
            f"at positions {j}, {j + 1})")


def check_softmax(path: Path, ids: np.ndarray, softmax: np.ndarray) -> None:
    """A stored full softmax (--save-softmax): finite probabilities in 0..1 (float16 rounding aside)."""
    _refuse(path, ids, ~np.isfinite(softmax), lambda i, j: f"softmax[{j}] is {softmax[i, j]}")
    _refuse(path, ids, (softmax < 0) | (softmax > 1 + 1e-3),
            lambda i, j: f"softmax[{j}] = {float(softmax[i, j]):.6g} is outside 0..1")


# ---------------------------------------------------------------- predictions metadata
# What each key of a predictions file's metadata must be where present (`infer` writes them all):
# every reader (evaluate, the page, the timm comparison) reads them through this check, so a hand-edited
# or hostile value is one line naming the key, and no non-finite number reaches JSON or the page.

def _is_int(v, low: int = 0) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= low


def _is_number(v, low: float = 0.0) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and bool(np.isfinite(v)) and v >= low


def _is_text(v) -> bool:
    return isinstance(v, str)


def _opt(check):
    return lambda v: v is None or check(v)


def _numbers(v) -> bool:
    return isinstance(v, list) and all(_is_number(x, -np.inf) for x in v)


def _failed_samples(v) -> bool:
    return isinstance(v, list) and all(isinstance(e, dict) and _is_text(e.get("sample_id")) for e in v)


PREDICTION_META = {
    "model": (lambda v: _is_text(v) and bool(v), "a model name"),
    "dataset": (lambda v: _is_text(v) and bool(v), "a dataset name"),
    "n_samples": (_is_int, "a count of samples"),
    "topk": (lambda v: _is_int(v, 1), "a whole number >= 1"),
    "input_size": (_opt(lambda v: isinstance(v, list) and 2 <= len(v) <= 3 and all(_is_int(x, 1) for x in v)),
                   "a list of 2 or 3 whole numbers >= 1"),
    "elapsed_s": (_opt(_is_number), "a finite number of seconds >= 0"),
    "images_per_s": (_opt(_is_number), "a finite number >= 0"),
    "load_s": (_opt(_is_number), "a finite number of seconds >= 0"),
    "crop_pct": (_opt(_is_number), "a finite number >= 0"),
    "batch_size": (_opt(lambda v: _is_int(v, 1)), "a whole number >= 1"),
    "forward_batch_size": (_opt(lambda v: _is_int(v, 1)), "a whole number >= 1"),
    "mean": (_opt(_numbers), "a list of finite numbers"),
    "std": (_opt(_numbers), "a list of finite numbers"),
    "failed_samples": (_opt(_failed_samples), "a list of {sample_id, error}"),
    **{k: (_opt(_is_text), "text") for k in ("weights", "interpolation", "crop", "precision", "device",
                                             "dataset_kind", "manifest", "torch", "timm")},
    "recipe": (_opt(lambda v: isinstance(v, dict)), "a mapping"),
}


def prediction_meta_problem(meta: dict) -> str | None:
    """What is wrong with a predictions file's metadata, in a few words naming the key (None: nothing)."""
    for key, (ok, expected) in PREDICTION_META.items():
        if key in meta and not ok(meta[key]):
            return f"its metadata {key!r} is {short_repr(meta[key])}, not {expected}"
    return None
