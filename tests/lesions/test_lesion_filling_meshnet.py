"""MeshNet on real anatomy with planted lesions: the thalamus bias without filling, and with it.

bert and subject2 (FreeSurfer's norm.mgz, 1 mm) get T1-hypointense lesions
(45-65 % of the white-matter intensity) in the juxtathalamic white matter
(about 6 mL, 1-5 mm from the thalamus) and inside the thalamus (about
0.75 mL). MeshNet runs three times per subject: lesion-free, lesioned, and
lesioned then filled, with the white matter estimated from the lesioned
image itself, with a stand-in thalamus prior made from the subject's aseg
(dilated by 2 mm and smoothed: wider than the thalamus, like a registered
prior) and with no prior. The prior the app itself computes is tested
through the whole pipeline in ``test_lesion_filling_default_path.py``. The
bias without filling is recorded (printed and in the junit
properties), the bias with filling asserted.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from tests.conftest import shared_file
from tests.lesions.conftest import load_subject, stand_in_prior
from tests.lesions.planting import plant_lesions
from thalamus_bidsapp.image.lesion_fill import fill_lesions

pytest.importorskip("torch")
pytestmark = [pytest.mark.slow, pytest.mark.heavy]


def _meshnet(data: np.ndarray, affine: np.ndarray) -> np.ndarray:
    from thalamus_bidsapp.tools.meshnet import segment_thalamus

    model = shared_file("brainchop", "models", "model30chan18cls", "model.bin").parent
    mask, _ = segment_thalamus(nib.Nifti1Image(data.astype(np.float32), affine), model, threads=2)
    return np.asanyarray(mask.dataobj) > 0


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


@pytest.mark.parametrize("prior_kind", ["aseg", "none"])
@pytest.mark.parametrize("subject", ["bert", "subject2"])
def test_filling_removes_the_lesion_bias_of_meshnet(subject, prior_kind, record_property, capsys):
    anatomy = load_subject(subject)
    planted = plant_lesions(anatomy.t1w, anatomy.aseg, seed=3)
    assert 5.0 < planted.juxtathalamic_ml < 7.0 and 0.5 < planted.intrathalamic_ml < 1.0
    prior = stand_in_prior(anatomy, dilate=2) >= 0.5 if prior_kind == "aseg" else None
    filled = fill_lesions(planted.image, planted.lesion, anatomy.brain, (1.0, 1.0, 1.0), thalamus=prior, seed=1)
    assert not ((filled.image != planted.image) & ~planted.lesion).any()

    reference = _meshnet(anatomy.t1w, anatomy.affine)
    unfilled = _meshnet(planted.image, anatomy.affine)
    after = _meshnet(filled.image, anatomy.affine)
    bias_unfilled = 100.0 * (unfilled.sum() / reference.sum() - 1)
    bias_filled = 100.0 * (after.sum() / reference.sum() - 1)
    figures = {"lesion_ml": round(float(planted.lesion.sum()) / 1000, 3),
               "bias_unfilled_pct": round(float(bias_unfilled), 2),
               "dice_unfilled": round(_dice(unfilled, reference), 4),
               "bias_filled_pct": round(float(bias_filled), 2), "dice_filled": round(_dice(after, reference), 4)}
    for key, value in figures.items():
        record_property(f"{subject}_{prior_kind}_{key}", value)
    with capsys.disabled():
        print(f"\n{subject} (prior: {prior_kind}): {figures}")
    assert abs(bias_filled) <= 2.0
    assert _dice(after, reference) >= 0.975
