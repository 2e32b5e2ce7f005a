"""Which thalamus segmentation methods run for a session, and why others do not.

By default every method whose tool is found runs and the others are listed
with the reason; a method named in ``--methods`` that cannot run is an error
(exit 66) that says how to provide it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from thalamus_bidsapp.bidsio.inputs import SessionInputs
from thalamus_bidsapp.config import RunConfig
from thalamus_bidsapp.errors import EXIT_NOINPUT, ThalamusError
from thalamus_bidsapp.interfaces import freesurfer

LOGGER = logging.getLogger(__name__)

#: Methods this version can run, in report order.
AVAILABLE_METHODS = ("freesurfer", "first", "dbsegment", "meshnet", "mindglide")
#: Methods whose thalamus mask can bound MindGlide's deep grey matter label, in order of preference:
#: FIRST as in the paper, then MeshNet, which needs no licence, no GPU and no FSL.
ENVELOPE_METHODS = ("first", "meshnet", "freesurfer", "dbsegment")


@dataclass(frozen=True)
class ReconAllJob:
    """A recon-all run to do because no finished FreeSurfer subject exists."""

    subject_id: str
    subjects_dir: Path
    license_file: Path


@dataclass(frozen=True)
class MethodPlan:
    """The methods a session runs (``run``), the skipped ones with reasons, and their settings."""

    run: tuple[str, ...]
    skipped: dict[str, str] = field(default_factory=dict)
    fs_subject_dir: Path | None = None
    recon_all: ReconAllJob | None = None
    dbsegment_model: Path | None = None
    mindglide_model: Path | None = None
    mindglide_device: str = "cpu"
    envelope: str | None = None
    meshnet_model: Path | None = None


@dataclass(frozen=True)
class ToolCheck:
    """Whether the session-independent tools are installed: method -> reason it cannot run (None: it can)."""

    reasons: dict[str, str | None]
    dbsegment_model: Path | None = None
    mindglide_model: Path | None = None
    meshnet_model: Path | None = None


def check_tools(config: RunConfig) -> ToolCheck:
    """Look for FSL, DBSegment, MeshNet and the MindGlide weights once per run (FreeSurfer is per session).

    Only the methods that can be asked for are checked: those of ``--methods``
    when given (a MeshNet-only run neither looks for FSL nor hashes MindGlide
    weights), else all of them.
    """
    wanted = set(config.methods) if config.methods is not None else set(AVAILABLE_METHODS)
    reasons: dict[str, str | None] = {}
    dbsegment_model = mindglide_model = meshnet_model = None
    if "first" in wanted:
        from thalamus_bidsapp.interfaces import first

        try:
            first.run_first_all_path()
            reasons["first"] = None
        except ThalamusError as err:
            reasons["first"] = str(err)
    if "dbsegment" in wanted:
        from thalamus_bidsapp.interfaces import dbsegment

        try:
            dbsegment.find_dbsegment(None)
            dbsegment_model = dbsegment.find_model_folder(config.dbsegment_model)
            reasons["dbsegment"] = None
        except ThalamusError as err:
            reasons["dbsegment"] = str(err)
    if "mindglide" in wanted:
        from thalamus_bidsapp.interfaces import mindglide

        try:
            mindglide_model = mindglide.resolve_weights(config.mindglide_model, allow_download=False)
            reasons["mindglide"] = None
        except ThalamusError as err:
            reasons["mindglide"] = str(err)
    if "meshnet" in wanted:
        from thalamus_bidsapp.interfaces import meshnet

        try:
            # Downloads the weights on first use (then cached); offline, give --meshnet-model.
            # The sha256 of the files is remembered (bidsio.checksums), so it is computed once.
            meshnet_model = meshnet.resolve_model_dir(config.meshnet_model)
            reasons["meshnet"] = None
        except ThalamusError as err:
            reasons["meshnet"] = str(err)
    return ToolCheck(reasons=reasons, dbsegment_model=dbsegment_model, mindglide_model=mindglide_model,
                     meshnet_model=meshnet_model)


def plan_methods(session: SessionInputs, config: RunConfig, tools: ToolCheck) -> MethodPlan:
    """Decide the methods of one session.

    Raises
    ------
    ThalamusError
        A method asked for with ``--methods`` whose tool or inputs are
        missing (exit 66).
    """
    required = config.methods is not None
    wanted = list(config.methods) if required else list(AVAILABLE_METHODS)
    run: list[str] = []
    skipped: dict[str, str] = {}
    fs_subject_dir = recon_all = None
    for method in wanted:
        if method == "freesurfer":
            fs_subject_dir, recon_all, reason = _plan_freesurfer(session, config, required=required)
        elif method == "mindglide":
            reason = tools.reasons.get("mindglide")
            if reason is None and _envelope(config, run, wanted) is None:
                reason = (f"no envelope method for MindGlide's deep grey matter label: "
                          f"{config.mindglide_envelope or ' or '.join(ENVELOPE_METHODS)} does not run")
        else:
            reason = tools.reasons.get(method)
        if reason is None:
            run.append(method)
        elif required:
            raise ThalamusError(f"{session.name}: method {method!r} cannot run: {reason}", EXIT_NOINPUT)
        else:
            skipped[method] = reason
            LOGGER.info("%s: method %s skipped: %s", session.name, method, reason)
    return MethodPlan(
        run=tuple(run), skipped=skipped, fs_subject_dir=fs_subject_dir, recon_all=recon_all,
        dbsegment_model=tools.dbsegment_model, mindglide_model=tools.mindglide_model,
        meshnet_model=tools.meshnet_model,
        mindglide_device=config.mindglide_device,
        envelope=_envelope(config, run, wanted) if "mindglide" in run else None,
    )


def _envelope(config: RunConfig, run: list[str], wanted: list[str]) -> str | None:
    """The envelope method for MindGlide: the one asked for, else the first that runs."""
    if config.mindglide_envelope:
        return config.mindglide_envelope if config.mindglide_envelope in run else None
    return next((m for m in ENVELOPE_METHODS if m in run), None)


def _plan_freesurfer(
    session: SessionInputs, config: RunConfig, *, required: bool
) -> tuple[Path | None, ReconAllJob | None, str | None]:
    """Reuse a finished subject, else plan recon-all, else say why FreeSurfer cannot run."""
    subjects_dir = config.fs_subjects_dir or config.output_dir / "sourcedata" / "freesurfer"
    existing = freesurfer.find_subject(subjects_dir, session.subject, session.session)
    if existing is not None:
        return existing, None, None
    if freesurfer.recon_all_executable() is None:
        return None, None, (
            f"no finished FreeSurfer subject {session.name} or sub-{session.subject} in {subjects_dir} "
            "and recon-all is not installed (set FREESURFER_HOME)"
        )
    license_file = freesurfer.find_license(config.fs_license_file)
    if license_file is None:
        if required:
            raise freesurfer.license_error()
        return None, None, str(freesurfer.license_error())
    return None, ReconAllJob(subject_id=session.name, subjects_dir=subjects_dir, license_file=license_file), None
