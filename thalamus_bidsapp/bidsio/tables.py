"""Per-session tables: the thalamus volumes TSV."""

from __future__ import annotations

import importlib.resources
import json
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
    return json.loads(importlib.resources.files("thalamus_bidsapp.data").joinpath("volumes_columns.json").read_text())


def session_volumes_table(
    mask_files: list[Path],
    methods: list[str],
    contrasts: list[str],
    *,
    brain_mask: Path,
    icv_record: dict[str, Any] | None = None,
    sides_files: list[Path | None] | None = None,
    lesion_mask: Path | None = None,
    lesion_filled: list[bool] | None = None,
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
    lesion_mask
        The session's lesion mask on the T1w grid, or None: the lesion columns
        (:data:`LESION_COLUMNS`) are then n/a.
    lesion_filled
        Parallel to ``mask_files``: whether the mask was made on the lesion-filled T1w (None: none was).
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
    lesion = LesionLoad(lesion_mask)
    filled = lesion_filled if lesion_filled is not None else [False] * len(mask_files)
    rows = []
    for path, method, contrast, sides_path, on_filled in zip(mask_files, methods, contrasts, sides_files, filled):
        mask_img = nib.load(str(path))
        bilateral = np.asanyarray(mask_img.dataobj) > 0
        common = {"method": method, "contrast": contrast, "lesion_filled": bool(on_filled)}
        rows.append({**common, "hemisphere": "bilateral", **mask_volume(mask_img), **lesion(bilateral, mask_img)})
        if sides_path is not None:
            sides = nib.load(str(sides_path))
            data = np.asanyarray(sides.dataobj)
            for hemisphere, value in (("left", LEFT), ("right", RIGHT)):
                side = nib.Nifti1Image((data == value).astype(np.uint8), sides.affine, sides.header)
                rows.append({**common, "hemisphere": hemisphere, **mask_volume(side), **lesion(data == value, side)})
    table = pd.DataFrame(rows, columns=["method", "contrast", "hemisphere", "n_voxels", "volume_mm3", "volume_ml",
                                        *LESION_COLUMNS, "lesion_filled"])
    table.insert(6, "icv_ml", icv_ml)
    table.insert(7, "icv_source", icv_source)
    return table


#: Lesion columns of the volumes table (n/a without a lesion mask).
LESION_COLUMNS = ("lesion_volume_ml", "lesion_in_thalamus_ml", "lesion_near_thalamus_ml")


class LesionLoad:
    """The lesion columns of one volumes row: the session's lesion volume, and in and near the row's mask."""

    def __init__(self, lesion_mask: Path | None) -> None:
        from thalamus_bidsapp.image.lesion_load import lesion_volume_ml

        self.lesion = None
        if lesion_mask is not None:
            img = nib.load(str(lesion_mask))
            self.lesion = np.asanyarray(img.dataobj) > 0
            self.total = lesion_volume_ml(self.lesion, img.affine)

    def __call__(self, mask: np.ndarray, mask_img: nib.spatialimages.SpatialImage) -> dict[str, float]:
        from thalamus_bidsapp.image.lesion_load import lesion_in_and_near

        if self.lesion is None:
            return dict.fromkeys(LESION_COLUMNS, float("nan"))
        if self.lesion.shape != mask.shape:
            raise ValueError(f"the lesion mask (shape {self.lesion.shape}) and a thalamus mask (shape {mask.shape}) "
                             "are not on one grid")
        inside, near = lesion_in_and_near(self.lesion, mask, mask_img.affine)
        return dict(zip(LESION_COLUMNS, (self.total, inside, near)))
