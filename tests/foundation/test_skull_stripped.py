"""``SkullStripped`` of the published anatomical images is measured, not assumed."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from tests.conftest import shared_file
from thalamus_bidsapp.image.masks import looks_skull_stripped, signal_outside_brain

PATIENT = ("ms_lesjak2017_mni", "patient07")
T1 = "T1_N4_noneck_reduced_winsor_regtoFLAIR_brain_N4_regtoMNI.nii.gz"


def _head(shape=(80, 80, 80), skull: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """A bright sphere of brain in a ring of scalp (or none): image and brain mask."""
    grid = np.indices(shape) - np.array(shape)[:, None, None, None] / 2
    radius = np.sqrt((grid ** 2).sum(axis=0))
    brain = radius < 25
    image = np.where(brain, 100.0, 0.0)
    if skull:
        image[(radius > 30) & (radius < 36)] = 60.0
    return image.astype(np.float32), brain


def test_a_whole_head_is_not_skull_stripped_and_a_brain_is():
    image, brain = _head()
    stripped, fraction = looks_skull_stripped(image, brain, (1.0, 1.0, 1.0))
    assert stripped is False and fraction > 0.3
    image, brain = _head(skull=False)
    # The app's brain mask is a little tighter than the extraction that made the image: still stripped.
    assert looks_skull_stripped(image, ndimage.binary_erosion(brain, iterations=3), (1.0, 1.0, 1.0))[0] is True
    assert looks_skull_stripped(np.zeros((8, 8, 8)), np.zeros((8, 8, 8), bool), (1, 1, 1))[0] is None


def test_a_real_brain_extracted_t1w_is_skull_stripped_and_with_a_scalp_it_is_not():
    img = nib.load(str(shared_file(*PATIENT, T1)))
    data = np.asarray(img.dataobj, dtype=np.float32)
    brain = ndimage.binary_erosion(ndimage.binary_fill_holes(data > 0.05 * np.percentile(data[data > 0], 99)),
                                   iterations=3)
    zooms = img.header.get_zooms()[:3]
    assert signal_outside_brain(data, brain, zooms) < 0.001
    # The same brain with a 6 mm scalp of half its brightness around it (the head of a raw T1w).
    distance = ndimage.distance_transform_edt(~(data > 0), sampling=zooms)
    with_scalp = np.where((distance > 8) & (distance < 14), 0.5 * np.percentile(data[brain], 50), data)
    assert looks_skull_stripped(with_scalp, brain, zooms)[0] is False


def test_the_session_workflow_measures_it_for_every_preprocessed_image(tmp_path):
    from nipype.pipeline import engine as pe

    from thalamus_bidsapp.bidsio.inputs import SessionInputs
    from thalamus_bidsapp.methods import MethodPlan
    from thalamus_bidsapp.workflows.context import RunContext
    from thalamus_bidsapp.workflows.participant import init_session_wf

    t1w = shared_file(*PATIENT, T1)
    flair = shared_file(*PATIENT, "FLAIR_N4_noneck_reduced_winsor_regtoFLAIR_brain_N4_regtoMNI.nii.gz")
    lesion = shared_file(*PATIENT, "GOLD_STANDARD_N4_noneck_reduced_winsor_regtoFLAIR_regtoMNI.nii.gz")
    session = SessionInputs("07", None, t1w, flair=flair, lesion=lesion)
    plan = MethodPlan(run=("meshnet",), settings={"meshnet": {"model_dir": tmp_path}})
    workflow = init_session_wf(session, plan, RunContext(output_dir=Path("/nonexistent/out"), work_dir=Path("/nonexistent/work"),
                                                         crash_root=Path("/nonexistent/crash")), name="sub_07_wf")
    flat = workflow._create_flat_graph()
    feeds = {(parent.fullname.split(".")[-1], child.fullname.split(".", 1)[-1])
             for parent, child, data in flat.edges(data=True)
             for _, dst in data.get("connect", []) if dst == "provenance_files"}
    assert ("skullstrip_t1w", "ds_t1w") in feeds
    assert ("skullstrip_lesionfilled", "ds_lesionfilled_t1w") in feeds
    assert any(parent == "skullstrip" and child.endswith("ds_image") for parent, child in feeds)  # the FLAIR
    ds_t1w = workflow.get_node("ds_t1w")
    assert "SkullStripped" not in ds_t1w.inputs.sidecar  # measured, never written by hand
    assert isinstance(ds_t1w, pe.Node)


def test_the_node_writes_the_decision_beside_the_provenance(tmp_path):
    from thalamus_bidsapp.interfaces.images import SkullStripCheck

    image, brain = _head()
    nib.save(nib.Nifti1Image(image, np.eye(4)), str(tmp_path / "head.nii.gz"))
    nib.save(nib.Nifti1Image(brain.astype(np.uint8), np.eye(4)), str(tmp_path / "brain.nii.gz"))
    (tmp_path / "prov.json").write_text(json.dumps({"Tool": "x"}))
    node = SkullStripCheck(in_file=str(tmp_path / "head.nii.gz"), brain_mask=str(tmp_path / "brain.nii.gz"),
                           in_provenance=str(tmp_path / "prov.json"))
    result = node.run(cwd=str(tmp_path))
    written = json.loads(Path(result.outputs.provenance_file).read_text())
    assert written["Tool"] == "x" and written["SkullStripped"] is False
    assert "outside the brain" in written["SkullStrippedDecision"]
