"""BIDS input queries, derivative names, atomic writes, FreeSurfer files."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import shared_file
from thalamus_bidsapp.bidsio import inputs
from thalamus_bidsapp.bidsio.atomic import atomic_path, read_tsv, write_tsv
from thalamus_bidsapp.bidsio.derivatives import derivative_path, publish, write_dataset_description
from thalamus_bidsapp.errors import ThalamusError
from thalamus_bidsapp.tools import freesurfer


def test_derivative_names():
    out = Path("/out")
    ents = {"subject": "01", "session": "2"}
    assert derivative_path(out, {**ents, "space": "T1w", "label": "thalamus", "desc": "first", "suffix": "mask"}) == Path(
        "/out/sub-01/ses-2/anat/sub-01_ses-2_space-T1w_label-thalamus_desc-first_mask.nii.gz"
    )
    assert derivative_path(out, {"subject": "01", "label": "thalamus", "suffix": "volumes", "extension": ".tsv"}) == Path(
        "/out/sub-01/anat/sub-01_label-thalamus_volumes.tsv"
    )
    with pytest.raises(ValueError):
        derivative_path(out, {"subject": "01", "suffix": "bold"})


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "a.tsv"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_write_tsv_roundtrip_with_sidecar(tmp_path):
    table = pd.DataFrame({"participant_id": ["sub-01", "sub-02"], "volume_ml": [1.5, float("nan")]})
    path = write_tsv(table, tmp_path / "t.tsv", {"volume_ml": {"Description": "v", "Units": "mL"}})
    assert "n/a" in path.read_text()
    assert json.loads((tmp_path / "t.json").read_text())["volume_ml"]["Units"] == "mL"
    back = read_tsv(path)
    assert back["participant_id"].tolist() == ["sub-01", "sub-02"] and back["volume_ml"].isna().tolist() == [False, True]
    assert oct(path.stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_publish_does_not_rewrite_identical_file(tmp_path):
    src = tmp_path / "src.nii.gz"
    src.write_bytes(b"abc")
    out = publish(src, tmp_path / "out" / "x.nii.gz", {"A": 1})
    first = out.stat().st_mtime_ns
    publish(src, out, {"A": 1})
    assert out.stat().st_mtime_ns == first
    assert json.loads((tmp_path / "out" / "x.json").read_text()) == {"A": 1}


def test_dataset_description(tmp_path):
    bids = shared_file("ds002748_subset")
    write_dataset_description(tmp_path, bids, {"masks": tmp_path})
    desc = json.loads((tmp_path / "dataset_description.json").read_text())
    assert desc["DatasetType"] == "derivative"
    assert desc["GeneratedBy"][0]["Name"] == "thalamus_bidsapp"
    assert desc["SourceDatasets"][0]["DOI"] == "10.18112/openneuro.ds002748.v1.0.5"
    assert set(desc["DatasetLinks"]) == {"raw", "masks"}


def test_filter_file_overrides_one_role(tmp_path):
    filt = tmp_path / "f.json"
    filt.write_text(json.dumps({"t1w": {"acquisition": "mprage"}}))
    queries = inputs.load_queries(filt)
    assert queries["t1w"]["acquisition"] == "mprage" and queries["t1w"]["suffix"] == "T1w"
    filt.write_text(json.dumps({"bold": {}}))
    with pytest.raises(ThalamusError) as err:
        inputs.load_queries(filt)
    assert err.value.exit_code == 64


def test_collect_sessions_and_unknown_label(tmp_path):
    layout = inputs.open_layout(shared_file("ds002748_subset"), validate=True, database_dir=tmp_path)
    sessions = inputs.collect_sessions(layout, {}, inputs.default_queries(), participant_labels=["sub-01", "52"],
                                       session_labels=None)
    assert [s.name for s in sessions] == ["sub-01", "sub-52"]
    assert sessions[0].t1w.name == "sub-01_T1w.nii.gz" and sessions[0].flair is None
    with pytest.raises(ThalamusError) as err:
        inputs.collect_sessions(layout, {}, inputs.default_queries(), participant_labels=["99"], session_labels=None)
    assert err.value.exit_code == 66 and "99" in str(err.value)


def test_manual_masks_come_from_derivatives(tmp_path):
    layout = inputs.open_layout(shared_file("ds002748_subset"), validate=True, database_dir=None)
    deriv = tmp_path / "manual"
    (deriv / "sub-01" / "anat").mkdir(parents=True)
    mask = deriv / "sub-01" / "anat" / "sub-01_label-thalamus_desc-manual_mask.nii.gz"
    mask.write_bytes(b"")
    deriv_layout = inputs.open_layout(deriv, validate=False, database_dir=None, derivatives=True)
    (session,) = inputs.collect_sessions(layout, {"manual": deriv_layout}, inputs.default_queries(),
                                         participant_labels=["01"], session_labels=None)
    assert session.manual == mask


def test_parse_derivatives(tmp_path):
    assert inputs.parse_derivatives([f"r1={tmp_path}"]) == {"r1": tmp_path}
    assert inputs.parse_derivatives([str(tmp_path)]) == {tmp_path.name: tmp_path}
    with pytest.raises(ThalamusError):
        inputs.parse_derivatives([f"x={tmp_path / 'missing'}"])


def test_read_etiv_and_version():
    subject = shared_file("freesurfer_bert_7.2")
    assert freesurfer.read_etiv(subject / "stats" / "aseg.stats") == pytest.approx(1520021.264474)
    assert freesurfer.freesurfer_version(subject) == "7.2.0-beta"


def test_read_etiv_missing_measure(tmp_path):
    stats = tmp_path / "aseg.stats"
    stats.write_text("# Measure BrainSeg, BrainSegVol, x, 1.0, mm^3\n")
    with pytest.raises(ThalamusError, match="eTIV"):
        freesurfer.read_etiv(stats)


def test_find_subject_prefers_session(tmp_path):
    for name in ("sub-01", "sub-01_ses-2"):
        (tmp_path / name / "mri").mkdir(parents=True)
        (tmp_path / name / "stats").mkdir()
        (tmp_path / name / "mri" / "aseg.mgz").write_bytes(b"")
        (tmp_path / name / "stats" / "aseg.stats").write_text("")
    assert freesurfer.find_subject(tmp_path, "01", "2").name == "sub-01_ses-2"
    assert freesurfer.find_subject(tmp_path, "01", "3").name == "sub-01"
    assert freesurfer.find_subject(tmp_path, "02", None) is None


def test_find_license_order(tmp_path, monkeypatch):
    cli, env, home = tmp_path / "cli.txt", tmp_path / "env.txt", tmp_path / "fs"
    home.mkdir()
    for path in (cli, env, home / "license.txt"):
        path.write_text("license")
    # $FS_LICENSE is read with the configuration, as --fs-license-file; $FREESURFER_HOME is passed in.
    from thalamus_bidsapp.cli.run import build_config

    bids = shared_file("ds002748_subset")
    config = build_config([str(bids), str(tmp_path / "out"), "participant"],
                          environ={"FS_LICENSE": str(env), "FREESURFER_HOME": str(home)})
    assert config.option("fs_license_file") == env and config.environment.freesurfer_home == home
    monkeypatch.setenv("FS_LICENSE", str(env))
    assert freesurfer.find_license(cli, home) == cli
    assert freesurfer.find_license(config.option("fs_license_file"), home) == env
    assert freesurfer.find_license(None, home) == home / "license.txt"
    assert freesurfer.find_license(None) is None  # the environment is not read here
    shutil.rmtree(home)
    assert freesurfer.find_license(None, home) is None
    assert "--fs-license-file" in str(freesurfer.license_error())
