"""Which methods run for a session: defaults, envelopes, and errors for named methods."""

from __future__ import annotations

from pathlib import Path

import pytest

from thalamus_bidsapp.bidsio.inputs import SessionInputs
from thalamus_bidsapp.config import RunConfig
from thalamus_bidsapp.errors import ThalamusError
from thalamus_bidsapp.methods import ToolCheck, plan_methods

SESSION = SessionInputs(subject="01", session="1", t1w=Path("/data/sub-01_ses-1_T1w.nii.gz"))
FSL_MISSING = "FSL not found: FSLDIR is not set"


def _config(tmp_path: Path, **kwargs) -> RunConfig:
    options = {key: kwargs.pop(key) for key in list(kwargs) if key.startswith("mindglide_")}
    return RunConfig(bids_dir=tmp_path, output_dir=tmp_path / "out", analysis_level="participant",
                     work_dir=tmp_path / "work", method_options=options, **kwargs)


def _tools(**reasons) -> ToolCheck:
    found = {"first": None, "dbsegment": None, "meshnet": None, "mindglide": None}
    found.update(reasons)
    return ToolCheck(reasons=found, settings={"meshnet": {"model_dir": Path("/models/meshnet")},
                                              "mindglide": {"model_path": Path("/models/mg.pt")}})


def test_first_is_the_default_envelope(tmp_path, monkeypatch):
    monkeypatch.delenv("FREESURFER_HOME", raising=False)
    plan = plan_methods(SESSION, _config(tmp_path), _tools())
    assert plan.run == ("first", "dbsegment", "meshnet", "mindglide")
    assert plan.envelope == "first"
    assert "freesurfer" in plan.skipped and "recon-all" in plan.skipped["freesurfer"]


def test_meshnet_is_the_envelope_without_fsl(tmp_path, monkeypatch):
    monkeypatch.delenv("FREESURFER_HOME", raising=False)
    plan = plan_methods(SESSION, _config(tmp_path), _tools(first=FSL_MISSING, dbsegment="no DBSegment"))
    assert plan.run == ("meshnet", "mindglide")
    assert plan.envelope == "meshnet"
    assert plan.skipped == {
        "freesurfer": plan.skipped["freesurfer"], "first": FSL_MISSING, "dbsegment": "no DBSegment"}


def test_mindglide_skipped_without_any_envelope(tmp_path, monkeypatch):
    monkeypatch.delenv("FREESURFER_HOME", raising=False)
    plan = plan_methods(SESSION, _config(tmp_path),
                        _tools(first=FSL_MISSING, dbsegment="x", meshnet="no weights"))
    assert plan.run == ()
    assert "no envelope" in plan.skipped["mindglide"]


def test_requested_envelope_must_run(tmp_path, monkeypatch):
    monkeypatch.delenv("FREESURFER_HOME", raising=False)
    plan = plan_methods(SESSION, _config(tmp_path, mindglide_envelope="dbsegment"), _tools(dbsegment="x"))
    assert "mindglide" not in plan.run and "dbsegment" in plan.skipped["mindglide"]


def test_named_method_whose_tool_is_missing_is_exit_66(tmp_path):
    with pytest.raises(ThalamusError) as err:
        plan_methods(SESSION, _config(tmp_path, methods=("meshnet", "first")), _tools(first=FSL_MISSING))
    assert err.value.exit_code == 66
    assert "first" in str(err.value) and "FSLDIR" in str(err.value)


def test_named_methods_only(tmp_path):
    plan = plan_methods(SESSION, _config(tmp_path, methods=("meshnet",)), _tools())
    assert plan.run == ("meshnet",) and plan.skipped == {}
