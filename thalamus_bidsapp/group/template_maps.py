"""Group maps in template space: each method's thalamus probability map and where the methods disagree.

From the published ``space-<template>_label-thalamus_desc-<method>_mask``
of the sessions the group tables use:

- ``group/space-<template>_label-thalamus_desc-<method>_probseg.nii.gz``: the
  mean of the method's masks over sessions (the fraction of sessions in which
  the method calls the voxel thalamus);
- ``group/space-<template>_label-thalamus_desc-disagreement_map.nii.gz``: per
  session with two or more methods, the fraction of methods disagreeing with
  the voxel's majority (0 all agree, 0.5 an even split), averaged over sessions;
  the masks made on the unfilled T1w (``desc-<mask>Unfilled``) get their
  probability map but no vote here;
- ``group/space-<template>_desc-brain_T1w.nii.gz``: the template brain they lie
  on (TemplateFlow's, copied so the report draws from published files only);
- ``group/template_maps.tsv``: one row per map.

The template's files must be in ``TEMPLATEFLOW_HOME`` (exit 66 naming them
otherwise), as at the participant level.
"""

from __future__ import annotations

import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from thalamus_bidsapp.bidsio.atomic import atomic_path, write_json, write_tsv
from thalamus_bidsapp.config import RunConfig
from thalamus_bidsapp.image.probability import mask_frequency, mean_map, minority_fraction
from thalamus_bidsapp.methods.registry import UNFILLED_SUFFIX
from thalamus_bidsapp.tools.templateflow import find_template_files

LOGGER = logging.getLogger(__name__)

TABLE_COLUMNS = {
    "map": "What the map shows: probability (one method's masks averaged over sessions) or disagreement",
    "method": "The method (desc entity of the masks); n/a for the disagreement map",
    "template": "TemplateFlow template of the grid",
    "n_sessions": "Sessions averaged",
    "peak": "Highest voxel value of the map",
    "volume_ml_at_half": "Volume (mL, template space) where the map is >= 0.5 (disagreement: >= 0.25)",
    "file": "The map, relative to group/",
}


def template_mask_rows(masks: pd.DataFrame, template: str) -> pd.DataFrame:
    """The ``space-<template>`` twin of each ``space-T1w`` mask row that exists (same columns)."""
    rows = []
    for row in masks.itertuples(index=False):
        path = Path(row.path)
        twin = path.with_name(path.name.replace("_space-T1w_", f"_space-{template}_"))
        if twin != path and twin.is_file():
            rows.append({**row._asdict(), "path": twin})
    return pd.DataFrame(rows, columns=list(masks.columns))


def _save(data: np.ndarray, reference: nib.Nifti1Image, path: Path, sidecar: dict) -> None:
    header = reference.header.copy()
    header.set_data_dtype(np.float32)
    img = nib.Nifti1Image(data.astype(np.float32), reference.affine, header)
    img.header["scl_slope"], img.header["scl_inter"] = np.nan, np.nan
    img.header.set_xyzt_units("mm", img.header.get_xyzt_units()[1])  # a TemplateFlow image may leave them unknown
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
    write_json(sidecar, path.with_name(path.name.replace(".nii.gz", ".json")))


def _row(kind: str, method: str, template: str, data: np.ndarray, n: int, path: Path, threshold: float,
         voxel_ml: float) -> dict:
    return {"map": kind, "method": method, "template": template, "n_sessions": n, "peak": float(data.max()),
            "volume_ml_at_half": float((data >= threshold).sum() * voxel_ml), "file": path.name}


def run_template_maps(config: RunConfig, group_dir: Path, masks: pd.DataFrame) -> pd.DataFrame | None:
    """Write the maps and their table into ``group_dir``; None when there is nothing to map.

    ``masks`` are the usable ``space-T1w`` mask rows (participant_id,
    session_id, method, path); their template-space twins are averaged.

    Raises
    ------
    ThalamusError
        Exit 66 when template-space masks exist but the template's files do not.
    """
    template = config.template
    if template is None:
        LOGGER.info("template-space maps skipped: --template none")
        return None
    rows = template_mask_rows(masks, template)
    if rows.empty:
        LOGGER.info("template-space maps skipped: no space-%s masks (participant level run with another "
                    "--template, or --template none)", template)
        return None
    files = find_template_files(template, config.templateflow_home)
    reference = nib.load(str(files.target))
    voxel_ml = float(abs(np.linalg.det(reference.affine[:3, :3]))) / 1000.0
    loaded = {(r.participant_id, r.session_id, r.method): np.asarray(nib.load(str(r.path)).dataobj) > 0
              for r in rows.itertuples()}
    if any(m.shape != reference.shape[:3] for m in loaded.values()):
        LOGGER.warning("template-space maps skipped: masks not on the %s grid of %s", template, files.target.name)
        return None
    table = []
    for method, group in rows.groupby("method", sort=True):
        data = mask_frequency([loaded[(r.participant_id, r.session_id, method)] for r in group.itertuples()])
        path = group_dir / f"space-{template}_label-thalamus_desc-{method}_probseg.nii.gz"
        _save(data, reference, path, {
            "Description": f"Fraction of sessions whose desc-{method} thalamus mask contains the voxel",
            "Method": method, "Template": template, "Sessions": len(group), "Units": "probability",
            "Sources": sorted(f"bids::{Path(p).relative_to(config.output_dir).as_posix()}" for p in group["path"])})
        table.append(_row("probability", method, template, data, len(group), path, 0.5, voxel_ml))
    # The desc-<mask>Unfilled twins are the same method on another image, not another method: they would vote
    # twice on the sessions with lesions.
    compared = rows[~rows["method"].astype(str).str.endswith(UNFILLED_SUFFIX)]
    sessions = compared.groupby([compared["participant_id"], compared["session_id"].fillna("")], sort=True)
    per_session = [minority_fraction([loaded[(r.participant_id, r.session_id, r.method)] for r in g.itertuples()])
                   for _, g in sessions if g["method"].nunique() >= 2]
    if per_session:
        data = mean_map(per_session)
        path = group_dir / f"space-{template}_label-thalamus_desc-disagreement_map.nii.gz"
        _save(data, reference, path, {
            "Description": "Per session, the fraction of methods whose mask disagrees with the voxel's majority "
                           "(0 all agree, 0.5 an even split), averaged over the sessions with two or more methods",
            "Template": template, "Sessions": len(per_session), "Methods": sorted(compared["method"].unique())})
        table.append(_row("disagreement", "n/a", template, data, len(per_session), path, 0.25, voxel_ml))
    with atomic_path(group_dir / f"space-{template}_desc-brain_T1w.nii.gz") as tmp:
        tmp.write_bytes(files.target.read_bytes())
    result = pd.DataFrame(table, columns=list(TABLE_COLUMNS))
    write_tsv(result, group_dir / "template_maps.tsv", TABLE_COLUMNS)
    LOGGER.info("template-space maps (%s): %d written", template, len(result))
    return result
