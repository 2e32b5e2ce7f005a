"""FSL FIRST adapter: exact command, FSL discovery, and a full run through the fake run_first_all."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests.conftest import shared_file
from thalamus_bidsapp.errors import ThalamusError
from thalamus_bidsapp.tools import first

FAKES = Path(__file__).parent / "fakes"


def test_command_is_exactly_the_papers(fsl_home: Path, tmp_path: Path) -> None:
    cmd = first.first_command(tmp_path / "brain.nii.gz", tmp_path / "first" / "sub-01")
    assert cmd == [
        str(fsl_home / "bin" / "run_first_all"),
        "-s",
        "L_Thal,R_Thal",
        "-b",
        "-i",
        str(tmp_path / "brain.nii.gz"),
        "-o",
        str(tmp_path / "first" / "sub-01"),
    ]
    assert first.fsl_version() == "6.0.7.9"
    prov = first.provenance(cmd)
    assert prov["Command"].endswith("-s L_Thal,R_Thal -b -i " + str(tmp_path / "brain.nii.gz") + " -o " + str(tmp_path / "first" / "sub-01"))
    assert prov["LabelsTaken"] == {"10": "L_Thal", "49": "R_Thal"}


def test_nipype_first_adds_method_flag(tmp_path: Path) -> None:
    """Why the command is built by hand: nipype's FIRST always adds -m auto and reorders flags."""
    from nipype.interfaces import fsl

    src = tmp_path / "brain.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((2, 2, 2), np.float32), np.eye(4)), src)
    iface = fsl.FIRST(in_file=str(src), out_file=str(tmp_path / "out"), brain_extracted=True,
                      list_of_specific_structures=["L_Thal", "R_Thal"])
    assert iface.cmdline == f"run_first_all -b -m auto -s L_Thal,R_Thal -i {src} -o {tmp_path / 'out'}"
    # nipype's own naming rule for -s with -m auto agrees with the fake: _all_none_firstseg
    assert iface._list_outputs()["segmentation_file"].endswith("out_all_none_firstseg.nii.gz")


def test_missing_fsl_is_exit_66(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FSLDIR", raising=False)
    with pytest.raises(ThalamusError) as err:
        first.find_fsl()
    assert err.value.exit_code == 66 and "FSLDIR" in str(err.value)
    (tmp_path / "bin").mkdir()
    monkeypatch.setenv("FSLDIR", str(tmp_path))
    with pytest.raises(ThalamusError) as err:
        first.first_command(tmp_path / "a.nii.gz", tmp_path / "o")
    assert err.value.exit_code == 66 and "run_first_all" in str(err.value)


def test_brain_masked_t1w_multiplies_by_mask() -> None:
    aff = np.diag([0.8, 0.8, 0.8, 1.0])
    t1 = nib.Nifti1Image(np.arange(24, dtype=np.float32).reshape(2, 3, 4), aff)
    mask = nib.Nifti1Image((np.arange(24).reshape(2, 3, 4) % 2).astype(np.uint8), aff)
    out = first.brain_masked_t1w(t1, mask)
    assert np.array_equal(out.get_fdata(), np.where(np.arange(24).reshape(2, 3, 4) % 2, np.arange(24).reshape(2, 3, 4), 0))
    assert np.allclose(out.affine, aff)
    with pytest.raises(ThalamusError):
        first.brain_masked_t1w(t1, nib.Nifti1Image(np.ones((2, 3, 4), np.uint8), np.eye(4)))


@pytest.mark.slow
def test_fake_first_on_bert_gives_aseg_thalamus_voxel_for_voxel(fsl_home: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    norm = nib.load(shared_file("freesurfer_bert_7.2", "mri", "norm.mgz"))
    brainmask = nib.load(shared_file("freesurfer_bert_7.2", "mri", "brainmask.mgz"))
    aseg_path = shared_file("freesurfer_bert_7.2", "mri", "aseg.mgz")
    monkeypatch.setenv("FAKE_FIRST_ASEG", str(aseg_path))
    # The native T1w as the app has it: a NIfTI on bert's LIA 256^3 grid.
    t1w = nib.Nifti1Image(np.asanyarray(norm.dataobj).astype(np.float32), norm.affine)
    brain = first.brain_masked_t1w(t1w, nib.Nifti1Image(np.asanyarray(brainmask.dataobj), brainmask.affine))
    brain_path = tmp_path / "sub-bert_desc-brain_T1w.nii.gz"
    nib.save(brain, brain_path)

    firstseg = first.run_first(brain_path, tmp_path / "first" / "sub-bert")
    assert firstseg == tmp_path / "first" / "sub-bert_all_none_firstseg.nii.gz"
    for extra in ("sub-bert-L_Thal_first.vtk", "sub-bert-R_Thal_first.bvars", "sub-bert_all_none_origsegs.nii.gz"):
        assert (tmp_path / "first" / extra).is_file()
    seg = nib.load(firstseg)
    assert nib.aff2axcodes(seg.affine) == ("L", "I", "A")
    assert set(np.unique(np.asanyarray(seg.dataobj))) == {0, 10, 49}

    mask = first.first_thalamus_mask(firstseg, t1w)
    aseg = np.asanyarray(nib.load(aseg_path).dataobj)
    expected = np.isin(aseg, (10, 49))
    assert mask.shape == t1w.shape and np.allclose(mask.affine, t1w.affine)
    assert mask.get_data_dtype() == np.uint8
    data = np.asanyarray(mask.dataobj)
    assert int(data.sum()) == 17060
    assert np.array_equal(data.astype(bool), expected)


def test_first_failure_names_command_and_stderr(fsl_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FAKE_FIRST_ASEG", raising=False)
    src = tmp_path / "brain.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4)), src)
    with pytest.raises(ThalamusError) as err:
        first.run_first(src, tmp_path / "first" / "x")
    msg = str(err.value)
    assert "run_first_all -s L_Thal,R_Thal -b -i" in msg and "FAKE_FIRST_ASEG" in msg
    assert err.value.exit_code == 65


def test_firstseg_on_other_grid_is_an_error(tmp_path: Path) -> None:
    seg = tmp_path / "x_all_none_firstseg.nii.gz"
    nib.save(nib.Nifti1Image(np.full((4, 4, 4), 10, np.int16), np.eye(4)), seg)
    t1w = nib.Nifti1Image(np.zeros((4, 4, 5), np.float32), np.eye(4))
    with pytest.raises(ThalamusError, match="not on the grid"):
        first.first_thalamus_mask(seg, t1w)
    assert first.find_firstseg(tmp_path / "x") == seg
