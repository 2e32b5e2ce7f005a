"""Publishing the longitudinal outputs: one set per subject, both modes, edge cases of the session list."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from thalamus_bidsapp.bidsio.acquisition_dates import AcquisitionDate
from thalamus_bidsapp.stats.change import CHANGE_COLUMNS
from thalamus_bidsapp.workflows import longitudinal_outputs as lo
from thalamus_bidsapp.workflows.longitudinal import (
    MethodOnTemplate,
    SubjectLongitudinal,
    published_sessions,
    session_labels_image,
)

SHAPE = (20, 22, 18)
AFFINE = np.array([[1.0, 0, 0, -10], [0, 1.0, 0, -11], [0, 0, 1.0, -9], [0, 0, 0, 1]])


def _labels() -> np.ndarray:
    labels = np.zeros(SHAPE, np.uint8)
    labels[6:9, 8:12, 7:10] = 1
    labels[11:14, 8:12, 7:10] = 2
    return labels


def _session(root: Path, label: str, *, volumes=(4.0, 4.2), filled=False, t1w=True) -> None:
    anat = root / "sub-01" / f"ses-{label}" / "anat"
    anat.mkdir(parents=True)
    name = f"sub-01_ses-{label}"
    if not t1w:
        return
    image = nib.Nifti1Image(np.random.default_rng(0).random(SHAPE).astype(np.float32), AFFINE)
    nib.save(image, anat / f"{name}_desc-preproc_T1w.nii.gz")
    if filled:
        nib.save(image, anat / f"{name}_desc-lesionfilled_T1w.nii.gz")
    nib.save(nib.Nifti1Image(np.ones(SHAPE, np.uint8), AFFINE), anat / f"{name}_space-T1w_desc-brain_mask.nii.gz")
    rows = [("meshnet", "T1w", "bilateral", sum(volumes)), ("meshnet", "T1w", "left", volumes[0]),
            ("meshnet", "T1w", "right", volumes[1]), ("first", "T1w", "bilateral", sum(volumes) + 1)]
    pd.DataFrame(rows, columns=["method", "contrast", "hemisphere", "volume_ml"]).to_csv(
        anat / f"{name}_label-thalamus_volumes.tsv", sep="\t", index=False)


def _result(root: Path, labels_by_session: dict[str, float]) -> SubjectLongitudinal:
    sessions, _ = published_sessions(root, "01")
    sessions = [s for s in sessions if s.label in labels_by_session]
    zero = (np.zeros((*SHAPE, 3)), np.diag([-1.0, -1.0, 1.0, 1.0]) @ AFFINE)
    volumes = {label: {"left": scale * 0.036, "right": scale * 0.036, "bilateral": scale * 0.072}
               for label, scale in labels_by_session.items()}
    box = (slice(0, SHAPE[0]), slice(0, SHAPE[1]), slice(0, SHAPE[2]))
    methods = {"meshnet": MethodOnTemplate(_labels(), {"left": (1,), "right": (2,), "bilateral": (1, 2)},
                                           {"Model": "x"}, volumes)}
    return SubjectLongitudinal("01", sessions, nib.Nifti1Image(np.ones(SHAPE, np.float32), AFFINE), methods,
                               {s.label: np.eye(4) for s in sessions}, {s.label: zero for s in sessions}, box,
                               settings={"Template": {"Passes": 2}, "Registration": {"TypeOfTransform": "SyNOnly"}})


def _dates(labels, years=None):
    from datetime import datetime

    return {label: AcquisitionDate(datetime(2020 + i, 1, 1) if years else None, "test")
            for i, label in enumerate(labels)}


def test_published_sessions_notes_a_session_without_t1w(tmp_path):
    _session(tmp_path, "1")
    _session(tmp_path, "2", filled=True)
    _session(tmp_path, "3", t1w=False)
    sessions, notes = published_sessions(tmp_path, "01")
    assert [s.label for s in sessions] == ["1", "2"]
    assert sessions[1].lesion_filled and sessions[1].t1w.name.endswith("lesionfilled_T1w.nii.gz")
    assert not sessions[0].lesion_filled
    assert len(notes) == 1 and "ses-3" in notes[0]


def test_labels_carried_into_the_session_without_motion_are_the_template_labels(tmp_path):
    _session(tmp_path, "1")
    _session(tmp_path, "2")
    result = _result(tmp_path, {"1": 1.0, "2": 0.99})
    carried = session_labels_image(result, result.sessions[0], "meshnet")
    assert np.array_equal(np.asarray(carried.dataobj), _labels())


def test_change_table_both_modes_and_exact_columns(tmp_path):
    for label, vols in (("1", (4.0, 4.2)), ("2", (3.9, 4.1)), ("3", (3.8, 4.0))):
        _session(tmp_path, label, volumes=vols)
    result = _result(tmp_path, {"1": 1.0, "2": 0.99, "3": 0.98})
    table = lo.change_table(tmp_path, "01", result, ["1", "2", "3"], _dates("123", years=True))
    assert tuple(table.columns) == CHANGE_COLUMNS
    assert set(table["mode"]) == {"longitudinal", "cross-sectional"}
    long = table[(table["mode"] == "longitudinal") & (table.hemisphere == "bilateral")]
    assert list(long.session_from) == ["ses-1", "ses-2"] and list(long.session_to) == ["ses-2", "ses-3"]
    assert long.change_pct.iloc[0] == pytest.approx(-1.0)
    assert long.annualized_change_pct.iloc[0] == pytest.approx(-1.0, rel=0.01)
    cross = table[(table["mode"] == "cross-sectional") & (table.method == "meshnet") & (table.hemisphere == "left")]
    assert cross.change_ml.tolist() == pytest.approx([-0.1, -0.1])
    assert set(table.method) == {"meshnet", "first"}
    no_dates = lo.change_table(tmp_path, "01", result, ["1", "2", "3"], _dates("123"))
    assert no_dates.annualized_change_pct.isna().all() and no_dates.interval_years.isna().all()


def test_publish_one_set_and_replace_it_when_a_session_goes(tmp_path):
    for label in ("1", "2", "3"):
        _session(tmp_path, label)
    result = _result(tmp_path, {"1": 1.0, "2": 0.99, "3": 0.98})
    table = lo.change_table(tmp_path, "01", result, ["1", "2", "3"], _dates("123", years=True))
    lo._publish(tmp_path, "01", result, table, _dates("123", years=True), "ordered by acquisition date", None)
    anat = tmp_path / "sub-01" / "anat"
    written = pd.read_csv(anat / "sub-01_label-thalamus_desc-longitudinal_volumes.tsv", sep="\t")
    assert tuple(written.columns) == CHANGE_COLUMNS
    mask = tmp_path / "sub-01/ses-3/anat/sub-01_ses-3_space-T1w_label-thalamus_desc-meshnetLong_mask.nii.gz"
    sidecar = json.loads(mask.with_name(mask.name.replace(".nii.gz", ".json")).read_text())
    assert sidecar["Template"].endswith("sub-01_desc-longitudinaltemplate_T1w.nii.gz")
    assert "Jacobian" in sidecar["ChangeMethod"] and sidecar["Transforms"]["Rigid"].endswith("_xfm.txt")
    assert (mask.parent / "sub-01_ses-3_space-T1w_seg-thalamus_desc-meshnetLong_dseg.tsv").is_file()
    assert not list(tmp_path.glob(".thalamus_staging/*"))
    # Session 3 dropped from the set: its longitudinal files go with the new tables.
    smaller = _result(tmp_path, {"1": 1.0, "2": 0.99})
    smaller.sessions = smaller.sessions[:2]
    table = lo.change_table(tmp_path, "01", smaller, ["1", "2"], _dates("12", years=True))
    lo._publish(tmp_path, "01", smaller, table, _dates("12", years=True), "by date", ["1", "2", "3"])
    assert not mask.exists() and not list(mask.parent.glob("*to-longitudinal*"))
    template_sidecar = json.loads((anat / "sub-01_desc-longitudinaltemplate_T1w.json").read_text())
    assert template_sidecar["Sessions"] == ["1", "2"] and template_sidecar["PreviousSessions"] == ["1", "2", "3"]
    assert set(pd.read_csv(anat / "sub-01_label-thalamus_desc-longitudinal_volumes.tsv", sep="\t")
               .session_to) == {"ses-2"}


def test_one_session_gives_no_rows_and_says_so(tmp_path, caplog):
    _session(tmp_path, "1")
    (tmp_path / "bids").mkdir()
    with caplog.at_level(logging.INFO):
        outcome = lo.run_longitudinal(tmp_path, tmp_path / "bids", tmp_path / "work", ["01"],
                                      segmentations=[])
    assert outcome == {"01": "skipped: fewer than two sessions"}
    assert "two are needed" in caplog.text
    assert not (tmp_path / "sub-01" / "anat").exists()


def test_group_table_gathers_subject_tables(tmp_path):
    from thalamus_bidsapp.group.longitudinal_change import write_change_table

    for label in ("1", "2"):
        _session(tmp_path, label)
    result = _result(tmp_path, {"1": 1.0, "2": 0.99})
    table = lo.change_table(tmp_path, "01", result, ["1", "2"], _dates("12"))
    lo._publish(tmp_path, "01", result, table, _dates("12"), "by label", None)
    group = tmp_path / "group"
    group.mkdir()
    path = write_change_table(tmp_path, group)
    merged = pd.read_csv(path, sep="\t")
    assert tuple(merged.columns) == CHANGE_COLUMNS and len(merged) == len(table)
    assert write_change_table(tmp_path, group, ("02",)) is None


def test_longitudinal_option_and_step_selection(tmp_path, caplog):
    """--longitudinal is auto unless off; the step runs subjects with two T1w sessions, a failed session leaves one."""
    from thalamus_bidsapp.bidsio.inputs import SessionInputs
    from thalamus_bidsapp.cli.run import build_config
    from thalamus_bidsapp.config import RunConfig
    from thalamus_bidsapp.methods.planning import ToolCheck

    bids = tmp_path / "bids"
    (bids / "sub-01").mkdir(parents=True)
    (bids / "dataset_description.json").write_text('{"Name": "x", "BIDSVersion": "1.10.0"}')
    out = tmp_path / "out"
    config = build_config([str(bids), str(out), "participant", "--skip-bids-validation"])
    assert config.longitudinal == "auto"
    assert config.to_json()["longitudinal"] == "auto"  # what logs/<run>/config.json records
    assert RunConfig(bids_dir=bids, output_dir=out, analysis_level="participant", work_dir=tmp_path).longitudinal \
        == "auto"
    off = build_config([str(bids), str(out), "participant", "--longitudinal", "off", "--skip-bids-validation"])
    assert off.longitudinal == "off"
    # sub-01 had two T1w sessions, but ses-2 failed (nothing published); sub-02 has one session.
    _session(out, "1")
    t1w = tmp_path / "t1w.nii.gz"
    sessions = [SessionInputs("01", "1", t1w), SessionInputs("01", "2", t1w), SessionInputs("02", "1", t1w)]
    tools = ToolCheck(reasons={}, settings={"meshnet": {"model_dir": tmp_path, "sides_model_dir": None}})
    with caplog.at_level(logging.INFO):
        outcomes = lo.longitudinal_step(config, sessions, tools, threads=1)
    assert outcomes == {"01": "skipped: fewer than two sessions"}
    assert "sub-02: longitudinal mode not run: 1 session with a T1w (two or more are needed)" in caplog.text
    assert "ses-2: no processed T1w" not in caplog.text  # no folder at all for it: nothing to note


def test_template_sidecar_records_sessions_left_out_and_dates(tmp_path, monkeypatch):
    """What the participant report reads: every session left out and why, each session's date and its source."""
    for label in ("1", "2", "3"):
        _session(tmp_path, label)
    _session(tmp_path, "4", t1w=False)
    (tmp_path / "bids").mkdir()
    result = _result(tmp_path, {"1": 1.0, "2": 0.99, "3": 0.98})
    del result.methods["meshnet"].volumes["3"]
    del result.displacements["3"]
    result.failed = {"3": "SyN diverged"}
    monkeypatch.setattr(lo, "_measure_or_reuse", lambda *args: result)
    outcome = lo.run_longitudinal(tmp_path, tmp_path / "bids", tmp_path / "work", ["01"], segmentations=[])
    assert outcome["01"].startswith("ok")
    sidecar = json.loads((tmp_path / "sub-01/anat/sub-01_desc-longitudinaltemplate_T1w.json").read_text())
    left_out = sidecar["SessionsLeftOut"]
    assert len(left_out) == 2 and left_out[0].startswith("ses-4: no processed T1w")
    assert left_out[1].startswith("ses-3: registration to the template failed: SyN diverged")
    assert sidecar["AcquisitionDates"]["1"]["Date"] is None and "acq_time" in sidecar["AcquisitionDates"]["1"]["Source"]
    assert sidecar["ChangeMethod"].startswith("Jacobian integration")
