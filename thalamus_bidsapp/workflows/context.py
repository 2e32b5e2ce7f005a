"""What the workflow factories are given: one frozen context per run, one per session.

The participant level builds a :class:`RunContext` once, from the run's
configuration (:class:`~thalamus_bidsapp.config.RunConfig`), its thread plan,
the resolved template files and the loaded QC thresholds; every
``init_<name>_wf`` factory reads what it needs from it, so a setting has one
value in one place for the whole run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from thalamus_bidsapp.config import DEFAULT_ANTS_CUTOFF, DEFAULT_FLIRT_CUTOFF, RunConfig
from thalamus_bidsapp.qc.thresholds import load_thresholds
from thalamus_bidsapp.tools.templateflow import TemplateFiles


def _frozen(mapping: Mapping | None) -> Mapping:
    return MappingProxyType(dict(mapping or {}))


@dataclass(frozen=True)
class RunContext:
    """The settings every session workflow of one participant run shares.

    Attributes
    ----------
    output_dir
        The output dataset (sessions publish into their own staging folders, see
        :class:`SessionContext`).
    work_dir
        nipype's working folder.
    crash_root
        Crash reports go to ``crash_root/<session name>``.
    dataset_roots
        Input datasets by name (``raw`` and the ``--derivatives``), for provenance URIs.
    omp_nthreads
        Threads of each multithreaded step (the networks, ANTs).
    flirt_cutoff, ants_cutoff
        Mutual-information cut-offs (nats) of the registration QC rule.
    lesion_filling
        ``auto``, ``off`` or ``both`` (``--lesion-filling``).
    lesion_source
        ``derivatives`` or a method offering lesion masks (``--lesion-source``).
    template
        TemplateFlow template files (None: no template space, no prior).
    template_schedule
        Schedule of the registration to the template: ``standard`` or ``fast``.
    qc_thresholds
        Thresholds of the QC checks, loaded once (default: the packaged ones).
    original_files
        Cleaned copy of an input (from the preflight) -> the input file, for provenance.
    """

    output_dir: Path
    work_dir: Path
    crash_root: Path
    dataset_roots: Mapping[str, Path] = field(default_factory=dict)
    omp_nthreads: int = 1
    flirt_cutoff: float = DEFAULT_FLIRT_CUTOFF
    ants_cutoff: float = DEFAULT_ANTS_CUTOFF
    lesion_filling: str = "auto"
    lesion_source: str = "derivatives"
    template: TemplateFiles | None = None
    template_schedule: str = "standard"
    qc_thresholds: Mapping[str, Any] = field(default_factory=load_thresholds)
    original_files: Mapping[Path, Path] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("dataset_roots", "qc_thresholds", "original_files"):
            object.__setattr__(self, name, _frozen(getattr(self, name)))

    @classmethod
    def from_config(cls, config: RunConfig, *, omp_nthreads: int, crash_root: Path, template: TemplateFiles | None,
                    qc_thresholds: Mapping[str, Any], original_files: Mapping[Path, Path] | None = None) -> RunContext:
        """The context of a participant run of ``config``, with what the run resolved before building it."""
        return cls(
            output_dir=config.output_dir, work_dir=config.work_dir, crash_root=crash_root,
            dataset_roots={"raw": config.bids_dir, **config.derivatives}, omp_nthreads=omp_nthreads,
            flirt_cutoff=config.flirt_cutoff, ants_cutoff=config.ants_cutoff, lesion_filling=config.lesion_filling,
            lesion_source=config.lesion_source, template=template, template_schedule=config.template_registration,
            qc_thresholds=qc_thresholds, original_files=original_files or {},
        )


@dataclass(frozen=True)
class SessionContext:
    """One session's place in the run.

    Attributes
    ----------
    publish_dir
        Where the session's outputs are published: a staging folder laid out
        like the output dataset (the output dataset itself when None).
    input_record
        Geometry and fixes of each input image (from the preflight), for the sidecars.
    """

    publish_dir: Path | None = None
    input_record: Mapping[str, Any] | None = None
