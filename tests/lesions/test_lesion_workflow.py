"""How the lesion steps are wired into a session workflow (built, not run): who gets the filled T1w."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import shared_file
from thalamus_bidsapp.bidsio.inputs import SessionInputs
from thalamus_bidsapp.methods import MethodPlan
from thalamus_bidsapp.workflows.context import RunContext
from thalamus_bidsapp.workflows.participant import init_session_wf

PATIENT = ("ms_lesjak2017_mni", "patient07")


@pytest.fixture(scope="module")
def session() -> SessionInputs:
    t1w = shared_file(*PATIENT, "T1_N4_noneck_reduced_winsor_regtoFLAIR_brain_N4_regtoMNI.nii.gz")
    lesion = shared_file(*PATIENT, "GOLD_STANDARD_N4_noneck_reduced_winsor_regtoFLAIR_regtoMNI.nii.gz")
    return SessionInputs("07", None, t1w, lesion=lesion)


def _plan(tmp_path: Path) -> MethodPlan:
    (tmp_path / "license.txt").write_text("not a real licence: the workflow is built, never run\n")
    recon_all = {"subject_id": "sub-07", "subjects_dir": tmp_path, "license_file": tmp_path / "license.txt"}
    return MethodPlan(run=("freesurfer", "meshnet"), settings={"freesurfer": {"recon_all": recon_all},
                                                                "meshnet": {"model_dir": tmp_path}})


def _build(session, plan, mode: str):
    return init_session_wf(session, plan, RunContext(output_dir=Path("/nonexistent/out"), work_dir=Path("/nonexistent/work"),
                                                     crash_root=Path("/nonexistent/crash"), lesion_filling=mode),
                           name="sub_07_wf")


def _sources(workflow, node_name: str, field: str) -> list[str]:
    """The nodes (full names) whose output reaches ``field`` of ``node_name``, through identity nodes."""
    from nipype.interfaces.utility import IdentityInterface

    flat = workflow._create_flat_graph()

    def origins(name: str, wanted: str) -> list[str]:
        found = []
        for parent, child, data in flat.edges(data=True):
            for src, dst in data.get("connect", []):
                if child.fullname.endswith(name) and dst == wanted:
                    if isinstance(parent.interface, IdentityInterface):
                        found += origins(parent.fullname, src)
                    else:
                        found.append(parent.fullname)
        return found

    return origins(node_name, field)


def test_recon_all_and_meshnet_get_the_filled_t1w(session, tmp_path):
    workflow = _build(session, _plan(tmp_path), "auto")
    assert _sources(workflow, "segmentation_wf.recon_all", "t1w") == ["sub_07_wf.lesion_fill"]
    assert _sources(workflow, "segmentation_wf.meshnet_thalamus", "t1w") == ["sub_07_wf.lesion_fill"]
    assert workflow.get_node("segmentation_wf.recon_all").inputs.subject_id == "sub-07"


def test_both_adds_an_unfilled_run_with_its_own_recon_all_subject(session, tmp_path):
    workflow = _build(session, _plan(tmp_path), "both")
    assert _sources(workflow, "segmentation_unfilled_wf.meshnet_thalamus", "t1w") == ["sub_07_wf.reorient_t1w"]
    unfilled = workflow.get_node("segmentation_unfilled_wf.recon_all")
    assert unfilled.inputs.subject_id == "sub-07_lesionunfilled" and unfilled.inputs.t1w == str(session.t1w)
    assert workflow.get_node("rename_unfilled_records").inputs.suffix == "Unfilled"


def test_off_and_no_mask_fill_nothing(session, tmp_path):
    workflow = _build(session, _plan(tmp_path), "off")
    assert workflow.get_node("lesion_fill") is None and workflow.get_node("lesion_mask") is not None
    assert _sources(workflow, "segmentation_wf.meshnet_thalamus", "t1w") == ["sub_07_wf.reorient_t1w"]
    bare = SessionInputs("07", None, session.t1w)
    workflow = _build(bare, _plan(tmp_path), "auto")
    assert workflow.get_node("lesion_fill") is None and workflow.get_node("lesion_mask") is None


def test_a_t1w_grid_mask_does_not_wait_for_the_flair_registration(session, tmp_path):
    """Lesjak's mask shares the T1w's grid: it is mapped once the brain mask exists; a space-FLAIR one waits."""
    import shutil
    from dataclasses import replace

    flair = shared_file(*PATIENT, "FLAIR_N4_noneck_reduced_winsor_regtoFLAIR_brain_N4_regtoMNI.nii.gz")
    with_flair = replace(session, flair=flair)
    workflow = _build(with_flair, _plan(tmp_path), "auto")
    assert _sources(workflow, "lesion_mask", "flair_transform") == []
    assert _sources(workflow, "lesion_mask", "t1w") == ["sub_07_wf.reorient_t1w"]
    # After deepbet: ready beside it, the one-thread mask step would hold the slot deepbet's two threads need.
    assert _sources(workflow, "lesion_mask", "brain_mask") == ["sub_07_wf.brain_mask"]
    on_flair = tmp_path / "sub-07_space-FLAIR_label-lesion_mask.nii.gz"
    shutil.copyfile(session.lesion, on_flair)
    workflow = _build(replace(with_flair, lesion=on_flair), _plan(tmp_path), "auto")
    assert [s.rsplit(".", 1)[0] for s in _sources(workflow, "lesion_mask", "flair_transform")] == [
        "sub_07_wf.register_flair_wf"]
