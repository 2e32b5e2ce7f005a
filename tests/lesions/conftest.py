"""Real anatomy for the lesion tests: FreeSurfer's bert (norm.mgz + aseg), cropped around the thalamus."""

from __future__ import annotations

from dataclasses import dataclass

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from tests.conftest import shared_file
from tests.lesions.planting import THALAMUS


@dataclass(frozen=True)
class Anatomy:
    t1w: np.ndarray      # float32, (X, Y, Z)
    aseg: np.ndarray     # int, (X, Y, Z)
    brain: np.ndarray    # bool
    affine: np.ndarray   # (4, 4)

    @property
    def thalamus(self) -> np.ndarray:
        return np.isin(self.aseg, THALAMUS)


def load_subject(name: str) -> Anatomy:
    """bert (FreeSurfer 7.2) or subject2: the skull-stripped norm.mgz and its aseg labels, 1 mm."""
    if name == "bert":
        t1 = nib.load(shared_file("freesurfer_bert_7.2", "mri", "norm.mgz"))
        aseg = nib.load(shared_file("freesurfer_bert_7.2", "mri", "aseg.mgz"))
    else:
        t1 = nib.load(shared_file("freesurfer_subject2", "norm.mgz"))
        aseg = nib.load(shared_file("freesurfer_subject2", "aparc.a2009s+aseg.mgz"))
    data = np.asarray(t1.dataobj, dtype=np.float32)
    return Anatomy(data, np.asarray(aseg.dataobj).astype(np.int32), data > 0, t1.affine)


def stand_in_prior(anatomy: Anatomy, sigma_mm: float = 2.0, dilate: int = 0) -> np.ndarray:
    """A thalamus probability map from the real aseg thalamus (dilated, then smoothed): 17a's prior stand-in."""
    thalamus = anatomy.thalamus
    if dilate:
        thalamus = ndimage.binary_dilation(thalamus, iterations=dilate)
    return ndimage.gaussian_filter(thalamus.astype(np.float32), sigma_mm)


@pytest.fixture(scope="session")
def bert() -> Anatomy:
    return load_subject("bert")


@pytest.fixture(scope="session")
def bert_crop(bert) -> Anatomy:
    """bert cropped to a 100 x 90 x 90 box around the thalamus (fast unit tests)."""
    centre = np.round(np.argwhere(bert.thalamus).mean(axis=0)).astype(int)
    box = tuple(slice(c - h, c + h) for c, h in zip(centre, (50, 45, 45)))
    affine = bert.affine.copy()
    affine[:3, 3] = bert.affine[:3, :3] @ [s.start for s in box] + bert.affine[:3, 3]
    return Anatomy(bert.t1w[box], bert.aseg[box], bert.brain[box], affine)
