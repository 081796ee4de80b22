"""What the report reads: RESULTS/metrics.parquet (and its datasets' kinds), the manifests, a model's
top-k by sample id (`model_topk`), a sample's image as inference read it (`sample_image`), and, for
Figure 8, one model's predictions beside the canvases they were made on.

Every RESULTS path comes from `ResultsLayout`. An item whose inputs are absent raises `Skip`.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from PIL import Image

from mlreassess.constants import DEFAULT_V1_LABEL_SET, DEFAULT_V2_LABEL_SET, NUM_CLASSES
from mlreassess.datasets.labels import class_name
from mlreassess.datasets.manifest import Manifest, read_manifest
from mlreassess.datasets.samples import reader
from mlreassess.errors import InputError, MlreassessError, short_repr
from mlreassess.io import read_meta, read_table
from mlreassess.metrics.consensus import CONSENSUS_TOPK
from mlreassess.metrics.evaluate import PATCHML_MEAN, reevaluate, why_stale
from mlreassess.patchml import IMAGES_DIR
from mlreassess.patchml.render import render_row, rendered_png
from mlreassess.report.paper import CSV_COLUMNS
from mlreassess.results import ResultsLayout

log = logging.getLogger(__name__)

DEFAULT_V1 = "imagenet_v1"
DEFAULT_V2 = "imagenet_v2_matched-frequency"
PAPER_LABEL_SETS = {"imagenet_v1": DEFAULT_V1_LABEL_SET, "imagenet_v2": DEFAULT_V2_LABEL_SET}  # the paper's multi-labels
FIGURE8_EXAMPLES = 6


class Skip(Exception):
    """An item's inputs are absent: the report notes it and goes on."""


@dataclass
class ReportInputs:
    """The report's inputs, each read on first use. `results` may be None (`report table1 --out`)."""

    results: Path | None
    data: list[Path] = field(default_factory=list)  # --data manifests: instead of RESULTS/manifests
    v1: str | None = None  # --v1 / --v2: which dataset of that kind to report
    v2: str | None = None
    touched: set[Path] = field(default_factory=set)  # the files read so far (what an item is derived from)
    metrics_note: str | None = None  # set when metrics.parquet could not be checked against its inputs

    @property
    def layout(self) -> ResultsLayout | None:
        return None if self.results is None else ResultsLayout(self.results)

    # ------------------------------------------------------------ metrics.parquet
    @cached_property
    def _metrics_file(self) -> tuple[pd.DataFrame | None, dict[str, Any]]:
        if self.layout is None or not self.layout.metrics.exists():
            return None, {}
        self.metrics_note = current_metrics(self.layout)
        return read_metrics(self.layout.metrics)

    @property
    def metrics(self) -> pd.DataFrame | None:
        """The long metrics table (None when there is no metrics.parquet), made current first: when it
        no longer matches the predictions and manifests it was computed from, `evaluate` runs again."""
        if self._metrics_file[0] is not None and self.layout is not None:
            self.touched.add(self.layout.metrics)
        return self._metrics_file[0]

    def need_metrics(self) -> pd.DataFrame:
        if self.metrics is None:
            missing = "no --results" if self.layout is None else f"{self.layout.metrics} missing"
            raise Skip(f"no metrics ({missing}: run `mlreassess evaluate`)")
        return self.metrics

    def kinds(self) -> dict[str, str]:
        """dataset name -> kind, for the datasets in metrics.parquet."""
        self.need_metrics()
        return {name: info.get("kind", "") for name, info in self._metrics_file[1].get("datasets", {}).items()}

    def _pick(self, kind: str, wanted: str | None, default: str) -> str | None:
        names = sorted(n for n, k in self.kinds().items() if k == kind)
        if wanted:
            if wanted not in names:
                flag = "--v1" if kind == "imagenet_v1" else "--v2"
                raise MlreassessError(f"{flag} {wanted}: no such {kind} dataset in the metrics "
                                      f"(have: {', '.join(names) or 'none'})")
            return wanted
        if default in names:
            return default
        # Not the paper's V1/V2 by default: a set labelled otherwise (Shankar et al.'s, ImageNet-M)
        paper_like = [n for n in names if self._label_set(n) in (None, PAPER_LABEL_SETS[kind])]
        return (paper_like or names or [None])[0]

    def label_set_of(self, dataset: str) -> str | None:
        return self._label_set(dataset)

    def _label_set(self, dataset: str) -> str | None:
        """The label set a dataset's manifest records (None: none recorded, or no manifest here)."""
        path = next((p for name, _, p in self.manifests if name == dataset), None)
        return read_meta(path).get("label_set") if path is not None else None

    @property
    def v1_name(self) -> str | None:
        return self._pick("imagenet_v1", self.v1, DEFAULT_V1)

    @property
    def v2_name(self) -> str | None:
        return self._pick("imagenet_v2", self.v2, DEFAULT_V2)

    @property
    def patchml_name(self) -> str | None:
        """The mean over PatchML seeds, if evaluated."""
        return PATCHML_MEAN if PATCHML_MEAN in self.kinds() else None

    def patchml_seeds(self) -> list[str]:
        """The PatchML datasets averaged into `patchml_name`, by name."""
        return sorted(n for n, k in self.kinds().items() if k == "patchml" and n != PATCHML_MEAN)

    def no_patchml_mean(self) -> str:
        """Why there is no mean over PatchML seeds (the reason `evaluate` recorded, if any)."""
        why = self._metrics_file[1].get("patchml_mean_skipped")
        return f"no {PATCHML_MEAN}: {why}" if why else "no PatchML metrics"

    def design_counts(self, datasets: list[str]) -> list[int]:
        """The design label counts of these datasets (PatchML: their patch counts), as evaluate recorded them."""
        infos = self._metrics_file[1].get("datasets", {})
        return sorted({int(g) for d in datasets for g in infos.get(d, {}).get("design_counts", [])})

    # ------------------------------------------------------------ manifests
    @cached_property
    def manifests(self) -> list[tuple[str, str, Path]]:
        """(dataset, kind, path) of --data manifests, else of RESULTS/manifests/*.parquet."""
        paths = list(self.data)
        if not paths and self.layout is not None:
            paths = self.layout.manifest_copies()
        out = []
        for p in paths:
            m = read_manifest(p)  # checked as every reader checks it (columns, labels, paths, placements)
            out.append((m.name, m.kind, Path(p)))
        return out

    def _of_kinds(self, kinds: tuple[str, ...]) -> list[tuple[str, str, Path]]:
        chosen = [(name, kind, p) for name, kind, p in self.manifests if kind in kinds]
        self.touched.update(p for _, _, p in chosen)
        return chosen

    def manifest_counts(self, kinds: tuple[str, ...]) -> list[int]:
        """The patch counts k the manifests of these kinds record (PatchML `counts`), sorted, once."""
        return sorted({int(k) for _, _, p in self._of_kinds(kinds) for k in read_meta(p).get("counts") or []})

    def label_counts(self, kinds: tuple[str, ...]) -> dict[str, np.ndarray]:
        """dataset -> label count of each sample, for the manifests of these kinds."""
        return {name: np.asarray(read_table(p, columns=["label_count"]).column("label_count").to_numpy(), dtype=np.int64)
                for name, _, p in self._of_kinds(kinds)}


# ---------------------------------------------------------------- metrics.parquet, checked

def current_metrics(layout: ResultsLayout) -> str | None:
    """Make RESULTS/metrics.parquet current before the report trusts it: when it no longer matches
    the predictions and manifests it was computed from (one added, removed, replaced or edited;
    `evaluate.why_stale`), `evaluate` runs again with the parameters it records, saying why. Returns
    a note when there is nothing to check it against (no predictions/ folder: metrics shared alone),
    so the page can say its numbers are unchecked; None otherwise."""
    if not layout.predictions_dir.is_dir():
        note = (f"{layout.metrics.name} could not be checked against its predictions and manifests: "
                f"{layout.root} has no {layout.predictions_dir.name}/ folder")
        log.warning(f"{layout.metrics}: {note.split(': ', 1)[1]}; reporting it as it is, unchecked")
        return note
    reason = why_stale(layout.root)
    if reason is not None:
        reevaluate(layout.root, reason)
    return None


# What the report reads from metrics.parquet, and the types it needs (other columns are left alone).
_TEXT, _INT, _NUM = "string", "integer", "number"
METRICS_COLUMNS = {"model": _TEXT, "dataset": _TEXT, "metric": _TEXT, "label_count": _INT, "value_pct": _NUM,
                   "n": _INT, "ci_low_pct": _NUM, "ci_high_pct": _NUM, "groups": _TEXT}
_TYPE_OK = {_TEXT: lambda t: pa.types.is_string(t) or pa.types.is_large_string(t), _INT: pa.types.is_integer,
            _NUM: lambda t: pa.types.is_floating(t) or pa.types.is_integer(t)}


def read_metrics(path: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """metrics.parquet as a frame and its metadata, checked: the columns the report reads with their
    types (a column of all nulls is fine), no infinite value, and metadata of the shape evaluate
    writes; InputError, one line naming the file and column or key, otherwise."""
    table, meta = read_table(path), read_meta(path)
    for name, kind in METRICS_COLUMNS.items():
        if name not in table.column_names:
            if name == "groups":  # optional (older files)
                continue
            raise InputError(f"{path}: not a metrics file (no {name!r} column; written by `mlreassess evaluate`)")
        t = table.schema.field(name).type
        if not (_TYPE_OK[kind](t) or pa.types.is_null(t)):
            raise InputError(f"{path}: column {name!r} is {t}, expected {kind} values (rerun `mlreassess evaluate`)")
        if kind == _NUM and not pa.types.is_null(t) and len(table):
            values = table.column(name).to_numpy(zero_copy_only=False).astype(float)
            if np.isinf(values).any():
                raise InputError(f"{path}: column {name!r} holds an infinite value")
    _check_metrics_meta(path, meta)
    df = table.to_pandas()
    df["label_count"] = df["label_count"].astype("Int64")
    return (df if len(df) else pd.DataFrame(columns=df.columns)), meta


def _check_metrics_meta(path: Path, meta: dict[str, Any]) -> None:
    datasets = meta.get("datasets", {})
    if not isinstance(datasets, dict) or not all(isinstance(v, dict) for v in datasets.values()):
        raise InputError(f"{path}: metadata 'datasets' is not a mapping of dataset -> info")
    for name, info in datasets.items():
        if not isinstance(info.get("kind", ""), str):
            raise InputError(f"{path}: metadata datasets.{short_repr(name)}.kind is not a string")
        counts = info.get("design_counts", [])
        if not isinstance(counts, list) or not all(isinstance(g, int) and not isinstance(g, bool) for g in counts):
            raise InputError(f"{path}: metadata datasets.{short_repr(name)}.design_counts is not a list of label counts")
    for key in ("n_boot", "level"):
        v = meta.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v)):
            raise InputError(f"{path}: metadata {key!r} is {short_repr(v)}, not a number")
    if not isinstance(meta.get("patchml_mean_skipped") or "", str):
        raise InputError(f"{path}: metadata 'patchml_mean_skipped' is not a string")


# ---------------------------------------------------------------- the paper's numbers

def read_reported(path: Path) -> pd.DataFrame:
    """data_manifests/paper_reported.csv (or `--reported`): its columns, numeric values; InputError, one
    line naming the file, when it cannot be read as such."""
    try:
        df = pd.read_csv(path, dtype={"timm_checkpoint": str}, keep_default_na=False)
    except (OSError, UnicodeDecodeError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{path}: cannot read the paper's reported numbers ({first})") from None
    missing = [c for c in CSV_COLUMNS if c not in df.columns]
    if missing:
        raise InputError(f"{path}: not a reported-numbers CSV (missing columns: {', '.join(missing)}; "
                         "see scripts/parse_paper_tables.py)")
    values = pd.to_numeric(df["value"], errors="coerce")
    bad = ~np.isfinite(values.to_numpy(dtype=float))  # NaN (not a number) or inf: never reaches the page
    if bad.any():
        i = int(bad.nonzero()[0][0])
        raise InputError(f"{path}: line {i + 2}: value {str(df['value'].iloc[i])[:40]!r} is not a finite number")
    return df.assign(value=values)


# ---------------------------------------------------------------- Figure 8: canvases and predictions

def figure8_examples(layout: ResultsLayout, dataset: str, model: str, limit: int = FIGURE8_EXAMPLES) -> list[dict]:
    """Up to `limit` canvases of `dataset` (one per label count, largest first) with the model's
    top-g predictions, as `figures.figure8` takes them; canvases rendered from the manifest, else
    read from the PNGs next to it."""
    manifest = read_manifest(layout.manifest_copy(dataset))
    pred_path = layout.prediction(dataset, model)
    if not pred_path.exists():
        raise Skip(f"{pred_path} not found")
    pred = read_table(pred_path).to_pandas().set_index("sample_id")
    rows = manifest.table.to_pandas()
    rows = rows[rows["sample_id"].isin(pred.index)]
    image_dirs = png_dirs(layout, read_meta(pred_path))
    examples = [_example(manifest, i, rows.loc[i], pred.loc[rows.loc[i, "sample_id"]], image_dirs)
                for i in _one_per_label_count(rows, limit)]
    if not examples:
        raise Skip(f"no predictions of {model} on {dataset}")
    return examples


def _one_per_label_count(rows: pd.DataFrame, limit: int) -> list[int]:
    """Row index of the first canvas of each label count, largest count first, at most `limit`."""
    counts = sorted(rows["label_count"].unique(), reverse=True)[:limit]
    return [rows.index[rows["label_count"] == g][0] for g in counts]


def png_dirs(layout: ResultsLayout, pred_meta: dict[str, Any]) -> list[Path]:
    """Where rendered canvases may lie: beside the manifest inference read, then beside its copy."""
    source = pred_meta.get("manifest")
    dirs = [Path(source).parent / IMAGES_DIR] if isinstance(source, str) and source else []
    return dirs + [layout.inside(layout.manifests_dir / IMAGES_DIR)]


def canvas_image(manifest: Manifest, i: int, image_dirs: list[Path]) -> Image.Image | None:
    """Canvas `i` rendered from the manifest, else read from a PNG rendered from that very row
    (`render.rendered_png`: a PNG of another seed or an older render is not used); None if neither."""
    try:
        return render_row(manifest, int(i))
    except (MlreassessError, OSError):  # source images not reachable here: try the PNGs
        pass
    for d in image_dirs:
        png = rendered_png(manifest, int(i), d)
        if png is not None:
            try:
                with Image.open(png) as im:
                    return im.convert("RGB")
            except (OSError, ValueError, Image.DecompressionBombError):
                continue
    return None


def _canvas(manifest: Manifest, i: int, sample_id: str, image_dirs: list[Path]) -> Image.Image:
    image = canvas_image(manifest, i, image_dirs)
    if image is None:
        raise Skip(f"cannot render canvas {sample_id} (no source images, nor a PNG of it in {image_dirs[0]})")
    return image


def _example(manifest: Manifest, i: int, row: pd.Series, pred: pd.Series, image_dirs: list[Path]) -> dict:
    g = int(row["label_count"])
    idx = np.asarray(pred["topk_idx"])[:g]
    labels = set(int(x) for x in row["labels"])
    correct = [int(c) in labels for c in idx]
    return {
        "image": _canvas(manifest, i, row["sample_id"], image_dirs),
        "names": [class_name(int(c)) for c in idx],
        "probs": np.asarray(pred["topk_prob"])[:g],
        "correct": correct,
        "title": f"{row['sample_id']}: {g} label{'s' if g > 1 else ''}, {sum(correct)} in top-{g}",
    }


# ---- a model's top-k and a sample's image, for Figure 1, the consensus table and the explorer ----

@dataclass(frozen=True)
class TopK:
    """One model's top-`k` on a manifest's rows (-1 / 0 where it has no prediction)."""

    idx: np.ndarray  # (n, k) int64
    prob: np.ndarray  # (n, k) float64
    seen: np.ndarray  # (n,) bool: the row has a prediction


def model_topk(layout: ResultsLayout, dataset: str, model: str, ids: pd.Index, k: int = CONSENSUS_TOPK) -> TopK | None:
    """`model`'s top-`k` on `dataset`, by sample id onto the rows of `ids` (None: no predictions file)."""
    path = layout.prediction(dataset, model)
    if not path.exists():
        return None
    table = read_table(path, columns=["sample_id", "topk_idx", "topk_prob"])
    rows = ids.get_indexer(table.column("sample_id").to_numpy(zero_copy_only=False))
    ok = rows >= 0
    idx, prob = np.full((len(ids), k), -1, np.int64), np.zeros((len(ids), k))
    listed_idx = table.column("topk_idx").to_pylist()
    listed_prob = table.column("topk_prob").to_pylist()
    for r, i, p in zip(rows, listed_idx, listed_prob):
        if r >= 0 and i and p and len(i) == len(p):  # evaluate refuses other rows; here they show nothing
            n = min(k, len(i))
            idx[r, :n], prob[r, :n] = i[:n], [np.nan if v is None else v for v in p[:n]]
    bad = (idx < 0) | (idx >= NUM_CLASSES) | ~np.isfinite(prob)  # a damaged file shows no class, never a wrong one
    idx[bad], prob[bad] = -1, 0.0
    seen = np.zeros(len(ids), bool)
    seen[rows[ok]] = True
    return TopK(idx, prob, seen)


def image_reader(manifest: Manifest) -> Any | None:
    """The format's sample reader of an image manifest (None for PatchML, rendered instead, or when its
    images are not here): made once, handed to `sample_image` for each sample."""
    if manifest.kind == "patchml":
        return None
    try:
        return reader(manifest)
    except MlreassessError:
        return None


def sample_image(manifest: Manifest, read: Any | None, row: int, dirs: list[Path], side: int) -> Image.Image | None:
    """Sample `row` as inference read it, at most `side` pixels a side (JPEGs decoded at a reduced size:
    draft mode); PatchML: its canvas (`canvas_image`, PNGs in `dirs`); None when unreadable here."""
    if manifest.kind == "patchml":
        image = canvas_image(manifest, row, dirs)
    elif read is None:
        return None
    else:
        try:
            image = Image.open(io.BytesIO(read.read(row)))
            image.draft("RGB", (2 * side, 2 * side))
            image = image.convert("RGB")
        except (MlreassessError, OSError, ValueError, Image.DecompressionBombError):
            return None
    if image is not None:
        image.thumbnail((side, side))
    return image
