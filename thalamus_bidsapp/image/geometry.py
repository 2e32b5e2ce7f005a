"""Voxel geometry from image headers: the affine actually used, the voxel volume, qform/sform agreement.

A NIfTI header can hold two voxel-to-world transforms, the qform (rigid plus
voxel sizes, no shear) and the sform (any affine). Readers use the sform when
its code is set, else the qform, else the bare voxel sizes (nibabel, FSL and
FreeSurfer agree on this order). The voxel volume is ``|det|`` of the 3x3 part
of the affine that is used; the product of the header zooms is wrong for a
sheared sform and when qform and sform disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product
from typing import Any

import nibabel as nib
import numpy as np

#: qform and sform "agree" when every corner of the grid lands within this distance (mm) ...
AFFINE_TOLERANCE_MM = 0.1
#: ... and their voxel volumes differ by less than this fraction.
VOLUME_TOLERANCE = 1e-3
#: An affine whose 3x3 part has a larger condition number is treated as singular.
MAX_CONDITION = 1e6


def voxel_volume_mm3(affine: np.ndarray) -> float:
    """Volume of one voxel in mm3: ``|det|`` of the 3x3 part of a voxel-to-world affine."""
    return float(abs(np.linalg.det(np.asarray(affine, dtype=float)[:3, :3])))


def is_invertible(affine: np.ndarray) -> bool:
    """Whether a 4x4 voxel-to-world affine is finite and maps voxels to a 3D world (not a plane or line)."""
    matrix = np.asarray(affine, dtype=float)
    if matrix.shape != (4, 4) or not np.isfinite(matrix).all():
        return False
    linear = matrix[:3, :3]
    if np.any(np.linalg.norm(linear, axis=0) == 0):
        return False
    return bool(np.linalg.cond(linear) < MAX_CONDITION)


@dataclass(frozen=True)
class HeaderGeometry:
    """Which voxel-to-world transform of a header is used, and how far the other one is.

    Attributes
    ----------
    used
        ``sform``, ``qform``, ``pixdim`` (NIfTI without either: voxel sizes
        only) or ``header`` (other formats, e.g. MGH's vox2ras).
    affine
        The affine used, shape (4, 4).
    qform_sform_mm
        Largest distance (mm) between the positions of the grid's corner voxels
        under the qform and under the sform; None unless both are set.
    qform_voxel_mm3, sform_voxel_mm3
        Voxel volume under each (None when it is not set).
    """

    used: str
    affine: np.ndarray
    qform_sform_mm: float | None = None
    qform_voxel_mm3: float | None = None
    sform_voxel_mm3: float | None = None

    @property
    def voxel_mm3(self) -> float:
        return voxel_volume_mm3(self.affine)

    @property
    def disagree(self) -> bool:
        """qform and sform both set and further apart than the tolerances."""
        if self.qform_sform_mm is None or self.qform_voxel_mm3 is None or self.sform_voxel_mm3 is None:
            return False
        volume_change = abs(self.qform_voxel_mm3 - self.sform_voxel_mm3) / max(self.sform_voxel_mm3, 1e-12)
        return self.qform_sform_mm > AFFINE_TOLERANCE_MM or volume_change > VOLUME_TOLERANCE

    def record(self) -> dict[str, Any]:
        """JSON-ready summary for sidecars."""
        record: dict[str, Any] = {"AffineUsed": self.used, "VoxelVolumeMm3": round(self.voxel_mm3, 6)}
        if self.qform_sform_mm is not None:
            record["QformSformMaxDistanceMm"] = round(self.qform_sform_mm, 4)
            record["QformSformAgree"] = not self.disagree
            record["QformVoxelVolumeMm3"] = round(float(self.qform_voxel_mm3 or 0.0), 6)
            record["SformVoxelVolumeMm3"] = round(float(self.sform_voxel_mm3 or 0.0), 6)
        return record

    def describe(self) -> str:
        """One line for a warning: how far apart qform and sform are and which one is used."""
        return (f"qform and sform disagree (corners up to {self.qform_sform_mm:.2f} mm apart, voxel volume "
                f"{self.qform_voxel_mm3:.4g} vs {self.sform_voxel_mm3:.4g} mm3); using the {self.used}, as "
                "NIfTI readers (nibabel, FSL, FreeSurfer) do")


def header_geometry(img: nib.spatialimages.SpatialImage) -> HeaderGeometry:
    """The affine ``img.affine`` comes from, and how the qform and sform compare."""
    header = img.header
    affine = np.asarray(img.affine, dtype=float)
    if not isinstance(header, nib.Nifti1Header):  # Nifti2Header is a subclass
        return HeaderGeometry("header", affine)
    sform, sform_code = header.get_sform(coded=True)
    qform, qform_code = header.get_qform(coded=True)
    used = "sform" if sform_code else "qform" if qform_code else "pixdim"
    if not (sform_code and qform_code):
        return HeaderGeometry(used, affine)
    shape = [max(int(n) - 1, 0) for n in img.shape[:3]]
    corners = np.array(list(product(*[(0, n) for n in shape])), dtype=float)
    distance = np.linalg.norm(nib.affines.apply_affine(qform, corners) - nib.affines.apply_affine(sform, corners),
                              axis=1)
    finite = np.isfinite(distance)
    return HeaderGeometry(
        used, affine,
        qform_sform_mm=float(distance.max()) if finite.all() else float("inf"),
        qform_voxel_mm3=voxel_volume_mm3(qform),
        sform_voxel_mm3=voxel_volume_mm3(sform),
    )
