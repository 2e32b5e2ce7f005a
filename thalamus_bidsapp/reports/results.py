"""The results of the participant report: what a reader looks for first, and the volumes in full.

:func:`results_table` is the page's opening table: per session and method
the thalamus volume (left and right merged), each side, the volume as a
percentage of the intracranial volume, the lesion load and the QC light.
:func:`volumes_table` is a session's volumes table, fitted to the page (one
rounding per column; columns constant over the session said once below it).
:func:`not_run_section` gathers the methods that did not run, with the
reasons and install hints, for the collapsed section at the end.

Numbers are formatted by one rule (:data:`DECIMALS`), so a volume reads the
same in the results and in the volumes table.
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

from thalamus_bidsapp.methods.registry import UNFILLED_SUFFIX
from thalamus_bidsapp.reports.html import esc, html_table
from thalamus_bidsapp.reports.palette import method_order
from thalamus_bidsapp.reports.qc import light, overall_status

#: Decimals of each numeric column of the volumes tables (mL to the hundredth: 10 mm^3).
DECIMALS = {"volume_ml": 2, "icv_ml": 0, "lesion_volume_ml": 2, "lesion_in_thalamus_ml": 2,
            "lesion_near_thalamus_ml": 2, "volume_mm3": 0, "pct_icv": 3}
#: Shown in the volumes table only when they say something (any value besides n/a or False).
_OPTIONAL_COLUMNS = ("lesion_in_thalamus_ml", "lesion_near_thalamus_ml", "lesion_filled")


def fmt(column: str, value: object) -> str:
    """A number of a volumes column as the report writes it everywhere (n/a when missing)."""
    number = pd.to_numeric(pd.Series([value]), errors="coerce").iloc[0]
    if pd.isna(number):
        return "n/a"
    return f"{float(number):.{DECIMALS.get(column, 2)}f}"


def _hemisphere_rows(volumes: pd.DataFrame) -> dict[tuple[str, str], dict[str, dict]]:
    """(method, contrast) -> hemisphere -> row, in report order of the methods."""
    table = volumes.assign(hemisphere=volumes["hemisphere"].astype(str) if "hemisphere" in volumes else "bilateral",
                           contrast=volumes["contrast"].astype(str) if "contrast" in volumes else "")
    out: dict[tuple[str, str], dict[str, dict]] = {}
    order = {m: i for i, m in enumerate(method_order(table["method"].astype(str)))}
    for row in sorted(table.to_dict("records"), key=lambda r: (order[str(r["method"])], str(r["contrast"]))):
        out.setdefault((str(row["method"]), str(row["contrast"])), {})[row["hemisphere"]] = row
    return out


def default_method(volumes: pd.DataFrame | None, masks: Iterable[str]) -> str | None:
    """The method a session's report leads with: the first in report order, preferring a lesion-filled mask."""
    names = [str(m) for m in masks]
    if volumes is not None and "method" in volumes:
        names += [str(m) for m in volumes["method"]]
    ordered = method_order(names)
    filled = [m for m in ordered if not m.endswith(UNFILLED_SUFFIX)]
    return (filled or ordered or [None])[0]


def _pct_icv(row: dict) -> str:
    volume = pd.to_numeric(pd.Series([row.get("volume_ml")]), errors="coerce").iloc[0]
    icv = pd.to_numeric(pd.Series([row.get("icv_ml")]), errors="coerce").iloc[0]
    return fmt("pct_icv", 100 * volume / icv) if pd.notna(volume) and pd.notna(icv) and icv > 0 else "n/a"


def _qc_light(bilateral: dict, qc: pd.DataFrame | None) -> str:
    """The mask's worst QC status from its checks (``incomplete``, never ``pass``, when some were not run)."""
    status = str(bilateral.get("qc_status", "skipped"))
    if qc is not None and not qc.empty and {"method", "status"} <= set(qc.columns):
        checks = qc[qc["method"].astype(str) == str(bilateral["method"])]
        if "contrast" in qc.columns and bilateral.get("contrast") is not None:
            checks = checks[checks["contrast"].astype(str) == str(bilateral["contrast"])]
        if not checks.empty:
            status = overall_status(checks)
    return light(status)


def _cells(rows: dict[str, dict], default: bool, qc: pd.DataFrame | None = None) -> str:
    bilateral = rows.get("bilateral") or rows.get("both") or next(iter(rows.values()))
    method = esc(bilateral["method"]) + (' <span class="note">(default)</span>' if default else "")
    contrast = esc(bilateral.get("contrast", ""))
    volume = fmt("volume_ml", bilateral.get("volume_ml"))
    cells = [f"<td>{method}</td>", f"<td>{contrast}</td>",
             f'<td class="num result-volume"><strong>{volume}</strong></td>',
             *(f'<td class="num">{fmt("volume_ml", rows.get(side, {}).get("volume_ml"))}</td>'
               for side in ("left", "right")),
             f'<td class="num">{_pct_icv(bilateral)}</td>',
             f'<td class="num">{fmt("lesion_volume_ml", bilateral.get("lesion_volume_ml"))}</td>',
             f'<td class="num">{fmt("lesion_in_thalamus_ml", bilateral.get("lesion_in_thalamus_ml"))}</td>',
             f"<td>{_qc_light(bilateral, qc)}</td>"]
    return "".join(cells)


_HEADER = (("session", ""), ("method", "Segmentation method (the desc of the mask)"),
           ("contrast", "Image(s) it segmented"),
           ("thalamus (mL)", "Whole-thalamus volume, left and right merged"),
           ("left (mL)", "Left thalamus (the subject's left)"), ("right (mL)", "Right thalamus"),
           ("% of ICV", "Whole-thalamus volume as a percentage of the intracranial volume"),
           ("lesions (mL)", "Total lesion volume of the session (n/a: no lesion mask)"),
           ("in thalamus (mL)", "Lesion volume inside the thalamus mask"),
           ("QC", "Worst status of the mask's QC checks"))


def results_table(sessions: list) -> str:
    """The opening table: per session its methods' volumes and QC light; a failed session says why."""
    head = "".join(f'<th title="{esc(text)}">{esc(name)}</th>' if text else f"<th>{esc(name)}</th>"
                   for name, text in _HEADER)
    body = []
    for session in sessions:
        link = f'<a href="#{esc(session.name)}">{esc(session.label or session.name)}</a>'
        rows = _hemisphere_rows(session.volumes) if session.volumes is not None and "method" in session.volumes \
            else {}
        if not rows:
            reason = (session.status.reason if session.failed and session.status is not None and session.status.reason
                      else "no volumes for this session")
            css = "bad" if session.failed else ""
            body.append(f'<tr class="{css}"><td>{link}</td><td colspan="{len(_HEADER) - 1}">'
                        f"{'failed: ' if session.failed else ''}{esc(reason)}</td></tr>")
            continue
        default = default_method(session.volumes, [])
        for i, ((method, _), hemispheres) in enumerate(rows.items()):
            first = f'<td rowspan="{len(rows)}">{link}</td>' if i == 0 else ""
            css = ' class="default"' if method == default else ""
            body.append(f"<tr{css}>{first}{_cells(hemispheres, method == default, session.segmentation_qc)}</tr>")
    return (f'<div class="table-wrap"><table class="data results"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table></div>")


def _empty(value: object) -> bool:
    """n/a, empty or False: a cell that says nothing."""
    return bool(pd.isna(value)) or str(value).strip().lower() in {"n/a", "nan", "false", ""}


def _constant(table: pd.DataFrame, column: str) -> bool:
    return column in table and len(table) > 0 and table[column].astype(str).nunique(dropna=False) == 1


def volumes_table(volumes: pd.DataFrame, descriptions: dict[str, str]) -> tuple[str, str]:
    """A session's volumes as HTML (table, note): one rounding per column, constant columns in the note.

    ``volume_mm3`` (``volume_ml`` times 1000) is left to the TSV; the ICV and
    the session's lesion volume, the same on every row, go to the note; the
    per-mask lesion columns show only when the session has a lesion mask.
    """
    table = volumes.drop(columns=["volume_mm3"], errors="ignore")
    notes = []
    if _constant(table, "icv_ml"):
        source = str(table["icv_source"].iloc[0]) if _constant(table, "icv_source") else ""
        notes.append(f"ICV {fmt('icv_ml', table['icv_ml'].iloc[0])} mL" + (f" ({esc(source)})" if source else ""))
        table = table.drop(columns=["icv_ml"] + (["icv_source"] if source else []))
    if _constant(table, "lesion_volume_ml"):
        value = fmt("lesion_volume_ml", table["lesion_volume_ml"].iloc[0])
        notes.append(f"lesion volume {value} mL" if value != "n/a" else "no lesion mask")
        table = table.drop(columns=["lesion_volume_ml"])
    for column in _OPTIONAL_COLUMNS:
        if column in table and table[column].map(_empty).all():
            table = table.drop(columns=[column])
    note = ("Same on every row: " + "; ".join(notes) + ". ") if notes else ""
    return html_table(table, descriptions=descriptions, decimals=DECIMALS), note


def not_run_section(sessions: list, methods_of: dict[str, list[str]]) -> str:
    """The methods that did not run, one row per method and reason, with the sessions it concerns."""
    rows: dict[tuple[str, str], list[str]] = {}
    for session in sessions:
        for method in methods_of.get(session.name, []):
            reason = session.skipped.get(method)
            if reason is None:
                reason = ("session failed before segmentation" if session.failed
                          else "not run; the reason was not recorded in the derivatives (see the run's log)")
            rows.setdefault((method, reason), []).append(session.label or session.name)
    if not rows:
        return ""
    table = pd.DataFrame([{"method": m, "sessions": ", ".join(s), "reason and how to install": r}
                          for (m, r), s in rows.items()])
    return html_table(table, descriptions={"reason and how to install": "Why the method did not run"})
