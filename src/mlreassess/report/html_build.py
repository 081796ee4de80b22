"""The one way the results page builds HTML in Python: `tag(name, *children, **attributes)`.

Every child and attribute value is text, escaped, unless it is `Markup` (what `tag` returns): so a
model name, an error message, a table cell or a file name from a RESULTS folder someone else wrote is
shown as text, whatever it holds, and no caller can forget to escape it. The page's script builds its
HTML the same way (`h`, a tagged template in resources/results_page.html).
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any, Iterable

MAX_EMBEDDED_IMAGE = 16 << 20  # a PNG larger than this is linked, not embedded
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Elements without a closing tag.
VOID = frozenset({"br", "img", "input", "link", "meta"})


class Markup(str):
    """HTML made by `tag` (or a literal of this module's callers): inserted as it is."""


def escape(value: Any) -> Markup:
    """`value` as HTML text (quotes escaped too, so it is safe in an attribute)."""
    return value if isinstance(value, Markup) else Markup(html.escape(str(value), quote=True))


def join(parts: Iterable[Any], sep: str = "") -> Markup:
    """Children side by side (each escaped unless Markup)."""
    return Markup(escape(sep).join(escape(p) for p in parts))


def _attribute(name: str, value: Any) -> str:
    name = name.rstrip("_").replace("_", "-")  # class_ -> class, data_col -> data-col, aria_label -> aria-label
    if value is True:
        return f" {name}"
    return f' {name}="{escape(value)}"'


def tag(name: str, *children: Any, **attributes: Any) -> Markup:
    """`<name a="v">children</name>`: text children and every attribute value escaped, Markup kept;
    attributes that are None or False are left out, True ones written bare; a list child is joined."""
    attrs = "".join(_attribute(k, v) for k, v in attributes.items() if v is not None and v is not False)
    if name in VOID:
        return Markup(f"<{name}{attrs}>")
    inner = join(c for child in children for c in (child if isinstance(child, (list, tuple)) else [child]))
    return Markup(f"<{name}{attrs}>{inner}</{name}>")


def table(header: list[Any], rows: Iterable[list[Any]], **attributes: Any) -> Markup:
    """A plain table: header cells and rows of cells (text escaped, Markup kept)."""
    head = tag("thead", tag("tr", [tag("th", h) for h in header]))
    body = tag("tbody", [tag("tr", [tag("td", c) for c in row]) for row in rows])
    return tag("table", head, body, **attributes)


def data_uri(png: Path) -> str | None:
    """A PNG as a data: URL (the page's policy loads images from nowhere else), None when it is not
    a readable PNG of sensible size."""
    try:
        if not png.is_file():  # a FIFO or a device (/dev/zero) would never end
            return None
        with open(png, "rb") as f:
            data = f.read(MAX_EMBEDDED_IMAGE + 1)
    except OSError:
        return None
    if len(data) > MAX_EMBEDDED_IMAGE:
        return None
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii") if data[:8] == _PNG_SIGNATURE else None
