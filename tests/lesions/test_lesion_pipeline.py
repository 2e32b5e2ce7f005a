"""The participant and group levels with a lesion mask and ``--lesion-filling both``, on real anatomy.

bert's T1w (cropped around the thalamus) with planted T1-hypointense lesions;
the lesion mask comes from a derivatives dataset under a lesion tool's name
(``desc-lesion_mask``). MeshNet is real; FIRST is the test suite's fake.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests.conftest import shared_file
from tests.foundation.datasets import write_description
from tests.lesions.planting import plant_lesions
from thalamus_bidsapp.bidsio.atomic import read_tsv
from thalamus_bidsapp.cli.run import main

pytest.importorskip("torch")
pytestmark = pytest.mark.slow

FAKES = Path(__file__).parents[1] / "fakes"
HALF_WIDTH = (48, 30, 48)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("lesions")
    aseg_img = nib.load(str(shared_file("freesurfer_bert_7.2", "mri", "aseg.mgz")))
    aseg = np.asanyarray(aseg_img.dataobj)
    centre = np.array(np.nonzero(np.isin(aseg, [10, 49]))).mean(axis=1).round().astype(int)
    window = tuple(slice(c - h, c + h) for c, h in zip(centre, HALF_WIDTH))
    t1 = nib.load(str(shared_file("freesurfer_bert_7.2", "mri", "brainmask.mgz")))
    planted = plant_lesions(np.asanyarray(t1.dataobj)[window].astype(np.float32), aseg[window], seed=11)
    affine = t1.slicer[window].affine
    # The lesion tool's dataset inside the raw one, as many studies keep it: the report credits the named dataset.
    bids = root / "bids"
    lesions = bids / "derivatives" / "lesion_tool"
    write_description(bids, "bert with lesions")
    write_description(lesions, "lesion segmentation")
    anat = bids / "sub-01" / "anat"
    anat.mkdir(parents=True)
    nib.save(nib.Nifti1Image(planted.image, affine), str(anat / "sub-01_T1w.nii.gz"))
    (lesions / "sub-01" / "anat").mkdir(parents=True)
    nib.save(nib.Nifti1Image(planted.lesion.astype(np.uint8), affine),
             str(lesions / "sub-01" / "anat" / "sub-01_desc-lesion_mask.nii.gz"))
    (bids / "participants.tsv").write_text("participant_id\tage\tsex\nsub-01\t35\tM\n")
    fsl = root / "fsl"
    (fsl / "bin").mkdir(parents=True)
    (fsl / "etc").mkdir()
    (fsl / "etc" / "fslversion").write_text("6.0.7.9\n")
    shutil.copy2(FAKES / "run_first_all", fsl / "bin" / "run_first_all")
    out, work = root / "out", root / "work"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FSLDIR", str(fsl))
        patch.setenv("PATH", os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]))
        patch.setenv("FAKE_FIRST_ASEG", str(shared_file("freesurfer_bert_7.2", "mri", "aseg.mgz")))
        code = main([str(bids), str(out), "participant", "--methods", "first", "meshnet",
                     "--derivatives", f"lesions={lesions}", "--lesion-filling", "both",
                     "-w", str(work), "--nprocs", "1", "--omp-nthreads", "2"])
        group_code = main([str(bids), str(out), "group", "-w", str(work)])
    return {"out": out, "code": code, "group_code": group_code, "lesion": planted.lesion}


def _anat(run) -> Path:
    return run["out"] / "sub-01" / "anat"


def _json(path: Path) -> dict:
    return json.loads(Path(str(path).replace(".nii.gz", ".json")).read_text())


def _data(path: Path) -> np.ndarray:
    return np.asanyarray(nib.load(str(path)).dataobj)


def test_exit_codes(run):
    assert run["code"] == 0 and run["group_code"] == 0


def test_the_filled_t1w_is_published_and_differs_only_inside_the_lesions(run):
    filled = _anat(run) / "sub-01_desc-lesionfilled_T1w.nii.gz"
    lesion_mask = _anat(run) / "sub-01_space-T1w_label-lesion_mask.nii.gz"
    lesion = _data(lesion_mask) > 0
    assert lesion.sum() == run["lesion"].sum()  # the RAS grid holds the same voxels
    changed = _data(filled) != _data(_anat(run) / "sub-01_desc-preproc_T1w.nii.gz")
    assert changed.any() and not (changed & ~lesion).any()
    sidecar = _json(filled)
    assert sidecar["LesionFilled"] is True and sidecar["LesionMaskUsed"].endswith("label-lesion_mask.nii.gz")
    assert "normal-appearing white matter" in sidecar["Algorithm"] and isinstance(sidecar["Seed"], int)
    assert sidecar["LesionMask"].endswith("sub-01_desc-lesion_mask.nii.gz")
    # The session's thalamus prior (template space) decided which lesions are filled as thalamus.
    assert [p.split("sub-01_")[-1] for p in sidecar["ThalamusPrior"]] == [
        f"hemi-{side}_space-T1w_label-thalamus_desc-prior_probseg.nii.gz" for side in "LR"]
    assert sidecar["VoxelsFilledFromThalamus"] > 0
    assert sidecar["VoxelsFilledFromWhiteMatter"] + sidecar["VoxelsFilledFromThalamus"] == lesion.sum()
    assert _json(lesion_mask)["LesionMaskGrid"] == "T1w"


def test_filled_and_unfilled_masks_are_both_published_and_labelled(run):
    for method in ("meshnet", "first"):
        filled = _anat(run) / f"sub-01_space-T1w_label-thalamus_desc-{method}_mask.nii.gz"
        unfilled = _anat(run) / f"sub-01_space-T1w_label-thalamus_desc-{method}Unfilled_mask.nii.gz"
        assert _json(filled)["LesionFilled"] is True and _json(filled)["LesionFilledT1w"].endswith(
            "desc-lesionfilled_T1w.nii.gz")
        assert _json(unfilled)["LesionFilled"] is False
    meshnet = _data(_anat(run) / "sub-01_space-T1w_label-thalamus_desc-meshnet_mask.nii.gz") > 0
    assert meshnet.sum() > 5000


def test_lesion_load_in_the_session_and_group_volumes(run):
    table = read_tsv(_anat(run) / "sub-01_label-thalamus_volumes.tsv")
    assert {"meshnet", "meshnetUnfilled", "first", "firstUnfilled"} <= set(table["method"])
    expected_ml = run["lesion"].sum() / 1000.0  # 1 mm voxels
    assert np.allclose(table["lesion_volume_ml"], expected_ml)
    bilateral = table[(table["hemisphere"] == "bilateral")].set_index("method")
    assert bilateral.loc["meshnet", "lesion_filled"] and not bilateral.loc["meshnetUnfilled", "lesion_filled"]
    assert (bilateral["lesion_in_thalamus_ml"] > 0).all() and (bilateral["lesion_near_thalamus_ml"] > 0).all()
    sides = table[table["hemisphere"] != "bilateral"].groupby("method")["lesion_in_thalamus_ml"].sum()
    assert np.allclose(sides["meshnet"], bilateral.loc["meshnet", "lesion_in_thalamus_ml"])
    group = read_tsv(run["out"] / "group" / "volumes.tsv")
    assert {"lesion_volume_ml", "lesion_in_thalamus_ml", "lesion_near_thalamus_ml", "lesion_filled"} <= set(group)
    described = json.loads((run["out"] / "group" / "volumes.json").read_text())
    assert "lesion_near_thalamus_ml" in described


def test_the_report_draws_the_lesions_and_lists_the_lesion_load(run):
    from thalamus_bidsapp.reports.mask_figures import LESION_COLOR

    report = (run["out"] / "sub-01.html").read_text().replace("<wbr>", "")
    expected = f"lesion volume {run['lesion'].sum() / 1000.0:.2f} mL"
    assert expected in report and "lesion_filled" in report and "lesion_in_thalamus_ml" in report
    # Inputs used: the lesion mask from the dataset named on the command line, the template from TemplateFlow.
    inputs = report.split("<h3>Inputs used</h3>", 1)[1].split("</table>", 1)[0]
    assert "<td>lesion mask</td><td>lesions</td><td>sub-01/anat/sub-01_desc-lesion_mask.nii.gz</td>" in inputs
    assert "<td>template</td><td>TemplateFlow</td>" in inputs and "<td>T1w</td><td>raw</td>" in inputs
    figure = next((run["out"] / "sub-01" / "figures").glob("*desc-meshnet_mask.svg"))
    text = figure.read_text()
    assert ">lesions<" in text and LESION_COLOR in text and "lesion-filled T1w" in text


def test_unfilled_masks_in_template_space(run):
    for method in ("meshnet", "meshnetUnfilled", "first", "firstUnfilled"):
        mask = _anat(run) / f"sub-01_space-MNI152NLin2009cAsym_label-thalamus_desc-{method}_mask.nii.gz"
        assert mask.is_file(), mask.name
        assert _json(mask)["Method"] == method


def test_group_report_pairs_filled_and_unfilled(run):
    report = (run["out"] / "group" / "report.html").read_text()
    section = report.split('<section id="lesion-filling"', 1)[1].split("</section>", 1)[0]
    assert 'src="figures/filling_blandaltman.svg"' in section and "n = 1" in section
