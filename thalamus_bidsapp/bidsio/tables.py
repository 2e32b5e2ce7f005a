"""Per-session tables: the thalamus volumes TSV."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd

from thalamus_bidsapp.image.masks import MM3_PER_ML, mask_volume
from thalamus_bidsapp.image.sides import LEFT, RIGHT

ICV_FROM_BRAIN_MASK = "deepbet brain mask volume"


def volumes_columns() -> dict[str, Any]:
    """Column descriptions of the volumes TSV (its JSON sidecar)."""
    return json.loads(resources.files("thalamus_bidsapp.data").joinpath("volumes_columns.json").read_text())


def session_volumes_table(
    mask_files: list[Path],
    methods: list[str],
    contrasts: list[str],
    *,
    brain_mask: Path,
    icv_record: dict[str, Any] | None = None,
    sides_files: list[Path | None] | None = None,
) -> pd.DataFrame:
    """One row per mask and hemisphere with its voxel count and volume, and the session's ICV.

    Parameters
    ----------
    mask_files, methods, contrasts
        Parallel lists: each binary mask and its method and contrast.
    sides_files
        Parallel to ``mask_files``: each mask's side map (0 background, 1 left,
        2 right) or None; a mask with one has ``left`` and ``right`` rows after
        its ``bilateral`` row (the bilateral row always comes from the mask itself).
    brain_mask
        The T1w brain mask; its volume is the ICV when ``icv_record`` is None.
    icv_record
        ``{"icv_ml": float, "source": str}``, e.g. FreeSurfer's eTIV.
    """
    if not len(mask_files) == len(methods) == len(contrasts):
        raise ValueError("mask_files, methods and contrasts must have the same length")
    if icv_record is not None:
        icv_ml, icv_source = float(icv_record["icv_ml"]), str(icv_record["source"])
    else:
        icv_ml = mask_volume(nib.load(str(brain_mask)))["volume_mm3"] / MM3_PER_ML
        icv_source = ICV_FROM_BRAIN_MASK
    if sides_files is None:
        sides_files = [None] * len(mask_files)
    if len(sides_files) != len(mask_files):
        raise ValueError("sides_files and mask_files must have the same length")
    rows = []
    for path, method, contrast, sides_path in zip(mask_files, methods, contrasts, sides_files):
        rows.append({"method": method, "contrast": contrast, "hemisphere": "bilateral",
                     **mask_volume(nib.load(str(path)))})
        if sides_path is not None:
            sides = nib.load(str(sides_path))
            data = np.asanyarray(sides.dataobj)
            for hemisphere, value in (("left", LEFT), ("right", RIGHT)):
                side = nib.Nifti1Image((data == value).astype(np.uint8), sides.affine, sides.header)
                rows.append({"method": method, "contrast": contrast, "hemisphere": hemisphere, **mask_volume(side)})
    table = pd.DataFrame(rows, columns=["method", "contrast", "hemisphere", "n_voxels", "volume_mm3", "volume_ml"])
    table["icv_ml"] = icv_ml
    table["icv_source"] = icv_source
    return table
