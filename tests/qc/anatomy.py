"""Real thalamus anatomy for the QC tests: bert's and subject2's asegs, cropped around the thalamus."""

from __future__ import annotations

import functools
import re
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from tests.conftest import shared_file
from thalamus_bidsapp.bidsio.tables import session_volumes_table
from thalamus_bidsapp.image.sides import LEFT, RIGHT, sides_from_labels
from thalamus_bidsapp.qc.session import MaskFiles

#: A box of the 256^3 conformed grid holding bert's and subject2's thalami (voxel indices).
BOX = (slice(80, 176), slice(80, 176), slice(70, 170))


@functools.lru_cache(maxsize=None)
def aseg_sides(*parts: str) -> nib.Nifti1Image:
    """The side map (1 left, 2 right) of an aseg's thalamus labels 10/49, cropped to :data:`BOX`."""
    img = nib.load(str(shared_file(*parts)))
    sides = sides_from_labels(np.asanyarray(img.dataobj), [10], [49])
    out = nib.Nifti1Image(sides, img.affine).slicer[BOX]
    data = np.asanyarray(out.dataobj).astype(np.uint8)
    data.flags.writeable = False  # cached: shared by the tests
    return nib.Nifti1Image(data, out.affine)


def bert_sides(version: str = "7.2") -> nib.Nifti1Image:
    return aseg_sides(f"freesurfer_bert_{version}", "mri", "aseg.mgz")


def subject2_sides_on_bert_grid() -> nib.Nifti1Image:
    """Another person's thalamus in bert's voxels: a FreeSurfer subject that belongs to someone else."""
    other = aseg_sides("freesurfer_subject2", "aparc.a2009s+aseg.mgz")
    return nib.Nifti1Image(np.asanyarray(other.dataobj), bert_sides().affine)


def bert_etiv_ml() -> float:
    text = shared_file("freesurfer_bert_7.2", "stats", "aseg.stats").read_text()
    return float(re.search(r"EstimatedTotalIntraCranialVol, eTIV, [^,]+, ([0-9.]+)", text).group(1)) / 1000.0


def stand_in_prior(folder: Path, sigma_mm: float = 1.5) -> list[Path]:
    """hemi-L and hemi-R probability maps: bert's FreeSurfer 7.2 and 6.0 thalami averaged and smoothed.

    A stand-in for the template prior warped to the T1w, on the same grid as the masks.
    """
    grids = [np.asanyarray(bert_sides(v).dataobj) for v in ("7.2", "6.0")]
    affine = bert_sides().affine
    paths = []
    for hemi, value in (("L", LEFT), ("R", RIGHT)):
        mean = np.mean([(g == value).astype(np.float32) for g in grids], axis=0)
        prob = np.clip(ndimage.gaussian_filter(mean, sigma_mm), 0.0, 1.0).astype(np.float32)
        path = folder / f"sub-01_hemi-{hemi}_space-T1w_label-thalamus_desc-prior_probseg.nii.gz"
        nib.save(nib.Nifti1Image(prob, affine), str(path))
        paths.append(path)
    return paths


def save_mask(folder: Path, method: str, contrast: str, sides: nib.Nifti1Image) -> MaskFiles:
    """Write a side map and its binary mask; return the session entry."""
    data = np.asanyarray(sides.dataobj).astype(np.uint8)
    mask_path, sides_path = folder / f"{method}_mask.nii.gz", folder / f"{method}_sides.nii.gz"
    nib.save(nib.Nifti1Image((data > 0).astype(np.uint8), sides.affine), str(mask_path))
    nib.save(nib.Nifti1Image(data, sides.affine), str(sides_path))
    return MaskFiles(method, contrast, mask_path, sides_path)


def volumes_of(masks: list[MaskFiles], brain_mask: Path | None = None):
    """The session's volumes table, by the participant level's own code, with bert's eTIV as the ICV."""
    return session_volumes_table([m.mask for m in masks], [m.method for m in masks], [m.contrast for m in masks],
                                 brain_mask=brain_mask or masks[0].mask,
                                 icv_record={"icv_ml": bert_etiv_ml(), "source": "aseg.stats eTIV"},
                                 sides_files=[m.sides for m in masks])
