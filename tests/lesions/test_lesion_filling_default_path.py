"""Lesion filling through the whole default participant path, on real anatomy: the prior the app computes, and none.

bert's and subject2's ``norm.mgz`` (256^3, 1 mm) get planted T1-hypointense
lesions (seed 3): about 8 mL of juxtathalamic white matter lesions 1-5 mm
from the thalamus, about 0.75 mL inside it, or both; the masks are
``label-lesion`` derivatives. Each anatomy is one dataset: ``sub-both``,
``sub-juxta`` and ``sub-intra`` are the lesioned images, ``sub-ref`` the same
image without lesions. The CLI runs the lesioned subjects with default
options (template space with the registered HOSPA prior, ``--lesion-filling
auto``, the standard registration schedule; only ``--methods meshnet`` named,
the method whose thalamus is measured), then again with ``--template none``
(no prior); the reference runs once, with ``--template none`` (no lesion
mask, so nothing is filled and the prior does not touch its MeshNet mask).
The filled MeshNet thalamus must stay within 2 % of the lesion-free one with
Dice >= 0.975 in every case; the figures are recorded in the junit
properties and printed.
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
#: subject label -> the lesion kinds planted (same seed: the juxtathalamic lesions of "both" and "juxta" agree)
CASES = {"both": ("juxta", "intra"), "juxta": ("juxta",), "intra": ("intra",)}
REFERENCE = "ref"


@pytest.fixture(scope="module", params=["bert", "subject2"])
def dataset(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"default_path_{request.param}")
    anatomy = load_subject(request.param)
    bids, lesions = root / "bids", root / "lesion_tool"
    write_description(bids, f"{request.param} with and without planted lesions")
    write_description(lesions, "lesion segmentation")
    images, planted_ml = {REFERENCE: anatomy.t1w}, {}
    for label, kinds in CASES.items():
        planted = plant_lesions(anatomy.t1w, anatomy.aseg, seed=3, juxta_ml=8.0, kinds=kinds)
        images[label] = planted.image
        planted_ml[label] = (planted.juxtathalamic_ml, planted.intrathalamic_ml)
        (lesions / f"sub-{label}" / "anat").mkdir(parents=True)
        nib.save(nib.Nifti1Image(planted.lesion.astype(np.uint8), anatomy.affine),
                 str(lesions / f"sub-{label}" / "anat" / f"sub-{label}_label-lesion_mask.nii.gz"))
    for label, image in images.items():
        (bids / f"sub-{label}" / "anat").mkdir(parents=True)
        nib.save(nib.Nifti1Image(image, anatomy.affine), str(bids / f"sub-{label}" / "anat" /
                                                            f"sub-{label}_T1w.nii.gz"))
    rows = "".join(f"sub-{label}\t35\tM\n" for label in images)
    (bids / "participants.tsv").write_text("participant_id\tage\tsex\n" + rows)
    return {"subject": request.param, "root": root, "bids": bids, "lesions": lesions, "planted_ml": planted_ml}


def _run(dataset, out: str, labels, *extra: str) -> tuple[int, Path]:
    models = shared_file("brainchop", "models")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("THALAMUS_MESHNET_MODEL", str(models / "model30chan18cls"))
        patch.setenv("THALAMUS_MESHNET_SIDES_MODEL", str(models / "model21_104class"))
        patch.setenv("THALAMUS_TEMPLATE_REGISTRATION", "standard")  # the default schedule, not the tests' fast one
        code = main([str(dataset["bids"]), str(dataset["root"] / out), "participant", "--methods", "meshnet",
                     "--derivatives", f"lesions={dataset['lesions']}", "-w", str(dataset["root"] / "work"),
                     "--participant-label", *labels,
                     "--nprocs", "1", "--omp-nthreads", str(min(2, os.cpu_count() or 1)), *extra])
    return code, dataset["root"] / out


@pytest.fixture(scope="module")
def reference_run(dataset):
    return _run(dataset, "out_reference", [REFERENCE], "--template", "none")


@pytest.fixture(scope="module")
def default_run(dataset):
    return _run(dataset, "out", list(CASES))


@pytest.fixture(scope="module")
def no_prior_run(dataset):
    return _run(dataset, "out_none", list(CASES), "--template", "none")


def _mask(out: Path, subject: str) -> np.ndarray:
    return np.asanyarray(nib.load(str(out / f"sub-{subject}" / "anat" / f"sub-{subject}_{MESH}")).dataobj) > 0


def _sidecar(out: Path, subject: str) -> dict:
    return json.loads((out / f"sub-{subject}" / "anat" / f"sub-{subject}_desc-lesionfilled_T1w.json").read_text())


def _check(dataset, run, reference_run, case: str, prior: str, record_property, capsys) -> dict:
    """The filled thalamus of ``case`` against the lesion-free one: figures recorded, then asserted."""
    code, out = run
    assert code == 0 and reference_run[0] == 0
    filled, reference = _mask(out, case), _mask(reference_run[1], REFERENCE)
    bias = 100.0 * (filled.sum() / reference.sum() - 1.0)
    dice = float(2 * (filled & reference).sum() / (filled.sum() + reference.sum()))
    juxta_ml, intra_ml = dataset["planted_ml"][case]
    figures = {"juxta_ml": round(float(juxta_ml), 2), "intra_ml": round(float(intra_ml), 2),
               "bias_pct": round(float(bias), 2), "dice": round(dice, 4)}
    for key, value in figures.items():
        record_property(f"{dataset['subject']}_{case}_{prior}_{key}", value)
    with capsys.disabled():
        print(f"\n{dataset['subject']} {case} (prior: {prior}): {figures}")
    assert abs(bias) <= 2.0 and dice >= 0.975, figures
    sidecar = _sidecar(out, case)
    assert sidecar["LesionFilled"] is True and not sidecar.get("ThalamusFillFallback")
    if "intra" in CASES[case]:
        assert sidecar["VoxelsFilledFromThalamus"] > 0  # inside the prior, or surrounded by grey matter
    return sidecar


@pytest.mark.parametrize("case", list(CASES))
def test_default_path_with_the_registered_prior(dataset, default_run, reference_run, case, record_property,
                                                capsys):
    sidecar = _check(dataset, default_run, reference_run, case, "registered", record_property, capsys)
    assert sidecar["ThalamusPrior"]
    qc = (default_run[1] / f"sub-{case}" / "anat" / f"sub-{case}_label-thalamus_desc-segmentation_qc.tsv")
    assert "lesion_fill" in qc.read_text()


@pytest.mark.parametrize("case", list(CASES))
def test_default_path_without_a_prior(dataset, no_prior_run, reference_run, case, record_property, capsys):
    sidecar = _check(dataset, no_prior_run, reference_run, case, "none", record_property, capsys)
    assert sidecar["ThalamusPrior"] is None
