"""deepbet brain extraction (Fisch et al. 2024), run in process on the CPU.

deepbet ships its weights in its wheel, so nothing is downloaded. The network
is loaded once per process and reused for every session.
"""

from __future__ import annotations

import functools
import logging
from importlib import metadata

import nibabel as nib
import numpy as np

from thalamus_bidsapp.image.nifti import new_image

LOGGER = logging.getLogger(__name__)

THRESHOLD = 0.5


def deepbet_version() -> str:
    return metadata.version("deepbet")


@functools.lru_cache(maxsize=1)
def _extractor():
    from deepbet import BrainExtraction

    LOGGER.info("loading the deepbet network (CPU)")
    return BrainExtraction(no_gpu=True)


def brain_mask(t1w: nib.Nifti1Image, threads: int | None = None) -> tuple[nib.Nifti1Image, dict]:
    """Brain mask of a T1w image, on its grid.

    Parameters
    ----------
    t1w
        A 3D T1-weighted image, skull-stripped or not.
    threads
        Torch CPU threads; ``None`` keeps torch's default.

    Returns
    -------
    mask
        uint8 0/1 image with the T1w's shape and affine.
    provenance
        Tool name, version and settings for the JSON sidecar.
    """
    import torch

    if threads:
        torch.set_num_threads(threads)
    data = np.asanyarray(t1w.dataobj)
    if data.ndim != 3:
        raise ValueError(f"deepbet needs a 3D image, got shape {data.shape}")
    # deepbet reorients internally and returns the mask on the input grid.
    _, mask_img, _ = _extractor().run(t1w, threshold=THRESHOLD)
    mask = (np.asanyarray(mask_img.dataobj) > 0).astype(np.uint8)
    out = new_image(mask, t1w.affine)
    provenance = {
        "Tool": "deepbet",
        "Version": deepbet_version(),
        "Settings": {"threshold": THRESHOLD, "n_dilate": 0, "device": "cpu"},
    }
    return out, provenance
