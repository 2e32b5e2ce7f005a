"""Per-session tables: the thalamus volumes TSV."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import nibabel as nib
import pandas as pd

from thalamus_bidsapp.image.masks import MM3_PER_ML, mask_volume

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
) -> pd.DataFrame:
    """One row per mask with its voxel count and volume, and the session's ICV.

    Parameters
    ----------
    mask_files, methods, contrasts
        Parallel lists: each binary mask and its method and contrast.
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
    rows = []
    for path, method, contrast in zip(mask_files, methods, contrasts):
        rows.append({"method": method, "contrast": contrast, **mask_volume(nib.load(str(path)))})
    table = pd.DataFrame(rows, columns=["method", "contrast", "n_voxels", "volume_mm3", "volume_ml"])
    table["icv_ml"] = icv_ml
    table["icv_source"] = icv_source
    return table
