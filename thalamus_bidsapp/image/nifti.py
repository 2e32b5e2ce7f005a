"""Making NIfTI images the same way everywhere."""

from __future__ import annotations

import nibabel as nib
import numpy as np


def new_image(data: np.ndarray, affine: np.ndarray, header: nib.Nifti1Header | None = None) -> nib.Nifti1Image:
    """A NIfTI-1 image with qform and sform both set to ``affine`` (code 1) and units of mm and s."""
    img = nib.Nifti1Image(data, affine, header.copy() if header is not None else None)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    if header is None:
        img.set_data_dtype(data.dtype)
    return img
