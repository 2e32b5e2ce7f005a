"""Lesion masks in: real MS consensus masks from the FLAIR grid to the T1w grid; bad masks give clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests.conftest import shared_file
from thalamus_bidsapp.errors import ThalamusError
from thalamus_bidsapp.image.lesion_load import lesion_volume_ml
from thalamus_bidsapp.image.nifti import new_image
from thalamus_bidsapp.image.reorient import reorient_to_ras
from thalamus_bidsapp.image.resample import labels_to_grid
from thalamus_bidsapp.interfaces.lesions import lesion_on_t1w

PATIENT = "ms_lesjak2017_mni/patient07"


def _patient(name: str) -> Path:
    return shared_file(*PATIENT.split("/"), name)


def _on_other_grid(img: nib.spatialimages.SpatialImage) -> nib.Nifti1Image:
    """The same image in another storage order (LPS, axes permuted) and crop: same world, different grid."""
    data = np.asarray(img.dataobj)[::-1, ::-1, :][2:-3, 1:-4, 3:-2].transpose(2, 0, 1)
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip[0, 3], flip[1, 3] = img.shape[0] - 1, img.shape[1] - 1
    shift = np.eye(4)
    shift[:3, 3] = [2, 1, 3]
    permute = np.zeros((4, 4))
    permute[0, 1] = permute[1, 2] = permute[2, 0] = permute[3, 3] = 1
    return new_image(np.ascontiguousarray(data), img.affine @ flip @ shift @ permute)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


@pytest.mark.slow
def test_flair_grid_mask_reaches_the_t1w_grid_through_the_registration(tmp_path):
    """ANTs rigid (the registration the app selects without FSL) of a real MS FLAIR carries its consensus mask."""
    from thalamus_bidsapp.tools.registration import register_to_t1w

    t1w = nib.load(_patient("T1_N4_noneck_reduced_winsor_regtoFLAIR_brain_N4_regtoMNI.nii.gz"))
    t1w_file = tmp_path / "t1w.nii.gz"
    nib.save(reorient_to_ras(t1w)[0], t1w_file)
    flair = _on_other_grid(nib.load(_patient("FLAIR_N4_noneck_reduced_winsor_regtoFLAIR_brain_N4_regtoMNI.nii.gz")))
    mask = _on_other_grid(nib.load(_patient("GOLD_STANDARD_N4_noneck_reduced_winsor_regtoFLAIR_regtoMNI.nii.gz")))
    nib.save(flair, tmp_path / "flair.nii.gz")
    nib.save(mask, tmp_path / "sub-07_space-FLAIR_label-lesion_mask.nii.gz")
    moving = tmp_path / "flair_ras.nii.gz"
    nib.save(reorient_to_ras(flair)[0], moving)
    brain = tmp_path / "brain.nii.gz"
    t1_ras = nib.load(t1w_file)
    nib.save(new_image((np.asarray(t1_ras.dataobj) > 0).astype(np.uint8), t1_ras.affine), brain)
    outcome = register_to_t1w(moving, t1w_file, brain, "FLAIR", tmp_path / "reg", fsl_available=False)
    assert not outcome.excluded

    out, provenance = lesion_on_t1w(tmp_path / "sub-07_space-FLAIR_label-lesion_mask.nii.gz", t1w_file,
                                    raw_flair=tmp_path / "flair.nii.gz", flair_transform=outcome.transform,
                                    registered_flair_moving=moving)
    assert provenance["LesionMaskGrid"] == "FLAIR" and provenance["Interpolation"] == "nearest neighbour"
    mapped = np.asarray(out.dataobj) > 0
    known = np.asarray(labels_to_grid(mask, t1_ras).dataobj) > 0  # the known transform: identity in world
    source = np.asarray(mask.dataobj) > 0
    assert dice(mapped, known) >= 0.95
    assert lesion_volume_ml(mapped, out.affine) == pytest.approx(lesion_volume_ml(source, mask.affine), rel=0.01)


def test_t1w_grid_mask_is_taken_as_is(tmp_path):
    t1w = nib.load(_patient("T1_N4_noneck_reduced_winsor_regtoFLAIR_brain_N4_regtoMNI.nii.gz"))
    nib.save(t1w, tmp_path / "t1w.nii.gz")
    mask_file = _patient("GOLD_STANDARD_N4_noneck_reduced_winsor_regtoFLAIR_regtoMNI.nii.gz")
    out, provenance = lesion_on_t1w(mask_file, tmp_path / "t1w.nii.gz")
    assert provenance["LesionMaskGrid"] == "T1w"
    assert np.array_equal(np.asarray(out.dataobj) > 0, np.asarray(nib.load(mask_file).dataobj) > 0)


@pytest.fixture
def t1w_file(tmp_path) -> Path:
    t1w = nib.load(_patient("T1_N4_noneck_reduced_winsor_regtoFLAIR_brain_N4_regtoMNI.nii.gz"))
    path = tmp_path / "t1w.nii.gz"
    nib.save(t1w, path)
    return path


def _save(tmp_path: Path, data: np.ndarray, affine: np.ndarray, name: str) -> Path:
    path = tmp_path / name
    nib.save(nib.Nifti1Image(data, affine), path)
    return path


def test_a_mask_on_an_unmappable_grid_is_a_clear_error(tmp_path, t1w_file):
    ref = nib.load(t1w_file)
    bad = _save(tmp_path, np.zeros((50, 60, 70), np.uint8), ref.affine, "sub-07_label-lesion_mask.nii.gz")
    with pytest.raises(ThalamusError, match="sub-07_label-lesion_mask.nii.gz.*neither the T1w grid.*cannot be mapped"):
        lesion_on_t1w(bad, t1w_file)
    # A FLAIR-grid mask whose FLAIR registration was excluded cannot be mapped either.
    flair = _on_other_grid(ref)
    nib.save(flair, tmp_path / "flair.nii.gz")
    on_flair = _save(tmp_path, np.zeros(flair.shape, np.uint8), flair.affine, "sub-07_desc-lesion_mask.nii.gz")
    with pytest.raises(ThalamusError, match="desc-lesion_mask.nii.gz is on the FLAIR grid but the FLAIR registration"):
        lesion_on_t1w(on_flair, t1w_file, raw_flair=tmp_path / "flair.nii.gz")


def test_a_non_binary_mask_is_a_clear_error(tmp_path, t1w_file):
    ref = nib.load(t1w_file)
    probabilities = np.zeros(ref.shape, np.float32)
    probabilities[90:95, 100:105, 80:85] = 0.7
    path = _save(tmp_path, probabilities, ref.affine, "sub-07_label-lesion_mask.nii.gz")
    with pytest.raises(ThalamusError, match="lesion mask .*label-lesion_mask.nii.gz is not binary \\(values 0, 0.7\\)"):
        lesion_on_t1w(path, t1w_file)


def test_a_dseg_needs_a_lookup_naming_the_lesion(tmp_path, t1w_file):
    ref = nib.load(t1w_file)
    labels = np.zeros(ref.shape, np.int16)
    labels[90:95, 100:105, 80:85] = 3
    labels[60:62, 60:62, 60:62] = 1
    path = _save(tmp_path, labels, ref.affine, "sub-07_desc-lesion_dseg.nii.gz")
    with pytest.raises(ThalamusError, match="desc-lesion_dseg.nii.gz has no lookup table"):
        lesion_on_t1w(path, t1w_file)
    (tmp_path / "sub-07_desc-lesion_dseg.tsv").write_text("index\tname\n1\twhite matter\n3\tWM lesion\n")
    out, _ = lesion_on_t1w(path, t1w_file)
    assert np.array_equal(np.asarray(out.dataobj) > 0, labels == 3)


def test_an_empty_mask_fills_nothing_and_says_so(tmp_path, t1w_file):
    from thalamus_bidsapp.interfaces.lesions import LesionFill, LesionMaskToT1w

    ref = nib.load(t1w_file)
    empty = _save(tmp_path, np.zeros(ref.shape, np.uint8), ref.affine, "sub-07_label-lesion_mask.nii.gz")
    brain = _save(tmp_path, (np.asarray(ref.dataobj) > 0).astype(np.uint8), ref.affine, "brain.nii.gz")
    (tmp_path / "mask").mkdir()
    (tmp_path / "fill").mkdir()
    mask = LesionMaskToT1w(lesion_file=str(empty), t1w=str(t1w_file)).run(cwd=str(tmp_path / "mask"))
    fill = LesionFill(t1w=str(t1w_file), lesion_mask=mask.outputs.out_file, brain_mask=str(brain)).run(
        cwd=str(tmp_path / "fill"))
    assert fill.outputs.out_file == str(t1w_file)  # the methods get the input T1w, untouched
    provenance = json.loads(Path(fill.outputs.provenance_file).read_text())
    assert provenance["LesionFilled"] is False and provenance["Reason"] == "empty lesion mask"
    assert not (tmp_path / "fill" / "t1w_lesionfilled.nii.gz").exists()


def test_whether_the_mask_waits_for_the_flair_registration_is_read_from_the_headers(tmp_path, t1w_file):
    from thalamus_bidsapp.interfaces.lesions import needs_flair_transform

    ref = nib.load(t1w_file)
    flair = _save(tmp_path, np.zeros((40, 50, 30), np.float32), ref.affine, "flair.nii.gz")
    on_t1w = _save(tmp_path, np.zeros(ref.shape, np.uint8), ref.affine, "on_t1w.nii.gz")
    on_flair = _save(tmp_path, np.zeros((40, 50, 30), np.uint8), ref.affine, "on_flair.nii.gz")
    unreadable = tmp_path / "broken.nii.gz"
    unreadable.write_bytes(b"not an image")
    assert not needs_flair_transform(on_t1w, t1w_file, flair)
    assert needs_flair_transform(on_flair, t1w_file, flair)
    assert needs_flair_transform(unreadable, t1w_file, flair)


def test_the_fraction_of_lesion_voxels_outside_the_brain_is_recorded_and_a_large_one_warned(tmp_path, t1w_file,
                                                                                            caplog):
    import logging

    from thalamus_bidsapp.image.lesion_load import fraction_outside
    from thalamus_bidsapp.interfaces.lesions import LesionMaskToT1w

    ref = nib.load(t1w_file)
    brain = np.zeros(ref.shape, np.uint8)
    brain[40:-40, 40:-40, 30:-30] = 1
    lesion = np.zeros(ref.shape, np.uint8)
    lesion[60:64, 60:64, 50:54] = 1  # 64 voxels inside the brain
    lesion[2:4, 2:4, 2:4] = 1  # 8 outside
    assert fraction_outside(lesion, brain) == pytest.approx(8 / 72)
    assert fraction_outside(np.zeros_like(lesion), brain) is None
    with pytest.raises(ValueError, match="same grid"):
        fraction_outside(lesion, brain[1:])
    brain_file = _save(tmp_path, brain, ref.affine, "brain.nii.gz")
    lesion_file = _save(tmp_path, lesion, ref.affine, "sub-07_label-lesion_mask.nii.gz")
    (tmp_path / "mask").mkdir()
    with caplog.at_level(logging.WARNING):
        result = LesionMaskToT1w(lesion_file=str(lesion_file), t1w=str(t1w_file), brain_mask=str(brain_file)).run(
            cwd=str(tmp_path / "mask"))
    provenance = json.loads(Path(result.outputs.provenance_file).read_text())
    assert provenance["LesionFractionOutsideBrainMask"] == pytest.approx(8 / 72, abs=1e-4)
    assert "11 % of its voxels are outside the T1w brain mask" in caplog.text
