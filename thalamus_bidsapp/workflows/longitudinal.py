"""Longitudinal mode: one within-subject template, one segmentation per method, each session's change by Jacobian.

For a subject with two or more sessions whose T1w was processed (the
published ``desc-preproc_T1w``, or ``desc-lesionfilled_T1w`` where the
session has a lesion mask, times its brain mask):

1. an unbiased rigid template (:func:`~thalamus_bidsapp.tools.ants_longitudinal.build_template`);
2. the template segmented once by every selected method that can segment an
   image (:meth:`~thalamus_bidsapp.methods.capabilities.TemplateSegmenter.template_segmenter`):
   MeshNet, FSL FIRST, DBSegment, MindGlide on T1w (bounded by another
   method's template mask); a method that fails on the template is recorded
   and the others go on;
3. per session, one SyN between the session (resampled once into template
   space) and the mean of the other sessions (leave-one-out: the template
   holds the session's own noise, which pulls its registration towards the
   identity) inside a box around every method's thalamus (the union), its
   displacement scaled by (N - 1) / N to the template; the session's thalamic volume for a method is the Jacobian
   determinant integrated over that method's template mask, per side
   (:func:`~thalamus_bidsapp.image.jacobian.integrate_jacobian`). The
   deformation does not depend on the method, so it is computed once.

It runs after the cross-sectional sessions, outside the nipype graph, in
the participant job of the subject. The results are cached in the work
folder under a key of the sessions, the content of their images and the
methods, so a re-run with the same sessions and methods redoes nothing and a
new session redoes the template (the log and the template's sidecar say so).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from thalamus_bidsapp.bidsio.checksums import file_digest
from thalamus_bidsapp.image.jacobian import integrate_jacobian, jacobian_determinant
from thalamus_bidsapp.methods.capabilities import TemplateEnvelope, TemplateSegment

LOGGER = logging.getLogger(__name__)

#: Version of the cached results: change it when the measurement changes.
CACHE_VERSION = "5"
#: The ``desc`` of the per-session longitudinal masks of a method.
LONG_SUFFIX = "Long"
CHANGE_METHOD = ("Jacobian integration: the within-subject template's thalamus (segmented once by the method, "
                 "per side) integrated over the Jacobian determinant of each session's map from the template "
                 "(antspyx SyNOnly, CC, inside a box 18 mm around every method's template thalamus, from the mean "
                 "of the other sessions, so that the session's own noise is not in its target, scaled by "
                 "(N - 1) / N to the template; one registration per session, shared by the methods), after one "
                 "rigid resampling of each session into the template's halfway space")


@dataclass(frozen=True)
class LongSession:
    """A processed session: the T1w the longitudinal mode uses, and its brain mask."""

    label: str
    t1w: Path
    brain_mask: Path
    lesion_filled: bool

    @property
    def anat(self) -> Path:
        return self.t1w.parent


@dataclass(frozen=True)
class TemplateSegmentation:
    """A method that segments the within-subject template: its name (the ``desc`` stem) and how it segments.

    ``envelopes``: for a method bounded by another method's mask (MindGlide),
    the methods whose template mask may bound it, in order of preference;
    empty for the others.
    """

    method: str
    segment: TemplateSegment
    envelopes: tuple[str, ...] = ()


@dataclass
class MethodOnTemplate:
    """One method's thalamus on the template and the per-session volumes it gives (mL per hemisphere)."""

    labels: np.ndarray
    regions: dict[str, tuple[int, ...]]
    provenance: dict
    volumes: dict[str, dict[str, float]] = field(default_factory=dict)


@dataclass
class SubjectLongitudinal:
    """What the longitudinal mode measured for one subject.

    ``methods``: each method that segmented the template (in the order they
    ran); ``methods_failed``: method -> why it has no longitudinal volumes;
    ``failed``: session -> why its registration failed (no volumes for any
    method).
    """

    subject: str
    sessions: list[LongSession]
    template: nib.Nifti1Image
    methods: dict[str, MethodOnTemplate]
    to_session: dict[str, np.ndarray]
    displacements: dict[str, tuple[np.ndarray, np.ndarray]]  # session -> (field LPS, box affine LPS)
    box: tuple[slice, slice, slice]
    failed: dict[str, str] = field(default_factory=dict)
    methods_failed: dict[str, str] = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def measured_sessions(self) -> list[str]:
        """The sessions whose registration to the template succeeded."""
        return [s.label for s in self.sessions if s.label in self.displacements]


def published_sessions(output_dir: Path, subject: str) -> tuple[list[LongSession], list[str]]:
    """The sessions of ``subject`` with a published T1w and brain mask; notes on those left out."""
    folder = Path(output_dir) / f"sub-{subject}"
    found, notes = [], []
    for session_dir in sorted(p for p in folder.glob("ses-*") if p.is_dir()):
        anat = session_dir / "anat"
        label = session_dir.name[len("ses-"):]
        filled = sorted(anat.glob("*_desc-lesionfilled_T1w.nii.gz"))
        preproc = sorted(anat.glob("*_desc-preproc_T1w.nii.gz"))
        brain = sorted(anat.glob("*_space-T1w_desc-brain_mask.nii.gz"))
        if not preproc or not brain:
            notes.append(f"ses-{label}: no processed T1w (no T1w, or the session failed): left out")
            continue
        found.append(LongSession(label, (filled or preproc)[0], brain[0], bool(filled)))
    return found, notes


def brain_image(session: LongSession) -> nib.Nifti1Image:
    """The session's T1w times its brain mask (float32), what the template is built from."""
    t1w = nib.load(str(session.t1w))
    brain = np.asarray(nib.load(str(session.brain_mask)).dataobj) > 0
    data = np.asarray(t1w.dataobj, dtype=np.float32) * brain
    out = nib.Nifti1Image(data, t1w.affine)
    out.header["scl_slope"], out.header["scl_inter"] = np.nan, np.nan
    return out


def cache_key(sessions: list[LongSession], methods: Sequence[str]) -> str:
    """Digest of the sessions (labels, image contents), the segmenting methods and the measurement's version."""
    digest = hashlib.sha256(f"{CACHE_VERSION}:{','.join(sorted(methods))}".encode())
    for session in sessions:
        digest.update(f"{session.label}:{file_digest(session.t1w)}:{file_digest(session.brain_mask)}".encode())
    return digest.hexdigest()[:16]


def segment_template(image: nib.Nifti1Image, segmentations: Sequence[TemplateSegmentation], threads: int,
                     subject: str = "") -> tuple[dict[str, MethodOnTemplate], dict[str, str], dict[str, float]]:
    """Each method's thalamus on the template: (measured, method -> why it failed, method -> seconds).

    The methods bounded by another method's mask run after the others, with
    the first of their envelopes that succeeded. One method's failure is
    logged and recorded; the others go on.
    """
    measured: dict[str, MethodOnTemplate] = {}
    failed: dict[str, str] = {}
    seconds: dict[str, float] = {}
    ordered = [s for s in segmentations if not s.envelopes] + [s for s in segmentations if s.envelopes]
    for segmentation in ordered:
        name = segmentation.method
        kwargs = {}
        if segmentation.envelopes:
            envelope = next((m for m in segmentation.envelopes if m in measured), None)
            if envelope is None:
                failed[name] = (f"no envelope on the template: {' or '.join(segmentation.envelopes)} did not "
                                "segment it")
                LOGGER.error("sub-%s: %s not measured in longitudinal mode: %s", subject, name, failed[name])
                continue
            kwargs["envelope"] = TemplateEnvelope(envelope, measured[envelope].labels, measured[envelope].regions)
        started = time.perf_counter()
        try:
            labels, regions, provenance = segmentation.segment(image, threads, **kwargs)
            labels = np.asarray(labels, dtype=np.uint8)
            if labels.shape != image.shape[:3]:
                raise RuntimeError(f"labels of shape {labels.shape} on a template of shape {image.shape[:3]}")
            if not labels.any():
                raise RuntimeError(f"{name} found no thalamus on the within-subject template")
        except Exception as err:  # noqa: BLE001 - one method's failure must not cost the others their change
            failed[name] = f"segmentation of the template failed: {err}"
            LOGGER.error("sub-%s: %s not measured in longitudinal mode: %s", subject, name, failed[name])
            continue
        seconds[f"segmentation {name}"] = time.perf_counter() - started
        measured[name] = MethodOnTemplate(labels, {k: tuple(v) for k, v in regions.items()}, dict(provenance))
    return measured, failed, seconds


def measure_subject(subject: str, sessions: list[LongSession], *, segmentations: Sequence[TemplateSegmentation],
                    threads: int = 1) -> SubjectLongitudinal:
    """Template, each method's segmentation and each session's Jacobian volumes (see the module docstring).

    A session whose registration fails is recorded in ``failed`` and the
    others are measured; a method that fails on the template is recorded in
    ``methods_failed`` and the others are measured; a failure of the template,
    or of every method on it, raises.
    """
    from thalamus_bidsapp.tools import ants_longitudinal as al

    seconds = {}
    started = time.perf_counter()
    template = al.build_template([brain_image(s) for s in sessions])
    seconds["template"] = time.perf_counter() - started
    methods, methods_failed, segment_seconds = segment_template(template.image, segmentations, threads, subject)
    seconds.update(segment_seconds)
    if not methods:
        raise RuntimeError("no method segmented the within-subject template: "
                           + "; ".join(f"{k}: {v}" for k, v in methods_failed.items()))
    zooms = template.image.header.get_zooms()[:3]
    union = np.logical_or.reduce([m.labels > 0 for m in methods.values()])
    box = al.box_around(union, zooms)
    session_boxes = [resampled.slicer[box] for resampled in template.resampled]
    voxel_mm3 = float(np.prod(zooms))
    displacements, failed = {}, {}
    for index, session in enumerate(sessions):
        started = time.perf_counter()
        try:
            deformation = al.syn_to_template(al.leave_one_out(session_boxes, index), session_boxes[index])
            displacement = al.template_displacement(deformation.displacement, len(sessions))
            det = jacobian_determinant(displacement, deformation.affine_lps)
            volumes = {name: integrate_jacobian(det, method.labels[box], voxel_mm3, method.regions)
                       for name, method in methods.items()}
        except Exception as err:  # noqa: BLE001 - one session's failure must not cost the others their change
            LOGGER.error("sub-%s_ses-%s: longitudinal registration failed: %s", subject, session.label, err)
            failed[session.label] = str(err)
            continue
        for name, volume in volumes.items():
            methods[name].volumes[session.label] = volume
        displacements[session.label] = (displacement, deformation.affine_lps)
        seconds[f"ses-{session.label}"] = time.perf_counter() - started
    settings = {"Template": template.settings, "Registration": al.syn_settings()}
    return SubjectLongitudinal(subject, sessions, template.image, methods,
                               {s.label: m for s, m in zip(sessions, template.to_session)},
                               displacements, box, failed, methods_failed, settings, seconds)


def session_labels_image(result: SubjectLongitudinal, session: LongSession, method: str) -> nib.Nifti1Image:
    """A method's template labels carried onto the session's T1w grid (rigid and SyN inverted; nearest neighbour)."""
    from scipy import ndimage

    from thalamus_bidsapp.image.jacobian import invert_displacement_at

    reference = nib.load(str(session.t1w))
    template_affine = result.template.affine
    to_session = result.to_session[session.label]
    # Session voxels near the thalamus: the template box mapped through the rigid transform.
    corners = np.array(np.meshgrid(*[(s.start, s.stop - 1) for s in result.box], indexing="ij")).reshape(3, -1).T
    session_corners = nib.affines.apply_affine(np.linalg.inv(reference.affine) @ to_session @ template_affine,
                                               corners)
    low = np.maximum(np.floor(session_corners.min(axis=0)).astype(int), 0)
    high = np.minimum(np.ceil(session_corners.max(axis=0)).astype(int) + 1, reference.shape[:3])
    ijk = np.indices(tuple(high - low)).reshape(3, -1).T + low
    # Session point -> template-space point of the resampled session -> template point (inverse SyN).
    resampled_points = nib.affines.apply_affine(np.linalg.inv(to_session) @ reference.affine, ijk)
    field_lps, affine_lps = result.displacements[session.label]
    flip = np.diag([-1.0, -1.0, 1.0])
    template_points = invert_displacement_at(resampled_points @ flip, field_lps, affine_lps) @ flip
    template_ijk = nib.affines.apply_affine(np.linalg.inv(template_affine), template_points).T
    values = ndimage.map_coordinates(result.methods[method].labels, template_ijk, order=0, mode="constant", cval=0)
    out = np.zeros(reference.shape[:3], np.uint8)
    out[low[0]:high[0], low[1]:high[1], low[2]:high[2]] = values.reshape(tuple(high - low)).astype(np.uint8)
    return nib.Nifti1Image(out, reference.affine)


def write_cache(folder: Path, result: SubjectLongitudinal) -> None:
    """Keep what the outputs are made from, so a re-run with the same sessions and methods reuses it."""
    from thalamus_bidsapp.bidsio.atomic import save_nifti, write_json

    folder.mkdir(parents=True, exist_ok=True)
    save_nifti(result.template, folder / "template.nii.gz")
    for name, method in result.methods.items():
        save_nifti(nib.Nifti1Image(method.labels, result.template.affine), folder / f"labels_{name}.nii.gz")
    arrays = {f"field_{k}": v[0].astype(np.float32) for k, v in result.displacements.items()}
    arrays.update({f"affine_{k}": v[1] for k, v in result.displacements.items()})
    arrays.update({f"rigid_{k}": v for k, v in result.to_session.items()})
    np.savez_compressed(folder / "deformations.npz", **arrays)
    # A list, not a mapping: the methods keep their order (the JSON writer sorts keys).
    methods = [{"method": name, "regions": {k: list(v) for k, v in m.regions.items()}, "provenance": m.provenance,
                "volumes": m.volumes} for name, m in result.methods.items()]
    write_json({"methods": methods, "methods_failed": result.methods_failed, "failed": result.failed,
                "settings": result.settings, "seconds": result.seconds,
                "box": [[s.start, s.stop] for s in result.box], "sessions": [s.label for s in result.sessions]},
               folder / "result.json")


def read_cache(folder: Path, subject: str, sessions: list[LongSession]) -> SubjectLongitudinal | None:
    """The cached result of these sessions, or None."""
    record = folder / "result.json"
    if not record.is_file():
        return None
    try:
        meta = json.loads(record.read_text())
        arrays = np.load(folder / "deformations.npz")
        template = nib.load(str(folder / "template.nii.gz"))
        methods = {entry["method"]: MethodOnTemplate(
            np.asarray(nib.load(str(folder / f"labels_{entry['method']}.nii.gz")).dataobj).astype(np.uint8),
            {k: tuple(v) for k, v in entry["regions"].items()}, entry["provenance"], entry["volumes"])
            for entry in meta["methods"]}
        measured = sorted({label for m in methods.values() for label in m.volumes})
        return SubjectLongitudinal(
            subject, sessions, template, methods, {s.label: arrays[f"rigid_{s.label}"] for s in sessions},
            {k: (arrays[f"field_{k}"].astype(np.float64), arrays[f"affine_{k}"]) for k in measured},
            tuple(slice(a, b) for a, b in meta["box"]), meta["failed"], meta["methods_failed"], meta["settings"],
            meta["seconds"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        LOGGER.info("sub-%s: longitudinal cache unreadable (%s): recomputed", subject, err)
        return None
