"""MeshNet's bilateral mask split into left and right by brainchop's 104-class model, on real anatomy."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from tests.conftest import shared_file
from thalamus_bidsapp.image.sides import LEFT, RIGHT
from thalamus_bidsapp.tools import meshnet
from thalamus_bidsapp.tools.meshnet import segment_thalamus_sides

CASES = [
    ("bert", ("freesurfer_bert_7.2", "mri", "norm.mgz"), ("freesurfer_bert_7.2", "mri", "aseg.mgz")),
    ("subject2", ("freesurfer_subject2", "norm.mgz"), ("freesurfer_subject2", "aparc.a2009s+aseg.mgz")),
]


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    return 2.0 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


@pytest.mark.slow
@pytest.mark.parametrize(("case", "t1_parts", "aseg_parts"), CASES, ids=[c[0] for c in CASES])
def test_meshnet_sides_match_aseg_left_and_right(case, t1_parts, aseg_parts) -> None:
    t1 = nib.load(shared_file(*t1_parts))
    aseg = np.asarray(nib.load(shared_file(*aseg_parts)).dataobj)
    mask, sides, provenance = segment_thalamus_sides(
        t1, shared_file("brainchop", "models", "model30chan18cls"),
        shared_file("brainchop", "models", "model21_104class"), threads=2)

    bilateral = np.asarray(mask.dataobj)
    # The union of the sides is exactly the 18-class bilateral mask, which is unchanged.
    np.testing.assert_array_equal(sides > 0, bilateral > 0)
    alone, _ = meshnet.segment_thalamus(t1, shared_file("brainchop", "models", "model30chan18cls"), threads=2)
    np.testing.assert_array_equal(np.asarray(alone.dataobj), bilateral)
    left, right = dice(sides == LEFT, aseg == 10), dice(sides == RIGHT, aseg == 49)
    print(f"{case}: MeshNet sides Dice vs aseg left {left:.4f} right {right:.4f}")
    assert left >= 0.86 and right >= 0.86
    assert provenance["Sides"]["Model"] == "model21_104class"
    assert provenance["Sides"]["ClassIndex"] == [69, 70]
    assert provenance["Sides"]["LeftClass"].startswith("Left-Thalamus")
    json.dumps(provenance)


@pytest.mark.slow
@pytest.mark.parametrize("t1_parts", [("freesurfer_bert_7.2", "mri", "norm.mgz"),
                                      ("ms_lesjak2017_mni", "patient07",
                                       "T1_N4_noneck_reduced_winsor_regtoFLAIR_brain_N4_regtoMNI.nii.gz")],
                         ids=["bert", "patient07"])
def test_the_sides_model_on_the_thalamus_box_labels_it_as_the_whole_crop_does(t1_parts) -> None:
    """The box of the bilateral mask plus the model's receptive field: the same labels there, far fewer voxels."""
    from thalamus_bidsapp.image.conform import conform
    from thalamus_bidsapp.tools.meshnet_models import SIDES_MODEL, model_spec

    t1 = nib.load(shared_file(*t1_parts))
    sides_dir = shared_file("brainchop", "models", "model21_104class")
    bilateral = meshnet.segment_conformed(t1, shared_file("brainchop", "models", "model30chan18cls"), threads=2)
    volume = np.asarray(conform(t1).dataobj)
    whole = meshnet.label_conformed(volume, sides_dir, model_spec(SIDES_MODEL), crop=True, threads=2)
    boxed = meshnet.label_conformed(volume, sides_dir, model_spec(SIDES_MODEL), crop=True, threads=2,
                                    around=bilateral.thalamus)
    inside = meshnet.box_around(bilateral.thalamus > 0, 0)
    np.testing.assert_array_equal(boxed.labels[inside], whole.labels[inside])
    voxels = [np.prod([s.stop - s.start for s in run.box]) for run in (whole, boxed)]
    assert voxels[1] < 0.75 * voxels[0]
    assert meshnet.receptive_radius(meshnet.load_meshnet(sides_dir, model=SIDES_MODEL)[0]) == 45
