"""The HTML kit of the reports: escaping, links, tables, and the page template (Jinja2, ``data/``)."""

from __future__ import annotations

import html
import importlib.resources
import json
import os
from collections.abc import Iterable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pandas as pd


def esc(value: Any) -> str:
    """HTML-escape ``str(value)``."""
    return html.escape("" if value is None else str(value), quote=True)


def href(path: Path, start: Path) -> str:
    """URL of ``path`` relative to the folder ``start`` (posix separators, percent-quoted)."""
    rel = os.path.relpath(Path(path), Path(start))
    return quote(Path(rel).as_posix())


def data_text(name: str) -> str:
    """The text of ``thalamus_bidsapp/data/<name>``."""
    return importlib.resources.files("thalamus_bidsapp.data").joinpath(name).read_text()


def pipeline_version(output_dir: Path) -> str:
    """Version of the pipeline that wrote ``output_dir`` (its ``dataset_description.json``), else ours."""
    try:
        described = json.loads((Path(output_dir) / "dataset_description.json").read_text())
        return str(described["GeneratedBy"][0]["Version"])
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        from thalamus_bidsapp import __version__

        return __version__


@lru_cache(maxsize=None)
def _environment():
    """The Jinja2 environment of the report templates in ``thalamus_bidsapp/data`` (autoescaped)."""
    import jinja2

    return jinja2.Environment(loader=jinja2.PackageLoader("thalamus_bidsapp", "data"),
                              autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
                              trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)


def render_template(name: str, **context: Any) -> str:
    """Render ``data/<name>`` with ``context``; values marked with :func:`safe` are inserted as HTML."""
    return _environment().get_template(name).render(**context)


def safe(text: str) -> Any:
    """Mark ``text`` as HTML that the templates insert unescaped (built by :func:`html_table` and friends)."""
    from markupsafe import Markup

    return Markup(text)


def render_page(*, title: str, subtitle: str, toc: Iterable[tuple[str, str]], body: str, footer: str,
                version: str) -> str:
    """A whole HTML page from ``data/report_page.html`` with ``data/report.css`` inlined.

    ``toc`` is a sequence of (anchor id, label); ``subtitle``, ``body`` and
    ``footer`` are HTML; ``title`` and ``version`` are text.
    """
    return render_template("report_page.html", title=title, subtitle=safe(subtitle), toc=list(toc),
                           body=safe(body), footer=safe(footer), css=safe(data_text("report.css")), version=version)


def column_descriptions(tsv: Path) -> dict[str, str]:
    """Column descriptions of a TSV from its JSON sidecar ({} when there is none)."""
    sidecar = Path(tsv).with_suffix(".json")
    try:
        spec = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        return {}
    out = {}
    for name, value in spec.items():
        if isinstance(value, Mapping):
            text = str(value.get("Description", ""))
            if value.get("Units"):
                text += f" ({value['Units']})"
            out[name] = text
        elif isinstance(value, str):
            out[name] = value
    return out


def _format_cell(value: Any, decimals: int | None = None) -> tuple[str, bool]:
    """Cell text and whether it is numeric (right-aligned); ``decimals``: fixed decimals of a float column."""
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return "n/a", False
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value)), False
    if isinstance(value, (int, np.integer)):
        return str(int(value)), True
    if isinstance(value, (float, np.floating)):
        number = float(value)
        if decimals is not None:
            return f"{number:.{decimals}f}", True
        if number.is_integer() and abs(number) < 1e15:
            return str(int(number)), True
        # Four significant digits, but no exponent for large volumes (17153.5 mm3, not 1.715e+04).
        return (f"{number:.1f}" if abs(number) >= 1e4 else f"{number:.4g}"), True
    return str(value), False


def _breakable(name: Any) -> str:
    return esc(name).replace("_", "_<wbr>")


def html_table(table: pd.DataFrame, *, descriptions: Mapping[str, str] | None = None,
               max_rows: int | None = None, row_classes: list[str] | None = None,
               html_columns: Iterable[str] = (), decimals: Mapping[str, int] | None = None) -> str:
    """A DataFrame as an HTML table (column descriptions as header tooltips).

    Parameters
    ----------
    table
        The rows to show.
    descriptions
        Column name -> description (the TSV's JSON sidecar), shown as ``title``.
    max_rows
        Show only the first rows; a note says how many were left out.
    row_classes
        CSS class of each row (``"good"``, ``"bad"`` or ``""``).
    html_columns
        Columns whose values are already HTML (links); the others are escaped.
    decimals
        Column name -> fixed number of decimals of its numbers (one rounding per column); the
        others get four significant digits.
    """
    if table.empty:
        return '<p class="note">No rows.</p>'
    descriptions = descriptions or {}
    raw = set(html_columns)
    decimals = decimals or {}
    # A break opportunity after each underscore: long column names wrap instead of widening the table.
    head = "".join(
        f'<th title="{esc(descriptions[c])}">{_breakable(c)}</th>' if descriptions.get(c) else f"<th>{_breakable(c)}</th>"
        for c in table.columns
    )
    shown = table if max_rows is None else table.head(max_rows)
    rows = []
    for i, record in enumerate(shown.itertuples(index=False, name=None)):
        cells = []
        for column, value in zip(table.columns, record):
            if column in raw:
                cells.append(f"<td>{value}</td>")
                continue
            text, numeric = _format_cell(value, decimals.get(column))
            cells.append(f'<td class="num">{esc(text)}</td>' if numeric else f"<td>{esc(text)}</td>")
        css = row_classes[i] if row_classes and i < len(row_classes) and row_classes[i] else ""
        rows.append(f'<tr class="{css}">' + "".join(cells) + "</tr>" if css else "<tr>" + "".join(cells) + "</tr>")
    note = ""
    if max_rows is not None and len(table) > max_rows:
        note = f'<p class="note">First {max_rows} of {len(table)} rows shown.</p>'
    return (f'<div class="table-wrap"><table class="data"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table></div>{note}")


def is_true(value: Any) -> bool:
    """A TSV boolean (True/False, true/false, 1/0; n/a is False)."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    return str(value).strip().lower() in {"true", "1", "yes"}
