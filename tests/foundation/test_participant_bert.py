"""End to end on bert: participant then group through main(argv), on real FreeSurfer output."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests.conftest import shared_file
from tests.foundation.datasets import (
    BERT_THALAMUS_VOXELS,
    make_bert_dataset,
    make_read_only,
    make_writable,
    tree_digest,
)
from thalamus_bidsapp.bidsio.atomic import read_tsv
from thalamus_bidsapp.cli.run import main
from thalamus_bidsapp.tools.freesurfer import read_etiv


# Every test reads the participant and group run of bert_run: about 2 CPU-minutes, so not in the fast tier.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bert_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("bert")
    bids, subjects_dir = make_bert_dataset(root)
    make_read_only(bids)
    before = tree_digest(bids)
    out, work = root / "out", root / "work"
    argv = [str(bids), str(out), "participant", "--participant-label", "01",
            "--fs-subjects-dir", str(subjects_dir), "-w", str(work), "--nprocs", "1"]
    code = main(argv)
    group_code = main([str(bids), str(out), "group", "-w", str(work)])
    yield {"bids": bids, "out": out, "work": work, "argv": argv, "code": code,
           "group_code": group_code, "before": before}
    make_writable(bids)


def test_exit_codes(bert_run):
    assert bert_run["code"] == 0 and bert_run["group_code"] == 0


def test_freesurfer_mask_has_exactly_the_aseg_thalamus(bert_run):
    mask_path = bert_run["out"] / "sub-01" / "anat" / "sub-01_space-T1w_label-thalamus_desc-freesurfer_mask.nii.gz"
    mask = nib.load(str(mask_path))
    data = np.asanyarray(mask.dataobj)
    assert set(np.unique(data)) == {0, 1}
    assert int(data.sum()) == BERT_THALAMUS_VOXELS == 17060
    # On the grid of the published (reoriented) T1w.
    t1w = nib.load(str(mask_path.parent / "sub-01_desc-preproc_T1w.nii.gz"))
    assert mask.shape == t1w.shape and np.allclose(mask.affine, t1w.affine)
    assert "".join(nib.aff2axcodes(mask.affine)) == "RAS"
    sidecar = json.loads(mask_path.with_name(mask_path.name.replace(".nii.gz", ".json")).read_text())
    assert sidecar["LabelsUsed"] == {"10": "Left-Thalamus", "49": "Right-Thalamus"}
    assert sidecar["Version"] == "7.2.0-beta"
    assert sidecar["SpatialReference"].endswith("sub-01_desc-preproc_T1w.nii.gz")


def test_volumes_table_and_icv(bert_run):
    table = read_tsv(bert_run["out"] / "sub-01" / "anat" / "sub-01_label-thalamus_volumes.tsv")
    row = table[table.hemisphere == "bilateral"].set_index("method").loc["freesurfer"]
    etiv = read_etiv(shared_file("freesurfer_bert_7.2", "stats", "aseg.stats"))
    assert row["n_voxels"] == 17060
    assert row["volume_ml"] == pytest.approx(17.06)
    assert row["icv_ml"] == pytest.approx(etiv / 1000.0)
    assert "eTIV" in row["icv_source"]
    sidecar = json.loads((bert_run["out"] / "sub-01" / "anat" / "sub-01_label-thalamus_volumes.json").read_text())
    assert sidecar["volume_ml"]["Units"] == "mL"


def test_freesurfer_sides_are_aseg_10_and_49(bert_run):
    anat = bert_run["out"] / "sub-01" / "anat"
    dseg_path = anat / "sub-01_space-T1w_seg-thalamus_desc-freesurfer_dseg.nii.gz"
    dseg, mask = nib.load(str(dseg_path)), nib.load(str(anat / "sub-01_space-T1w_label-thalamus_desc-freesurfer_mask.nii.gz"))
    sides = np.asanyarray(dseg.dataobj)
    # On the native (cropped, reoriented) T1w grid: exactly aseg 10 and 49, their union the bilateral mask.
    assert dseg.shape == mask.shape and np.allclose(dseg.affine, mask.affine)
    assert set(np.unique(sides)) == {0, 1, 2}
    assert int((sides == 1).sum()) == 8431 and int((sides == 2).sum()) == 8629
    assert np.array_equal(sides > 0, np.asanyarray(mask.dataobj) > 0)
    # Left is the subject's left: smaller world x (RAS+).
    left_x, right_x = ((dseg.affine @ np.r_[np.argwhere(sides == v).mean(axis=0), 1])[0] for v in (1, 2))
    assert left_x < right_x
    lookup = read_tsv(dseg_path.with_name(dseg_path.name.replace(".nii.gz", ".tsv")))
    assert list(lookup["index"]) == [0, 1, 2] and list(lookup["name"])[1:] == ["Left-Thalamus", "Right-Thalamus"]
    sidecar = json.loads(dseg_path.with_name(dseg_path.name.replace(".nii.gz", ".json")).read_text())
    assert sidecar["SideLabels"]["Left"] == [10] and sidecar["SideLabels"]["Right"] == [49]
    assert sidecar["SpatialReference"].endswith("sub-01_desc-preproc_T1w.nii.gz")
    assert sidecar["Sources"][0].endswith("sub-01_space-T1w_label-thalamus_desc-freesurfer_mask.nii.gz")
    table = read_tsv(anat / "sub-01_label-thalamus_volumes.tsv")
    rows = table[table.method == "freesurfer"].set_index("hemisphere")
    assert list(rows.index) == ["bilateral", "left", "right"]
    assert list(rows["n_voxels"]) == [17060, 8431, 8629]
    group = read_tsv(bert_run["out"] / "group" / "volumes.tsv")
    group = group[group.method == "freesurfer"]
    assert list(group["hemisphere"]) == ["bilateral", "left", "right"]
    assert group["asymmetry_index"].tolist() == pytest.approx([(8.431 - 8.629) / (17.06 / 2)] * 3)


def test_brain_mask_covers_the_brain(bert_run):
    mask = nib.load(str(bert_run["out"] / "sub-01" / "anat" / "sub-01_space-T1w_desc-brain_mask.nii.gz"))
    thalamus = nib.load(str(bert_run["out"] / "sub-01" / "anat"
                            / "sub-01_space-T1w_label-thalamus_desc-freesurfer_mask.nii.gz"))
    brain, thal = np.asanyarray(mask.dataobj) > 0, np.asanyarray(thalamus.dataobj) > 0
    # bert's brain is about 1.2-1.5 L; all of the thalamus lies inside the brain mask.
    assert 1000 < brain.sum() / 1000 < 1800
    assert (thal & brain).sum() / thal.sum() > 0.99


def test_group_volumes_table(bert_run):
    table = read_tsv(bert_run["out"] / "group" / "volumes.tsv")
    row = table[(table.participant_id == "sub-01") & (table.method == "freesurfer")].iloc[0]
    assert row["volume_ml"] == pytest.approx(17.06)
    assert row["icv_ml"] == pytest.approx(1520.021264474)
    assert row["age"] == 30 and row["sex"] == "M"
    assert (bert_run["out"] / "group" / "volumes.json").is_file()


def test_outputs_dataset_and_logs(bert_run):
    out = bert_run["out"]
    desc = json.loads((out / "dataset_description.json").read_text())
    assert desc["DatasetType"] == "derivative"
    assert "freesurfer" in (out / "logs" / "CITATION.md").read_text().lower()
    configs = [json.loads((run_dir / "config.json").read_text())
               for run_dir in (out / "logs").iterdir() if run_dir.is_dir()]
    assert {"group", "participant"} <= {c["analysis_level"] for c in configs}
    assert not list(out.rglob(".*.tmp*")), "temporary files left behind"


def test_input_tree_untouched(bert_run):
    assert tree_digest(bert_run["bids"]) == bert_run["before"]


def test_second_run_redoes_nothing(bert_run):
    out, work = bert_run["out"], bert_run["work"]
    outputs = {p: p.stat().st_mtime_ns for p in (out / "sub-01").rglob("*") if p.is_file()}
    results = {p: p.stat().st_mtime_ns for p in work.rglob("result_*.pklz") if "/ds_" not in str(p)}
    assert results
    assert main(bert_run["argv"]) == 0
    assert {p: p.stat().st_mtime_ns for p in outputs} == outputs
    assert {p: p.stat().st_mtime_ns for p in results} == results


def test_bids_validator_finds_no_errors(bert_run):
    beside_python = Path(sys.executable).with_name("bids-validator-deno")
    validator = str(beside_python) if beside_python.exists() else shutil.which("bids-validator-deno")
    if validator is None:
        pytest.skip("bids-validator-deno is not installed")
    import subprocess

    result = subprocess.run([validator, str(bert_run["out"]), "--format", "json"],
                            capture_output=True, text=True, timeout=600)
    report = json.loads(result.stdout)
    errors = [i for i in report["issues"]["issues"] if i["severity"] == "error"]
    assert errors == [], errors


def test_template_space_transforms_prior_and_masks(bert_run):
    """Default template: transforms both ways, the prior per side on the T1w grid, the masks in template space."""
    from thalamus_bidsapp.image.prior import prior_mask

    anat = bert_run["out"] / "sub-01" / "anat"
    template = "MNI152NLin2009cAsym"
    for name in (f"sub-01_from-T1w_to-{template}_mode-image_xfm", f"sub-01_from-{template}_to-T1w_mode-image_xfm"):
        assert (anat / f"{name}.h5").stat().st_size > 1000
        sidecar = json.loads((anat / f"{name}.json").read_text())
        assert sidecar["Template"] == template and sidecar["Registration"]["Software"] == "antspyx"
    t1w = nib.load(str(anat / "sub-01_desc-preproc_T1w.nii.gz"))
    sides = nib.load(str(anat / "sub-01_space-T1w_seg-thalamus_desc-freesurfer_dseg.nii.gz")).get_fdata()
    priors = {}
    for side, label in (("L", 1), ("R", 2)):
        path = anat / f"sub-01_hemi-{side}_space-T1w_label-thalamus_desc-prior_probseg.nii.gz"
        prior = nib.load(str(path))
        priors[side] = prior
        data = prior.get_fdata()
        assert prior.get_data_dtype() == np.float32 and data.min() >= 0.0 and data.max() <= 1.0
        assert prior.shape == t1w.shape and np.allclose(prior.affine, t1w.affine)
        sidecar = json.loads(path.with_name(path.name.replace(".nii.gz", ".json")).read_text())
        assert sidecar["Atlas"] == "HOSPA" and sidecar["Template"] == template and sidecar["Hemisphere"] == side
        assert sidecar["Transform"].endswith(f"sub-01_from-{template}_to-T1w_mode-image_xfm.h5")
        truth = sides == label
        dice = 2 * np.logical_and(data >= 0.5, truth).sum() / ((data >= 0.5).sum() + truth.sum())
        assert dice >= 0.75, f"prior {side}: Dice {dice:.3f} with the aseg thalamus"
    assert int(prior_mask(priors["L"], priors["R"]).get_fdata().sum()) > 10000
    mask = nib.load(str(anat / f"sub-01_space-{template}_label-thalamus_desc-freesurfer_mask.nii.gz"))
    assert mask.shape == (97, 115, 97) and mask.get_data_dtype() == np.uint8
    assert 8000 < mask.get_fdata().sum() * 8.0 < 30000  # mm3 at 2 mm: a plausible thalamus in MNI space
