"""``freesurfer``: aseg labels 10 and 49 of a finished subject, or of ``recon-all -all`` run here."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from nipype.interfaces.base import BaseInterfaceInputSpec, File, SimpleInterface, TraitedSpec, isdefined, traits

from thalamus_bidsapp.methods.base import (
    CliOption,
    MethodNodes,
    NodeContext,
    PublishedMask,
    SegmentationMethod,
    SideLabels,
    ToolStatus,
    tool_label,
)
from thalamus_bidsapp.methods.capabilities import EnvelopeSource, LongitudinalStream
from thalamus_bidsapp.methods.records import CONTENT_DIGEST_DESC, ReadsOutsideFiles, write_mask_record


class FreeSurfer(EnvelopeSource, LongitudinalStream, SegmentationMethod):
    name = "freesurfer"
    order = 10
    colors = {"freesurfer": "#0072B2"}  # Okabe-Ito blue
    citation = ("Fischl B, et al. (2002). Whole brain segmentation: automated labeling of neuroanatomical "
                "structures in the human brain. Neuron 33(3):341-355. doi:10.1016/S0896-6273(02)00569-X")
    options = (
        CliOption("--fs-subjects-dir", kind="dir", metavar="DIR",
                  help="FreeSurfer SUBJECTS_DIR with finished subjects named sub-<label> or sub-<label>_ses-<label> "
                  "(default: OUTPUT_DIR/sourcedata/freesurfer, where recon-all runs when no subject is found)"),
        CliOption("--fs-license-file", kind="file", metavar="FILE", env="FS_LICENSE",
                  help="FreeSurfer license (default: $FS_LICENSE, then $FREESURFER_HOME/license.txt)"),
    )
    labels = SideLabels(left=(10,), right=(49,), source="aseg")
    envelope_rank = 2
    optional_inputs = {"t2w": "T2w refinement of FreeSurfer"}

    def plan(self, session, config, tools: ToolStatus, *, required: bool) -> ToolStatus:
        """Reuse a finished subject, else plan recon-all, else say why FreeSurfer cannot run."""
        from thalamus_bidsapp.tools import freesurfer

        subjects_dir = config.option("fs_subjects_dir") or config.output_dir / "sourcedata" / "freesurfer"
        existing = freesurfer.find_subject(subjects_dir, session.subject, session.session)
        if existing is not None:
            return ToolStatus(None, {"subject_dir": existing})
        executable = freesurfer.recon_all_executable(config.environment.freesurfer_home)
        if executable is None:
            return ToolStatus(
                f"no finished FreeSurfer subject {session.name} or sub-{session.subject} in {subjects_dir} "
                "and recon-all is not installed (set FREESURFER_HOME)")
        license_file = freesurfer.find_license(config.option("fs_license_file"), config.environment.freesurfer_home)
        if license_file is None:
            if required:
                raise freesurfer.license_error()
            return ToolStatus(str(freesurfer.license_error()))
        return ToolStatus(None, {"recon_all": {"subject_id": session.name, "subjects_dir": subjects_dir,
                                               "license_file": license_file, "executable": executable}})

    def check_installation(self, options):
        from thalamus_bidsapp.tools.freesurfer import check_installation

        return check_installation(options)

    def segments_t1w(self, settings: Mapping[str, Any]) -> bool:
        """Only recon-all run here segments the T1w (a finished subject was segmented elsewhere)."""
        return settings.get("recon_all") is not None

    def unfilled_settings(self, settings: Mapping[str, Any]) -> Mapping[str, Any]:
        """recon-all on the unfilled T1w goes into its own subject, ``<session>_lesionunfilled``."""
        job = settings.get("recon_all")
        if job is None:
            return settings
        return {**settings, "recon_all": {**job, "subject_id": f"{job['subject_id']}_lesionunfilled"}}

    def summary(self, settings: Mapping[str, Any]) -> Any:
        return "recon-all" if settings.get("recon_all") else str(settings.get("subject_dir"))

    def init_nodes(self, ctx: NodeContext) -> MethodNodes:
        from nipype.pipeline import engine as pe

        fs_thalamus = pe.Node(FreeSurferThalamus(), name="fs_thalamus")
        ctx.workflow.connect(ctx.inputnode, "t1w", fs_thalamus, "reference")
        job = ctx.settings.get("recon_all")
        if job is None:
            fs_thalamus.inputs.subject_dir = str(ctx.settings["subject_dir"])
        else:
            recon_all = pe.Node(
                ReconAll(**({} if ctx.lesion_filled else {"t1w": str(ctx.session.t1w)}), subject_id=job["subject_id"],
                         subjects_dir=str(job["subjects_dir"]), license_file=str(job["license_file"]),
                         executable=job.get("executable") or "", nthreads=ctx.omp_nthreads),
                name="recon_all", n_procs=ctx.omp_nthreads, mem_gb=8,
            )
            if ctx.session.t2w is not None:
                recon_all.inputs.t2w = str(ctx.session.t2w)
            if ctx.lesion_filled:  # recon-all receives the lesion-filled T1w, like the other T1w methods
                ctx.workflow.connect(ctx.inputnode, "t1w", recon_all, "t1w")
            ctx.workflow.connect(recon_all, "subject_dir", fs_thalamus, "subject_dir")
        return MethodNodes(records=[(fs_thalamus, "record_file")], envelope=(fs_thalamus, "record_file"),
                           icv=(fs_thalamus, "provenance_file"))

    def longitudinal_stream(self, config, subject: str, sessions: list[tuple[str, Path]], threads: int):
        """``recon-all -base`` and ``-long`` on the session subjects of ``--fs-subjects-dir``, run or reused."""
        from thalamus_bidsapp.tools import freesurfer
        from thalamus_bidsapp.tools.freesurfer_longitudinal import run_stream

        home = config.environment.freesurfer_home
        subjects_dir = config.option("fs_subjects_dir") or config.output_dir / "sourcedata" / "freesurfer"
        return run_stream(Path(subjects_dir), subject, sessions, executable=freesurfer.recon_all_executable(home),
                          license_file=freesurfer.find_license(config.option("fs_license_file"), home),
                          left=self.labels.left, right=self.labels.right, threads=threads)

    def methods_sentence(self, masks: Sequence[PublishedMask], cite: Callable[[str], str]) -> str:
        return f"{tool_label(masks, self.name)} {cite(self.name)} (aseg labels 10 and 49, left and right thalamus)"


#: This module's registry entry (methods/registry.py collects every module's METHOD).
METHOD = FreeSurfer()


class _FreeSurferThalamusInputSpec(BaseInterfaceInputSpec):
    subject_dir = traits.Directory(exists=True, mandatory=True, desc="finished FreeSurfer subject")
    reference = File(exists=True, mandatory=True, desc="reoriented T1w defining the output grid")
    content_digest = traits.Str(desc=CONTENT_DIGEST_DESC)


class _FreeSurferThalamusOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="binary thalamus mask on the T1w grid")
    provenance_file = File(exists=True, desc="JSON provenance, with the eTIV as ICV record")
    record_file = File(exists=True, desc="mask record JSON")


class FreeSurferThalamus(ReadsOutsideFiles, SimpleInterface):
    """aseg labels 10 + 49 on the T1w grid, and eTIV, from a finished FreeSurfer subject."""

    input_spec = _FreeSurferThalamusInputSpec
    output_spec = _FreeSurferThalamusOutputSpec

    def outside_files(self) -> list[str]:
        """What :func:`~thalamus_bidsapp.tools.freesurfer.thalamus_from_subject` reads of a given finished subject."""
        if not isdefined(self.inputs.subject_dir):
            return []
        subject = Path(self.inputs.subject_dir)
        return [str(p) for p in (subject / "mri" / "aseg.mgz", subject / "stats" / "aseg.stats") if p.is_file()]

    def _run_interface(self, runtime):
        import json

        import numpy as np

        from thalamus_bidsapp.image.nifti import load_image
        from thalamus_bidsapp.image.sides import sides_from_labels
        from thalamus_bidsapp.tools.freesurfer import aseg_on_grid, thalamus_from_subject

        cwd = Path(runtime.cwd)
        subject_dir, reference = Path(self.inputs.subject_dir), load_image(self.inputs.reference)
        aseg = aseg_on_grid(subject_dir, reference)
        mask, provenance = thalamus_from_subject(subject_dir, reference, aseg)
        sides = sides_from_labels(np.asanyarray(aseg.dataobj), METHOD.labels.left, METHOD.labels.right)
        self._results["record_file"] = write_mask_record(mask, "freesurfer", "T1w", provenance, folder=cwd,
                                                         sides=sides, side_labels=METHOD.labels.to_json())
        self._results["out_file"] = str(cwd / "thalamus_freesurfer.nii.gz")
        self._results["provenance_file"] = str(cwd / "provenance.json")
        (cwd / "provenance.json").write_text(json.dumps(provenance, indent=2, default=str))
        return runtime


class _ReconAllInputSpec(BaseInterfaceInputSpec):
    t1w = File(exists=True, mandatory=True, desc="raw T1w")
    t2w = File(exists=True, desc="raw T2w, for -T2 -T2pial")
    subject_id = traits.Str(mandatory=True, desc="FreeSurfer subject name")
    subjects_dir = traits.Str(mandatory=True, desc="SUBJECTS_DIR")
    license_file = File(exists=True, mandatory=True, desc="FreeSurfer license")
    executable = traits.Str("", usedefault=True, nohash=True,
                            desc="recon-all as found when the run was planned (empty: look on PATH)")
    nthreads = traits.Int(1, usedefault=True, nohash=True, desc="OpenMP threads (not hashed)")
    content_digest = traits.Str(desc=CONTENT_DIGEST_DESC)


class _ReconAllOutputSpec(TraitedSpec):
    subject_dir = traits.Directory(exists=True, desc="finished FreeSurfer subject")


class ReconAll(ReadsOutsideFiles, SimpleInterface):
    """FreeSurfer ``recon-all -all`` (hours), when no finished subject exists."""

    input_spec = _ReconAllInputSpec
    output_spec = _ReconAllOutputSpec
    outside_inputs = ("t1w", "t2w")

    def _run_interface(self, runtime):
        from thalamus_bidsapp.tools.freesurfer import run_recon_all

        subject_dir = run_recon_all(
            Path(self.inputs.t1w),
            self.inputs.subject_id,
            Path(self.inputs.subjects_dir),
            license_file=Path(self.inputs.license_file),
            executable=self.inputs.executable or None,
            t2w=Path(self.inputs.t2w) if isdefined(self.inputs.t2w) else None,
            nthreads=self.inputs.nthreads,
            log_file=Path(runtime.cwd) / "recon-all.log",
        )
        self._results["subject_dir"] = str(subject_dir)
        return runtime
