"""Fuzz corpus, lesion inputs: exact lesion labels, lesion masks not found or found twice, stale outputs.

The anatomy is real: an MS patient of ../shared/data/ms_lesjak2017_mni (T1w
and the consensus lesion mask, 1 mm MNI grid), with a lesion segmentation
(dseg) whose lookup table also names "non-lesion white matter" and
"perilesional NAWM" rows around the true lesions. Every case checks the
exit code or the error, the file named in the message, the lesion volume
(the true label's voxel count x the voxel volume) and that nothing stale is
left behind.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from tests.conftest import shared_file
from tests.fuzz.dataset_cases import make_dataset, run_app, tree_digest, write_description
from thalamus_bidsapp.bidsio import inputs
from thalamus_bidsapp.bidsio.atomic import read_tsv
from thalamus_bidsapp.bidsio.staging import Staging
from thalamus_bidsapp.errors import ThalamusError

PATIENT = ("ms_lesjak2017_mni", "patient07")
T1W = "T1_N4_noneck_reduced_winsor_regtoFLAIR_brain_N4_regtoMNI.nii.gz"
GOLD = "GOLD_STANDARD_N4_noneck_reduced_winsor_regtoFLAIR_regtoMNI.nii.gz"
#: A lookup table as a lesion tool with extra classes writes it: only "lesion" is lesion.
TABLE = "index\tname\n1\tlesion\n2\tnon-lesion white matter\n3\tperilesional NAWM\n"
CLI = ["--methods", "freesurfer", "--nprocs", "1", "--skip-bids-validation", "--template", "none"]


@pytest.fixture(scope="module")
def patient() -> dict:
    """The patient's T1w, its lesion voxels, and a dseg: 1 lesion, 2 and 3 rings of white matter around it."""
    t1w = nib.load(str(shared_file(*PATIENT, T1W)))
    lesion = np.asanyarray(nib.load(str(shared_file(*PATIENT, GOLD))).dataobj) > 0
    near = ndimage.binary_dilation(lesion, iterations=2) & ~lesion
    around = ndimage.binary_dilation(lesion, iterations=5) & ~lesion & ~near
    labels = np.zeros(lesion.shape, np.int16)
    labels[lesion], labels[near], labels[around] = 1, 2, 3
    voxel_ml = abs(np.linalg.det(t1w.affine[:3, :3])) / 1000.0
    return {"t1w": t1w, "lesion": lesion, "labels": labels, "voxel_ml": voxel_ml,
            "true_ml": int(lesion.sum()) * voxel_ml, "substring_ml": int((labels > 0).sum()) * voxel_ml}


def _dataset(root: Path, patient: dict, lesion_files: dict[str, tuple[np.ndarray, str | None]],
             session: str | None = None) -> tuple[Path, Path]:
    """A BIDS dataset with the patient as sub-07 and a derivatives dataset holding ``lesion_files``.

    ``lesion_files``: file name -> (voxels, lookup-table text or None), under sub-07/[ses-<session>/]anat.
    """
    bids, lesions = root / "bids", root / "lesions"
    write_description(bids, "MS patient")
    write_description(lesions, "lesion tool")
    anat = bids / "sub-07" / (f"ses-{session}" if session else "") / "anat"
    anat.mkdir(parents=True)
    name = "sub-07" + (f"_ses-{session}" if session else "")
    nib.save(patient["t1w"], str(anat / f"{name}_T1w.nii.gz"))
    (bids / "participants.tsv").write_text("participant_id\tage\tsex\nsub-07\t40\tF\n")
    for file_name, (voxels, table) in lesion_files.items():
        folder = lesions / file_name.split("_")[0] / ("" if "_ses-" not in file_name else
                                                        f"ses-{file_name.split('_ses-')[1].split('_')[0]}") / "anat"
        folder.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(voxels, patient["t1w"].affine), str(folder / file_name))
        if table is not None:
            (folder / file_name.replace(".nii.gz", ".tsv")).write_text(table)
    return bids, lesions


def _participant(root: Path, bids: Path, lesions: Path | None, *more: str):
    derivatives = ["--derivatives", f"lesions={lesions}"] if lesions is not None else []
    (root / "fs").mkdir(exist_ok=True)
    return run_app(bids, root / "out", "participant", "-w", root / "work", "--fs-subjects-dir", root / "fs",
                   *CLI, *derivatives, *more)


def _reason(out: Path) -> str:
    (table,) = [read_tsv(p) for p in sorted((out / "logs").glob("*/sessions.tsv"))]
    return str(table["reason"].iloc[0])


# ----------------------------------------------------------------------------------- exact lesion labels


def test_only_the_lesion_label_is_lesion_with_the_true_volume(patient, tmp_path):
    from thalamus_bidsapp.bidsio.tables import LesionLoad
    from thalamus_bidsapp.interfaces.lesions import LesionMaskToT1w

    bids, lesions = _dataset(tmp_path, patient, {"sub-07_label-lesion_dseg.nii.gz": (patient["labels"], TABLE)})
    dseg = lesions / "sub-07" / "anat" / "sub-07_label-lesion_dseg.nii.gz"
    t1w = bids / "sub-07" / "anat" / "sub-07_T1w.nii.gz"
    result = LesionMaskToT1w(lesion_file=str(dseg), t1w=str(t1w)).run(cwd=str(tmp_path))
    provenance = json.loads(Path(result.outputs.provenance_file).read_text())
    # 49.8 mL-like truth, not the three rows whose names contain "lesion" (several times larger).
    assert provenance["LesionVolume_mL"] == pytest.approx(patient["true_ml"], rel=1e-9)
    assert patient["substring_ml"] > 2 * patient["true_ml"]
    assert provenance["LesionLabels"] == [{"index": 1, "name": "lesion"}]
    assert "documented list" in provenance["LesionLabelRule"]
    mask = nib.load(result.outputs.out_file)
    assert LesionLoad(Path(result.outputs.out_file)).total == pytest.approx(patient["true_ml"], rel=1e-9)
    assert np.count_nonzero(np.asanyarray(mask.dataobj)) == int(patient["lesion"].sum())


@pytest.mark.slow
def test_a_dseg_through_the_cli_gives_the_true_lesion_volume_everywhere(patient, tmp_path):
    from tests.fuzz.dataset_cases import fs_subjects_dir

    bids, lesions = _dataset(tmp_path, patient, {"sub-07_desc-lesion_dseg.nii.gz": (patient["labels"], TABLE)})
    fs_subjects_dir(tmp_path / "fs", ("07",))
    before = tree_digest(lesions)
    result = _participant(tmp_path, bids, lesions)
    assert result.code == 0, result.console
    anat = tmp_path / "out" / "sub-07" / "anat"
    sidecar = json.loads((anat / "sub-07_space-T1w_label-lesion_mask.json").read_text())
    assert sidecar["LesionVolume_mL"] == pytest.approx(patient["true_ml"], rel=1e-9)
    assert sidecar["LesionLabels"] == [{"index": 1, "name": "lesion"}]
    mask = nib.load(str(anat / "sub-07_space-T1w_label-lesion_mask.nii.gz"))
    assert np.count_nonzero(np.asanyarray(mask.dataobj)) == int(patient["lesion"].sum())
    filled = json.loads((anat / "sub-07_desc-lesionfilled_T1w.json").read_text())
    assert filled["LesionVolume_mL"] == pytest.approx(patient["true_ml"], rel=1e-9)
    volumes = read_tsv(anat / "sub-07_label-thalamus_volumes.tsv")
    assert np.allclose(volumes["lesion_volume_ml"].astype(float), patient["true_ml"])
    (methods,) = [json.loads(p.read_text()) for p in sorted((tmp_path / "out").glob("logs/*/methods.json"))]
    assert methods["sub-07"]["lesion_input"]["LesionLabels"] == [{"index": 1, "name": "lesion"}]
    assert methods["sub-07"]["inputs"]["lesion"].endswith("sub-07_desc-lesion_dseg.nii.gz")
    assert tree_digest(lesions) == before


def test_the_labels_used_are_in_methods_json_through_the_preflight(patient, tmp_path):
    from thalamus_bidsapp.participant.preflight import preflight_session

    bids, lesions = _dataset(tmp_path, patient, {"sub-07_label-lesion_dseg.nii.gz": (patient["labels"], TABLE)})
    (session,) = _sessions(bids, lesions)
    ready = preflight_session(session, tmp_path / "work", lesion_labels=("perilesional NAWM", "1"))
    assert ready.lesion["LesionMask"].endswith("sub-07_label-lesion_dseg.nii.gz")
    assert ready.lesion["LesionLabels"] == [{"index": 3, "name": "perilesional NAWM"}, {"index": 1, "name": "lesion"}]
    assert ready.lesion["LesionLabelRule"] == "--lesion-labels"
    assert ready.session.lesion_labels == ("perilesional NAWM", "1")


@pytest.mark.parametrize("table, named", [
    ("index\tname\n2\tnon-lesion white matter\n3\tperilesional NAWM\n", "ambiguous"),
    ("label\tdescription\n1\tlesion\n", "no column index, name"),
    ("", "it is empty"),
    ("index\tname\n", "has no rows"),
    ("index\tname\n1.5\tlesion\n", "not a whole number"),
    ("index\tname\n1\tlesion\n1\tWMH\n", "more than once"),
])
def test_a_bad_lookup_table_fails_the_session_naming_it(patient, tmp_path, table, named):
    bids, lesions = _dataset(tmp_path, patient, {"sub-07_desc-lesion_dseg.nii.gz": (patient["labels"], table)})
    before = tree_digest(bids)
    result = _participant(tmp_path, bids, lesions)
    lookup = lesions / "sub-07" / "anat" / "sub-07_desc-lesion_dseg.tsv"
    assert result.code == 1, result.console
    assert "Traceback" not in result.console and "KeyError" not in result.console
    assert str(lookup) in result.console and named in result.console
    assert str(lookup) in _reason(tmp_path / "out")
    assert not list((tmp_path / "out").glob("sub-07/**/*.nii.gz"))  # nothing published
    assert tree_digest(bids) == before


def test_an_unknown_lesion_label_option_names_the_table(patient, tmp_path):
    bids, lesions = _dataset(tmp_path, patient, {"sub-07_label-lesion_dseg.nii.gz": (patient["labels"], TABLE)})
    result = _participant(tmp_path, bids, lesions, "--lesion-labels", "WM lesion")
    assert result.code == 1
    assert "'WM lesion' (--lesion-labels)" in result.console
    assert str(lesions / "sub-07" / "anat" / "sub-07_label-lesion_dseg.tsv") in result.console


# ----------------------------------------------------------------------------------- lesion masks found or not


def _sessions(bids: Path, lesions: Path, queries: dict | None = None):
    layout = inputs.open_layout(bids, validate=False, database_dir=None)
    deriv = {"lesions": inputs.open_layout(lesions, validate=False, database_dir=None, derivatives=True)}
    return inputs.collect_sessions(layout, deriv, queries or inputs.default_queries(), participant_labels=None,
                                   session_labels=None)


def test_two_lesion_candidates_are_refused_naming_both(patient, tmp_path):
    mask = patient["lesion"].astype(np.uint8)
    files = {"sub-07_label-lesion_mask.nii.gz": (mask, None),
             "sub-07_label-lesion_dseg.nii.gz": (patient["labels"], TABLE)}
    bids, lesions = _dataset(tmp_path, patient, files)
    result = _participant(tmp_path, bids, lesions)
    assert result.code == 1
    for name in files:
        assert str(lesions / "sub-07" / "anat" / name) in result.console
    assert "2 lesion masks found" in result.console and "lowest run number" not in result.console
    # A filter chooses one: then there is no refusal.
    queries = inputs.default_queries()
    queries["lesion"] = {**queries["lesion"], "suffix": "mask"}
    (session,) = _sessions(bids, lesions, queries)
    assert session.lesion.name == "sub-07_label-lesion_mask.nii.gz" and not session.problems


def test_an_explicit_lesion_filter_that_matches_nothing_fails_the_session(patient, tmp_path):
    bids, lesions = _dataset(tmp_path, patient, {"sub-07_label-lesion_mask.nii.gz":
                                                 (patient["lesion"].astype(np.uint8), None)})
    filters = tmp_path / "filters.json"
    filters.write_text(json.dumps({"lesion": {"desc": "consensus"}}))
    result = _participant(tmp_path, bids, lesions, "--bids-filter-file", filters)
    assert result.code == 1
    assert "no lesion mask found" in result.console and "desc=consensus" in result.console
    assert str(lesions) in result.console
    # The same filter without --derivatives can never match: a usage error naming the filter file.
    result = _participant(tmp_path, bids, None, "--bids-filter-file", filters)
    assert result.code == 64
    assert str(filters) in result.console and "--derivatives" in result.console


def test_a_mask_without_the_session_entity_is_named_in_a_warning(patient, tmp_path, caplog):
    from thalamus_bidsapp.config import RunConfig
    from thalamus_bidsapp.participant.plan import preflight_sessions

    bids, lesions = _dataset(tmp_path, patient, {"sub-07_label-lesion_mask.nii.gz":
                                                 (patient["lesion"].astype(np.uint8), None)}, session="1")
    sessions = _sessions(bids, lesions)
    (session,) = sessions
    assert session.lesion is None and not session.problems  # no explicit filter: the session runs, warned
    (note,) = session.notes
    assert "no lesion mask found" in note and "sub-07_label-lesion_mask.nii.gz" in note and "ses-1" in note
    assert str(lesions) in note
    # The run logs it as a warning of that session, and the session goes on without lesions.
    config = RunConfig(bids_dir=bids, output_dir=tmp_path / "out", analysis_level="participant",
                       work_dir=tmp_path / "work")
    statuses: dict = {}
    with caplog.at_level("WARNING"):
        prepared = preflight_sessions(sessions, config, statuses)
    assert list(prepared) == [session.name] and not statuses
    (warning,) = [r for r in caplog.records if "no lesion mask found" in r.getMessage()]
    assert warning.levelname == "WARNING" and warning.getMessage().startswith(f"{session.name}: ")
    assert "sub-07_label-lesion_mask.nii.gz" in warning.getMessage()


def test_ordering_note_says_by_name_when_there_are_no_runs(tmp_path):
    bids, _ = make_dataset(tmp_path / "bids")
    anat = bids / "sub-01" / "anat"
    (anat / "sub-01_acq-b_T1w.nii.gz").write_bytes((anat / "sub-01_T1w.nii.gz").read_bytes())
    layout = inputs.open_layout(bids, validate=False, database_dir=None)
    (session,) = inputs.collect_sessions(layout, {}, inputs.default_queries(), participant_labels=None,
                                         session_labels=None)
    (note,) = session.notes
    assert "by file name" in note and "lowest run number" not in note


# ----------------------------------------------------------------------------------- stale outputs


def _published(out: Path, session: str, names: list[str]) -> None:
    anat = out / session / "anat"
    anat.mkdir(parents=True, exist_ok=True)
    for name in names:
        (anat / f"{session}_{name}").write_text(name)


def test_a_commit_replaces_the_session_set_and_rolls_back_whole(tmp_path, caplog):
    out = tmp_path / "out"
    old = ["desc-lesionfilled_T1w.nii.gz", "space-T1w_label-thalamus_desc-meshnetUnfilled_mask.nii.gz",
           "space-T1w_label-thalamus_desc-meshnet_mask.nii.gz"]
    _published(out, "sub-01", old)
    _published(out, "sub-02", old)  # another session: never touched
    figure = out / "sub-01" / "figures" / "sub-01_space-T1w_label-thalamus_desc-meshnetUnfilled_mask.svg"
    figure.parent.mkdir()
    figure.write_text("<svg/>")
    staging = Staging(out, "run1").open()
    _published(staging.session_dir("sub-01"), "sub-01", ["space-T1w_label-thalamus_desc-meshnet_mask.nii.gz"])
    staging.commit("sub-01")
    staging.close()
    assert sorted(p.name for p in (out / "sub-01" / "anat").iterdir()) == [
        "sub-01_space-T1w_label-thalamus_desc-meshnet_mask.nii.gz"]
    assert not figure.exists()
    assert len(list((out / "sub-02" / "anat").iterdir())) == 3
    assert "sub-01: removed 2 earlier output(s)" in caplog.text and "desc-meshnetUnfilled" in caplog.text
    assert not [p for p in out.rglob(".*") if p.name.endswith(".bak")]


def test_a_failed_commit_keeps_the_stale_files_too(tmp_path, monkeypatch):
    from thalamus_bidsapp.bidsio import staging as staging_module

    out = tmp_path / "out"
    _published(out, "sub-01", ["desc-lesionfilled_T1w.nii.gz", "label-thalamus_volumes.tsv"])
    before = tree_digest(out)
    staging = Staging(out, "run1").open()
    _published(staging.session_dir("sub-01"), "sub-01", ["label-thalamus_volumes.tsv", "desc-new_T1w.nii.gz"])

    def full(staged, final):
        raise OSError(28, "No space left on device", str(final))

    monkeypatch.setattr(staging_module, "_move", full)
    with pytest.raises(ThalamusError) as err:
        staging.commit("sub-01")
    assert err.value.exit_code == 73 and "sub-01_desc-new_T1w.nii.gz" in str(err.value)
    staging.close()
    assert tree_digest(out) == before


def test_group_tables_do_not_list_a_vanished_method(tmp_path):
    from tests.fuzz.dataset_cases import thalamus_mask, write_participant_outputs
    from thalamus_bidsapp.bidsio.derivatives import derivative_path

    bids, _ = make_dataset(tmp_path / "bids", subjects=("01", "02"))
    out = tmp_path / "out"
    written = write_participant_outputs(out, bids, {("01", None): "ok", ("02", None): "ok"})
    unfilled = derivative_path(out, {"subject": "01", "datatype": "anat", "space": "T1w", "label": "thalamus",
                                     "desc": "firstUnfilled", "suffix": "mask", "extension": ".nii.gz"})
    nib.save(thalamus_mask("6.0"), str(unfilled))
    # The new run of sub-01 publishes its set without the unfilled mask: the commit removes it.
    staging = Staging(out, "rerun").open()
    for path in written[("01", None)].values():
        target = staging.session_dir("sub-01") / path.relative_to(out)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
    staging.commit("sub-01")
    staging.close()
    assert not unfilled.exists()
    result = run_app(bids, out, "group", "-w", tmp_path / "work")
    assert result.code == 0, result.console
    for table in ("containment.tsv", "volumes.tsv"):
        assert "firstUnfilled" not in (out / "group" / table).read_text()
    assert "firstUnfilled" not in (out / "group" / "report.html").read_text()


def _dataset_with_a_lesion_mask(tmp_path):
    """The cropped bert dataset and a lesions derivatives dataset with a 144-voxel box as sub-01's lesion mask."""
    from tests.fuzz.dataset_cases import cropped_t1w

    bids, fs = make_dataset(tmp_path / "bids")
    lesions = tmp_path / "lesions"
    write_description(lesions, "lesion tool")
    (lesions / "sub-01" / "anat").mkdir(parents=True)
    t1w = cropped_t1w()
    mask = np.zeros(t1w.shape, np.uint8)
    mask[40:46, 28:32, 40:46] = 1
    nib.save(nib.Nifti1Image(mask, t1w.affine), str(lesions / "sub-01" / "anat" / "sub-01_label-lesion_mask.nii.gz"))
    return bids, fs, lesions, t1w, mask


@pytest.mark.slow
def test_lesion_filling_off_after_auto_removes_the_filled_t1w(tmp_path):
    bids, fs, lesions, t1w, mask = _dataset_with_a_lesion_mask(tmp_path)
    out = tmp_path / "out"
    args = [bids, out, "participant", "-w", tmp_path / "work", "--fs-subjects-dir", fs, *CLI,
            "--derivatives", f"lesions={lesions}"]
    first = run_app(*args, "--lesion-filling", "auto")
    assert first.code == 0, first.console
    filled = out / "sub-01" / "anat" / "sub-01_desc-lesionfilled_T1w.nii.gz"
    assert filled.is_file()
    sidecar = json.loads((out / "sub-01" / "anat" / "sub-01_space-T1w_label-lesion_mask.json").read_text())
    assert sidecar["LesionVolume_mL"] == pytest.approx(mask.sum() * abs(np.linalg.det(t1w.affine[:3, :3])) / 1000)
    second = run_app(*args, "--lesion-filling", "off")
    assert second.code == 0, second.console
    assert not filled.exists() and not filled.with_name("sub-01_desc-lesionfilled_T1w.json").exists()
    assert "removed 2 earlier output(s)" in second.console and "desc-lesionfilled_T1w" in second.console
    assert "sub-01_desc-lesionfilled_T1w.nii.gz" not in (out / "sub-01.html").read_text()
    volumes = read_tsv(out / "sub-01" / "anat" / "sub-01_label-thalamus_volumes.tsv")
    assert not volumes["lesion_filled"].astype(str).str.lower().eq("true").any()
    (methods,) = [json.loads(p.read_text()) for p in sorted(out.glob("logs/*/methods.json"))[-1:]]
    assert methods["sub-01"]["inputs"]["lesion"].endswith("sub-01_label-lesion_mask.nii.gz")
    assert methods["sub-01"]["lesion_input"]["LesionMask"].endswith("sub-01_label-lesion_mask.nii.gz")


@pytest.mark.slow
def test_lesion_filling_off_after_both_leaves_no_unfilled_mask_anywhere(tmp_path, monkeypatch):
    fsl = tmp_path / "fsl"
    (fsl / "bin").mkdir(parents=True)
    (fsl / "etc").mkdir()
    (fsl / "etc" / "fslversion").write_text("6.0.7.9\n")
    shutil.copy2(Path(__file__).parents[1] / "fakes" / "run_first_all", fsl / "bin" / "run_first_all")
    monkeypatch.setenv("FSLDIR", str(fsl))
    monkeypatch.setenv("FAKE_FIRST_ASEG", str(shared_file("freesurfer_bert_7.2", "mri", "aseg.mgz")))
    monkeypatch.setenv("PATH", os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]))
    bids, fs, lesions, t1w, mask = _dataset_with_a_lesion_mask(tmp_path)
    out = tmp_path / "out"
    args = [bids, out, "participant", "-w", tmp_path / "work", "--fs-subjects-dir", fs, "--methods", "freesurfer",
            "first", "--nprocs", "1", "--skip-bids-validation", "--template", "none", "--derivatives",
            f"lesions={lesions}"]
    first = run_app(*args, "--lesion-filling", "both")
    assert first.code == 0, first.console
    assert list(out.glob("sub-01/anat/*desc-firstUnfilled_mask.nii.gz"))
    assert run_app(bids, out, "group", "-w", tmp_path / "work").code == 0
    assert "firstUnfilled" in (out / "group" / "containment.tsv").read_text()
    second = run_app(*args, "--lesion-filling", "off")
    assert second.code == 0, second.console
    assert re.search(r"sub-01: removed \d+ earlier output\(s\)", second.console)
    assert "desc-firstUnfilled_mask.nii.gz" in second.console and "desc-lesionfilled_T1w.nii.gz" in second.console
    assert not [p for p in out.glob("sub-01/**/*") if "Unfilled" in p.name or "lesionfilled" in p.name]
    assert "firstUnfilled" not in (out / "sub-01.html").read_text()
    group = run_app(bids, out, "group", "-w", tmp_path / "work")
    assert group.code == 0, group.console
    for table in ("containment.tsv", "volumes.tsv", "qc.tsv", "agreement_pairwise.tsv"):
        assert "firstUnfilled" not in (out / "group" / table).read_text(), table
    assert sorted(set(read_tsv(out / "group" / "volumes.tsv")["method"])) == ["first", "freesurfer"]
    assert "desc-firstUnfilled" not in (out / "group" / "report.html").read_text()
