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


def float32_like(data: np.ndarray, like: nib.Nifti1Image) -> nib.Nifti1Image:
    """``data`` on ``like``'s grid with a copy of its header, stored as float32 without scaling.

    The affine is ``like``'s verbatim (the grid stays bit-identical); the
    header's ``scl_slope``/``scl_inter`` are reset so no stale scaling applies.
    """
    header = like.header.copy()
    header.set_data_dtype(np.float32)
    img = nib.Nifti1Image(data, like.affine, header)
    img.header["scl_slope"], img.header["scl_inter"] = np.nan, np.nan
    return img


def load_image(path: str) -> nib.spatialimages.SpatialImage:
    """Load an image, turning any reader failure into a clear error that names the file."""
    from thalamus_bidsapp.errors import EXIT_DATAERR, ThalamusError

    try:
        img = nib.load(path)
        img.get_fdata(dtype="float32")  # force a full read: a truncated gzip fails here, not later
    except Exception as err:
        raise ThalamusError(f"cannot read the image {path}: {err}", EXIT_DATAERR) from err
    return img
