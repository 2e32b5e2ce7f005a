"""Longitudinal mode: one within-subject template, one segmentation, each session's change by Jacobian integration.

For a subject with two or more sessions whose T1w was processed (the
published ``desc-preproc_T1w``, or ``desc-lesionfilled_T1w`` where the
session has a lesion mask, times its brain mask):

1. an unbiased rigid template (:func:`~thalamus_bidsapp.tools.ants_longitudinal.build_template`);
2. the template segmented once, by the first registered method that can
   segment an image in memory (:meth:`~thalamus_bidsapp.methods.capabilities.TemplateSegmenter.template_segmenter`;
   MeshNet, with left and right);
3. per session, SyN between the session (resampled once into template
   space) and the template inside a box around the template's thalamus;
   the session's thalamic volume is the Jacobian determinant integrated
   over the template's mask, per side
   (:func:`~thalamus_bidsapp.image.jacobian.integrate_jacobian`).

It runs after the cross-sectional sessions, outside the nipype graph, in
the participant job of the subject. The results are cached in the work
folder under a key of the sessions and the content of their images, so a
re-run with the same sessions redoes nothing and a new session redoes the
template (the log and the template's sidecar say so).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from thalamus_bidsapp.bidsio.checksums import file_digest
from thalamus_bidsapp.image.jacobian import integrate_jacobian, jacobian_determinant

LOGGER = logging.getLogger(__name__)

#: Version of the cached results: change it when the measurement changes.
CACHE_VERSION = "1"
#: The ``desc`` of the per-session longitudinal masks of a method.
LONG_SUFFIX = "Long"
CHANGE_METHOD = ("Jacobian integration: the within-subject template's thalamus (segmented once, per side) "
                 "integrated over the Jacobian determinant of each session's SyN registration to the template "
                 "(antspyx SyNOnly, CC, inside a box 18 mm around the template's thalamus), after one rigid "
                 "resampling of each session into the template's halfway space")


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
class TemplateSegmenter:
    """The method that segments the within-subject template: its name (the ``desc`` stem) and how it segments."""

    method: str
    segment: Callable[[nib.Nifti1Image, int], tuple[np.ndarray, dict[str, tuple[int, ...]], dict]]


@dataclass
class SubjectLongitudinal:
    """What the longitudinal mode measured for one subject (volumes in mL per session and hemisphere)."""

    subject: str
    method: str
    sessions: list[LongSession]
    template: nib.Nifti1Image
    template_labels: np.ndarray
    to_session: dict[str, np.ndarray]
    volumes: dict[str, dict[str, float]]
    displacements: dict[str, tuple[np.ndarray, np.ndarray]]  # session -> (field LPS, box affine LPS)
    box: tuple[slice, slice, slice]
    failed: dict[str, str] = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


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


def cache_key(sessions: list[LongSession], method: str) -> str:
    """Digest of the sessions (labels, image contents), the segmenting method and the measurement's version."""
    digest = hashlib.sha256(f"{CACHE_VERSION}:{method}".encode())
    for session in sessions:
        digest.update(f"{session.label}:{file_digest(session.t1w)}:{file_digest(session.brain_mask)}".encode())
    return digest.hexdigest()[:16]


def measure_subject(subject: str, sessions: list[LongSession], *, segmenter: TemplateSegmenter,
                    threads: int = 1) -> SubjectLongitudinal:
    """Template, segmentation and each session's Jacobian volumes (see the module docstring).

    A session whose registration fails is recorded in ``failed`` and the
    others are measured; a failure of the template or its segmentation raises.
    """
    from thalamus_bidsapp.tools import ants_longitudinal as al

    seconds = {}
    started = time.perf_counter()
    template = al.build_template([brain_image(s) for s in sessions])
    seconds["template"] = time.perf_counter() - started
    started = time.perf_counter()
    labels, regions, provenance = segmenter.segment(template.image, threads)
    seconds["segmentation"] = time.perf_counter() - started
    if not labels.any():
        raise RuntimeError(f"{segmenter.method} found no thalamus on the within-subject template")
    zooms = template.image.header.get_zooms()[:3]
    box = al.box_around(labels, zooms)
    template_box = template.image.slicer[box]
    voxel_mm3 = float(np.prod(zooms))
    volumes, displacements, failed = {}, {}, {}
    for session, resampled in zip(sessions, template.resampled):
        started = time.perf_counter()
        try:
            deformation = al.syn_to_template(template_box, resampled.slicer[box])
            det = jacobian_determinant(deformation.displacement, deformation.affine_lps)
            volumes[session.label] = integrate_jacobian(det, labels[box], voxel_mm3, regions)
        except Exception as err:  # noqa: BLE001 - one session's failure must not cost the others their change
            LOGGER.error("sub-%s_ses-%s: longitudinal registration failed: %s", subject, session.label, err)
            failed[session.label] = str(err)
            continue
        displacements[session.label] = (deformation.displacement, deformation.affine_lps)
        seconds[f"ses-{session.label}"] = time.perf_counter() - started
    settings = {"Template": template.settings, "Registration": al.syn_settings(), "Segmentation": provenance,
                "Regions": {k: list(v) for k, v in regions.items()}}
    return SubjectLongitudinal(subject, segmenter.method, sessions, template.image, labels,
                               {s.label: m for s, m in zip(sessions, template.to_session)},
                               volumes, displacements, box, failed, settings, seconds)


def session_labels_image(result: SubjectLongitudinal, session: LongSession) -> nib.Nifti1Image:
    """The template's labels carried onto the session's T1w grid (rigid and SyN inverted; nearest neighbour)."""
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
    values = ndimage.map_coordinates(result.template_labels, template_ijk, order=0, mode="constant", cval=0)
    out = np.zeros(reference.shape[:3], np.uint8)
    out[low[0]:high[0], low[1]:high[1], low[2]:high[2]] = values.reshape(tuple(high - low)).astype(np.uint8)
    return nib.Nifti1Image(out, reference.affine)


def write_cache(folder: Path, result: SubjectLongitudinal) -> None:
    """Keep what the outputs are made from, so a re-run with the same sessions reuses it."""
    from thalamus_bidsapp.bidsio.atomic import save_nifti, write_json

    folder.mkdir(parents=True, exist_ok=True)
    save_nifti(result.template, folder / "template.nii.gz")
    save_nifti(nib.Nifti1Image(result.template_labels, result.template.affine), folder / "template_labels.nii.gz")
    arrays = {f"field_{k}": v[0].astype(np.float32) for k, v in result.displacements.items()}
    arrays.update({f"affine_{k}": v[1] for k, v in result.displacements.items()})
    arrays.update({f"rigid_{k}": v for k, v in result.to_session.items()})
    np.savez_compressed(folder / "deformations.npz", **arrays)
    write_json({"method": result.method, "volumes": result.volumes, "failed": result.failed, "settings": result.settings,
                "seconds": result.seconds, "box": [[s.start, s.stop] for s in result.box],
                "sessions": [s.label for s in result.sessions]}, folder / "result.json")


def read_cache(folder: Path, subject: str, sessions: list[LongSession]) -> SubjectLongitudinal | None:
    """The cached result of these sessions, or None."""
    record = folder / "result.json"
    if not record.is_file():
        return None
    try:
        meta = json.loads(record.read_text())
        arrays = np.load(folder / "deformations.npz")
        template = nib.load(str(folder / "template.nii.gz"))
        labels = np.asarray(nib.load(str(folder / "template_labels.nii.gz")).dataobj).astype(np.uint8)
    except (OSError, ValueError) as err:
        LOGGER.info("sub-%s: longitudinal cache unreadable (%s): recomputed", subject, err)
        return None
    measured = [label for label in meta["volumes"]]
    if "method" not in meta:
        return None
    return SubjectLongitudinal(
        subject, meta["method"], sessions, template, labels, {s.label: arrays[f"rigid_{s.label}"] for s in sessions},
        meta["volumes"], {k: (arrays[f"field_{k}"].astype(np.float64), arrays[f"affine_{k}"]) for k in measured},
        tuple(slice(a, b) for a, b in meta["box"]), meta["failed"], meta["settings"], meta["seconds"])
