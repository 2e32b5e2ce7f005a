"""The participant report ``<output_dir>/sub-<label>.html``, built from the derivatives alone.

The report is what a user looks at to judge a subject: per session the inputs
used, the methods that ran and the ones skipped with their reasons, the
registration QC table with its before/after figures, every thalamus mask
drawn as a contour over the T1w, the volumes, the warnings and errors, the
change between sessions where the longitudinal mode ran (:mod:`.longitudinal`),
and a methods paragraph with the references of what actually ran.

It reads nothing but ``output_dir`` (so ``--reports-only`` can regenerate it
after the run, and on a copy of the folder): the sidecars, QC and volumes
tables and published images of each session (:mod:`.session`), the run logs
(:mod:`.logs`), and it draws every figure from the published files
(:mod:`.mask_figures`, :mod:`.registration_figures`). This module builds the
template context; the page is ``data/participant_report.html`` inside
``data/report_page.html`` (Jinja2). Each file is written only when its content
changed, so regenerating the reports of a finished run touches nothing.
Figures are linked by relative paths; the CSS is inlined; the report loads
nothing from the network.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pandas as pd

from thalamus_bidsapp.bidsio.atomic import write_if_changed
from thalamus_bidsapp.methods.registry import method_names
from thalamus_bidsapp.reports.html import (
    column_descriptions,
    esc,
    href,
    html_table,
    pipeline_version,
    render_page,
    render_template,
    safe,
)
from thalamus_bidsapp.reports.logs import qc_row_classes, read_session_statuses, read_skipped_methods
from thalamus_bidsapp.reports.longitudinal import longitudinal_section
from thalamus_bidsapp.reports.mask_figures import draw_masks
from thalamus_bidsapp.reports.methods_text import methods_paragraph
from thalamus_bidsapp.reports.qc import traffic_lights
from thalamus_bidsapp.reports.registration_figures import draw_registration_figures
from thalamus_bidsapp.reports.results import default_method, not_run_section, results_table, volumes_table
from thalamus_bidsapp.reports.session import (
    SessionReport,
    find_sessions,
    methods_ran,
    read_session,
    session_messages,
)

__all__ = ["read_skipped_methods", "write_participant_report"]

LOGGER = logging.getLogger(__name__)

_INPUT_DESCRIPTIONS = {
    "role": "What the input is: its BIDS suffix; the template and thalamus atlas from TemplateFlow", "dataset": "Dataset name (raw: the input BIDS dataset)",
    "file": "Path inside the dataset", "location": "Where the dataset was (DatasetLinks)"}


def _status(session: SessionReport) -> str:
    return "failed" if session.failed else ("ok" if session.status is not None or session.masks else "unknown")


def _not_run(session: SessionReport) -> list[str]:
    """Every registered method that did not run, then any other recorded as skipped."""
    ran = methods_ran(session)
    not_run = [m for m in method_names() if m not in ran]
    return not_run + [m for m in session.skipped if m not in not_run and m not in ran]


def _figures(session: SessionReport, output_dir: Path) -> dict[str, Any]:
    """The registration figures, the lead mask figure (the default method's) and the other mask figures."""
    registration = [{"href": href(p, output_dir), "name": p.name,
                     "image": p.stem.rsplit("_desc-registration_", 1)[-1]} for p in session.overlays]
    masks = []
    for info in session.masks:
        if info.figure is None:
            continue
        tool = " ".join(str(v) for v in (info.sidecar.get("Tool"), info.sidecar.get("Version")) if v)
        masks.append({"href": href(info.figure, output_dir), "name": info.figure.name, "desc": info.desc,
                      "contrast": info.sidecar.get("Contrast"), "tool": tool,
                      "mask_href": href(info.path, output_dir)})
    default = default_method(session.volumes, [m["desc"] for m in masks])
    lead = next((m for m in masks if m["desc"] == default), masks[0] if masks else None)
    return {"registration_figures": registration, "lead_figure": lead,
            "mask_figures": [m for m in masks if m is not lead]}


def _session_context(session: SessionReport, output_dir: Path) -> dict[str, Any]:
    """What ``data/participant_report.html`` shows of one session."""
    ran = sorted(methods_ran(session))
    context: dict[str, Any] = {
        "name": session.name, "title": session.label or session.name, "status": _status(session),
        "messages": [(level, safe(text)) for level, text in session.messages if level != "info"],
        "notes": [safe(text) for level, text in session.messages if level == "info"],
        "has_outputs": session.anat is not None, "ran": ", ".join(ran), "n_not_run": len(_not_run(session)),
        "mask_descs": [m.desc for m in session.masks], "inputs_table": "", "qc_table": "", "volumes_table": "",
    }
    if session.inputs:
        table = pd.DataFrame(session.inputs)[["role", "dataset", "file", "location"]]
        table["dataset"] = table["dataset"].replace("", "n/a")
        context["inputs_table"] = safe(html_table(table, descriptions=_INPUT_DESCRIPTIONS))
    if session.qc is not None:
        context.update(qc_table=safe(html_table(session.qc, descriptions=column_descriptions(session.qc_path),
                                                row_classes=qc_row_classes(session.qc))),
                       qc_href=href(session.qc_path, output_dir), qc_name=session.qc_path.name)
    context["qc_lights"] = ""
    if session.segmentation_qc is not None:
        context.update(qc_lights=safe(traffic_lights(session.segmentation_qc)),
                       segmentation_qc_href=href(session.segmentation_qc_path, output_dir),
                       segmentation_qc_name=session.segmentation_qc_path.name)
    if session.volumes is not None:
        table, note = volumes_table(session.volumes, column_descriptions(session.volumes_path))
        context.update(volumes_table=safe(table), volumes_note=safe(note),
                       volumes_href=href(session.volumes_path, output_dir), volumes_name=session.volumes_path.name)
    context.update(_figures(session, output_dir))
    return context


def write_participant_report(
    output_dir: Path,
    subject: str,
    *,
    skipped: dict[str, dict[str, str]] | None = None,
    processes: int = 1,
) -> Path:
    """Write ``<output_dir>/sub-<label>.html`` and the mask figures of the subject.

    Parameters
    ----------
    output_dir
        The output derivatives dataset (the only thing read; see the module docstring).
    subject
        Participant label, with or without ``sub-``.
    skipped
        Session name (``sub-01_ses-1``, or ``sub-01`` without sessions) ->
        {method: reason it did not run}, e.g. from
        ``MethodPlan.skipped``. When None, the runs' ``logs/<run>/methods.json`` are
        read if present (see :func:`read_skipped_methods`).
    processes
        CPUs the figures may use (a registration figure's two halves are drawn side by side with two).

    Returns
    -------
    pathlib.Path
        The report. It and the figures are rewritten only when their content changed.
    """
    output_dir = Path(output_dir)
    subject = f"sub-{subject.removeprefix('sub-')}"
    version = pipeline_version(output_dir)
    try:
        links = {str(k): str(v) for k, v in
                 json.loads((output_dir / "dataset_description.json").read_text()).get("DatasetLinks", {}).items()}
    except (OSError, ValueError, AttributeError):
        links = {}
    statuses = read_session_statuses(output_dir)
    sessions = find_sessions(output_dir, subject, statuses)
    if skipped is not None:
        recorded, source = skipped, "the run's method plan"
    else:
        recorded = read_skipped_methods(output_dir)
        source = "<code>logs/&lt;run&gt;/methods.json</code>" if recorded else ""
    figures_dir = output_dir / subject / "figures"
    for session in sessions:
        if session.anat is not None and session.anat.is_dir():
            draw_registration_figures(session.anat, session.name, figures_dir, processes=processes)
        read_session(session, output_dir, links)
        reasons = recorded.get(session.name)
        if reasons is None and session.label:
            reasons = recorded.get(session.label)
        if reasons is not None:
            session.skipped, session.skipped_source = dict(reasons), source
        draw_masks(session, figures_dir)
        session_messages(session, output_dir)
    if not sessions:
        LOGGER.warning("%s: no outputs and no session status in %s", subject, output_dir)

    longitudinal = longitudinal_section(output_dir, subject, figures_dir)
    methods_html, references_html = methods_paragraph(sessions, version)
    not_run = not_run_section(sessions, {session.name: _not_run(session) for session in sessions})
    sources = sorted({session.skipped_source for session in sessions if session.skipped_source})
    body = render_template(
        "participant_report.html",
        sessions=[_session_context(session, output_dir) for session in sessions],
        results_table=safe(results_table(sessions)), not_run_table=safe(not_run),
        not_run_sources=safe(" and ".join(sources)), longitudinal=longitudinal,
        methods_html=safe(methods_html), references_html=safe(references_html),
    )
    toc = [("results", "Results"), *((s.name, s.label or s.name) for s in sessions),
           *((("longitudinal", "Longitudinal change"),) if longitudinal else ()),
           ("methods", "Methods"), ("references", "References"),
           *((("not-run", "Methods not run"),) if not_run else ())]
    page = render_page(
        title=f"{subject}: thalamus segmentation report",
        subtitle=esc(f"thalamus_bidsapp {version} · {len(sessions)} session(s)"),
        toc=toc, body=body, version=version,
        footer=esc(f"thalamus_bidsapp {version}. Figures are linked from {subject}/figures/; keep this file "
                   "beside that folder."),
    )
    out = output_dir / f"{subject}.html"
    if write_if_changed(page, out):
        LOGGER.info("wrote participant report %s", out)
    return out
