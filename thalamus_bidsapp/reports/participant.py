"""The participant report ``<output_dir>/sub-<label>.html``, built from the derivatives alone.

The report is what a user looks at to judge a subject: per session the inputs
used, the methods that ran and the ones skipped with their reasons, the
registration QC table with its overlays, every thalamus mask drawn as a
contour over the T1w, the volumes, the warnings and errors, and a methods
paragraph with the references of what actually ran.

It reads nothing but ``output_dir`` (so ``--reports-only`` can regenerate it
after the run, and on a copy of the folder):

- ``sub-X/[ses-Y/]anat/*.json``: the ``Sources`` of every sidecar (the inputs
  used), ``Tool``/``Version``/``Method``/``Contrast`` of the mask sidecars,
  ``Registration`` of the registered images (methods paragraph);
- ``sub-X/[ses-Y/]anat/*_desc-registration_qc.tsv`` and
  ``*_label-thalamus_volumes.tsv`` (+ their JSON column descriptions);
- ``*_desc-preproc_T1w.nii.gz`` and ``*_space-T1w_label-thalamus_desc-*_mask.nii.gz``
  (the mask figures);
- ``sub-X/figures/*_desc-registration_*.svg`` (registration overlays);
- ``logs/*/sessions.tsv`` (the latest status of each session; runs are
  ordered by their folder name, which starts with the start time) and
  ``logs/*/crash/<session>/crash-*.txt`` (linked);
- the skipped methods and their reasons: the ``skipped`` argument, else
  ``logs/<run>/methods.json`` if present (see :func:`read_skipped_methods`),
  else the report says the reason was not recorded;
- ``dataset_description.json`` (pipeline version, dataset links);
- the package's ``data/citations.json``, ``data/report.css`` and
  ``data/report_page.html``.

It writes the mask figures
``sub-X/figures/sub-X[_ses-Y]_space-T1w_label-thalamus_desc-<method>_mask.svg``
and the report; each file only when its content changed, so regenerating
the reports of a finished run touches nothing. Figures are linked by
relative paths (the folder can be copied or moved); the CSS is inlined; the
report loads nothing from the network.
"""

from __future__ import annotations

import html
import io
import json
import logging
import os
import re
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote

import nibabel as nib
import numpy as np
import pandas as pd

from thalamus_bidsapp.bidsio.atomic import read_tsv, write_if_changed
from thalamus_bidsapp.image.grid import GRID_ATOL_MM
from thalamus_bidsapp.reports.registration_figures import draw_registration_figures
from thalamus_bidsapp.methods.registry import all_methods, method_names, method_of_mask

LOGGER = logging.getLogger(__name__)

#: Optional inputs and the steps that do not run without them (as logged by the participant level).
OPTIONAL_INPUTS = {
    "FLAIR": "FLAIR registration and MindGlide on FLAIR",
    "R1map": "R1 registration, R1 scaling and MindGlide on R1",
}
_INPUT_ORDER = ("T1w", "T2w", "FLAIR", "R1map", "mask")
_MASK_RE = re.compile(r"_space-T1w_label-thalamus_desc-(?P<desc>[0-9a-zA-Z]+)_mask\.nii\.gz$")
_BIDS_URI = re.compile(r"^bids:(?P<dataset>[^:]*):(?P<path>.+)$")
_STRATEGY_TEXT = {
    "flirt_mi_affine": ("FSL FLIRT (6 DOF mutual information, then 12 DOF affine)", "flirt"),
    "flirt_normcorr_weighted": ("FSL FLIRT (6 DOF normalised correlation weighted by the T1w brain mask)", "flirt"),
    "flirt_normcorr": ("FSL FLIRT (6 DOF normalised correlation)", "flirt"),
    "ants_rigid": ("ANTs rigid registration", "ants"),
}
# Mask figure layout: slices per plane and the margin around the thalamus (mm).
_N_SLICES = 5
_MARGIN_MM = 12.0
_PLANES = (("axial", 2), ("coronal", 1), ("sagittal", 0))
# Screen-left / screen-right labels of each plane as drawn (RAS arrays, rows upwards).
_SIDES = {"axial": ("L", "R"), "coronal": ("L", "R"), "sagittal": ("P", "A")}
_MASK_COLORS = ("#ff4d4d", "#4dd2ff", "#ffd24d", "#7dff4d", "#ff4dff", "#ff9f40", "#40ffb3", "#b38cff")


# --------------------------------------------------------------------------- shared HTML helpers
# (also used by reports/group.py)

def esc(value: Any) -> str:
    """HTML-escape ``str(value)``."""
    return html.escape("" if value is None else str(value), quote=True)


def href(path: Path, start: Path) -> str:
    """URL of ``path`` relative to the folder ``start`` (posix separators, percent-quoted)."""
    rel = os.path.relpath(Path(path), Path(start))
    return quote(Path(rel).as_posix())


def _data_text(name: str) -> str:
    return resources.files("thalamus_bidsapp.data").joinpath(name).read_text()


def pipeline_version(output_dir: Path) -> str:
    """Version of the pipeline that wrote ``output_dir`` (its ``dataset_description.json``), else ours."""
    try:
        described = json.loads((Path(output_dir) / "dataset_description.json").read_text())
        return str(described["GeneratedBy"][0]["Version"])
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        from thalamus_bidsapp import __version__

        return __version__


def render_page(*, title: str, subtitle: str, toc: Iterable[tuple[str, str]], body: str, footer: str,
                version: str) -> str:
    """A whole HTML page from ``data/report_page.html`` with ``data/report.css`` inlined.

    ``toc`` is a sequence of (anchor id, label); ``body`` and ``footer`` are HTML.
    """
    template = string.Template(_data_text("report_page.html"))
    nav = " ".join(f'<a href="#{esc(anchor)}">{esc(label)}</a>' for anchor, label in toc)
    return template.substitute(title=esc(title), subtitle=subtitle, toc=nav, body=body, footer=footer,
                               css=_data_text("report.css"), version=esc(version))


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


def _format_cell(value: Any) -> tuple[str, bool]:
    """Cell text and whether it is numeric (right-aligned)."""
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return "n/a", False
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value)), False
    if isinstance(value, (int, np.integer)):
        return str(int(value)), True
    if isinstance(value, (float, np.floating)):
        number = float(value)
        if number.is_integer() and abs(number) < 1e15:
            return str(int(number)), True
        # Four significant digits, but no exponent for large volumes (17153.5 mm3, not 1.715e+04).
        return (f"{number:.1f}" if abs(number) >= 1e4 else f"{number:.4g}"), True
    return str(value), False


def html_table(table: pd.DataFrame, *, descriptions: Mapping[str, str] | None = None,
               max_rows: int | None = None, row_classes: list[str] | None = None,
               html_columns: Iterable[str] = ()) -> str:
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
    """
    if table.empty:
        return '<p class="note">No rows.</p>'
    descriptions = descriptions or {}
    raw = set(html_columns)
    head = "".join(
        f'<th title="{esc(descriptions[c])}">{esc(c)}</th>' if descriptions.get(c) else f"<th>{esc(c)}</th>"
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
            text, numeric = _format_cell(value)
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


@dataclass(frozen=True)
class SessionStatus:
    """The latest recorded status of a session in ``logs/<run>/sessions.tsv``."""

    session: str
    status: str
    reason: str
    run: str
    sessions_tsv: Path
    crash_files: tuple[Path, ...] = ()


def read_session_statuses(output_dir: Path) -> dict[str, SessionStatus]:
    """Latest status of every session over all runs in ``logs/*/sessions.tsv``.

    Runs are taken in the order of their folder names, which start with the
    run's start time (``YYYYMMDD-HHMMSS_<id>``), so a later run's entry wins.
    """
    statuses: dict[str, SessionStatus] = {}
    for tsv in sorted(Path(output_dir).glob("logs/*/sessions.tsv")):
        try:
            table = read_tsv(tsv)
        except (OSError, ValueError, pd.errors.ParserError) as err:
            LOGGER.warning("cannot read %s: %s", tsv, err)
            continue
        for row in table.to_dict("records"):
            name = str(row.get("session", ""))
            if not name:
                continue
            reason = row.get("reason")
            reason = "" if reason is None or (isinstance(reason, float) and np.isnan(reason)) else str(reason)
            crashes = tuple(sorted((tsv.parent / "crash" / name).glob("crash-*.txt")))
            statuses[name] = SessionStatus(name, str(row.get("status", "")), reason, tsv.parent.name, tsv, crashes)
    return statuses


def registration_exclusions(qc: pd.DataFrame) -> list[tuple[str, str]]:
    """Images of a registration QC table with no selected registration, with the reasons."""
    out = []
    if qc.empty or "image" not in qc:
        return out
    for image, rows in qc.groupby("image", sort=True):
        if not any(is_true(v) for v in rows.get("selected", [])):
            records = rows.to_dict("records")
            # The strategies that ran say why the image failed; "not run" rows only repeat the set-up.
            tried = [r for r in records if not pd.isna(r.get("mi"))] if "mi" in rows else []
            reasons = "; ".join(f"{r.get('strategy')}: {r.get('reason')}" for r in (tried or records)
                                if r.get("reason") and not pd.isna(r.get("reason")))
            out.append((str(image), reasons or "no registration passed its QC"))
    return out


def qc_row_classes(qc: pd.DataFrame) -> list[str]:
    """Row colours of a registration QC table: selected green, failed red."""
    classes = []
    for row in qc.to_dict("records"):
        if is_true(row.get("selected")):
            classes.append("good")
        elif str(row.get("passed")).strip().lower() in {"false", "0"}:
            classes.append("bad")
        else:
            classes.append("")
    return classes


# --------------------------------------------------------------------------- mask figures

def _bounding_box(mask: np.ndarray, margin: np.ndarray) -> tuple[slice, slice, slice]:
    """Bounding box of ``mask`` widened by ``margin`` voxels per axis, clipped to the volume."""
    box = []
    for axis in range(3):
        profile = mask.any(axis=tuple(a for a in range(3) if a != axis))
        idx = np.flatnonzero(profile)
        lo, hi = (int(idx[0]), int(idx[-1])) if idx.size else (0, mask.shape[axis] - 1)
        box.append(slice(max(0, lo - int(margin[axis])), min(mask.shape[axis], hi + int(margin[axis]) + 1)))
    return tuple(box)


def _slice_indices(mask: np.ndarray, axis: int, n_slices: int) -> list[int]:
    """``n_slices`` indices evenly inside the extent of ``mask`` along ``axis`` (whole axis if empty)."""
    profile = mask.any(axis=tuple(a for a in range(3) if a != axis))
    idx = np.flatnonzero(profile)
    lo, hi = (int(idx[0]), int(idx[-1])) if idx.size else (0, mask.shape[axis] - 1)
    return sorted({int(round(lo + (hi - lo) * k / (n_slices + 1))) for k in range(1, n_slices + 1)})


def _load_canonical(path: Path) -> tuple[np.ndarray, np.ndarray]:
    img = nib.as_closest_canonical(nib.load(os.fspath(path)))
    return np.asarray(img.dataobj, dtype=np.float32).reshape(img.shape[:3]), img.affine


def plot_mask_mosaic(
    t1w: np.ndarray,
    mask: np.ndarray,
    zooms: tuple[float, float, float],
    out_file: Path,
    *,
    box: tuple[slice, slice, slice],
    slices: Mapping[int, list[int]],
    title: str,
    color: str = _MASK_COLORS[0],
) -> bool:
    """Draw a thalamus mask as a contour over the T1w: rows axial, coronal, sagittal; save as SVG.

    Parameters
    ----------
    t1w, mask
        RAS-ordered volumes on the same grid.
    zooms
        Voxel sizes (mm), for the aspect ratio.
    out_file
        The ``.svg`` to write (only if its content changed).
    box
        Crop window (voxel slices); the same for every mask of a session so
        the figures compare.
    slices
        Axis (0 sagittal, 1 coronal, 2 axial) -> absolute slice indices.
    title
        Figure title.
    color
        Contour colour.

    Returns
    -------
    bool
        Whether the file was (re)written.
    """
    import matplotlib
    from matplotlib.backends.backend_svg import FigureCanvasSVG
    from matplotlib.figure import Figure

    t1_crop = t1w[box]
    mask_crop = mask[box] > 0
    inside = t1_crop[t1_crop > 0]
    vmin, vmax = (np.percentile(inside, [1, 99.5]) if inside.size else (0.0, 1.0))
    n_cols = max(len(v) for v in slices.values())
    fig = Figure(figsize=(2.0 * n_cols, 2.0 * len(_PLANES) + 0.4), facecolor="black")
    FigureCanvasSVG(fig)
    axes = fig.subplots(len(_PLANES), n_cols, squeeze=False)
    for row, (plane, axis) in enumerate(_PLANES):
        others = [a for a in range(3) if a != axis]
        aspect = zooms[others[1]] / zooms[others[0]]
        for col in range(n_cols):
            ax = axes[row][col]
            ax.set_axis_off()
            if col >= len(slices[axis]):
                continue
            index = slices[axis][col] - box[axis].start
            # Rows are the second remaining RAS axis, drawn upwards (origin lower).
            image = np.take(t1_crop, index, axis=axis).T
            outline = np.take(mask_crop, index, axis=axis).T
            ax.imshow(image, cmap="gray", vmin=vmin, vmax=vmax, origin="lower", aspect=aspect,
                      interpolation="nearest")
            if outline.any():
                grid_x, grid_y = np.arange(outline.shape[1]), np.arange(outline.shape[0])
                ax.contourf(grid_x, grid_y, outline.astype(float), levels=[0.5, 1.5], colors=[color], alpha=0.22)
                ax.contour(grid_x, grid_y, outline.astype(float), levels=[0.5], colors=[color], linewidths=1.1)
            ax.set_xlim(-0.5, image.shape[1] - 0.5)
            ax.set_ylim(-0.5, image.shape[0] - 0.5)
            ax.text(0.02, 0.98, f"{plane} {slices[axis][col]}", color="white", fontsize=6.5,
                    ha="left", va="top", transform=ax.transAxes)
            left, right = _SIDES[plane]
            ax.text(0.02, 0.02, left, color="#bbbbbb", fontsize=6.5, ha="left", va="bottom", transform=ax.transAxes)
            ax.text(0.98, 0.02, right, color="#bbbbbb", fontsize=6.5, ha="right", va="bottom",
                    transform=ax.transAxes)
    fig.suptitle(title, color="white", fontsize=9)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=1 - 0.4 / (2.0 * len(_PLANES) + 0.4),
                        wspace=0.03, hspace=0.06)
    buffer = io.BytesIO()
    # A fixed hash salt and no date make the SVG byte-identical from one run to the next;
    # text stays text (fonttype none) rather than glyph outlines, which would double the size.
    with matplotlib.rc_context({"svg.hashsalt": "thalamus_bidsapp", "svg.fonttype": "none"}):
        fig.savefig(buffer, format="svg", facecolor=fig.get_facecolor(), metadata={"Date": None})
    return write_if_changed(buffer.getvalue(), Path(out_file))


# --------------------------------------------------------------------------- reading a session

@dataclass
class MaskInfo:
    """One published thalamus mask and what its sidecar says."""

    desc: str
    path: Path
    sidecar: dict[str, Any]
    figure: Path | None = None

    @property
    def method_family(self) -> str:
        """The registered method the mask comes from (e.g. MindGlide's ``mindglideFLAIR`` and ``ensemble*``)."""
        method = method_of_mask(self.desc)
        return method.name if method else str(self.sidecar.get("Method") or self.desc)


@dataclass
class SessionReport:
    """Everything the report says about one session."""

    name: str
    label: str | None
    anat: Path | None
    status: SessionStatus | None = None
    inputs: list[dict[str, str]] = field(default_factory=list)
    masks: list[MaskInfo] = field(default_factory=list)
    sidecars: dict[str, dict[str, Any]] = field(default_factory=dict)
    qc: pd.DataFrame | None = None
    qc_path: Path | None = None
    volumes: pd.DataFrame | None = None
    volumes_path: Path | None = None
    overlays: list[Path] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    skipped_source: str = ""
    messages: list[tuple[str, str]] = field(default_factory=list)  # (level, HTML text)

    @property
    def failed(self) -> bool:
        return self.status is not None and self.status.status != "ok"


def read_skipped_methods(output_dir: Path) -> dict[str, dict[str, str]]:
    """Skipped methods and reasons by session name, from the runs' ``logs/*/methods.json``.

    The participant level writes ``logs/<run>/methods.json`` as
    ``{"sub-01_ses-1": {"methods_run": [...], "methods_skipped": {method: reason}, ...}}``;
    runs are read in the order of their folder names (start time first), so a
    later run's plan of a session wins. Returns {} when no run recorded one.
    """
    out: dict[str, dict[str, str]] = {}
    for path in sorted(Path(output_dir).glob("logs/*/methods.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            LOGGER.warning("cannot read %s: %s", path, err)
            continue
        for session, entry in data.items() if isinstance(data, Mapping) else ():
            reasons = entry.get("methods_skipped") if isinstance(entry, Mapping) else None
            if isinstance(reasons, Mapping):
                out[str(session)] = {str(k): str(v) for k, v in reasons.items() if isinstance(v, str)}
    return out


def _strip_ext(name: str) -> str:
    for ext in (".nii.gz", ".nii", ".tsv", ".json", ".mgz", ".txt"):
        if name.endswith(ext):
            return name[: -len(ext)]
    return name


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        LOGGER.warning("cannot read %s: %s", path, err)
        return {}
    return data if isinstance(data, dict) else {}


def _collect_inputs(sidecars: Mapping[str, dict[str, Any]], links: Mapping[str, str]) -> list[dict[str, str]]:
    """The inputs used: the ``Sources`` of the sidecars that lie outside the output dataset."""
    found: dict[str, dict[str, str]] = {}
    for sidecar in sidecars.values():
        sources = sidecar.get("Sources") or []
        for source in sources if isinstance(sources, list) else [sources]:
            match = _BIDS_URI.match(str(source))
            if match and match["dataset"] == "":
                continue  # a file of this output dataset, not an input
            dataset, rel = (match["dataset"], match["path"]) if match else ("", str(source))
            role = _strip_ext(Path(rel).name).rsplit("_", 1)[-1]
            found[str(source)] = {"role": role, "dataset": dataset, "location": links.get(dataset, ""),
                                  "file": rel}
    order = {role: i for i, role in enumerate(_INPUT_ORDER)}
    return sorted(found.values(), key=lambda r: (order.get(r["role"], len(order)), r["file"]))


def _find_sessions(output_dir: Path, subject: str, statuses: Mapping[str, SessionStatus]) -> list[SessionReport]:
    subject_dir = output_dir / subject
    sessions: dict[str, SessionReport] = {}
    if (subject_dir / "anat").is_dir():
        sessions[subject] = SessionReport(subject, None, subject_dir / "anat")
    for anat in sorted(subject_dir.glob("ses-*/anat")):
        label = anat.parent.name
        sessions[f"{subject}_{label}"] = SessionReport(f"{subject}_{label}", label, anat)
    for name, status in statuses.items():
        if name == subject or name.startswith(subject + "_"):
            if name not in sessions:
                label = name[len(subject) + 1:] or None
                sessions[name] = SessionReport(name, label, None)
            sessions[name].status = status
    return [sessions[k] for k in sorted(sessions)]


def _read_session(session: SessionReport, output_dir: Path, links: Mapping[str, str]) -> None:
    """Fill ``session`` from its anat folder and figures."""
    if session.anat is None or not session.anat.is_dir():
        return
    for path in sorted(session.anat.glob(f"{session.name}_*.json")):
        session.sidecars[path.name] = _read_json(path)
    session.inputs = _collect_inputs(session.sidecars, links)
    for path in sorted(session.anat.glob(f"{session.name}_space-T1w_label-thalamus_desc-*_mask.nii.gz")):
        match = _MASK_RE.search(path.name)
        if match:
            sidecar = session.sidecars.get(path.name.replace(".nii.gz", ".json"), {})
            session.masks.append(MaskInfo(match["desc"], path, sidecar))
    qc_path = session.anat / f"{session.name}_desc-registration_qc.tsv"
    if qc_path.is_file():
        session.qc, session.qc_path = read_tsv(qc_path), qc_path
    if session.qc is not None and "image" in session.qc:
        # An image whose registration was excluded has no published output, hence no Sources:
        # the QC table is the only trace that it was found.
        roles = {entry["role"] for entry in session.inputs}
        for image in sorted(set(session.qc["image"].astype(str)) - roles):
            session.inputs.append({"role": image, "dataset": "", "location": "",
                                   "file": "found, path not recorded (its registration was excluded)"})
    volumes_path = session.anat / f"{session.name}_label-thalamus_volumes.tsv"
    if volumes_path.is_file():
        session.volumes, session.volumes_path = read_tsv(volumes_path), volumes_path
    figures = output_dir / session.name.split("_")[0] / "figures"
    session.overlays = sorted(
        p for p in figures.glob(f"{session.name}_space-T1w_desc-registration_*")
        if p.suffix in {".svg", ".png"} and not (p.suffix == ".png" and p.with_suffix(".svg").is_file())
    )


def _draw_masks(session: SessionReport, figures_dir: Path) -> None:
    """One mosaic per mask, all cropped to the same window around the union of the masks."""
    if not session.masks or session.anat is None:
        return
    t1_path = session.anat / f"{session.name}_desc-preproc_T1w.nii.gz"
    if not t1_path.is_file():
        session.messages.append(("warning", f"No <code>{esc(t1_path.name)}</code>: mask figures not drawn."))
        return
    t1, affine = _load_canonical(t1_path)
    zooms = tuple(float(z) for z in np.sqrt((affine[:3, :3] ** 2).sum(axis=0)))
    masks = {}
    for info in session.masks:
        data, mask_affine = _load_canonical(info.path)
        if data.shape != t1.shape or not np.allclose(mask_affine, affine, atol=GRID_ATOL_MM, rtol=0):
            session.messages.append(("warning", f"{esc(info.path.name)} is not on the T1w grid: not drawn."))
            continue
        masks[info.desc] = data > 0
    if not masks:
        return
    union = np.logical_or.reduce(list(masks.values()))
    if not union.any():
        union = t1 > 0  # every mask empty: show the middle of the head instead of nothing
    box = _bounding_box(union, np.ceil(_MARGIN_MM / np.asarray(zooms)))
    slices = {axis: _slice_indices(union, axis, _N_SLICES) for _, axis in _PLANES}
    volumes = {}
    if session.volumes is not None and "method" in session.volumes:
        volumes = dict(zip(session.volumes["method"].astype(str), session.volumes.get("volume_ml", [])))
    for i, info in enumerate(session.masks):
        if info.desc not in masks:
            continue
        contrast = info.sidecar.get("Contrast") or ""
        volume = volumes.get(info.desc)
        title = f"{session.name}  {info.desc}" + (f" ({contrast})" if contrast else "")
        if volume is not None and not pd.isna(volume):
            title += f"  {float(volume):.2f} mL"
        out = figures_dir / f"{session.name}_space-T1w_label-thalamus_desc-{info.desc}_mask.svg"
        if plot_mask_mosaic(t1, masks[info.desc], zooms, out, box=box, slices=slices, title=title,
                            color=_MASK_COLORS[i % len(_MASK_COLORS)]):
            LOGGER.info("wrote %s", out)
        info.figure = out


def _session_messages(session: SessionReport, output_dir: Path) -> None:
    """Errors and warnings of a session, from its status, QC, volumes and sidecars."""
    status = session.status
    if status is not None and status.status != "ok":
        text = f"Session failed: {esc(status.reason or 'no reason recorded')} (run {esc(status.run)})."
        for crash in status.crash_files:
            text += f' <a href="{href(crash, output_dir)}">{esc(crash.name)}</a>'
        session.messages.insert(0, ("error", text))
    if session.anat is None:
        if status is None:
            session.messages.append(("error", "No outputs and no status recorded for this session."))
        return
    if not session.masks and not session.failed:
        session.messages.append(("warning", "No thalamus mask was written for this session."))
    if session.qc is not None:
        for image, reason in registration_exclusions(session.qc):
            session.messages.append((
                "warning",
                f"{esc(image)} excluded: no registration passed its QC ({esc(reason)}); "
                f"the {esc(image)}-based masks were not made."))
    if session.volumes is not None and "n_voxels" in session.volumes:
        for row in session.volumes.to_dict("records"):
            if not pd.isna(row.get("n_voxels")) and int(row["n_voxels"]) == 0:
                session.messages.append(("warning", f"The {esc(row.get('method'))} mask is empty."))
    decisions = set()
    for name, sidecar in session.sidecars.items():
        registration = sidecar.get("Registration")
        if isinstance(registration, Mapping) and registration.get("Decision"):
            decisions.add(f"{registration.get('Modality', name)} registration: {registration['Decision']}")
        missing = sidecar.get("MissingInputs")
        if isinstance(missing, list) and missing and sidecar.get("Built") is False:
            session.messages.append(("warning", f"{esc(sidecar.get('Ensemble', name))} ensemble not built: "
                                                f"missing {esc(', '.join(map(str, missing)))}."))
    for decision in sorted(decisions):
        session.messages.append(("info", esc(decision)))
    roles = {entry["role"] for entry in session.inputs}
    for role, steps in OPTIONAL_INPUTS.items():
        if role not in roles:
            session.messages.append(("info", f"No {esc(role)} image among the inputs: {esc(steps)} did not run."))


def _methods_ran(session: SessionReport) -> set[str]:
    return {info.method_family for info in session.masks}


# --------------------------------------------------------------------------- HTML of a session

def _messages_html(messages: list[tuple[str, str]]) -> str:
    if not messages:
        return '<p class="note">None.</p>'
    items = "".join(f'<li class="{esc(level)}"><strong>{esc(level)}:</strong> {text}</li>'
                    for level, text in messages)
    return f'<ul class="messages">{items}</ul>'


def _session_html(session: SessionReport, output_dir: Path) -> str:
    status = "failed" if session.failed else ("ok" if session.status is not None or session.masks else "unknown")
    parts = [f'<section class="session" id="{esc(session.name)}">',
             f'<h2>{esc(session.label or session.name)} <span class="badge {status}">{status}</span></h2>']

    parts.append("<h3>Errors and warnings</h3>")
    parts.append(_messages_html(session.messages))
    if session.anat is None:
        # Nothing was written for this session (it failed before any output): the messages say why.
        parts.append("</section>")
        return "\n".join(parts)

    parts.append("<h3>Inputs used</h3>")
    if session.inputs:
        table = pd.DataFrame(session.inputs)[["role", "dataset", "file", "location"]]
        table["dataset"] = table["dataset"].replace("", "n/a")
        parts.append(html_table(table, descriptions={
            "role": "BIDS suffix of the input", "dataset": "Dataset name (raw: the input BIDS dataset)",
            "file": "Path inside the dataset", "location": "Where the dataset was (DatasetLinks)"}))
        parts.append('<p class="note">From the <code>Sources</code> of the sidecars of this session\'s outputs.</p>')
    else:
        parts.append('<p class="note">No inputs recorded (no outputs for this session).</p>')

    parts.append("<h3>Methods</h3>")
    ran = sorted(_methods_ran(session))
    descs = ", ".join(f"<code>{esc(m.desc)}</code>" for m in session.masks)
    parts.append(f"<p>Ran: {esc(', '.join(ran)) or 'none'}" + (f" (masks {descs})" if descs else "") + ".</p>")
    not_run = [m for m in method_names() if m not in ran]
    rows = []
    for method in list(not_run) + [m for m in session.skipped if m not in not_run and m not in ran]:
        reason = session.skipped.get(method)
        if reason is None:
            reason = ("session failed before segmentation" if session.failed
                      else "not run; the reason was not recorded in the derivatives (see the run's log)")
        rows.append({"method": method, "reason": reason})
    if rows:
        parts.append("<h4>Skipped</h4>")
        parts.append(html_table(pd.DataFrame(rows), descriptions={"reason": "Why the method did not run"}))
        if session.skipped_source:
            parts.append(f'<p class="note">Reasons from {session.skipped_source}.</p>')

    if session.qc is not None:
        parts.append("<h3>Registration QC</h3>")
        parts.append(html_table(session.qc, descriptions=column_descriptions(session.qc_path),
                                row_classes=qc_row_classes(session.qc)))
        parts.append(f'<p class="note">Table: <a href="{href(session.qc_path, output_dir)}">'
                     f"{esc(session.qc_path.name)}</a>. Green: the registration used; red: failed its MI "
                     "cut-off.</p>")
    if session.overlays:
        if session.qc is None:
            parts.append("<h3>Registration QC</h3>")
        parts.append('<div class="figures">')
        for overlay in session.overlays:
            image = overlay.stem.rsplit("_desc-registration_", 1)[-1]
            # An <object>, not an <img>: the SVG's hover (flicker) only works in a live document.
            parts.append(f'<figure><object type="image/svg+xml" data="{href(overlay, output_dir)}" '
                         f'aria-label="{esc(overlay.name)}"></object>'
                         f"<figcaption>The T1w and the {esc(image)} registered onto it, at the same cuts "
                         f"(hover to flicker between them); red: the T1w brain mask outline.</figcaption></figure>")
        parts.append("</div>")

    if session.masks:
        parts.append("<h3>Thalamus masks</h3>")
        parts.append('<p class="note">Each mask as a contour over the T1w, cropped around the union of the '
                     "masks of this session; the same slices for every mask. Left of the patient is on the "
                     "left of the axial and coronal views.</p>")
        parts.append('<div class="figures">')
        for info in session.masks:
            if info.figure is None:
                continue
            contrast = info.sidecar.get("Contrast")
            tool = " ".join(str(v) for v in (info.sidecar.get("Tool"), info.sidecar.get("Version")) if v)
            caption = f"<code>{esc(info.desc)}</code>" + (f" on {esc(contrast)}" if contrast else "")
            caption += f" ({esc(tool)})" if tool else ""
            caption += f' · <a href="{href(info.path, output_dir)}">mask</a>'
            parts.append(f'<figure><img src="{href(info.figure, output_dir)}" alt="{esc(info.figure.name)}" '
                         f'loading="lazy"><figcaption>{caption}</figcaption></figure>')
        parts.append("</div>")

    if session.volumes is not None:
        parts.append("<h3>Volumes</h3>")
        parts.append(html_table(session.volumes, descriptions=column_descriptions(session.volumes_path)))
        parts.append(f'<p class="note">Table: <a href="{href(session.volumes_path, output_dir)}">'
                     f"{esc(session.volumes_path.name)}</a>.</p>")
    parts.append("</section>")
    return "\n".join(parts)


# --------------------------------------------------------------------------- methods paragraph

class _References:
    """Numbered references in order of first citation, from ``data/citations.json``."""

    def __init__(self) -> None:
        self.table: dict[str, dict[str, Any]] = json.loads(_data_text("citations.json"))
        self.order: list[str] = []

    def cite(self, *keys: str) -> str:
        """The reference mark of citation keys (``data/citations.json`` keys or registered method names)."""
        for method in all_methods():
            if method.name in keys and method.name not in self.table:
                self.table[method.name] = {"text": method.citation}
        numbers = []
        for key in keys:
            if key not in self.table:
                continue
            if key not in self.order:
                self.order.append(key)
            numbers.append(self.order.index(key) + 1)
        return f"[{', '.join(map(str, numbers))}]" if numbers else ""

    def html(self) -> str:
        items = "".join(f'<li id="ref-{esc(key)}">{esc(self.table[key]["text"])}</li>' for key in self.order)
        return f'<ol class="references">{items}</ol>'


def _tool_text(sidecar: Mapping[str, Any]) -> str:
    tool, version = sidecar.get("Tool"), sidecar.get("Version")
    return " ".join(str(v) for v in (tool, version) if v)


def methods_paragraph(sessions: list[SessionReport], version: str) -> tuple[str, str]:
    """The methods text (HTML paragraphs) and the references (HTML list) of what actually ran."""
    refs = _References()
    paragraphs = [
        f"Thalamus segmentation and volumetry were performed with thalamus_bidsapp {esc(version)} "
        f"{refs.cite('thalamus_bidsapp')}, a BIDS App built on Nipype {refs.cite('nipype')}, PyBIDS "
        f"{refs.cite('pybids')} and NiBabel {refs.cite('nibabel')}."
    ]
    sidecars = [s for session in sessions for s in session.sidecars.items()]
    if any(name.endswith("_desc-preproc_T1w.json") for name, _ in sidecars):
        text = "Each T1-weighted (T1w) image was reoriented to RAS+ without resampling"
        brain = [s for name, s in sidecars if name.endswith("_desc-brain_mask.json")]
        if brain:
            tools = sorted({_tool_text(s) for s in brain if _tool_text(s)}) or ["deepbet"]
            text += f" and skull-stripped with {esc(', '.join(tools))} {refs.cite('deepbet')}"
        paragraphs.append(text + "; this reoriented T1w grid is the reference of every mask.")

    registrations: dict[str, set[str]] = {}
    for name, sidecar in sidecars:
        reg = sidecar.get("Registration")
        if isinstance(reg, Mapping) and "_space-T1w_" in name and reg.get("SelectedStrategy"):
            registrations.setdefault(str(reg.get("Modality", "image")), set()).add(str(reg["SelectedStrategy"]))
    if registrations:
        clauses = []
        for modality, strategies in sorted(registrations.items()):
            described = []
            for strategy in sorted(strategies):
                text, key = _STRATEGY_TEXT.get(strategy, (strategy, ""))
                described.append(f"{esc(text)} {refs.cite(key)}".strip())
            clauses.append(f"the {esc(modality)} image with {' or '.join(described)}")
        paragraphs.append(
            "Registered to the T1w: " + "; ".join(clauses) + ". A registration was accepted only if the mutual "
            "information with the T1w inside the brain mask reached its cut-off (see the registration QC "
            "tables).")
    if any(name.endswith("_desc-scaled_R1map.json") for name, _ in sidecars):
        paragraphs.append("The registered R1 map was clipped at its 99th percentile inside the brain mask and "
                          "rescaled linearly to 0..1000.")

    masks = [m for session in sessions for m in session.masks]
    clauses = []
    for method in all_methods():
        members = [m for m in masks if m.method_family == method.name]
        if members:
            clauses.append(esc(method.methods_sentence(members, refs.cite)))
    for family in sorted({m.method_family for m in masks} - set(method_names())):
        clauses.append(esc(family))
    if clauses:
        paragraphs.append("The thalamus was segmented with " + "; ".join(clauses) + ". Volumes are the voxel "
                          "count times the voxel volume from the image header, in mL.")
    body = "".join(f"<p>{p}</p>" for p in paragraphs)
    return body, refs.html()


# --------------------------------------------------------------------------- the report

def write_participant_report(
    output_dir: Path,
    subject: str,
    *,
    skipped: dict[str, dict[str, str]] | None = None,
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
    sessions = _find_sessions(output_dir, subject, statuses)
    if skipped is not None:
        recorded, source = skipped, "the run's method plan"
    else:
        recorded = read_skipped_methods(output_dir)
        source = "<code>logs/&lt;run&gt;/methods.json</code>" if recorded else ""
    figures_dir = output_dir / subject / "figures"
    for session in sessions:
        if session.anat is not None and session.anat.is_dir():
            draw_registration_figures(session.anat, session.name, figures_dir)
        _read_session(session, output_dir, links)
        reasons = recorded.get(session.name)
        if reasons is None and session.label:
            reasons = recorded.get(session.label)
        if reasons is not None:
            session.skipped, session.skipped_source = dict(reasons), source
        _draw_masks(session, figures_dir)
        _session_messages(session, output_dir)
    if not sessions:
        LOGGER.warning("%s: no outputs and no session status in %s", subject, output_dir)

    summary_rows = []
    for session in sessions:
        status = "failed" if session.failed else ("ok" if session.status or session.masks else "unknown")
        summary_rows.append({
            "session": f'<a href="#{esc(session.name)}">{esc(session.label or session.name)}</a>',
            "status": f'<span class="badge {status}">{status}</span>',
            "masks": len(session.masks),
            "errors": sum(level == "error" for level, _ in session.messages),
            "warnings": sum(level == "warning" for level, _ in session.messages),
        })
    summary = pd.DataFrame(summary_rows, columns=["session", "status", "masks", "errors", "warnings"])
    methods_html, references_html = methods_paragraph(sessions, version)
    body = [
        '<section id="summary"><h2>Summary</h2>',
        html_table(summary, html_columns=("session", "status")) if sessions
        else '<p class="note">No session of this subject was found in the outputs or the run logs.</p>',
        "</section>",
        *(_session_html(session, output_dir) for session in sessions),
        '<section id="methods"><h2>Methods</h2>', methods_html,
        '<p class="note">Generated from the tools and versions recorded in the sidecars of the masks that were '
        "written. The full list of tools to cite is in <code>logs/CITATION.md</code>.</p></section>",
        f'<section id="references"><h2>References</h2>{references_html}</section>',
        '<section id="about"><h2>About this report</h2><p class="note">Generated from the derivatives alone: '
        "the JSON sidecars, the registration QC and volumes tables of each session, the published T1w and "
        "masks (for the figures), the registration overlays in <code>figures/</code>, "
        "<code>logs/*/sessions.tsv</code> (latest status per session) and, for the skipped methods, "
        "the run's method plan or <code>logs/&lt;run&gt;/methods.json</code>.</p></section>",
    ]
    toc = [("summary", "Summary"), *((s.name, s.label or s.name) for s in sessions),
           ("methods", "Methods"), ("references", "References")]
    page = render_page(
        title=f"{subject}: thalamus segmentation report",
        subtitle=esc(f"thalamus_bidsapp {version} · {len(sessions)} session(s)"),
        toc=toc, body="\n".join(body), version=version,
        footer=esc(f"thalamus_bidsapp {version}. Figures are linked from {subject}/figures/; keep this file "
                   "beside that folder."),
    )
    out = output_dir / f"{subject}.html"
    if write_if_changed(page, out):
        LOGGER.info("wrote participant report %s", out)
    return out
