"""Lesion filling through the whole default participant path, on real anatomy: the prior the app computes, and none.

bert's ``norm.mgz`` (256^3, 1 mm) gets planted T1-hypointense lesions (about
8 mL of juxtathalamic white matter lesions 1-5 mm from the thalamus and
0.75 mL inside it); the mask is a ``label-lesion`` derivative. sub-01 is the
lesioned image, sub-02 the same image without lesions (the reference). The
CLI runs with default options (template space with the registered HOSPA
prior, ``--lesion-filling auto``; only ``--methods meshnet`` named, the
method whose thalamus is measured), then sub-01 again with ``--template
none`` (no prior). The filled MeshNet thalamus must stay within 2 % of the
lesion-free one with Dice >= 0.975 in both runs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests.conftest import shared_file
from tests.foundation.datasets import write_description
from tests.lesions.conftest import load_subject
from tests.lesions.planting import plant_lesions
from thalamus_bidsapp.cli.run import main

pytest.importorskip("torch")
pytestmark = [pytest.mark.slow, pytest.mark.heavy]

MESH = "space-T1w_label-thalamus_desc-meshnet_mask.nii.gz"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("default_path")
    anatomy = load_subject("bert")
    planted = plant_lesions(anatomy.t1w, anatomy.aseg, seed=3, juxta_ml=8.0)
    bids, lesions = root / "bids", root / "lesion_tool"
    write_description(bids, "bert with and without planted lesions")
    write_description(lesions, "lesion segmentation")
    for subject, image in (("01", planted.image), ("02", anatomy.t1w)):
        (bids / f"sub-{subject}" / "anat").mkdir(parents=True)
        nib.save(nib.Nifti1Image(image, anatomy.affine), str(bids / f"sub-{subject}" / "anat" /
                                                              f"sub-{subject}_T1w.nii.gz"))
    (lesions / "sub-01" / "anat").mkdir(parents=True)
    nib.save(nib.Nifti1Image(planted.lesion.astype(np.uint8), anatomy.affine),
             str(lesions / "sub-01" / "anat" / "sub-01_label-lesion_mask.nii.gz"))
    (bids / "participants.tsv").write_text("participant_id\tage\tsex\nsub-01\t35\tM\nsub-02\t35\tM\n")
    return {"root": root, "bids": bids, "lesions": lesions, "planted": planted}


def _run(dataset, out: str, *extra: str) -> tuple[int, Path]:
    models = shared_file("brainchop", "models")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("THALAMUS_MESHNET_MODEL", str(models / "model30chan18cls"))
        patch.setenv("THALAMUS_MESHNET_SIDES_MODEL", str(models / "model21_104class"))
        patch.setenv("THALAMUS_TEMPLATE_REGISTRATION", "standard")  # the default schedule, not the tests' fast one
        code = main([str(dataset["bids"]), str(dataset["root"] / out), "participant", "--methods", "meshnet",
                     "--derivatives", f"lesions={dataset['lesions']}", "-w", str(dataset["root"] / "work"),
                     "--nprocs", "1", "--omp-nthreads", str(min(2, os.cpu_count() or 1)), *extra])
    return code, dataset["root"] / out


@pytest.fixture(scope="module")
def default_run(dataset):
    return _run(dataset, "out")


@pytest.fixture(scope="module")
def no_prior_run(dataset):
    return _run(dataset, "out_none", "--template", "none", "--participant-label", "01")


def _mask(out: Path, subject: str) -> np.ndarray:
    return np.asanyarray(nib.load(str(out / f"sub-{subject}" / "anat" / f"sub-{subject}_{MESH}")).dataobj) > 0


def _sidecar(out: Path) -> dict:
    return json.loads((out / "sub-01" / "anat" / "sub-01_desc-lesionfilled_T1w.json").read_text())


def _bias_and_dice(filled: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    bias = 100.0 * (filled.sum() / reference.sum() - 1.0)
    return bias, float(2 * (filled & reference).sum() / (filled.sum() + reference.sum()))


def test_default_path_with_the_registered_prior(default_run, record_property):
    code, out = default_run
    assert code == 0
    sidecar = _sidecar(out)
    assert sidecar["LesionFilled"] is True and sidecar["ThalamusPrior"] and not sidecar["ThalamusFillFallback"]
    bias, dice = _bias_and_dice(_mask(out, "01"), _mask(out, "02"))
    record_property("bias_pct", round(bias, 2))
    record_property("dice", round(dice, 4))
    assert abs(bias) <= 2.0 and dice >= 0.975, (bias, dice)
    qc = (out / "sub-01" / "anat" / "sub-01_label-thalamus_desc-segmentation_qc.tsv").read_text()
    assert "lesion_fill" in qc


def test_default_path_without_a_prior(default_run, no_prior_run, record_property):
    code, out = no_prior_run
    assert code == 0
    sidecar = _sidecar(out)
    assert sidecar["LesionFilled"] is True and sidecar["ThalamusPrior"] is None
    assert sidecar["VoxelsFilledFromThalamus"] > 0  # the intra-thalamic lesions, surrounded by grey matter
    bias, dice = _bias_and_dice(_mask(out, "01"), _mask(default_run[1], "02"))
    record_property("bias_pct", round(bias, 2))
    record_property("dice", round(dice, 4))
    assert abs(bias) <= 2.0 and dice >= 0.975, (bias, dice)
