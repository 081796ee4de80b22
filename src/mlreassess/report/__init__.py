"""The paper's tables and figures from RESULTS (`mlreassess report`).

- `build`: the items (table1 .. figure8), what each needs, `Report.run`.
- `inputs`: reads metrics.parquet, the manifests and Figure 8's predictions and canvases.
- `tables`, `figures`: build each table / figure from plain values and write its files.
- `paper`: the paper's reported numbers (data_manifests/paper_reported.csv).
"""

from mlreassess.report.build import ALIASES, FIGURES, ITEMS, REPORTED_CSV, TABLES, Report, resolve_items
from mlreassess.report.inputs import DEFAULT_V2, FIGURE8_EXAMPLES, ReportInputs, Skip

__all__ = [
    "ALIASES", "DEFAULT_V2", "FIGURE8_EXAMPLES", "FIGURES", "ITEMS", "REPORTED_CSV", "Report", "ReportInputs",
    "Skip", "TABLES", "resolve_items",
]
