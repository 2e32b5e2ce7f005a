"""The group report ``<output_dir>/group/report.html``, built from the derivatives alone.

It shows every group table (``group/*.tsv``, rendered as HTML tables with
the column descriptions of their JSON sidecars) and every figure
(``group/figures/*``: the SVG where there is one, else the PNG), the sessions
that failed (``logs/*/sessions.tsv``, latest status per session, with links
to the crash reports), the images excluded by the registration QC
(``sub-*/[ses-*/]anat/*_desc-registration_qc.tsv``), the clinical analyses
skipped and the rows left out (``group/clinical_analyses.tsv``,
``group/clinical_exclusions.tsv``), and links to the participant reports
(``../sub-<label>.html``, linked only where the file exists).

Everything is linked by paths relative to ``group/``, so the report survives
copying the output folder; the CSS is inlined and nothing is loaded from the
network. The file is rewritten only when its content changed.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pandas as pd

from thalamus_bidsapp.bidsio.atomic import read_tsv, write_if_changed
from thalamus_bidsapp.reports.html import column_descriptions, esc, href, html_table, pipeline_version, render_page
from thalamus_bidsapp.reports.logs import read_session_statuses, registration_exclusions

LOGGER = logging.getLogger(__name__)

#: Rows of a group table shown in the report; the TSV (linked) has them all.
MAX_ROWS = 300
#: Tables listed first, in this order; the others follow alphabetically.
_TABLE_ORDER = ("volumes", "agreement_summary", "agreement_volumetric", "agreement_pairwise", "agreement_voxelwise",
                "containment")
#: Tables shown in the "failed and excluded" section rather than among the results.
_EXCLUSION_TABLES = ("excluded_sessions", "clinical_exclusions")
_SESSION_NAME = re.compile(r"^(sub-[0-9a-zA-Z]+)(?:_(ses-[0-9a-zA-Z]+))?$")


def _subject_of(session: str) -> str:
    match = _SESSION_NAME.match(session)
    return match.group(1) if match else session.split("_")[0]


def _title(stem: str) -> str:
    return stem.replace("_", " ").capitalize()


def _read(path: Path) -> pd.DataFrame | None:
    try:
        return read_tsv(path)
    except (OSError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        LOGGER.warning("cannot read %s: %s", path, err)
        return None


def _participant_links(output_dir: Path, group_dir: Path, subjects: list[str]) -> dict[str, str]:
    """Subject -> HTML of its name, linked to its report where that report exists."""
    links = {}
    for subject in subjects:
        report = output_dir / f"{subject}.html"
        links[subject] = (f'<a href="{href(report, group_dir)}">{esc(subject)}</a>' if report.is_file()
                          else esc(subject))
    return links


def _failed_section(output_dir: Path, group_dir: Path, links: dict[str, str]) -> list[str]:
    parts = ['<section id="excluded"><h2>Failed and excluded sessions</h2>']
    statuses = read_session_statuses(output_dir)
    failed = [s for s in statuses.values() if s.status != "ok"]
    parts.append("<h3>Failed sessions</h3>")
    if failed:
        rows = []
        for status in sorted(failed, key=lambda s: s.session):
            crashes = " ".join(f'<a href="{href(c, group_dir)}">{esc(c.name)}</a>' for c in status.crash_files)
            rows.append({
                "session": esc(status.session),
                "participant report": links.get(_subject_of(status.session), esc(_subject_of(status.session))),
                "reason": esc(status.reason or "no reason recorded"),
                "run": f'<a href="{href(status.sessions_tsv, group_dir)}">{esc(status.run)}</a>',
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
                         "QC table": f'<a href="{href(qc_path, group_dir)}">{esc(qc_path.name)}</a>'})
    if rows:
        parts.append(html_table(pd.DataFrame(rows), html_columns=rows[0].keys()))
        parts.append('<p class="note">Masks from an excluded image (MindGlide on it, and the ensembles using it) '
                     "were not made for that session.</p>")
    else:
        parts.append('<p class="note">None: every FLAIR and R1 map found passed its registration QC.</p>')

    analyses_path = group_dir / "clinical_analyses.tsv"
    analyses = _read(analyses_path) if analyses_path.is_file() else None
    if analyses is not None and "status" in analyses:
        skipped = analyses[analyses["status"].astype(str) != "done"]
        parts.append("<h3>Clinical analyses skipped</h3>")
        parts.append(html_table(skipped, descriptions=column_descriptions(analyses_path)) if not skipped.empty
                     else '<p class="note">None.</p>')
    for stem in _EXCLUSION_TABLES:
        path = group_dir / f"{stem}.tsv"
        table = _read(path) if path.is_file() else None
        if table is not None:
            parts.append(f"<h3>{esc(_title(stem))}</h3>")
            parts.append(html_table(table, descriptions=column_descriptions(path), max_rows=MAX_ROWS))
            parts.append(f'<p class="note">Table: <a href="{href(path, group_dir)}">{esc(path.name)}</a>.</p>')
    parts.append("</section>")
    return parts


def _tables_section(group_dir: Path) -> tuple[list[str], list[tuple[str, str]]]:
    paths = sorted(group_dir.glob("*.tsv"))
    order = {stem: i for i, stem in enumerate(_TABLE_ORDER)}
    paths.sort(key=lambda p: (order.get(p.stem, len(order)), p.stem))
    parts = ['<section id="tables"><h2>Tables</h2>']
    toc = []
    for path in paths:
        if path.stem in _EXCLUSION_TABLES:
            continue
        table = _read(path)
        if table is None:
            continue
        anchor = f"table-{path.stem}"
        toc.append((anchor, path.stem))
        descriptions = column_descriptions(path)
        parts.append(f'<h3 id="{esc(anchor)}">{esc(_title(path.stem))}</h3>')
        parts.append(f'<p class="note"><a href="{href(path, group_dir)}">{esc(path.name)}</a>: '
                     f"{len(table)} rows, {len(table.columns)} columns.</p>")
        parts.append(html_table(table, descriptions=descriptions, max_rows=MAX_ROWS))
        if descriptions:
            items = "".join(f"<dt>{esc(c)}</dt><dd>{esc(descriptions[c])}</dd>"
                            for c in table.columns if c in descriptions)
            parts.append(f'<details><summary>Columns</summary><dl class="columns">{items}</dl></details>')
    if not toc:
        parts.append('<p class="note">No group tables yet: run the group level.</p>')
    parts.append("</section>")
    return parts, toc


def _figures_section(group_dir: Path) -> list[str]:
    figures_dir = group_dir / "figures"
    files = sorted(p for p in figures_dir.glob("*") if p.suffix.lower() in {".svg", ".png"})
    # One figure per stem: the SVG (sharp at any zoom), the PNG where there is no SVG.
    chosen = {}
    for path in files:
        if path.stem not in chosen or path.suffix.lower() == ".svg":
            chosen[path.stem] = path
    parts = ['<section id="figures"><h2>Figures</h2>']
    if not chosen:
        parts.append('<p class="note">No group figures.</p>')
    parts.append('<div class="figures">')
    for stem, path in sorted(chosen.items()):
        others = [p for p in files if p.stem == stem and p != path]
        alternates = " ".join(f'<a href="{href(p, group_dir)}">{esc(p.suffix.lstrip(".").upper())}</a>'
                              for p in others)
        parts.append(f'<figure class="light" id="figure-{esc(stem)}"><img src="{href(path, group_dir)}" '
                     f'alt="{esc(path.name)}" loading="lazy"><figcaption>{esc(_title(stem))}'
                     f"{' · ' + alternates if alternates else ''}</figcaption></figure>")
    parts.append("</div></section>")
    return parts


def write_group_report(output_dir: Path, group_dir: Path | None = None) -> Path:
    """Write ``<output_dir>/group/report.html`` from the group tables, figures and run logs.

    Parameters
    ----------
    output_dir
        The output derivatives dataset (the only thing read).
    group_dir
        The folder of the group tables and figures, where the report goes
        (default ``output_dir/group``; the group level builds a new set in a
        temporary folder beside it).

    Returns
    -------
    pathlib.Path
        The report (rewritten only when its content changed).
    """
    output_dir = Path(output_dir)
    group_dir = Path(group_dir) if group_dir is not None else output_dir / "group"
    version = pipeline_version(output_dir)
    statuses = read_session_statuses(output_dir)
    subjects = sorted({p.name for p in output_dir.glob("sub-*") if p.is_dir()}
                      | {_subject_of(name) for name in statuses})
    links = _participant_links(output_dir, group_dir, subjects)

    volumes_path = group_dir / "volumes.tsv"
    volumes = _read(volumes_path) if volumes_path.is_file() else None
    methods = sorted(volumes["method"].astype(str).unique()) if volumes is not None and "method" in volumes else []
    n_failed = sum(s.status != "ok" for s in statuses.values())
    summary = [
        '<section id="summary"><h2>Summary</h2><ul>',
        f"<li>{len(subjects)} subject(s); {len(statuses)} session(s) in the run logs, {n_failed} failed.</li>",
        f"<li>Methods with volumes: {esc(', '.join(methods)) or 'none'}.</li>",
        "</ul></section>",
    ]
    reports = ['<section id="participants"><h2>Participant reports</h2>']
    if subjects:
        rows = []
        for subject in subjects:
            own = [s for s in statuses.values() if _subject_of(s.session) == subject]
            rows.append({"participant": links[subject],
                         "sessions ok": sum(s.status == "ok" for s in own),
                         "sessions failed": sum(s.status != "ok" for s in own)})
        reports.append(html_table(pd.DataFrame(rows), html_columns=("participant",)))
        missing = [s for s in subjects if not (output_dir / f"{s}.html").is_file()]
        if missing:
            reports.append(f'<p class="note">No report yet for {esc(", ".join(missing))} '
                           "(regenerate with <code>--reports-only</code>).</p>")
    else:
        reports.append('<p class="note">No participant outputs.</p>')
    reports.append("</section>")

    tables, table_toc = _tables_section(group_dir)
    body = [*summary, *_failed_section(output_dir, group_dir, links), *reports, *tables, *_figures_section(group_dir)]
    toc = [("summary", "Summary"), ("excluded", "Failed and excluded"), ("participants", "Participants"),
           ("tables", "Tables"), ("figures", "Figures")]
    page = render_page(
        title="Group report: thalamus segmentation benchmark",
        subtitle=esc(f"thalamus_bidsapp {version} · {len(subjects)} subject(s) · "
                     f"{len(table_toc)} table(s)"),
        toc=toc, body="\n".join(body), version=version,
        footer=esc(f"thalamus_bidsapp {version}. Generated from group/, logs/ and the participant QC tables; "
                   "links are relative to group/."),
    )
    out = group_dir / "report.html"
    if write_if_changed(page, out):
        LOGGER.info("wrote group report %s", out)
    return out


def redraw_group_figures(output_dir: Path) -> list[Path]:
    """Draw the agreement and clinical figures again from the published group tables (``--reports-only``)."""
    from thalamus_bidsapp.reports.figures_agreement import write_agreement_figures
    from thalamus_bidsapp.reports.figures_clinical import make_figures

    group_dir = Path(output_dir) / "group"
    written: list[Path] = []
    def read(stem: str) -> pd.DataFrame | None:
        path = group_dir / f"{stem}.tsv"
        return _read(path) if path.is_file() else None

    agreement = {name: read(name) for name in ("agreement_voxelwise", "containment", "agreement_volumetric")}
    if all(table is not None for table in agreement.values()):
        written += write_agreement_figures(agreement["agreement_voxelwise"], agreement["containment"],
                                           agreement["agreement_volumetric"], group_dir / "figures")
    clinical = {name: table for name in ("crosssectional", "longitudinal_regression", "longitudinal_deltas",
                                         "progression_subjects")
                if (table := read(f"clinical_{name}")) is not None}
    if clinical:
        written += make_figures(clinical, group_dir)
    LOGGER.info("group figures redrawn from the tables in %s: %d files", group_dir, len(written))
    return written
