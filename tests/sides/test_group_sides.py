"""Group level: per-side agreement with manual masks that have sides; the asymmetry index; bilateral clinical input."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from thalamus_bidsapp.bidsio.atomic import read_tsv
from thalamus_bidsapp.config import RunConfig
from thalamus_bidsapp.group.runner import collect_manual_masks, collect_manual_sides, run_agreement_step

AFFINE = np.diag([1.0, 1.0, 1.0, 1.0])


def _save(data: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data.astype(np.uint8), AFFINE), str(path))
    return path


def _description(root: Path, kind: str = "derivative") -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text(json.dumps(
        {"Name": "x", "BIDSVersion": "1.10.0", "DatasetType": kind, "GeneratedBy": [{"Name": "manual"}]}))


def _sides(shift: int = 0) -> np.ndarray:
    sides = np.zeros((20, 8, 8), np.uint8)
    sides[2 + shift:9 + shift, 2:6, 2:6] = 1
    sides[11:18, 2:6, 2:6] = 2
    return sides


@pytest.fixture
def group_tree(tmp_path: Path) -> dict:
    out, manual, bids = tmp_path / "out", tmp_path / "manual", tmp_path / "bids"
    _description(bids, "raw")
    _description(manual)
    for sub, shift in (("01", 0), ("02", 1), ("03", 0)):
        anat = out / f"sub-{sub}" / "anat"
        method_sides = _sides(shift)
        _save(method_sides > 0, anat / f"sub-{sub}_space-T1w_label-thalamus_desc-first_mask.nii.gz")
        _save(method_sides, anat / f"sub-{sub}_space-T1w_seg-thalamus_desc-first_dseg.nii.gz")
    truth = _sides()
    # sub-01: a manual dseg (1 left, 2 right); sub-02: per-side masks; sub-03: a bilateral mask only.
    _save(truth, manual / "sub-01" / "anat" / "sub-01_label-thalamus_desc-manual_dseg.nii.gz")
    _save(truth == 1, manual / "sub-02" / "anat" / "sub-02_hemi-L_label-thalamus_desc-manual_mask.nii.gz")
    _save(truth == 2, manual / "sub-02" / "anat" / "sub-02_hemi-R_label-thalamus_desc-manual_mask.nii.gz")
    _save(truth > 0, manual / "sub-02" / "anat" / "sub-02_label-thalamus_desc-manual_mask.nii.gz")
    _save(truth > 0, manual / "sub-03" / "anat" / "sub-03_label-thalamus_desc-manual_mask.nii.gz")
    config = RunConfig(bids_dir=bids, output_dir=out, analysis_level="group", work_dir=tmp_path / "work",
                       derivatives={"manual": manual})
    return {"out": out, "config": config}


def test_manual_masks_with_sides_are_collected(group_tree) -> None:
    config = group_tree["config"]
    bilateral = collect_manual_masks(config)
    assert sorted(bilateral["participant_id"]) == ["sub-01", "sub-02", "sub-03"]
    assert all("hemi-" not in Path(p).name for p in bilateral["path"])
    sides = collect_manual_sides(config).set_index("participant_id")
    assert Path(sides.loc["sub-01", "path"]).name.endswith("_dseg.nii.gz")
    assert Path(sides.loc["sub-02", "left"]).name.startswith("sub-02_hemi-L")
    assert sides.loc["sub-03", "left"] is None


def test_per_side_dice_from_a_manual_dseg_and_per_side_masks(group_tree) -> None:
    group_dir = group_tree["out"] / "group"
    run_agreement_step(group_tree["config"], group_dir)
    table = read_tsv(group_dir / "agreement_sides_voxelwise.tsv")
    # sub-03's manual mask has no sides: no rows; sub-01 exact; sub-02's left is shifted by one voxel.
    assert sorted(set(table["participant_id"])) == ["sub-01", "sub-02"]
    rows = table.set_index(["participant_id", "hemisphere"])
    assert rows.loc[("sub-01", "left"), "dice"] == 1.0 and rows.loc[("sub-01", "right"), "dice"] == 1.0
    assert rows.loc[("sub-02", "left"), "dice"] == pytest.approx(2 * 6 / 14)
    assert rows.loc[("sub-02", "right"), "dice"] == 1.0
    assert rows.loc[("sub-01", "left"), "volume_manual_ml"] == pytest.approx(7 * 16 / 1000)
    summary = read_tsv(group_dir / "agreement_sides_summary.tsv")
    assert set(summary["hemisphere"]) == {"left", "right"}
    # The bilateral agreement is unchanged: every session with a manual mask (the dseg binarised).
    bilateral = read_tsv(group_dir / "agreement_voxelwise.tsv")
    assert sorted(bilateral["participant_id"]) == ["sub-01", "sub-02", "sub-03"]
    assert bilateral.set_index("participant_id").loc["sub-01", "dice"] == 1.0
