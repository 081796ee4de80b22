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
from mlreassess.errors import InputError

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
