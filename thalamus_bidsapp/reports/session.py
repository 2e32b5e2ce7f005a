"""One session of the participant report, read from the derivatives alone."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from thalamus_bidsapp.bidsio.atomic import read_tsv
from thalamus_bidsapp.methods.registry import all_methods, method_of_mask
from thalamus_bidsapp.reports.html import esc, href
from thalamus_bidsapp.reports.logs import SessionStatus, registration_exclusions

LOGGER = logging.getLogger(__name__)

#: Optional inputs and the steps that do not run without them (as logged by the participant level).
#: Optional inputs (BIDS suffix -> input role) and the registration steps that need them; the methods'
#: own steps come from the registry (``optional_inputs`` of each method).
OPTIONAL_INPUTS = {"FLAIR": ("flair", "FLAIR registration"), "R1map": ("r1map", "R1 registration and R1 scaling")}


def _skipped_steps(role: str, registration: str) -> str:
    return " and ".join([registration, *(m.optional_inputs[role] for m in all_methods() if role in m.optional_inputs)])


_INPUT_ORDER = ("T1w", "T2w", "FLAIR", "R1map", "lesion mask", "mask", "template", "thalamus atlas")
_TEMPLATEFLOW = "templateflow:"


def input_role(path: str, dataset: str) -> str:
    """What an input file is: its BIDS suffix, or what the suffix alone would mislabel.

    A TemplateFlow file is the template (its suffix, ``T1w``, would read as the
    subject's T1w) or the thalamus atlas (``probseg``); a ``label-lesion`` mask
    is the lesion mask.
    """
    stem = _strip_ext(Path(path).name)
    suffix = stem.rsplit("_", 1)[-1]
    if dataset == "TemplateFlow":
        return "thalamus atlas" if suffix in {"probseg", "dseg"} else "template"
    entities = set(stem.split("_")[:-1])
    if suffix in {"mask", "dseg", "probseg"} and entities & {"label-lesion", "desc-lesion", "label-WMH", "desc-WMH"}:
        return "lesion mask"
    return suffix


_MASK_RE = re.compile(r"_space-T1w_label-thalamus_desc-(?P<desc>[0-9a-zA-Z]+)_mask\.nii\.gz$")


_BIDS_URI = re.compile(r"^bids:(?P<dataset>[^:]*):(?P<path>.+)$")


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
    segmentation_qc: pd.DataFrame | None = None
    segmentation_qc_path: Path | None = None
    overlays: list[Path] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    skipped_source: str = ""
    messages: list[tuple[str, str]] = field(default_factory=list)  # (level, HTML text)

    @property
    def failed(self) -> bool:
        return self.status is not None and self.status.status != "ok"


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
            if match:
                dataset, rel = match["dataset"], match["path"]
            elif str(source).startswith(_TEMPLATEFLOW):
                dataset, rel = "TemplateFlow", str(source)[len(_TEMPLATEFLOW):]
            else:
                dataset, rel = "", str(source)
            found[str(source)] = {"role": input_role(rel, dataset), "dataset": dataset,
                                  "location": links.get(dataset, "$TEMPLATEFLOW_HOME" if dataset == "TemplateFlow"
                                                        else ""), "file": rel}
    order = {role: i for i, role in enumerate(_INPUT_ORDER)}
    return sorted(found.values(), key=lambda r: (order.get(r["role"], len(order)), r["file"]))


def find_sessions(output_dir: Path, subject: str, statuses: Mapping[str, SessionStatus]) -> list[SessionReport]:
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


def read_session(session: SessionReport, output_dir: Path, links: Mapping[str, str]) -> None:
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
    segmentation_qc = session.anat / f"{session.name}_label-thalamus_desc-segmentation_qc.tsv"
    if segmentation_qc.is_file():
        session.segmentation_qc, session.segmentation_qc_path = read_tsv(segmentation_qc), segmentation_qc
    volumes_path = session.anat / f"{session.name}_label-thalamus_volumes.tsv"
    if volumes_path.is_file():
        session.volumes, session.volumes_path = read_tsv(volumes_path), volumes_path
    figures = output_dir / session.name.split("_")[0] / "figures"
    session.overlays = sorted(
        p for p in figures.glob(f"{session.name}_space-T1w_desc-registration_*")
        if p.suffix in {".svg", ".png"} and not (p.suffix == ".png" and p.with_suffix(".svg").is_file())
    )


def session_messages(session: SessionReport, output_dir: Path) -> None:
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
        empty_masks = set()
        for row in session.volumes.to_dict("records"):
            if pd.isna(row.get("n_voxels")) or int(row["n_voxels"]) != 0:
                continue
            hemisphere = row.get("hemisphere")
            key = (row.get("method"), row.get("contrast"))
            if hemisphere in ("left", "right"):
                if key not in empty_masks:  # an empty mask has empty sides: said once
                    session.messages.append(("warning", f"The {esc(row.get('method'))} {hemisphere} thalamus is "
                                                        "empty."))
            else:
                empty_masks.add(key)
                session.messages.append(("warning", f"The {esc(row.get('method'))} mask is empty."))
    session.messages += _sides_not_run(session.segmentation_qc)
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
    for suffix, (role, registration) in OPTIONAL_INPUTS.items():
        if suffix not in roles:
            steps = _skipped_steps(role, registration)
            session.messages.append(("info", f"No {esc(suffix)} image among the inputs: {esc(steps)} did not run."))


def _sides_not_run(qc: pd.DataFrame | None) -> list[tuple[str, str]]:
    """A warning per mask whose left and right were not measured, so its side checks did not run."""
    if qc is None or qc.empty:
        return []
    rows = qc[(qc["check"].astype(str) == "components_left") & (qc["status"].astype(str) == "skipped")]
    return [("warning", f"No left and right thalamus for {esc(row.method)} ({esc(row.contrast)}): "
                        f"{esc(str(row.reason).rstrip('.'))}; its side volumes and side QC checks were not run.")
            for row in rows.itertuples()]


def methods_ran(session: SessionReport) -> set[str]:
    return {info.method_family for info in session.masks}
