"""FreeSurfer-style conform to 256^3, 1 mm, LIA, uint8, and the way back.

``mri_convert --conform`` resamples a T1w onto a 256^3 grid of 1 mm voxels
in LIA orientation (coronal slices), keeps the centre of the field of view
where the input had it, and squeezes the intensities into uint8 with a
robust maximum. Networks trained on FreeSurfer-conformed images (FastSurfer,
brainchop's MeshNet models) expect exactly that input. :func:`conform`
reproduces it on nibabel images (following FastSurfer's ``conform.py``, a
faithful Python port of FreeSurfer's behaviour) and :func:`labels_to_native`
brings a label map computed on the conformed grid back onto the native grid
by nearest neighbour, so the labels never take values that were not there.

All functions are pure: they take nibabel images and return new
``Nifti1Image`` objects without touching their inputs or the disk.
"""

from __future__ import annotations

import logging

import nibabel as nib
import numpy as np
from scipy import ndimage

logger = logging.getLogger(__name__)

CONFORMED_SHAPE: tuple[int, int, int] = (256, 256, 256)
CONFORMED_VOXEL_MM: float = 1.0
CONFORMED_ORIENTATION: str = "LIA"

# Direction cosines of LIA: voxel axis i -> -x (Left), j -> -z (Inferior), k -> +y (Anterior).
_LIA_DIRECTIONS = np.array([[-1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])

# FreeSurfer's robust intensity range: the lowest value (f_low = 0) up to the
# 99.9th percentile of the non-zero voxels (f_high = 0.999), from a 1000-bin histogram.
_HISTOGRAM_BINS = 1000
_F_LOW = 0.0
_F_HIGH = 0.999

# Grids with an odd number of voxels put FreeSurfer's centre (voxel shape/2) on a
# voxel border, so nearest-neighbour lookups between the grids hit exact ties
# that round-off breaks at random. Sampling a hair off the voxel centre, in
# opposite world directions for the two ways, breaks them deterministically and
# makes conform(order=0) followed by labels_to_native an exact round trip.
_TIE_BREAK_MM = np.array([1e-3, 1e-3, 1e-3])


def _volume_data(img: nib.spatialimages.SpatialImage) -> np.ndarray:
    """The image data as float32 (X, Y, Z); singleton 4th/5th dimensions are dropped."""
    data = np.asanyarray(img.dataobj)
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise ValueError(f"expected a 3D image, got shape {img.shape}")
    return data


def native_centre_ras(img: nib.spatialimages.SpatialImage) -> np.ndarray:
    """Scanner (RAS, mm) position of the centre of the field of view as FreeSurfer defines it.

    FreeSurfer's ``c_ras`` is the world position of voxel ``shape / 2`` (not
    ``(shape - 1) / 2``); :func:`conform` keeps that point fixed.

    Returns
    -------
    numpy.ndarray
        Shape (3,), mm.
    """
    shape = np.asarray(img.shape[:3], dtype=float)
    return nib.affines.apply_affine(img.affine, shape / 2.0)


def conformed_affine(
    img: nib.spatialimages.SpatialImage,
    shape: tuple[int, int, int] = CONFORMED_SHAPE,
    voxel_mm: float = CONFORMED_VOXEL_MM,
) -> np.ndarray:
    """Voxel-to-RAS affine of the conformed grid for ``img``.

    LIA directions, isotropic ``voxel_mm`` voxels, and voxel ``shape / 2``
    placed on the input's FreeSurfer centre (:func:`native_centre_ras`), as
    ``mri_convert --conform`` does.

    Returns
    -------
    numpy.ndarray
        Shape (4, 4), voxel indices to mm.
    """
    rotation_zoom = _LIA_DIRECTIONS * float(voxel_mm)
    centre_vox = np.asarray(shape, dtype=float) / 2.0
    affine = np.eye(4)
    affine[:3, :3] = rotation_zoom
    affine[:3, 3] = native_centre_ras(img) - rotation_zoom @ centre_vox
    return affine


def is_conformed(img: nib.spatialimages.SpatialImage, atol: float = 1e-4) -> bool:
    """True if ``img`` already lies on its own conformed grid (256^3, 1 mm, LIA, same centre)."""
    if tuple(int(n) for n in img.shape[:3]) != CONFORMED_SHAPE:
        return False
    return bool(np.allclose(img.affine, conformed_affine(img), atol=atol))


def robust_uint8_scaling(data: np.ndarray) -> tuple[float, float]:
    """Intensity offset and factor that FreeSurfer uses to map an image into 0..255.

    Follows FreeSurfer's ``MRIchangeType`` as ported in FastSurfer's
    ``getscale``: a 1000-bin histogram of all voxels, the lower bound at
    ``f_low = 0`` (the minimum) and the upper bound where the cumulative count
    reaches all but 0.1% of the non-zero voxels, two bins back (so a few very
    bright voxels, e.g. vessels, do not compress the brain's contrast).

    Parameters
    ----------
    data
        Any shape, intensities in the input's units (arbitrary).

    Returns
    -------
    tuple of float
        ``(src_min, scale)``: conformed value = clip((value - src_min) * scale, 0, 255).
    """
    data = np.asarray(data, dtype=np.float64)
    src_min = float(data.min())
    src_max = float(data.max())
    if src_max <= src_min:
        return src_min, 1.0
    if src_min < 0:
        logger.warning("image has negative intensities (min %.4g); FreeSurfer would not expect that", src_min)
    voxnum = data.size
    nonzero = int(np.count_nonzero(np.abs(data) >= 1e-15))
    bin_size = (src_max - src_min) / _HISTOGRAM_BINS
    hist, _ = np.histogram(data, _HISTOGRAM_BINS, range=(src_min, src_max))
    cumulative = np.concatenate(([0], np.cumsum(hist)))

    below = np.flatnonzero(cumulative < int(_F_LOW * voxnum))
    low_bin = int(below[-1]) + 1 if below.size else 0
    robust_min = src_min + low_bin * bin_size

    target = voxnum - int((1.0 - _F_HIGH) * nonzero)
    reached = np.flatnonzero(cumulative >= target)
    high_bin = max(int(reached[0]) - 2, low_bin + 1) if reached.size else _HISTOGRAM_BINS
    robust_max = src_min + high_bin * bin_size
    if robust_max <= robust_min:
        return robust_min, 1.0
    return robust_min, 255.0 / (robust_max - robust_min)


def _needs_uint8_scaling(data: np.ndarray) -> bool:
    """Integer-valued data already within 0..255 is copied, not rescaled (as FreeSurfer/FastSurfer do)."""
    if data.dtype == np.uint8:
        return False
    lo, hi = float(np.min(data)), float(np.max(data))
    if lo < 0 or hi > 255:
        return True
    return not bool(np.all(np.mod(data, 1) == 0))


def conform(
    img: nib.spatialimages.SpatialImage,
    *,
    order: int = 1,
    rescale: bool | None = None,
) -> nib.Nifti1Image:
    """Resample a 3D image onto the FreeSurfer conformed grid, as uint8.

    Parameters
    ----------
    img
        3D image (NIfTI, MGH, ...), any orientation and voxel size; shape (X, Y, Z).
    order
        Spline order of the resampling: 1 (trilinear, FreeSurfer's default)
        or 0 (nearest neighbour, for label images).
    rescale
        Map intensities into 0..255 with FreeSurfer's robust range
        (:func:`robust_uint8_scaling`). ``None`` (default) decides as
        FreeSurfer does: integer-valued data already in 0..255 is kept, any
        other data is rescaled.

    Returns
    -------
    nibabel.Nifti1Image
        Shape (256, 256, 256), 1 mm isotropic, LIA, uint8, with the affine of
        :func:`conformed_affine`; voxels outside the input's field of view are 0.
    """
    data = _volume_data(img)
    if rescale is None:
        rescale = _needs_uint8_scaling(data)
    target_affine = conformed_affine(img)

    if is_conformed(img):
        # Already on the grid: resampling would only add round-off.
        resampled = data.astype(np.float32, copy=False)
    else:
        # affine_transform maps output voxel indices to input voxel indices.
        out_to_in = np.linalg.inv(img.affine) @ target_affine
        if order == 0:
            out_to_in[:3, 3] += np.linalg.inv(img.affine)[:3, :3] @ _TIE_BREAK_MM
        resampled = ndimage.affine_transform(
            data.astype(np.float32, copy=False),
            out_to_in[:3, :3],
            offset=out_to_in[:3, 3],
            output_shape=CONFORMED_SHAPE,
            order=order,
            mode="constant",
            cval=0.0,
            prefilter=False,
        )

    if rescale:
        # The range is taken on the native data, before resampling, like mri_convert.
        src_min, scale = robust_uint8_scaling(data)
        resampled = np.clip((resampled - src_min) * scale, 0.0, 255.0)
        logger.debug("conform: rescaled intensities, src_min=%.4g scale=%.4g", src_min, scale)
    conformed = np.rint(np.clip(resampled, 0.0, 255.0)).astype(np.uint8)

    out = nib.Nifti1Image(conformed, target_affine)
    out.header.set_xyzt_units("mm")
    return out


def labels_to_native(
    labels: nib.spatialimages.SpatialImage,
    native: nib.spatialimages.SpatialImage,
    dtype: np.dtype | type | None = None,
) -> nib.Nifti1Image:
    """Bring a label map from its grid (e.g. conformed) onto ``native``'s grid by nearest neighbour.

    Parameters
    ----------
    labels
        Integer label image, shape (I, J, K), any grid (typically the
        output of a network run on :func:`conform`'s result).
    native
        Image whose grid (shape[:3], affine) the result takes; its data is not read.
    dtype
        Output data type; defaults to ``labels``' on-disk type.

    Returns
    -------
    nibabel.Nifti1Image
        Shape ``native.shape[:3]``, ``native.affine``; each native voxel takes the
        label of the nearest ``labels`` voxel centre, 0 outside ``labels``' field of view.
    """
    label_data = _volume_data(labels)
    if dtype is None:
        dtype = labels.get_data_dtype()
    native_shape = tuple(int(n) for n in native.shape[:3])
    native_to_labels = np.linalg.inv(labels.affine) @ native.affine
    if native_shape == label_data.shape and np.allclose(native_to_labels, np.eye(4), atol=1e-4):
        out_data = np.array(label_data, dtype=dtype)
    else:
        native_to_labels[:3, 3] -= np.linalg.inv(labels.affine)[:3, :3] @ _TIE_BREAK_MM
        out_data = ndimage.affine_transform(
            label_data,
            native_to_labels[:3, :3],
            offset=native_to_labels[:3, 3],
            output_shape=native_shape,
            order=0,
            mode="constant",
            cval=0,
            prefilter=False,
        ).astype(dtype, copy=False)
    out = nib.Nifti1Image(out_data, native.affine)
    out.header.set_xyzt_units("mm")
    return out
