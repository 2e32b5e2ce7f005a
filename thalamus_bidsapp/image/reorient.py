"""Reorientation to RAS+, the standard orientation, as ``fslreorient2std`` does for FSL.

Only the voxel storage order changes: world coordinates are untouched, so the
transform worth recording is the voxel permutation/flip, kept with the
original and new orientation codes.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
from thalamus_bidsapp.image.nifti import new_image
from nibabel.orientations import aff2axcodes, inv_ornt_aff, io_orientation, ornt_transform


def reorient_to_ras(img: nib.spatialimages.SpatialImage) -> tuple[nib.Nifti1Image, dict]:
    """Return ``img`` with its voxel axes reordered and flipped to RAS+.

    Parameters
    ----------
    img
        A 3D (or 4D) image with a valid affine.

    Returns
    -------
    reoriented
        A NIfTI-1 image in RAS+ storage order with the same world geometry;
        qform and sform both set to the new affine (code 1, scanner).
    record
        ``original_orientation`` and ``orientation`` (axis codes such as
        ``LIA`` and ``RAS``) and ``voxel_transform``, the 4x4 matrix mapping
        original voxel indices (i, j, k, 1) to reoriented voxel indices.
    """
    original_codes = "".join(aff2axcodes(img.affine))
    start = io_orientation(img.affine)
    target = np.array([[0, 1], [1, 1], [2, 1]], dtype=float)
    transform = ornt_transform(start, target)
    data = np.asanyarray(img.dataobj)
    reoriented_data = nib.orientations.apply_orientation(data, transform)
    # inv_ornt_aff maps new voxel indices to old ones; its inverse is old -> new.
    new_to_old = inv_ornt_aff(transform, img.shape[:3])
    new_affine = img.affine @ new_to_old
    header = img.header if isinstance(img, nib.Nifti1Image) else None
    out = new_image(reoriented_data, new_affine, header)
    record = {
        "original_orientation": original_codes,
        "orientation": "".join(aff2axcodes(new_affine)),
        "voxel_transform": np.linalg.inv(new_to_old).round(6).tolist(),
    }
    return out, record
