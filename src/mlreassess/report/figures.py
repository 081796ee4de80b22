"""The paper's Figures 4-8 with matplotlib: V1 blue, V2 orange, differences red (as in the paper).

Each builder takes plain inputs and returns a `matplotlib.figure.Figure` on its own Agg canvas;
`save_figure` writes PNG and PDF (TrueType fonts embedded: pdf.fonttype 42) atomically. No pyplot:
nothing here selects a backend, keeps figures in a global registry or changes rcParams; the
builders and `save_figure` apply `STYLE` only while they run (`matplotlib.rc_context`).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Callable, Mapping, Sequence, TypeVar

import matplotlib
import matplotlib.lines
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from mlreassess.constants import IMAGENET_ASMA_RANGE
from mlreassess.io import atomic_path

V1_COLOR = "#1f77b4"
V2_COLOR = "#ff7f0e"
DIFF_COLOR = "#d62728"
CORRECT_COLOR = "#2ca02c"
WRONG_COLOR = "#d62728"
_MAX_NAMED_MODELS = 30  # above this, model names on the x axis would overlap: ticks only
# TrueType fonts in PDF/PS (editable text, accepted by publishers); the paper's small font sizes.
STYLE = {"pdf.fonttype": 42, "ps.fonttype": 42, "font.size": 9, "axes.titlesize": 10}

F = TypeVar("F", bound=Callable)


def styled(fn: F) -> F:
    """Run `fn` under `STYLE`. Drawing and saving both need it: text sizes are read when an
    artist is made (some only at draw time, e.g. tick labels), font types when the file is written."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with matplotlib.rc_context(STYLE):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def new_figure(**kwargs) -> Figure:
    """A Figure on its own Agg canvas (PNG; `savefig` switches to the PDF backend for .pdf)."""
    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)
    return fig


@styled
def save_figure(fig: Figure, out_dir: Path, stem: str) -> list[Path]:
    paths = []
    for ext in ("png", "pdf"):
        path = Path(out_dir) / f"{stem}.{ext}"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=ext, dpi=150, bbox_inches="tight")
        paths.append(path)
    return paths


@styled
def figure4(counts_by_dataset: Mapping[str, np.ndarray], colors: Sequence[str] | None = None) -> Figure:
    """Figure 4: pies of the share of images per label count (1..5, >5; 0-label images left out)."""
    top = IMAGENET_ASMA_RANGE[-1]
    cats = [str(g) for g in IMAGENET_ASMA_RANGE] + [f">{top}"]
    fig = new_figure(figsize=(3.6 * len(counts_by_dataset), 3.8))
    axes = fig.subplots(1, len(counts_by_dataset), squeeze=False)
    cmap = matplotlib.colormaps["Blues"]
    wedge_colors = colors or [cmap(x) for x in np.linspace(0.85, 0.25, len(cats))]
    for ax, (name, counts) in zip(axes[0], counts_by_dataset.items()):
        counts = np.asarray(counts)
        sizes = [int((counts == g).sum()) for g in IMAGENET_ASMA_RANGE] + [int((counts > top).sum())]
        total = sum(sizes)

        def label(p: float) -> str:  # small wedges get no text, so nothing overlaps
            return f"{p:.1f}%" if p >= 4 else ""

        ax.pie(sizes, colors=wedge_colors, autopct=label, startangle=90, counterclock=False,
               pctdistance=0.72, wedgeprops={"edgecolor": "white", "linewidth": 0.8})
        multi = 100.0 * (total - sizes[0]) / total if total else 0.0
        ax.set_title(f"{name}\n(n = {total:,}; {multi:.1f}% multi-label)")
        ax.set_aspect("equal")
    fig.legend(cats, title="Label count", loc="lower center", ncol=len(cats), frameon=False, bbox_to_anchor=(0.5, -0.02))
    fig.subplots_adjust(bottom=0.15)
    return fig


@styled
def figure5(panels: Mapping[str, tuple[pd.Series, pd.Series]], v1_name: str = "ImageNetV1",
            v2_name: str = "ImageNetV2") -> Figure:
    """Figure 5: per-model V1 (blue) and V2 (orange) lines and their difference V1 - V2 (red, right axis).

    `panels`: title -> (V1 values, V2 values) indexed by model; models are ordered by the first
    panel's V1 value (descending) in every panel.
    """
    first_v1 = next(iter(panels.values()))[0]
    fig = new_figure(figsize=(8, 2.6 * len(panels)))
    axes = fig.subplots(len(panels), 1, squeeze=False)
    for ax, (title, (a, b)) in zip(axes[:, 0], panels.items()):
        both = pd.concat([a.rename("v1"), b.rename("v2"), first_v1.rename("key")], axis=1).dropna(subset=["v1", "v2"])
        both = both.sort_values("key", ascending=False, kind="stable", na_position="last")
        x = np.arange(len(both))
        ax.plot(x, both["v1"], color=V1_COLOR, marker="o", ms=2.5, lw=1.2, label="ImageNetV1")
        ax.plot(x, both["v2"], color=V2_COLOR, marker="o", ms=2.5, lw=1.2, label="ImageNetV2")
        ax.set_ylabel("accuracy (%)")
        ax.set_title(title)
        ax2 = ax.twinx()
        ax2.plot(x, both["v1"] - both["v2"], color=DIFF_COLOR, lw=1.0, label="difference V1 − V2 (right axis)")
        ax2.axhline(0, color=DIFF_COLOR, lw=0.5, ls=":")
        ax2.set_ylabel("V1 − V2 (points)", color=DIFF_COLOR)
        ax2.tick_params(axis="y", colors=DIFF_COLOR)
        if len(both) <= _MAX_NAMED_MODELS:
            ax.set_xticks(x)
            ax.set_xticklabels(both.index, rotation=60, ha="right", fontsize=6)
        else:
            ax.set_xticks([])
        ax.set_xlabel("models, ordered by ImageNetV1 top-1")
    handles = [h for a in (axes[0, 0], axes[0, 0].figure.axes[len(panels)]) for h in a.get_legend_handles_labels()[0]]
    fig.legend(handles, [h.get_label() for h in handles], loc="upper center", ncol=3, frameon=False,
               bbox_to_anchor=(0.5, 1.0))
    fig.suptitle(f"V1 = {v1_name}, V2 = {v2_name}", y=1.025, fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    return fig


def _boxes(ax, groups: Sequence[int], data: Mapping[str, Mapping[int, np.ndarray]], colors: Mapping[str, str], rng):
    """Side-by-side boxplots per label count, one colour per series, with jittered per-model dots."""
    series = list(data)
    width = 0.8 / max(len(series), 1)
    for s, name in enumerate(series):
        pos = np.arange(len(groups)) + (s - (len(series) - 1) / 2) * width
        vals = [np.asarray(data[name].get(g, []), dtype=float) for g in groups]
        keep = [i for i, v in enumerate(vals) if len(v)]
        if keep:
            ax.boxplot([vals[i] for i in keep], positions=pos[keep], widths=width * 0.8, patch_artist=True,
                       showfliers=False, boxprops={"facecolor": colors[name], "alpha": 0.35, "edgecolor": colors[name]},
                       medianprops={"color": colors[name], "lw": 1.5}, whiskerprops={"color": colors[name]},
                       capprops={"color": colors[name]})
        for i in keep:
            jitter = rng.uniform(-width * 0.3, width * 0.3, size=len(vals[i]))
            ax.scatter(pos[i] + jitter, vals[i], s=5, color=colors[name], alpha=0.6, lw=0, zorder=3)
        ax.plot([], [], color=colors[name], lw=6, alpha=0.5, label=name)
    ax.set_xticks(np.arange(len(groups)))
    ax.set_xticklabels([str(g) for g in groups])
    ax.set_xlabel("label count")


@styled
def figure6(panels: Mapping[str, Mapping[str, Mapping[int, np.ndarray]]], groups: Sequence[int]) -> Figure:
    """Figure 6: ReaL and subgroup accuracy by label count, V1 (blue) vs V2 (orange), dots = models.

    `panels`: title -> {series name -> {label count -> per-model values}}; the first series is V1.
    """
    rng = np.random.default_rng(0)
    fig = new_figure(figsize=(5 * len(panels), 3.6))
    axes = fig.subplots(1, len(panels), squeeze=False)
    for ax, (title, data) in zip(axes[0], panels.items()):
        colors = dict(zip(data, [V1_COLOR, V2_COLOR]))
        _boxes(ax, groups, data, colors, rng)
        ax.set_title(title)
        ax.set_ylabel(f"{title} (%)")
        ax.legend(loc="lower left", fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


# Figure 7's two families of lines sit a little left (top-1) and right (ASMA) of each label count,
# with their own markers, so a model that leads both is drawn twice and neither line hides the other.
FIGURE7_FAMILIES = (("top-1 V1", "Blues", "o", -0.12), ("ASMA PatchML", "Oranges", "s", 0.12))


@styled
def figure7(per_seed: Mapping[int, np.ndarray], groups: Sequence[int], top_v1: Mapping[str, Mapping[int, float]],
            top_asma: Mapping[str, Mapping[int, float]]) -> Figure:
    """Figure 7: PatchML subgroup accuracy by label count (boxes over models x seeds, dots),
    lines for the top-5 models by V1 top-1 (blue shades) and by PatchML ASMA (orange shades)."""
    rng = np.random.default_rng(0)
    fig = new_figure(figsize=(8, 4.8))
    ax = fig.subplots()
    _boxes(ax, groups, {"all models x seeds": per_seed}, {"all models x seeds": "#7f7f7f"}, rng)
    x = np.arange(len(groups))
    for lines, (who, cmap_name, marker, dx) in zip((top_v1, top_asma), FIGURE7_FAMILIES):
        cmap = matplotlib.colormaps[cmap_name]
        for i, (model, vals) in enumerate(lines.items()):
            y = [vals.get(g, np.nan) for g in groups]
            ax.plot(x + dx, y, color=cmap(0.9 - 0.12 * i), marker=marker, ms=3.5, lw=1.2, zorder=4,
                    label=f"{model} ({who} #{i + 1})")
    ax.set_ylabel("subgroup accuracy (%)")
    ax.set_xlabel("label count (the sets' patch counts k)")
    ax.set_title("PatchML: subgroup accuracy by label count")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, fontsize=6.5, frameon=False)
    fig.tight_layout()
    return fig


@styled
def figure8(examples: Sequence[dict]) -> Figure:
    """Figure 8: example canvases (left) and their top-g predictions as bars (right), green when
    the class is one of the canvas's labels, red otherwise.

    Each example: {"image": PIL.Image, "names": [class names], "probs": [..], "correct": [bool], "title": str}.
    """
    n = len(examples)
    cols = 2 if n > 1 else 1
    rows = (n + cols - 1) // cols
    fig = new_figure(figsize=(7.6 * cols, 2.9 * rows))
    outer = fig.add_gridspec(rows, cols, wspace=0.15, hspace=0.45)
    for i, ex in enumerate(examples):
        r, c = divmod(i, cols)
        # image | bars, with room between them for the class names
        inner = outer[r, c].subgridspec(1, 2, width_ratios=[1, 1.2], wspace=0.75)
        colors = [CORRECT_COLOR if ok else WRONG_COLOR for ok in ex["correct"]]
        _image_and_bars(fig, inner[0, 0], inner[0, 1], ex["image"], (ex.get("title", ""), 8), ex["probs"], colors,
                        ex["names"])
    return fig


def _image_and_bars(fig: Figure, image_cell, bars_cell, image, title: tuple[str, int], probs, colors, names):
    """One example of Figures 1 and 8: the image (titled) and its classes' probabilities as bars."""
    ax_img = fig.add_subplot(image_cell)
    ax_img.imshow(image)
    ax_img.set_axis_off()
    ax_img.set_title(title[0], fontsize=title[1], loc="left")
    ax = fig.add_subplot(bars_cell)
    y = np.arange(len(names))
    bars = ax.barh(y, 100 * np.asarray(probs, dtype=float), color=colors)
    ax.set_yticks(y)
    ax.set_yticklabels(names, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("softmax probability (%)", fontsize=7)
    ax.tick_params(axis="x", labelsize=7)
    return bars


OTHER_COLOR = "#9e9e9e"


@styled
def figure1(examples: Sequence[dict], model: str, dataset: str) -> Figure:
    """Figure 1: images top-1 counts as wrong whose top-1 is one of their labels, each above the
    model's top-5 as bars: green = one of the image's labels, grey = not; the original label's bar
    is outlined and its name marked.

    Each example: {"image", "names", "probs", "in_labels", "original", "title"} (`report.figure1`)."""
    n = len(examples)
    cols = min(4, n)
    rows = (n + cols - 1) // cols
    fig = new_figure(figsize=(3.1 * cols, 4.3 * rows))
    outer = fig.add_gridspec(rows, cols, wspace=0.9, hspace=0.35)
    for i, ex in enumerate(examples):
        r, c = divmod(i, cols)
        inner = outer[r, c].subgridspec(2, 1, height_ratios=[1.5, 1], hspace=0.25)
        colors = [CORRECT_COLOR if ok else OTHER_COLOR for ok in ex["in_labels"]]
        names = [f"{name} (label)" if o else name for name, o in zip(ex["names"], ex["original"])]
        bars = _image_and_bars(fig, inner[0, 0], inner[1, 0], ex["image"], (ex["title"], 7), ex["probs"], colors, names)
        for bar, original in zip(bars, ex["original"]):
            if original:
                bar.set_edgecolor("black")
                bar.set_linewidth(1.2)
    fig.suptitle(f"{model} on {dataset}: top-1 is not the original label, but is one of the image's labels "
                 "(green: in the label set; outlined: the original label)", fontsize=9)
    return fig


# Sets the model picks itself (metrics.parquet `thr_*`, `mass_*`, `aps_*`, `raps_*`; docs/metrics.md).
SET_MARKERS = {"thr": "o", "mass": "s", "aps": "^", "raps": "D"}
SET_LABELS = {"thr": "p \u2265 \u03c4 (over \u03c4)", "mass": "cumulative mass \u2265 q (over q)",
              "aps": "conformal APS", "raps": "conformal RAPS"}


@styled
def figure_sets(panels: Mapping[str, Mapping[str, Mapping[str, pd.DataFrame]]]) -> Figure:
    """Coverage of the full label set against mean set size (left; log x), and F1 against tau (right),
    per model, one row per dataset.

    `panels`: dataset title -> model -> set type ("thr", "mass", "aps", "raps") -> rows with columns
    `param`, `size`, `coverage`, `f1`, `bound` (True where the stored top-K only bounds a value:
    drawn hollow). The threshold and mass curves are lines over their parameter; APS / RAPS one point."""
    fig = new_figure(figsize=(10, 3.4 * len(panels)))
    axes = fig.subplots(len(panels), 2, squeeze=False)
    models = sorted({m for per in panels.values() for m in per})
    cmap = matplotlib.colormaps["tab10" if len(models) <= 10 else "viridis"]
    color = {m: cmap(i if len(models) <= 10 else i / max(1, len(models) - 1)) for i, m in enumerate(models)}
    for (left, right), (title, per_model) in zip(axes, panels.items()):
        for model, per_set in per_model.items():
            for kind, rows in per_set.items():
                rows = rows.sort_values("param")
                _set_points(left, rows["size"], rows["coverage"], rows["bound"], color[model], SET_MARKERS[kind],
                            line=kind in ("thr", "mass"))
                if kind == "thr":
                    _set_points(right, rows["param"], rows["f1"], rows["bound"], color[model], "o", line=True)
        left.set_xscale("log")
        left.set(xlabel="mean set size (classes)", ylabel="coverage of the label set (%)", title=title)
        right.set(xlabel="\u03c4 (threshold sets p \u2265 \u03c4)", ylabel="F1 (%)", title=title)
    handles = [matplotlib.lines.Line2D([], [], color="0.3", marker=SET_MARKERS[k], ls="-" if k in ("thr", "mass") else "",
                                       label=SET_LABELS[k]) for k in SET_MARKERS]
    handles.append(matplotlib.lines.Line2D([], [], color="0.3", marker="o", mfc="none", ls="", label="a bound (top-K only)"))
    if len(models) <= _MAX_LEGEND_MODELS:
        handles += [matplotlib.lines.Line2D([], [], color=color[m], lw=2, label=m) for m in models]
    fig.legend(handles=handles, loc="lower center", ncol=4, frameon=False, bbox_to_anchor=(0.5, -0.02), fontsize=7)
    fig.tight_layout(rect=(0, 0.08 + 0.02 * (len(handles) // 4), 1, 1))
    return fig


_MAX_LEGEND_MODELS = 12


def _set_points(ax, x, y, bound, color, marker: str, line: bool) -> None:
    """Points (hollow where a bound) joined by a thin line when they are a curve."""
    x, y, bound = np.asarray(x, float), np.asarray(y, float), np.asarray(bound, bool)
    if line and len(x) > 1:
        ax.plot(x, y, color=color, lw=0.8, alpha=0.8)
    ax.scatter(x[~bound], y[~bound], color=color, marker=marker, s=14, zorder=3)
    ax.scatter(x[bound], y[bound], facecolors="none", edgecolors=color, marker=marker, s=14, zorder=3)
