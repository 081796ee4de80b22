"""`RESULTS/index.html`: the results page people open in a browser.

One self-contained file (inline CSS and JS from `resources/results_page.html`, no network request
of any kind) that opens from disk or from any static server:
- a leaderboard, one row per checkpoint: top-1, ReaL and ASMA on every dataset with their 95%
  intervals, the paper's value beside ours (marked when it lies outside our interval), rank shift;
  sortable, filterable, downloadable as CSV; a row expands to the model's subgroup accuracies by
  label count, its prediction files' metadata and its failures;
- PatchML canvases with the top models' top-g predictions (as in Figure 8);
- the failed (model, dataset) units from `failures.jsonl`;
- the paper's figures (`figures/*.png`, linked) and tables (`tables/*.csv`).
The numbers travel as one JSON block; the page's script draws the leaderboard from it.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import logging
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Iterator

import pandas as pd

from mlreassess.errors import MlreassessError
from mlreassess.io import read_meta, write_text_atomic
from mlreassess.provenance import derived_changed, derived_from
from mlreassess.report import derived
from mlreassess.report import html_data as data
from mlreassess.report.html_build import Markup, data_uri, escape, join, tag
from mlreassess.report.html_build import table as html_table
from mlreassess.report.html_canvases import CanvasRequest, write_canvases
from mlreassess.report.inputs import ReportInputs
from mlreassess.report.paper import REPORTED_CSV
from mlreassess.results import ResultsLayout

log = logging.getLogger(__name__)

TEMPLATE = "results_page.html"  # in mlreassess/resources/
FIGURE_ORDER = ("figure8", "figure7", "figure4", "figure5", "figure6")
FIGURE_TITLES = {
    "figure8": "Figure 8: PatchML canvases and the best model's top-g predictions (green: a true label)",
    "figure7": "Figure 7: PatchML subgroup accuracy by label count, over models and seeds",
    "figure4": "Figure 4: label-count shares of the ImageNet datasets",
    "figure5": "Figure 5: V1 vs V2 per model",
    "figure6": "Figure 6: V1 vs V2 by label count",
}
TABLE_ORDER = ("table3", "table1", "table2", "tables4-10", "reported_vs_reproduced")
# Long tables: the leaderboard shows their numbers, so the page links them instead.
LINKED_TABLES = ("tables4-10", "reported_vs_reproduced")
NO_METRICS = Markup('<p class="note">No metrics.parquet yet: run <code>mlreassess evaluate --results RESULTS</code>, '
                    "then <code>mlreassess report --results RESULTS</code>.</p>")
# The leaderboard's frame; the page's script fills the table from the JSON data.
BOARD = """<section id="leaderboard-section">
<h2>Leaderboard</h2>
<p class="note" id="board-note"></p>
<div class="controls">
<input type="search" id="filter" placeholder="Filter by name, e.g. vit convnext" aria-label="Filter models by name">
<label><input type="checkbox" id="show-ci" checked> 95% intervals</label>
<label><input type="checkbox" id="show-paper" checked> paper values</label>
<button type="button" id="download-csv">Download CSV (visible rows)</button>
<span id="row-count" aria-live="polite"></span>
</div>
<div class="table-wrap board-wrap"><table id="leaderboard" class="board"><thead></thead><tbody></tbody></table></div>
<noscript><p class="note">The leaderboard needs JavaScript; tables/tables4-10.csv holds the same numbers.</p></noscript>
</section>"""


@dataclass(frozen=True)
class PageOptions:
    title: str = "mlreassess results"
    intro: str = ""  # a paragraph under the title
    v1: str | None = None  # which datasets play V1 / V2 (as `mlreassess report --v1/--v2`)
    v2: str | None = None
    reported_csv: Path | None = None  # the paper's numbers (default data_manifests/paper_reported.csv)
    extra_figures: tuple[tuple[Path, str], ...] = ()  # (png, title), shown right after Figure 8
    figures_first: bool = False  # figures above the leaderboard (the demo opens with them)
    top_models: int = 3  # models (by PatchML ASMA) whose top-g bars go with the canvases
    canvas_models: tuple[str, ...] = field(default=())  # more models to show there, on request
    canvases: int = 4  # PatchML canvases shown (= PNG files written)


def _rank(stem: str, order: tuple[str, ...]) -> int:
    return order.index(stem) if stem in order else len(order)


def ordered_figures(root: Path, extra: tuple[tuple[Path, str], ...] = ()) -> list[tuple[Path, str]]:
    """(png, title) of RESULTS/figures/*.png in the page's order, `extra` right after Figure 8."""
    layout = ResultsLayout(root)
    pngs = sorted(layout.files(layout.figures, "*.png"),  # files inside RESULTS: no folder, FIFO, device, outside link
                  key=lambda p: (_rank(p.stem, FIGURE_ORDER), p.stem))
    out = [(p, FIGURE_TITLES.get(p.stem, p.stem)) for p in pngs]
    at = 1 if out and out[0][0].stem == "figure8" else 0
    return out[:at] + [(Path(p), t) for p, t in extra if Path(p).exists()] + out[at:]


def ordered_tables(root: Path) -> list[Path]:
    """RESULTS/tables/*.md in the page's order."""
    layout = ResultsLayout(root)
    return sorted(layout.files(layout.tables, "*.md"), key=lambda p: (_rank(p.stem, TABLE_ORDER), p.stem))


def table_parts(md_path: Path) -> tuple[str, str]:
    """(caption, note) of a report table's Markdown file: its bold first line and trailing text."""
    lines = md_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    caption = lines[0].strip("* ") if lines else md_path.stem
    note = "\n".join(line for line in lines[1:] if line.strip() and not line.startswith("|"))
    return caption, note


# ---------------------------------------------------------------- data


def _inputs(root: Path, opts: PageOptions) -> ReportInputs:
    return ReportInputs(root, [], opts.v1, opts.v2)


def _canvas_models(rows: list[dict], columns: list[dict], roles: data.Roles, opts: PageOptions) -> tuple[str, ...]:
    """The top models by PatchML ASMA, then the ones asked for (that were evaluated)."""
    col = next((i for i, c in enumerate(columns) if c["id"] == f"{roles.patchml}/asma"), None)
    scored = [] if col is None else [(r["cells"][col][0], r["model"]) for r in rows if r["cells"][col]]
    top = [m for _, m in sorted(scored, key=lambda s: (-s[0], s[1]))[: max(opts.top_models, 0)]]
    known = {r["model"] for r in rows}
    return tuple(dict.fromkeys(top + [m for m in opts.canvas_models if m in known]))


def _kinds_and_roles(report: ReportInputs, metrics: pd.DataFrame | None) -> tuple[dict[str, str], data.Roles]:
    """dataset -> kind for every dataset in the metrics, and which of them play V1 / V2 / PatchML."""
    if metrics is None:
        return {}, data.Roles()
    kinds = report.kinds()
    kinds.update({d: "" for d in metrics["dataset"].unique() if d not in kinds})  # not in the metadata
    return kinds, data.Roles(report.v1_name, report.v2_name, report.patchml_name)


def page_data(root: Path, opts: PageOptions) -> dict:
    """Everything the page's script draws, as JSON-ready data (see html_data); writes the canvases."""
    layout = ResultsLayout(root)
    report = _inputs(root, opts)
    metrics = report.metrics
    kinds, roles = _kinds_and_roles(report, metrics)
    paper = data.paper_values(opts.reported_csv or REPORTED_CSV)
    failures = data.open_failures(data.read_failures(layout.failures), metrics)
    columns = data.leaderboard_columns(metrics, kinds, roles, paper) if metrics is not None else []
    rows = data.leaderboard_rows(metrics, columns, roles, paper, failures)
    data.add_timm_references(rows, columns, metrics, roles, layout)
    datasets = data.dataset_order(kinds, roles)
    sub = data.subgroups(metrics, datasets) if metrics is not None else {}
    predicted = [d for d in datasets if d != roles.patchml]  # the mean has no prediction files
    details = {r["model"]: {"subgroups": sub.get(r["model"], {}),
                            "meta": data.prediction_meta(layout, r["model"], predicted)} for r in rows}
    seeds = sorted(d for d, k in kinds.items() if k == "patchml" and d != roles.patchml)
    canvases = None
    if seeds:
        canvases = write_canvases(layout, CanvasRequest(seeds[0], _canvas_models(rows, columns, roles, opts), opts.canvases))
    meta = read_meta(layout.metrics) if metrics is not None else {}
    return {"columns": columns, "rows": rows, "details": details, "canvases": canvases,
            "failures": failures, "has_metrics": metrics is not None, "metrics_note": report.metrics_note,
            "roles": {"v1": roles.v1, "v2": roles.v2, "patchml": roles.patchml},
            "n_boot": meta.get("n_boot"), "level": meta.get("level"), "paper_csv": bool(paper)}


# ---------------------------------------------------------------- HTML sections
# Every element is made by html_build.tag, which escapes every text and attribute value it is given.

def current_files(root: Path, files: list[Path]) -> list[Path]:
    """The tables / figures the report made from the inputs there now (`derived`); each other one is
    left out with a line saying why, never shown as current."""
    keep = []
    for path in files:
        why = derived.why_not_current(path, root)
        if why is None:
            keep.append(path)
        else:
            log.warning(f"results page: {path.relative_to(root).as_posix()} left out: {why} (run `mlreassess report`)")
    return keep


def _figure(root: Path, path: Path, title: str) -> Markup:
    rel = path.relative_to(root).as_posix() if path.is_relative_to(root) else path.as_posix()
    uri = data_uri(path)
    shown = tag("img", src=uri, alt=title, loading="lazy") if uri else tag("span", "(not shown: not a PNG, or too large)")
    return tag("figure", tag("figcaption", title), tag("a", shown, href=rel))


def _figures_html(root: Path, opts: PageOptions) -> Markup:
    extra = {Path(p) for p, _ in opts.extra_figures}  # the caller's own figures
    figures = ordered_figures(root, opts.extra_figures)
    checked = set(current_files(root, [p for p, _ in figures if p not in extra]))
    figures = [(p, t) for p, t in figures if p in extra or p in checked]
    if not figures:
        return Markup("")
    return tag("section", tag("h2", "Figures"), [_figure(root, p, t) for p, t in figures], id="figures")


def _cell(v) -> str:
    return f"{v:.2f}" if isinstance(v, float) else str(v)


def _table(root: Path, md: Path) -> Markup:
    caption, note = table_parts(md)
    rel = md.relative_to(root).as_posix()
    csv_path = md.with_suffix(".csv")
    link = tag("p", caption, " ", tag("a", rel, href=rel), " (also ",
               tag("a", ".csv", href=csv_path.relative_to(root).as_posix()), ", .tex)", class_="linked")
    if md.stem in LINKED_TABLES or not csv_path.exists():
        return link
    try:
        frame = pd.read_csv(csv_path, keep_default_na=False)
    except (OSError, UnicodeDecodeError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError):
        return link  # not a table pandas can read: the link stays
    rows = [[_cell(v) for v in row] for row in frame.itertuples(index=False)]
    return join([tag("h3", caption), tag("div", html_table(list(frame.columns), rows, class_="paper-table"),
                                        class_="table-wrap plain"),
                 tag("p", note, class_="note") if note else ""])


def _tables_html(root: Path) -> Markup:
    tables = current_files(root, ordered_tables(root))
    if not tables:
        return Markup("")
    return tag("section", tag("h2", "The paper's tables"), [_table(root, md) for md in tables], id="tables")


def _failures_html(failures: list[dict]) -> Markup:
    if not failures:
        return Markup("")
    rows = [tag("tr", tag("td", f["model"]), tag("td", f["dataset"]), tag("td", f["error"], class_="err"))
            for f in sorted(failures, key=lambda f: (f["model"], f["dataset"]))]
    head = tag("thead", tag("tr", tag("th", "model"), tag("th", "dataset"), tag("th", "error")))
    return tag("section", tag("h2", "Failures"),
               tag("p", "From failures.jsonl: the (model, dataset) units that failed and have no metrics since.",
                   class_="note"),
               tag("div", tag("table", head, tag("tbody", rows), class_="failures"), class_="table-wrap plain"),
               id="failures")


def _leaderboard_html(d: dict) -> Markup:
    note = Markup("") if d["has_metrics"] else NO_METRICS
    if d.get("metrics_note"):
        note = join([note, tag("p", d["metrics_note"], class_="note unchecked")])
    if not d["rows"]:
        return tag("section", tag("h2", "Leaderboard"), note, id="leaderboard-section")
    return Markup(BOARD.replace("<h2>Leaderboard</h2>", "<h2>Leaderboard</h2>" + note, 1))


def _nav(sections: list[tuple[str, str]]) -> Markup:
    return tag("nav", join([tag("a", t, href=f"#{i}") for i, t in sections], " "))


def _csp(template: str) -> str:
    """The page's Content-Security-Policy: nothing may load or run but its own inline script and
    style (by their sha256) and images given as data: URLs, so HTML that got into the page anyway
    could run no script and reach no network."""
    def digest(pattern: str) -> str:
        body = re.search(pattern, template, re.S).group(1)
        return "'sha256-" + base64.b64encode(hashlib.sha256(body.encode("utf-8")).digest()).decode("ascii") + "'"

    return (f"default-src 'none'; script-src {digest(r'<script>(.*?)</script>')}; "
            f"style-src {digest(r'<style>(.*?)</style>')}; img-src data:; base-uri 'none'; form-action 'none'")


def page_html(root: Path, opts: PageOptions, d: dict) -> str:
    board = _leaderboard_html(d)
    canvases = Markup('<section id="canvases" hidden></section>') if d["canvases"] else ""
    figures, tables, failures = _figures_html(root, opts), _tables_html(root), _failures_html(d["failures"])
    order = [figures, board, canvases] if opts.figures_first else [board, canvases, figures]
    body = join([s for s in [*order[:2], failures, *order[2:], tables] if s], "\n")
    titles = {"leaderboard-section": "Leaderboard", "canvases": "PatchML canvases", "failures": "Failures",
              "figures": "Figures", "tables": "Tables"}
    nav = _nav([(i, t) for i, t in titles.items() if f'id="{i}"' in body])
    intro = tag("p", opts.intro, class_="intro") if opts.intro else ""
    payload = json.dumps(d, allow_nan=False, separators=(",", ":"))
    # Inside <script>: no "</script>" or "<!--" can appear, whatever a model name or error holds.
    payload = payload.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    template = (resources.files("mlreassess") / "resources" / TEMPLATE).read_text(encoding="utf-8")
    fill = {"TITLE": escape(opts.title), "HEADER": join([tag("h1", opts.title), intro, nav]), "BODY": body,
            "DATA": payload, "CSP": escape(_csp(template)), "DERIVED": escape(json.dumps(d.get("derived_from", {})))}
    return re.sub(r"@@(TITLE|HEADER|BODY|DATA|CSP|DERIVED)@@", lambda m: fill[m.group(1)], template)  # one pass


def page_inputs(root: Path) -> list[Path]:
    """What the page is made from (besides the tables and figures, which carry their own records):
    metrics.parquet, failures.jsonl and the manifest copies."""
    layout = ResultsLayout(root)
    return [p for p in (layout.metrics, layout.failures, *layout.manifest_copies()) if p.is_file()]


_DERIVED = re.compile(r'<meta name="mlreassess-derived-from" content="([^"]*)">')


def why_page_stale(results: str | Path) -> str | None:
    """Why RESULTS/index.html is not the page of the metrics, failures and manifests there now (None:
    it is): the page records what it was made from, and this compares."""
    root = Path(results)
    path = ResultsLayout(root).index_html
    try:
        found = _DERIVED.search(path.read_text(encoding="utf-8", errors="replace"))
        recorded = json.loads(html.unescape(found.group(1))) if found else None
    except (OSError, ValueError):
        recorded = None
    return derived_changed(recorded, page_inputs(root), root)


def write_results_page(results: str | Path, opts: PageOptions = PageOptions()) -> Path:
    """Write RESULTS/index.html (and the canvases it shows); returns its path."""
    root = Path(results)
    d = page_data(root, opts)
    d["derived_from"] = derived_from(page_inputs(root), root)
    path = ResultsLayout(root).index_html
    write_text_atomic(path, page_html(root, opts, d))
    log.info("results page: %s (%d models)", path, len(d["rows"]))
    return path


@contextmanager
def page_out_of_date_on_failure(results: str | Path | None, stage: str) -> Iterator[None]:
    """Run a stage that makes RESULTS/index.html's numbers (evaluate, report); if it fails, an existing
    page is replaced by one saying it is out of date and why, so the old numbers never pass for
    current; the error goes on up."""
    try:
        yield
    except MlreassessError as exc:
        if results is not None:
            mark_page_out_of_date(results, f"{stage} failed: {exc}")
        raise


def mark_page_out_of_date(results: str | Path, reason: str) -> Path | None:
    """Replace RESULTS/index.html (if there is one) with a page that says it is out of date and why."""
    try:
        path = ResultsLayout(results).index_html
    except MlreassessError:  # the page itself is where it must not be: left alone (the error says why)
        return None
    if not path.is_file():
        return None
    title = "mlreassess results: out of date"
    body = join([tag("h1", title), tag("p", "The results page of this folder is out of date, and its numbers are not "
                                            "shown: " + reason),
                 tag("p", "Fix the cause, then run `mlreassess report --results RESULTS` (or `mlreassess run`).")])
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'\">"
            f"<title>{escape(title)}</title></head><body>{body}</body></html>\n")
    write_text_atomic(path, page)
    log.info("results page: %s: marked out of date", path)
    return path
