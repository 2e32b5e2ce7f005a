"""QC in the reports: a traffic light per session and method, and the table of flagged sessions.

Both are built from the QC tables alone: a session's
``*_label-thalamus_desc-segmentation_qc.tsv`` for the participant report,
``group/qc.tsv`` (and ``group/excluded_sessions.tsv`` for ``--qc-exclude``)
for the group report.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from thalamus_bidsapp.qc.group import EXCLUDED_BY_QC
from thalamus_bidsapp.qc.session import NOT_APPLICABLE_T1W
from thalamus_bidsapp.reports.html import esc, href, html_table
from thalamus_bidsapp.stats.qc import FAIL, PASS, SKIPPED, WARN, worst_status

_FLAGS = (WARN, FAIL)


#: Shown instead of "pass" when every check that ran passed but some that apply were not run.
INCOMPLETE = "incomplete"


def light(status: str) -> str:
    """HTML of a traffic light with its status word (``incomplete`` is grey, like ``skipped``)."""
    status = status if status in (PASS, WARN, FAIL, SKIPPED, INCOMPLETE) else SKIPPED
    css = SKIPPED if status == INCOMPLETE else status
    return f'<span class="qc-light {css}" aria-hidden="true"></span>{esc(status)}'


def not_run(checks: pd.DataFrame) -> pd.DataFrame:
    """The skipped checks that apply to their mask (a T1w mask's registration check does not)."""
    skipped = checks["status"].astype(str) == SKIPPED
    applies = ~checks["reason"].astype(str).str.lower().str.startswith(NOT_APPLICABLE_T1W.lower())
    return checks[skipped & applies]


def overall_status(checks: pd.DataFrame) -> str:
    """The worst status of ``checks``; ``incomplete`` rather than ``pass`` when some checks were not run."""
    status = worst_status(checks["status"].astype(str))
    return INCOMPLETE if status == PASS and not not_run(checks).empty else status


def traffic_lights(qc: pd.DataFrame) -> str:
    """One row per method and contrast: the worst status as a traffic light, the counts and the flags' reasons."""
    rows, classes = [], []
    for (method, contrast), checks in qc.groupby(["method", "contrast"], sort=False, dropna=False):
        statuses = checks["status"].astype(str)
        status = overall_status(checks)
        flags = checks[statuses.isin(_FLAGS)]
        counts = ", ".join(f"{int((statuses == s).sum())} {s}" for s in (PASS, WARN, FAIL, SKIPPED)
                           if (statuses == s).any())
        if flags.empty:
            reasons = esc("Every check that could be computed passed." if (statuses == PASS).any()
                          else "No check could be computed.")
        else:
            reasons = "<br>".join(f"<strong>{esc(c)}</strong> ({esc(s)}): {esc(r)}"
                                  for c, s, r in zip(flags["check"], flags["status"], flags["reason"]))
        missing = not_run(checks)
        for reason, group in missing.groupby("reason", sort=False):
            reasons += f"<br>Not run: <strong>{esc(', '.join(group['check'].astype(str)))}</strong>: {esc(reason)}"
        rows.append({"method": method, "contrast": contrast, "QC": light(status), "checks": counts,
                     "reasons": reasons})
        classes.append({FAIL: "bad", WARN: "warn", PASS: "good"}.get(status, ""))
    table = pd.DataFrame(rows, columns=["method", "contrast", "QC", "checks", "reasons"])
    return html_table(table, html_columns=("QC", "reasons"), row_classes=classes, descriptions={
        "QC": "Worst status of the mask's checks: fail > warn > pass > skipped; 'incomplete' when every check "
              "that ran passed but some were not run (never shown as a pass)",
        "checks": "How many checks passed, warned, failed or could not be computed",
        "reasons": "Why each check that warned or failed did so"})


def flagged_sessions(qc: pd.DataFrame, group_dir: Path, links: Mapping[str, str]) -> tuple[int, int, str]:
    """The flagged checks of ``group/qc.tsv`` as an HTML table: (flagged masks, all masks, HTML)."""
    keys = ["participant_id", "session_id", "method", "contrast"]
    table = qc.assign(session_id=qc["session_id"].fillna(""))
    n_masks = len(table.drop_duplicates(keys))
    flags = table[table["status"].astype(str).isin(_FLAGS)]
    n_flagged = len(flags.drop_duplicates(keys))
    if flags.empty:
        return 0, n_masks, '<p class="note">None: no check warned or failed.</p>'
    flags = flags.sort_values(["status", *keys], kind="stable")  # fail before warn
    rows = [{"session": esc("_".join(p for p in (row.participant_id, row.session_id) if p)),
             "participant report": links.get(row.participant_id, esc(row.participant_id)),
             "method": esc(row.method), "contrast": esc(row.contrast), "check": esc(row.check),
             "value": esc(f"{row.value:.3g}" if pd.notna(row.value) else "n/a"), "status": light(str(row.status)),
             "reason": esc(row.reason)}
            for row in flags.itertuples()]
    classes = ["bad" if r.status == FAIL else "warn" for r in flags.itertuples()]
    html = html_table(pd.DataFrame(rows), html_columns=rows[0].keys(), row_classes=classes)
    return n_flagged, n_masks, html + (f'<p class="note">All checks: <a href="{href(group_dir / "qc.tsv", group_dir)}">'
                                       "qc.tsv</a>.</p>")


def qc_excluded_count(excluded: pd.DataFrame | None) -> int:
    """How many masks ``--qc-exclude`` left out (rows of group/excluded_sessions.tsv)."""
    if excluded is None or excluded.empty or "reason" not in excluded:
        return 0
    return int(excluded["reason"].astype(str).str.startswith(EXCLUDED_BY_QC).sum())
