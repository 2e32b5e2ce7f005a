"""Binary masks: from label maps, and their volumes."""

from __future__ import annotations

from collections.abc import Iterable

import nibabel as nib
import numpy as np

from thalamus_bidsapp.image.geometry import voxel_volume_mm3 as _affine_voxel_volume
from thalamus_bidsapp.image.nifti import new_image

MM3_PER_ML = 1000.0


def integer_labels(data: np.ndarray, dtype: type = np.int64) -> np.ndarray:
    """Label values as ``dtype``: float-stored labels rounded to the nearest integer, integer ones cast (no float copy)."""
    data = np.asanyarray(data)
    return (data if np.issubdtype(data.dtype, np.integer) else np.rint(data)).astype(dtype)


def mask_from_labels(labels: nib.spatialimages.SpatialImage, values: Iterable[int]) -> nib.Nifti1Image:
    """A uint8 0/1 mask of the voxels whose label is one of ``values``, on the same grid."""
    data = np.asanyarray(labels.dataobj)
    mask = np.isin(data, np.asarray(list(values))).astype(np.uint8)
    return new_image(mask, labels.affine)


def voxel_volume_mm3(img: nib.spatialimages.SpatialImage) -> float:
    """Volume of one voxel in mm3: ``|det|`` of the 3x3 part of the affine the image is read with.

    Not the product of the header zooms, which is wrong for a sheared sform or
    when qform and sform disagree.
    """
    return _affine_voxel_volume(img.affine)


def mask_volume(img: nib.spatialimages.SpatialImage) -> dict[str, float]:
    """Voxel count and volume of a binary mask (non-zero voxels).

    Returns
    -------
    ``{"n_voxels": int, "volume_mm3": float, "volume_ml": float}``;
    1 mL = 1000 mm3.
    """
    n_voxels = int(np.count_nonzero(np.asanyarray(img.dataobj)))
    volume_mm3 = n_voxels * voxel_volume_mm3(img)
    return {"n_voxels": n_voxels, "volume_mm3": volume_mm3, "volume_ml": volume_mm3 / MM3_PER_ML}
