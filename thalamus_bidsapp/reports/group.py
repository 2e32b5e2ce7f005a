"""The group report ``<output_dir>/group/report.html``, built from the derivatives alone.

Results first: one section per analysis, in the order of the paper (volumes
by method; lesion filling, paired; lesion load; left/right asymmetry, the
last three from :mod:`.group_volumes`; agreement with the manual masks; agreement between methods;
cross-sectional associations; longitudinal change; disability progression;
power; QC). Each section opens with its key figure (drawn from the group
tables by :mod:`thalamus_bidsapp.reports.figures_group`) and one or two
sentences with the key numbers, written from the tables; then its tables
(``group/*.tsv``, with the column descriptions of their JSON sidecars),
collapsed, each with its download link. An analysis that did not run says
why in one line (from ``group/clinical_analyses.tsv`` or from what is
missing). The QC section lists the sessions that failed
(``logs/*/sessions.tsv``, latest status per session, with links to the crash
reports), the images excluded by the registration QC
(``sub-*/[ses-*/]anat/*_desc-registration_qc.tsv``), the clinical analyses
skipped and the rows left out; the last section links the participant
reports (``../sub-<label>.html``, linked only where the file exists).

The page is the Jinja2 template ``data/group_report.html``.

Everything is linked by paths relative to ``group/``, so the report survives
copying the output folder; the CSS is inlined and nothing is loaded from the
network. The file is rewritten only when its content changed.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import jinja2
import pandas as pd
from markupsafe import Markup

from thalamus_bidsapp.bidsio.atomic import TSV_READ_ERRORS, read_tsv, write_if_changed
from thalamus_bidsapp.bidsio.runlog import GROUP_LOG
from thalamus_bidsapp.reports import figures_harmonization as harmonization
from thalamus_bidsapp.reports import group_change
from thalamus_bidsapp.reports.figures_common import FigureSet, read_group_table
from thalamus_bidsapp.reports.figures_group import FIGURE_TITLES, write_group_figures
from thalamus_bidsapp.reports.palette import PNG_DPI
from thalamus_bidsapp.reports.qc import flagged_sessions, qc_excluded_count
from thalamus_bidsapp.reports.group_leads import (
    numeric,
    agreement_lead,
    association_lead,
    containment_lead,
    longitudinal_lead,
    template_lead,
    power_lead,
    progression_lead,
)
from thalamus_bidsapp.reports.figures_group_template import template_caption
from thalamus_bidsapp.reports.figures_group_volumes import MAX_NAMED_SESSIONS
from thalamus_bidsapp.reports.group_volumes import VOLUME_SECTIONS, volume_section, volumes_lead
from thalamus_bidsapp.reports.html import column_descriptions, data_text, esc, href, html_table, pipeline_version
from thalamus_bidsapp.reports.logs import read_session_statuses, registration_exclusions

LOGGER = logging.getLogger(__name__)

#: Rows of a group table shown in the report; the TSV (linked) has them all.
MAX_ROWS = 300
#: The analyses in the order of the paper: (section id, heading, nav label, figures, tables).
SECTIONS: tuple[tuple[str, str, str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("volumes", "Thalamus volume by method", "Volumes",
     ("volumes_distribution", "volumes_scatter_matrix"), ("volumes",)),
    *((key, heading, nav, (stem,), ()) for key, (heading, nav, stem) in VOLUME_SECTIONS.items()),
    group_change.SECTION,
    ("harmonization", "Harmonisation across sites or scanners", "Harmonisation", (harmonization.STEM,),
     ("harmonization",)),
    ("agreement", "Agreement with the manual masks", "Manual masks",
     ("agreement_overlap", "agreement_scatter", "agreement_blandaltman"),
     ("agreement_summary", "agreement_volumetric", "agreement_pairwise", "agreement_voxelwise")),
    ("between-methods", "Agreement between methods", "Between methods", ("containment_heatmap",), ("containment",)),
    ("template-space", "Thalamus probability maps in template space", "Template space", ("template_maps",),
     ("template_maps",)),
    ("cross-sectional", "Cross-sectional clinical associations", "Cross-sectional",
     ("crosssectional_forest",), ("clinical_crosssectional",)),
    ("longitudinal", "Longitudinal change", "Longitudinal",
     ("longitudinal_change", "longitudinal_forest"),
     ("clinical_longitudinal_regression", "clinical_longitudinal_deltas", "clinical_longitudinal_pairwise_wilcoxon",
      "clinical_longitudinal_change_by_diagnosis", "clinical_longitudinal_winsorised",
      "clinical_longitudinal_ordinal", "clinical_longitudinal_pbvc")),
    ("progression", "Disability progression", "Progression", ("progression_change",),
     ("clinical_progression_ancova", "clinical_progression_adjusted_means", "clinical_progression_pairwise",
      "clinical_progression_logistic", "clinical_progression_subjects")),
    ("power", "Sample size for a trial", "Power", ("power_sample_size",), ("clinical_power",)),
    ("qc", "Quality control: failed sessions, excluded images and rows", "QC", (),
     ("excluded_sessions", "qc", "clinical_analyses", "clinical_exclusions")),
)
#: Figure captions: what the marks mean (the title comes from figures_group.FIGURE_TITLES).
CAPTIONS = {
    "volumes_distribution": "Whole-thalamus volume (left and right merged), one box per method: median, "
                            "quartiles, whiskers at 1.5 IQR, one point per session. A session sits at the same "
                            "height in every method's row and a grey line joins its points; up to "
                            f"{MAX_NAMED_SESSIONS} sessions each has its own marker, named in the legend, beyond "
                            "that the marker tells the session label.",
    "filling_blandaltman": "Per method, for each session with a lesion mask: the volume on the lesion-filled T1w "
                           "minus that on the unfilled T1w (desc-<mask>Unfilled, --lesion-filling both) against "
                           "their mean; solid: mean difference; dashed: 95% limits of agreement.",
    "lesion_load": "Left: whole-thalamus volume against the session's lesion volume, per method. Right: lesion "
                   "volume inside each method's thalamus mask (colour) and outside it within 3 mm (grey).",
    "asymmetry": "Asymmetry index 100 × (left − right) / ((left + right) / 2) per session, one box per method; "
                 "left is the subject's left (the side maps, desc-<method>_dseg).",
    group_change.FIGURE: group_change.CAPTION,
    "volumes_scatter_matrix": "Each method's volume against every other's, one point per session (one marker per "
                              "session label); dashed: identity. Diagonal: each method's distribution.",
    "agreement_overlap": "Voxel-wise overlap of each method's mask with the manual mask, one point per session.",
    "agreement_scatter": "Method volume against manual volume, one point per session; dashed: identity; solid: "
                         "OLS fit. CCC: Lin's concordance correlation with 95% CI.",
    "agreement_blandaltman": "Method minus manual volume against their mean; solid: mean bias; dashed: 95% limits "
                             "of agreement (bias ± 1.96 SD); dotted: proportional bias (differences regressed on "
                             "means).",
    "containment_heatmap": "Mean over sessions of |A ∩ B| / |A|: how much of the row method's mask lies inside the "
                           "column method's mask.",
    "crosssectional_forest": "OLS outcome ~ thalamus volume + age + sex + z(ICV) on baseline sessions: β per mL "
                             "with 95% CI, one row per method; filled: significant after Benjamini-Hochberg "
                             "correction across the family.",
    "longitudinal_forest": "OLS change in outcome ~ change in thalamus volume + covariates: β per mL with 95% CI; "
                           "filled: significant after Benjamini-Hochberg correction.",
    "longitudinal_change": "Thalamic volume change from baseline to follow-up in % of baseline, per method (and by "
                           "diagnosis where participants.tsv records it).",
    "progression_change": "Thalamic volume change in % of baseline by EDSS course (confirmed-change thresholds), "
                          "methods side by side.",
    "power_sample_size": "Subjects per arm to detect the configured difference in annual thalamic atrophy "
                         "(two-sample t test).",
}
_SESSION_NAME = re.compile(r"^(sub-[0-9a-zA-Z]+)(?:_(ses-[0-9a-zA-Z]+))?$")


def _subject_of(session: str) -> str:
    match = _SESSION_NAME.match(session)
    return match.group(1) if match else session.split("_")[0]


def _title(stem: str) -> str:
    return stem.replace("_", " ").capitalize()


def _read(path: Path) -> pd.DataFrame | None:
    try:
        return read_tsv(path)
    except TSV_READ_ERRORS as err:
        LOGGER.warning("cannot read %s: %s", path, err)
        return None


def _participant_links(output_dir: Path, link_dir: Path, subjects: list[str]) -> dict[str, str]:
    """Subject -> HTML of its name, linked (relative to ``link_dir``) to its report where that report exists."""
    links = {}
    for subject in subjects:
        report = output_dir / f"{subject}.html"
        links[subject] = (f'<a href="{href(report, link_dir)}">{esc(subject)}</a>' if report.is_file()
                          else esc(subject))
    return links



# ------------------------------------------------------------------ key numbers, written from the tables


# ------------------------------------------------------------------ why an analysis did not run
_ANALYSIS_OF_SECTION = {"cross-sectional": "cross_sectional", "longitudinal": "longitudinal",
                        "progression": "progression", "power": "power"}


def _skip_reason(section_id: str, group_dir: Path, analyses: pd.DataFrame | None) -> str | None:
    """One line saying why a section's analysis did not run, or None when it ran."""
    if section_id == "volumes":
        return None if (group_dir / "volumes.tsv").is_file() else \
            "Not run: no group volumes table (run the group level after the participant level)."
    if section_id == "agreement":
        voxelwise = read_group_table(group_dir, "agreement_voxelwise")
        if voxelwise is None:
            return "Not run: the group level found no thalamus masks to compare."
        if voxelwise.empty:
            return ("Not run: no manual thalamus masks were given (--derivatives NAME=PATH with "
                    "label-thalamus desc-manual masks), or none matched a session with method masks.")
        return None
    if section_id == "between-methods":
        return None if (group_dir / "containment.tsv").is_file() else \
            "Not run: the group level found no thalamus masks to compare."
    if section_id == "harmonization":
        return None if (group_dir / "harmonization.tsv").is_file() else harmonization.SKIPPED
    if section_id == "template-space":
        return None if (group_dir / "template_maps.tsv").is_file() else \
            "Not run: no template-space masks (the participant level ran with --template none or another template)."
    analysis = _ANALYSIS_OF_SECTION.get(section_id)
    if analysis is None:
        return None
    if analyses is None:
        return ("Not run: no clinical analyses in this output (the group level skipped them; its log says why, "
                "usually a missing clinical column: map it with --clinical-config).")
    if "analysis" not in analyses or "status" not in analyses:
        return None
    rows = analyses[analyses["analysis"].astype(str) == analysis]
    if rows.empty or (rows["status"].astype(str) == "done").any():
        return None
    reason = str(rows["reason"].iloc[0]) if "reason" in rows and not pd.isna(rows["reason"].iloc[0]) else ""
    return f"Not run: {reason or 'no reason recorded'}."


def group_log_file(output_dir: Path) -> Path | None:
    """The newest group level log, ``logs/<run>/group.log`` (run names start with their date and time)."""
    logs = sorted(Path(output_dir).glob(f"logs/*/{GROUP_LOG}"), key=lambda path: path.parent.name)
    return logs[-1] if logs else None


def _with_log_link(reason: str | None, log_file: Path | None, link_dir: Path) -> Markup | None:
    """The skip reason, escaped, followed by a link to the group log that has the details."""
    if reason is None:
        return None
    if log_file is None:
        return Markup(esc(reason))
    name = f"logs/{log_file.parent.name}/{log_file.name}"
    return Markup(f'{esc(reason)} Log: <a href="{href(log_file, link_dir)}">{esc(name)}</a>')


# ------------------------------------------------------------------ QC: failed sessions and exclusions
def _qc_extra(output_dir: Path, group_dir: Path, link_dir: Path, links: dict[str, str]) -> tuple[list[str], str]:
    """Lead sentences and HTML of the failed sessions and the images excluded by the registration QC.

    Files outside the group folder are linked relative to ``link_dir``, where the report is read.
    """
    parts = []
    statuses = read_session_statuses(output_dir)
    failed = [s for s in statuses.values() if s.status != "ok"]
    parts.append("<h3>Failed sessions</h3>")
    if failed:
        rows = []
        for status in sorted(failed, key=lambda s: s.session):
            crashes = " ".join(f'<a href="{href(c, link_dir)}">{esc(c.name)}</a>' for c in status.crash_files)
            rows.append({
                "session": esc(status.session),
                "participant report": links.get(_subject_of(status.session), esc(_subject_of(status.session))),
                "reason": esc(status.reason or "no reason recorded"),
                "run": f'<a href="{href(status.sessions_tsv, link_dir)}">{esc(status.run)}</a>',
                "crash reports": crashes or "none",
            })
        parts.append(html_table(pd.DataFrame(rows), html_columns=rows[0].keys(), row_classes=["bad"] * len(rows)))
    elif statuses:
        parts.append(f'<p class="note">None: all {len(statuses)} sessions in the run logs succeeded.</p>')
    else:
        parts.append('<p class="note">No run log (<code>logs/*/sessions.tsv</code>) found.</p>')

    parts.append("<h3>Images excluded by the registration QC</h3>")
    rows = []
    for qc_path in sorted(output_dir.glob("sub-*/**/anat/*_desc-registration_qc.tsv")):
        qc = _read(qc_path)
        if qc is None:
            continue
        session = qc_path.name.removesuffix("_desc-registration_qc.tsv")
        for image, reason in registration_exclusions(qc):
            rows.append({"session": esc(session),
                         "participant report": links.get(_subject_of(session), esc(_subject_of(session))),
                         "image": esc(image), "reason": esc(reason),
                         "QC table": f'<a href="{href(qc_path, link_dir)}">{esc(qc_path.name)}</a>'})
    if rows:
        parts.append(html_table(pd.DataFrame(rows), html_columns=rows[0].keys()))
        parts.append('<p class="note">Masks from an excluded image (MindGlide on it, and the ensembles using it) '
                     "were not made for that session.</p>")
    else:
        parts.append('<p class="note">None: every FLAIR and R1 map found passed its registration QC.</p>')
    sessions = (f"{len(failed)} of {len(statuses)} session(s) in the run logs failed" if statuses
                else "No run logs were found")
    lead = [f"{sessions}; {len(rows)} image(s) were excluded by the registration QC."]
    excluded = read_group_table(group_dir, "excluded_sessions")
    qc_lead, qc_html = _flagged_html(group_dir, links, excluded)
    lead += qc_lead
    parts.append(qc_html)
    if excluded is not None and not excluded.empty:
        lead.append(f"{len(excluded)} session(s) were left out of the group tables (table below, with the reasons).")
    exclusions = read_group_table(group_dir, "clinical_exclusions")
    if exclusions is not None and "n_rows" in exclusions:
        lead.append(f"The clinical models left out {int(numeric(exclusions, 'n_rows').fillna(0).sum())} row(s) for "
                    "missing or unusable values (table below).")
    return lead, "\n".join(parts)


def _flagged_html(group_dir: Path, links: dict[str, str], excluded: pd.DataFrame | None) -> tuple[list[str], str]:
    """Lead sentences and HTML of the masks flagged by the QC checks (group/qc.tsv)."""
    qc = read_group_table(group_dir, "qc")
    heading = "<h3>Sessions flagged by the segmentation QC</h3>"
    if qc is None or not {"participant_id", "check", "status", "reason"} <= set(qc):
        return [], heading + '<p class="note">No QC table (<code>group/qc.tsv</code>).</p>'
    n_flagged, n_masks, html = flagged_sessions(qc, group_dir, links)
    n_fail = qc.loc[qc["status"] == "fail"].drop_duplicates(["participant_id", "session_id", "method",
                                                              "contrast"]).shape[0]
    lead = [f"The QC checks flagged {n_flagged} of {n_masks} mask(s) ({n_fail} with a failed check)."]
    left_out = qc_excluded_count(excluded)
    lead.append(f"--qc-exclude left {left_out} of them out of the statistics." if left_out else
                "Every mask is in the statistics (leave the flagged ones out with --qc-exclude fail or warn).")
    return lead, heading + html


# ------------------------------------------------------------------ assembling the page
def _svg_width_px(svg: Path) -> int:
    """Display width of a figure: its print width, enlarged by 1.5 so 8 pt text reads as 16 px (max 1000)."""
    try:
        head = svg.read_text(errors="replace")[:2000]
    except OSError:
        return 900
    match = re.search(r'<svg[^>]*\swidth="([0-9.]+)pt"', head)
    return min(1000, round(float(match.group(1)) * 96 / 72 * 1.5)) if match else 900


def _table_entry(path: Path, group_dir: Path, *, open_: bool = False) -> dict | None:
    table = _read(path)
    if table is None:
        return None
    descriptions = column_descriptions(path)
    return {
        "stem": path.stem, "title": _title(path.stem), "name": path.name, "href": href(path, group_dir),
        "shape": f"{len(table)} rows, {len(table.columns)} columns ·", "open": open_,
        "html": Markup(html_table(table, descriptions=descriptions, max_rows=MAX_ROWS)),
        "columns": [(c, descriptions[c]) for c in table.columns if c in descriptions],
    }


def _figure_entry(stem: str, files: tuple[Path, ...], group_dir: Path) -> dict:
    svg, png = files
    if stem == "template_maps":
        caption = template_caption(group_dir)
    else:
        caption = CAPTIONS.get(stem, harmonization.CAPTIONS.get(stem, ""))
    return {"stem": stem, "title": {**FIGURE_TITLES, **harmonization.TITLES}[stem], "caption": caption,
            "src": href(svg, group_dir), "width_px": _svg_width_px(svg),
            "downloads": [("SVG", href(svg, group_dir)), (f"PNG ({PNG_DPI} dpi)", href(png, group_dir))]}


def _leads(section_id: str, group_dir: Path) -> list[str]:
    def table(stem: str) -> pd.DataFrame | None:
        return read_group_table(group_dir, stem)

    if section_id == "volumes":
        volumes = table("volumes")
        return volumes_lead(volumes) if volumes is not None and {"method", "volume_ml"} <= set(volumes) else []
    if section_id == "agreement":
        return agreement_lead(table("agreement_summary"), table("agreement_volumetric"), table("agreement_pairwise"))
    if section_id == "between-methods":
        containment = table("containment")
        return containment_lead(containment) if containment is not None and not containment.empty else []
    if section_id == "cross-sectional":
        cross = table("clinical_crosssectional")
        return association_lead(cross, "cross-sectional", "per mL") if cross is not None and "beta" in cross else []
    if section_id == "longitudinal":
        return longitudinal_lead(table("clinical_longitudinal_deltas"), table("clinical_longitudinal_regression"))
    if section_id == "progression":
        return progression_lead(table("clinical_progression_subjects"), table("clinical_progression_ancova"))
    if section_id == "template-space":
        maps = table("template_maps")
        return template_lead(maps) if maps is not None and "map" in maps else []
    if section_id == "harmonization":
        return harmonization.lead(table("harmonization"))
    if section_id == "power":
        power = table("clinical_power")
        return power_lead(power) if power is not None and "n_per_arm" in power else []
    return []


def _lead_of(section_id: str, group_dir: Path) -> list[str]:
    try:
        return _leads(section_id, group_dir)
    except (KeyError, ValueError, TypeError, IndexError) as err:
        # A table of an unexpected shape costs its sentence, not the report.
        LOGGER.warning("key numbers of %s not written: %s", section_id, err)
        return []


def write_group_report(output_dir: Path, group_dir: Path | None = None) -> Path:
    """Draw the group figures and write ``<output_dir>/group/report.html`` from the group tables and run logs.

    Parameters
    ----------
    output_dir
        The output derivatives dataset (the only thing read).
    group_dir
        The folder of the group tables and figures, where the report goes
        (default ``output_dir/group``; the group level builds a new set in a
        staging folder that replaces ``output_dir/group`` whole). Links to
        files outside it are relative to ``output_dir/group``, where the
        report is read.

    Returns
    -------
    pathlib.Path
        The report (rewritten only when its content changed; so are the figures).
    """
    output_dir = Path(output_dir)
    group_dir = Path(group_dir) if group_dir is not None else output_dir / "group"
    version = pipeline_version(output_dir)
    statuses = read_session_statuses(output_dir)
    subjects = sorted({p.name for p in output_dir.glob("sub-*") if p.is_dir()}
                      | {_subject_of(name) for name in statuses})
    link_dir = output_dir / "group"
    links = _participant_links(output_dir, link_dir, subjects)
    figures = write_group_figures(group_dir) if group_dir.is_dir() else FigureSet()
    if group_dir.is_dir():
        harmonization.add_figures(figures, group_dir)
    analyses = read_group_table(group_dir, "clinical_analyses")
    log_file = group_log_file(output_dir)

    volumes = read_group_table(group_dir, "volumes")
    sections, placed = [], set()
    for section_id, heading, nav, figure_stems, table_stems in SECTIONS:
        placed |= set(table_stems)
        section = {"id": section_id, "title": heading, "nav": nav, "figures": [], "notes": [], "tables": [],
                   "lead": _lead_of(section_id, group_dir),
                   "skipped": _with_log_link(_skip_reason(section_id, group_dir, analyses), log_file, link_dir),
                   "extra": ""}
        for stem in figure_stems:
            if stem in figures.files:
                section["figures"].append(_figure_entry(stem, figures.files[stem], group_dir))
            elif stem in figures.notes:
                section["notes"].append(figures.notes[stem])
        for stem in table_stems:
            path = group_dir / f"{stem}.tsv"
            entry = _table_entry(path, group_dir) if path.is_file() else None
            if entry is not None:
                section["tables"].append(entry)
        if section_id in VOLUME_SECTIONS:
            section["lead"], section["skipped"], extra = volume_section(section_id, volumes)
            section["extra"] = Markup(extra)
        if section_id == group_change.SECTION[0]:
            change = read_group_table(group_dir, group_change.STEM)
            section["lead"], section["skipped"] = group_change.change_section(change)
        if section_id == "qc":
            lead, extra = _qc_extra(output_dir, group_dir, link_dir, links)
            section["lead"] = lead
            section["extra"] = Markup(extra)
        sections.append(section)

    others = [entry for path in sorted(group_dir.glob("*.tsv")) if path.stem not in placed
              for entry in [_table_entry(path, group_dir)] if entry is not None]
    if others:
        sections.append({"id": "other-tables", "title": "Other tables", "nav": "Other tables", "figures": [],
                         "notes": [], "tables": others, "lead": [], "skipped": None, "extra": ""})
    sections.append({"id": "participants", "title": "Participant reports", "nav": "Participants", "figures": [],
                     "notes": [], "tables": [], "lead": [], "skipped": None,
                     "extra": Markup(_participants_html(output_dir, subjects, statuses, links))})

    n_tables = sum(len(s["tables"]) for s in sections)
    analysed = set(volumes["participant_id"].astype(str)) if volumes is not None and "participant_id" in volumes \
        else set()
    template = _environment().get_template("group_report.html")
    page = template.render(
        title="Group report: thalamus segmentation benchmark",
        subtitle=f"thalamus_bidsapp {version} · {len(set(subjects) | analysed)} subject(s) · "
                 f"{len(figures.files)} figure(s) · "
                 f"{n_tables} table(s)",
        sections=sections, version=version, css=Markup(data_text("report.css")),
        footer=f"thalamus_bidsapp {version}. Generated from group/, logs/ and the participant QC tables; links are "
               "relative to group/. Figures: SVG for the screen, PNG at 300 dpi for print.",
    )
    out = group_dir / "report.html"
    if write_if_changed(page, out):
        LOGGER.info("wrote group report %s", out)
    return out


def _participants_html(output_dir: Path, subjects: list[str], statuses: dict, links: dict[str, str]) -> str:
    if not subjects:
        return '<p class="note">No participant outputs.</p>'
    rows = []
    for subject in subjects:
        own = [s for s in statuses.values() if _subject_of(s.session) == subject]
        rows.append({"participant": links[subject], "sessions ok": sum(s.status == "ok" for s in own),
                     "sessions failed": sum(s.status != "ok" for s in own)})
    parts = [html_table(pd.DataFrame(rows), html_columns=("participant",))]
    missing = [s for s in subjects if not (output_dir / f"{s}.html").is_file()]
    if missing:
        parts.append(f'<p class="note">No report yet for {esc(", ".join(missing))} '
                     "(regenerate with <code>--reports-only</code>).</p>")
    return "\n".join(parts)


def _environment() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.PackageLoader("thalamus_bidsapp", "data"), autoescape=True,
                              undefined=jinja2.StrictUndefined, trim_blocks=True,
                              lstrip_blocks=True, keep_trailing_newline=True)
