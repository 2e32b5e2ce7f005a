"""The participant report's longitudinal section: each session pair's change in both modes, and the template.

Read from what the longitudinal mode publishes under ``sub-<label>/anat/``
(the change table, the within-subject template and its thalamus labels, the
template's sidecar) and from the runs' ``logs/<run>/longitudinal.json`` (each
subject's outcome), so a failed or skipped longitudinal step is said in one
line. A subject without a change table and without a recorded outcome (the
mode was off) gets no section.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pandas as pd

from thalamus_bidsapp.bidsio.atomic import TSV_READ_ERRORS, read_tsv
from thalamus_bidsapp.bidsio.runlog import LONGITUDINAL_LOG
from thalamus_bidsapp.reports.html import column_descriptions, href, html_table, safe
from thalamus_bidsapp.reports.mask_figures import draw_side_labels
from thalamus_bidsapp.reports.palette import method_order

LOGGER = logging.getLogger(__name__)

#: The names the longitudinal mode publishes (workflows/longitudinal_outputs.py), per subject.
TABLE_NAME = "{subject}_label-thalamus_desc-longitudinal_volumes.tsv"
TEMPLATE_NAME = "{subject}_desc-longitudinaltemplate_T1w.nii.gz"
TEMPLATE_LABELS_GLOB = "{subject}_seg-thalamus_desc-*LongTemplate_dseg.nii.gz"

_SHOWN = ["hemisphere", "session_from", "session_to", "mode", "volume_from_ml", "volume_to_ml", "change_ml",
          "change_pct", "interval_years", "annualized_change_pct"]
_DECIMALS = {"volume_from_ml": 3, "volume_to_ml": 3, "change_ml": 3, "change_pct": 2, "interval_years": 2,
             "annualized_change_pct": 2}
_HEMISPHERES = {"bilateral": 0, "left": 1, "right": 2}
_MODES = {"longitudinal": 0, "cross-sectional": 1}


def latest_outcome(output_dir: Path, subject: str) -> tuple[str, str] | None:
    """(run, outcome) of the newest run whose ``longitudinal.json`` names ``subject``, or None."""
    found = None
    for path in sorted(Path(output_dir).glob(f"logs/*/{LONGITUDINAL_LOG}")):
        try:
            outcomes = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            LOGGER.warning("cannot read %s: %s", path, err)
            continue
        if isinstance(outcomes, dict) and subject in outcomes:
            found = (path.parent.name, str(outcomes[subject]))
    return found


def longitudinal_section(output_dir: Path, subject: str, figures_dir: Path) -> dict[str, Any] | None:
    """What ``data/participant_report.html`` shows of the subject's longitudinal mode (None: no section).

    ``subject`` is ``sub-<label>``; the template figure is drawn into ``figures_dir`` when its inputs changed.
    """
    output_dir = Path(output_dir)
    anat = output_dir / subject / "anat"
    table_path = anat / TABLE_NAME.format(subject=subject)
    outcome = latest_outcome(output_dir, subject)
    messages: list[tuple[str, str]] = []
    if outcome is not None and not outcome[1].startswith("ok"):
        run, text = outcome
        level = "error" if text.startswith("failed") else "info"
        earlier = " The outputs below are from an earlier run." if table_path.is_file() else ""
        messages.append((level, f"Longitudinal mode in run {run}: {text}.{earlier}"))
    if not table_path.is_file():
        return None if outcome is None else {"messages": messages, "tables": []}
    try:
        table = read_tsv(table_path)
    except TSV_READ_ERRORS as err:
        messages.append(("warning", f"{table_path.name} is unreadable ({err}): no change shown."))
        return {"messages": messages, "tables": []}
    sidecar = _read_json(anat / TEMPLATE_NAME.format(subject=subject).replace(".nii.gz", ".json"))
    context: dict[str, Any] = {
        "messages": messages, "tables": _tables(table, column_descriptions(table_path)),
        "table_href": href(table_path, output_dir), "table_name": table_path.name,
        "change_method": sidecar.get("ChangeMethod"), "template_description": sidecar.get("Description"),
        "sessions": ", ".join(f"ses-{s}" for s in sidecar.get("Sessions") or []),
        "session_order": sidecar.get("SessionOrder"),
        "left_out": [str(note) for note in sidecar.get("SessionsLeftOut") or []],
        "annualized_note": _annualized_note(table, sidecar),
    }
    context.update(_template_figure(output_dir, subject, figures_dir, messages))
    return context


def _tables(table: pd.DataFrame, descriptions: dict[str, str]) -> list[dict[str, Any]]:
    """One table per method: each pair's longitudinal row right above its cross-sectional row."""
    missing = [c for c in ["method", *_SHOWN] if c not in table]
    if missing:
        return [{"method": "", "html": safe(f'<p class="note">No column {", ".join(missing)}: not shown.</p>')}]
    pairs = {pair: i for i, pair in enumerate(dict.fromkeys(zip(table["session_from"], table["session_to"])))}
    longitudinal_methods = set(table.loc[table["mode"] == "longitudinal", "method"])
    methods = sorted(method_order(table["method"]), key=lambda m: m not in longitudinal_methods)
    out = []
    for method in methods:
        rows = table[table["method"] == method]
        order = sorted(rows.index, key=lambda i: (_HEMISPHERES.get(rows.at[i, "hemisphere"], 3),
                                                  pairs[(rows.at[i, "session_from"], rows.at[i, "session_to"])],
                                                  _MODES.get(rows.at[i, "mode"], 2)))
        shown = rows.loc[order, _SHOWN]
        out.append({"method": method, "html": safe(html_table(shown, descriptions=descriptions, decimals=_DECIMALS))})
    return out


def _annualized_note(table: pd.DataFrame, sidecar: dict[str, Any]) -> str:
    """Why ``annualized_change_pct`` is n/a on some rows (no acquisition date), or ''."""
    if "annualized_change_pct" not in table or not table["annualized_change_pct"].isna().any():
        return ""
    dates = sidecar.get("AcquisitionDates") or {}
    undated = [f"ses-{label} ({entry.get('Source')})" for label, entry in dates.items()
               if isinstance(entry, dict) and not entry.get("Date")]
    if undated:
        return "Annualized change is n/a where a session has no acquisition date: " + "; ".join(undated) + "."
    order = sidecar.get("SessionOrder") or "no acquisition dates recorded"
    return f"Annualized change is n/a where a session has no acquisition date ({order})."


def _template_figure(output_dir: Path, subject: str, figures_dir: Path,
                     messages: list[tuple[str, str]]) -> dict[str, Any]:
    """The within-subject template with its thalamus labels (left and right), drawn only when they changed."""
    anat = output_dir / subject / "anat"
    template = anat / TEMPLATE_NAME.format(subject=subject)
    labels = sorted(anat.glob(TEMPLATE_LABELS_GLOB.format(subject=subject)))
    if not template.is_file() or not labels:
        messages.append(("warning", f"No within-subject template or its thalamus labels in {subject}/anat: "
                                    "template figure not drawn."))
        return {}
    desc = labels[0].name.split("_desc-", 1)[1].removesuffix("_dseg.nii.gz")
    out = figures_dir / labels[0].name.replace(".nii.gz", ".svg")
    try:
        problem = draw_side_labels(template, labels[0], out, f"{subject}  within-subject template  {desc}")
    except Exception as err:  # noqa: BLE001 - an unreadable template image must not cost the subject its report
        problem = f"{labels[0].name}: {err}"
    if problem is not None:
        messages.append(("warning", f"Template figure not drawn: {problem}."))
        return {}
    return {"figure": {"href": href(out, output_dir), "name": out.name, "desc": desc,
                       "template_href": href(template, output_dir), "labels_href": href(labels[0], output_dir),
                       "labels_description": _read_json(labels[0].with_name(
                           labels[0].name.replace(".nii.gz", ".json"))).get("Description")}}


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
