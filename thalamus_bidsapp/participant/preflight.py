"""Checks of every input image of a session before any tool runs.

Each image the session uses (T1w, T2w, FLAIR, R1 map) is read whole once:

- a file that cannot be read, or is not 3D, fails the session;
- a singular or non-finite affine fails the session ("affine is not invertible");
- NaN/Inf voxels are set to 0, with a warning giving their count; the
  workflow then reads a cleaned copy in the work folder, and the sidecars
  record the fix;
- an image whose (finite) voxels all have one value fails the session
  ("image has no signal");
- qform and sform that disagree give a warning naming the file and the one
  used, also recorded in the sidecars.

A failed preflight names the file and the reason; the other sessions go on.
"""

from __future__ import annotations

import dataclasses
import filecmp
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from thalamus_bidsapp.bidsio.inputs import SessionInputs
from thalamus_bidsapp.image.geometry import header_geometry, is_invertible

LOGGER = logging.getLogger(__name__)

#: Images the workflow reads, with the names used in logs and sidecars.
IMAGE_ROLES = {"t1w": "T1w", "t2w": "T2w", "flair": "FLAIR", "r1map": "R1map"}


@dataclass(frozen=True)
class PreparedSession:
    """A session that passed the preflight.

    Attributes
    ----------
    session
        The inputs the workflow reads: the original files, or cleaned copies
        in the work folder where voxels had to be fixed.
    originals
        Cleaned copy -> the input file it replaces (for provenance).
    record
        Per image role: the affine used, the qform/sform comparison and the
        fixes made (for the JSON sidecars).
    lesion
        The lesion input (for ``methods.json``): the file and, for a dseg, the
        lesion labels used and the rule that chose them; empty without one.
    """

    session: SessionInputs
    originals: dict[Path, Path] = field(default_factory=dict)
    record: dict[str, dict[str, Any]] = field(default_factory=dict)
    lesion: dict[str, Any] = field(default_factory=dict)


class PreflightFailure(Exception):
    """Why a session cannot start; the message names the file."""


def preflight_session(session: SessionInputs, work_dir: Path, *,
                      lesion_labels: tuple[str, ...] = ()) -> PreparedSession:
    """Check every input image of ``session``; write cleaned copies under ``work_dir`` where needed.

    ``lesion_labels``: ``--lesion-labels``, the lesion labels of a lesion dseg
    (checked against its lookup table here, before any tool runs).

    Raises
    ------
    PreflightFailure
        No T1w, a lesion input that cannot be used (not found with an explicit
        lesion filter, two candidates, a bad lookup table), or an image that
        cannot be used (message names the file and the reason).
    """
    if session.t1w is None:
        raise PreflightFailure(f"no T1w image found for {session.name}")
    if session.problems:
        raise PreflightFailure("; ".join(session.problems))
    lesion = _lesion_record(session, lesion_labels)
    session = dataclasses.replace(session, lesion_labels=tuple(lesion_labels))
    replaced: dict[str, Path] = {}
    originals: dict[Path, Path] = {}
    record: dict[str, dict[str, Any]] = {}
    for role, label in IMAGE_ROLES.items():
        path = getattr(session, role)
        if path is None:
            continue
        checked, record[label] = _check_image(Path(path), work_dir / "preflight" / session.name)
        if checked != Path(path):
            replaced[role] = checked
            originals[checked] = Path(path)
    if session.manual is not None:
        _readable_3d(Path(session.manual))
    return PreparedSession(dataclasses.replace(session, **replaced), originals, record, lesion)


def _lesion_record(session: SessionInputs, wanted: tuple[str, ...]) -> dict[str, Any]:
    """The session's lesion input and, for a dseg, the labels its lookup table gives (exactly)."""
    from thalamus_bidsapp.bidsio.lesion_lookup import lesion_labels
    from thalamus_bidsapp.errors import ThalamusError

    if session.lesion is None:
        return {}
    try:
        labels = lesion_labels(session.lesion, wanted)
    except ThalamusError as err:
        raise PreflightFailure(str(err)) from err
    return {"LesionMask": str(session.lesion), **(labels.record() if labels is not None else {})}


def _readable_3d(path: Path) -> nib.spatialimages.SpatialImage:
    try:
        img = nib.load(str(path))
    except Exception as err:  # nibabel raises many types for a corrupt file
        raise PreflightFailure(f"cannot read {path}: {err}") from err
    shape = img.shape
    if not (len(shape) == 3 or (len(shape) == 4 and shape[3] == 1)):
        raise PreflightFailure(f"{path} is not a 3D image (shape {shape})")
    return img


def _check_image(path: Path, clean_dir: Path) -> tuple[Path, dict[str, Any]]:
    """The file the workflow should read (``path`` or a cleaned copy) and the sidecar record."""
    img = _readable_3d(path)
    try:
        affine = np.asarray(img.affine, dtype=float)
    except Exception as err:  # a header whose quaternion or pixdims cannot make an affine
        raise PreflightFailure(f"affine is not invertible in {path}: {err}") from err
    if not is_invertible(affine):
        raise PreflightFailure(
            f"affine is not invertible in {path} (voxel-to-world matrix "
            f"{np.round(affine[:3, :3], 4).tolist()}): fix the header's sform/qform"
        )
    geometry = header_geometry(img)
    if geometry.disagree:
        LOGGER.warning("%s: %s", path, geometry.describe())
    record = geometry.record()
    try:
        data = np.asanyarray(img.dataobj)
    except Exception as err:  # truncated or corrupt compressed data
        raise PreflightFailure(f"cannot read the voxels of {path}: {err}") from err
    nonfinite = 0
    if data.dtype.kind in "fc":
        finite = np.isfinite(data)
        nonfinite = int(finite.size - np.count_nonzero(finite))
        if nonfinite:
            data = np.where(finite, data, 0).astype(data.dtype, copy=False)
    if data.size == 0 or np.min(data) == np.max(data):
        value = "empty" if data.size == 0 else f"every voxel is {np.min(data):g}"
        extra = f" after setting {nonfinite} non-finite voxels to 0" if nonfinite else ""
        raise PreflightFailure(f"image has no signal ({value}{extra}): {path}")
    if not nonfinite:
        return path, record
    LOGGER.warning("%s: %d non-finite (NaN or Inf) voxels of %d set to 0", path, nonfinite, data.size)
    record["NonFiniteVoxelsSetToZero"] = nonfinite
    return _write_clean_copy(img, data, clean_dir / path.name), record


def _write_clean_copy(img: nib.spatialimages.SpatialImage, data: np.ndarray, path: Path) -> Path:
    """Save ``data`` with ``img``'s geometry; leave an identical existing copy alone (keeps the node cache)."""
    if isinstance(img, nib.Nifti1Image):
        clean = img.__class__(data, img.affine, img.header)
    else:
        clean = nib.Nifti1Image(data, img.affine)
        path = path.with_name(path.name.split(".")[0] + ".nii.gz")
    clean.set_data_dtype(np.float32)
    clean.header.set_slope_inter(1.0, 0.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        nib.save(clean, str(tmp))
        if not (path.is_file() and filecmp.cmp(tmp, path, shallow=False)):
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
