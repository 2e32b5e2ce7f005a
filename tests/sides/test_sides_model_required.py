"""Left and right never disappear silently: MeshNet's left/right model is required, or bilateral only is asked for.

Without the 104-class model MeshNet does not run (a run asking for it exits 66
naming both models); with ``--meshnet-sides off`` it runs bilateral only, and
the QC table, the traffic lights and the session messages say that the sides
and their checks were not run: a skipped check is never shown as a pass.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from tests.conftest import shared_file
from tests.qc.anatomy import bert_sides, save_mask, stand_in_prior, volumes_of
from thalamus_bidsapp.cli.run import build_config, main
from thalamus_bidsapp.errors import ThalamusError
from thalamus_bidsapp.methods.meshnet import METHOD as MESHNET
from thalamus_bidsapp.methods.meshnet import SIDES_OFF
from thalamus_bidsapp.methods.records import write_mask_record
from thalamus_bidsapp.qc.session import session_checks
from thalamus_bidsapp.qc.thresholds import load_thresholds
from thalamus_bidsapp.reports.qc import overall_status, traffic_lights
from thalamus_bidsapp.reports.session import SessionReport, session_messages

BIDS = "ds002748_subset"
MAIN_MODEL, SIDES_MODEL = "model30chan18cls", "model21_104class"
SIDE_CHECKS = {"components_left", "components_right", "lr_ratio", "centroid_left", "centroid_right", "side_swap"}


def _config(tmp_path: Path, *extra: str, environ: dict | None = None):
    main_model = shared_file("brainchop", "models", MAIN_MODEL)
    env = {"THALAMUS_MESHNET_MODEL": str(main_model), **(environ or {})}
    return build_config([str(shared_file(BIDS)), str(tmp_path / "out"), "participant", "--methods", "meshnet",
                         *extra], environ=env)


def test_without_the_sides_model_meshnet_cannot_run_and_both_models_are_named(tmp_path):
    empty = tmp_path / "no_sides_model"
    empty.mkdir()
    status = MESHNET.check_tools(_config(tmp_path, environ={"THALAMUS_MESHNET_SIDES_MODEL": str(empty)}))
    assert status.reason is not None
    for name in (MAIN_MODEL, SIDES_MODEL, "--meshnet-sides-model", "THALAMUS_MESHNET_SIDES_MODEL",
                 "--meshnet-sides off"):
        assert name in status.reason


def test_the_sides_model_is_resolved_like_the_main_model(tmp_path):
    sides = shared_file("brainchop", "models", SIDES_MODEL)
    status = MESHNET.check_tools(_config(tmp_path, environ={"THALAMUS_MESHNET_SIDES_MODEL": str(sides)}))
    assert status.reason is None and status.settings["sides_model_dir"] == sides.resolve()
    # A corrupted copy is refused by its sha256, as for the main model.
    broken = tmp_path / "broken"
    shutil.copytree(sides, broken)
    (broken / "model.json").write_text("{}")
    status = MESHNET.check_tools(_config(tmp_path, environ={"THALAMUS_MESHNET_SIDES_MODEL": str(broken)}))
    assert status.reason is not None and "sha256" in status.reason and SIDES_MODEL in status.reason


def test_a_run_without_the_sides_model_exits_66_naming_both_models(tmp_path, monkeypatch, caplog):
    empty = tmp_path / "no_sides_model"
    empty.mkdir()
    monkeypatch.setenv("THALAMUS_MESHNET_SIDES_MODEL", str(empty))
    caplog.set_level(logging.ERROR)
    code = main([str(shared_file(BIDS)), str(tmp_path / "out"), "participant", "--participant-label", "01",
                 "--methods", "meshnet", "--template", "none", "-w", str(tmp_path / "work")])
    assert code == 66
    assert MAIN_MODEL in caplog.text and SIDES_MODEL in caplog.text


def test_the_no_method_message_names_the_left_right_model(tmp_path):
    from thalamus_bidsapp.methods import MethodPlan
    from thalamus_bidsapp.participant.plan import check_some_method_runs

    empty = tmp_path / "no_sides_model"
    empty.mkdir()
    reason = MESHNET.check_tools(_config(tmp_path, environ={"THALAMUS_MESHNET_SIDES_MODEL": str(empty)})).reason
    with pytest.raises(ThalamusError) as err:
        check_some_method_runs({"sub-01": MethodPlan(run=(), skipped={"meshnet": reason})})
    assert err.value.exit_code == 66 and SIDES_MODEL in str(err.value) and "--meshnet-sides-model" in str(err.value)


def test_bilateral_only_is_an_explicit_choice_that_the_nodes_record(tmp_path):
    from nipype.pipeline import engine as pe

    from thalamus_bidsapp.methods.base import NodeContext

    config = _config(tmp_path, "--meshnet-sides", "off",
                     environ={"THALAMUS_MESHNET_SIDES_MODEL": str(tmp_path / "nowhere")})
    status = MESHNET.check_tools(config)
    assert status.reason is None and status.settings["sides_model_dir"] is None
    assert status.settings["sides_off"] == SIDES_OFF
    workflow = pe.Workflow(name="w")
    inputnode = pe.Node(_identity(), name="inputnode")
    nodes = MESHNET.init_nodes(NodeContext(workflow, inputnode, None, status.settings, omp_nthreads=1))
    node = nodes.records[0][0]
    assert node.inputs.sides_off == SIDES_OFF


def _identity():
    from nipype.interfaces.utility import IdentityInterface

    return IdentityInterface(fields=["t1w"])


def _bilateral_only_session(tmp_path: Path) -> pd.DataFrame:
    """A session whose only mask is a bilateral MeshNet mask made with --meshnet-sides off, checked as the run does."""
    from thalamus_bidsapp.interfaces.qc import _no_sides_reason

    sides = bert_sides("7.2")
    mask = nib.Nifti1Image((np.asanyarray(sides.dataobj) > 0).astype(np.uint8), sides.affine)
    record_file = write_mask_record(mask, "meshnet", "T1w", {"Tool": "MeshNet", "Sides": {"Run": False,
                                                                                        "Reason": SIDES_OFF}},
                                    folder=tmp_path)
    import json

    record = json.loads(Path(record_file).read_text())
    entry = replace(save_mask(tmp_path, "meshnet", "T1w", sides), sides=None,
                    no_sides_reason=_no_sides_reason(record))
    return session_checks([entry], volumes_of([entry]), load_thresholds(), prior=stand_in_prior(tmp_path))


def test_bilateral_only_qc_says_the_side_checks_were_not_run(tmp_path):
    qc = _bilateral_only_session(tmp_path)
    side_rows = qc[qc["check"].isin(SIDE_CHECKS)]
    assert set(side_rows["check"]) == SIDE_CHECKS and (side_rows["status"] == "skipped").all()
    assert side_rows["reason"].str.contains("bilateral only was asked for").all()
    assert (qc.loc[qc["check"] == "dice_prior", "status"] == "pass").all()


def test_a_skipped_check_is_never_shown_as_a_pass(tmp_path):
    qc = _bilateral_only_session(tmp_path)
    assert overall_status(qc) == "incomplete"
    html = traffic_lights(qc)
    assert 'class="qc-light pass"' not in html and "incomplete" in html
    assert "Not run: <strong>components_left, components_right" in html
    # Every check that applies ran and passed: then, and only then, the light is a pass.
    ran = qc[qc["status"] != "skipped"].assign(status="pass")
    t1w_registration = qc[qc["check"] == "registration_mi"]
    assert overall_status(pd.concat([ran, t1w_registration])) == "pass"


def test_the_report_warns_that_left_and_right_were_not_measured(tmp_path):
    qc = _bilateral_only_session(tmp_path)
    session = SessionReport(name="sub-01", label=None, anat=tmp_path)
    session.segmentation_qc = qc
    session_messages(session, tmp_path)
    warnings = [text for level, text in session.messages if level == "warning"]
    assert any("No left and right thalamus for meshnet" in text and "--meshnet-sides off" in text
               for text in warnings)
