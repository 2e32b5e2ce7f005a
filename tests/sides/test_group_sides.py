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
    method_masks = pd.DataFrame([
        {"participant_id": f"sub-{sub}", "session_id": None, "method": "first",
         "path": group_tree["out"] / f"sub-{sub}" / "anat" / f"sub-{sub}_space-T1w_label-thalamus_desc-first_mask.nii.gz"}
        for sub in ("01", "02", "03")])
    excluded = run_agreement_step(group_tree["config"], group_dir, method_masks)
    assert excluded.empty
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


# --------------------------------------------------------------------------- clinical hemispheres


def _with_sides(volumes: pd.DataFrame, seed: int = 3) -> pd.DataFrame:
    """Each bilateral row split into a left and a right row (left 48-52% of the total)."""
    rng = np.random.default_rng(seed)
    share = rng.uniform(0.48, 0.52, len(volumes))
    left = volumes.assign(hemisphere="left", volume_ml=volumes["volume_ml"] * share)
    right = volumes.assign(hemisphere="right", volume_ml=volumes["volume_ml"] * (1 - share))
    return pd.concat([volumes.assign(hemisphere="bilateral"), left, right], ignore_index=True)


def test_clinical_models_run_on_the_configured_hemispheres(tmp_path: Path) -> None:
    from tests.simulate_cohort import simulate_cohort
    from thalamus_bidsapp.errors import ThalamusError
    from thalamus_bidsapp.group.clinical.runner import run_clinical

    volumes = _with_sides(simulate_cohort(n_subjects=40, n_sessions=1, seed=2, missing_fraction=0).joined())
    default = run_clinical(volumes, None, tmp_path / "default", figures=False)["crosssectional"]
    assert not default["method"].str.endswith(("_left", "_right")).any()
    bilateral_methods = sorted(set(default["method"]))
    config = tmp_path / "clinical.yaml"
    config.write_text("hemispheres: [left, right, bilateral]\n")
    every = run_clinical(volumes, config, tmp_path / "all", figures=False)["crosssectional"]
    assert sorted(set(every["method"])) == sorted(
        [m for base in bilateral_methods for m in (base, f"{base}_left", f"{base}_right")])
    # The FDR family grows threefold: the bilateral rows' p_fdr change, their p do not.
    assert len(every) == 3 * len(default)
    merged = default.merge(every, on=["method", "contrast", "outcome"], suffixes=("_one", "_all"))
    np.testing.assert_allclose(merged["p_one"], merged["p_all"])
    assert (merged["p_fdr_all"] >= merged["p_fdr_one"] - 1e-12).all()
    config.write_text("hemispheres: [middle]\n")
    with pytest.raises(ThalamusError, match="hemispheres"):
        run_clinical(volumes, config, tmp_path / "bad", figures=False)
