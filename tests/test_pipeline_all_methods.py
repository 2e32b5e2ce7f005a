"""The whole participant and group pipeline with every method, on real anatomy.

bert's T1w is cropped around the thalamus (96 x 60 x 96 voxels, so MindGlide
needs one sliding window) and given two sessions:

- ses-1: a FLAIR-like image shifted by 4 mm and an R1-like map (1.6 mm,
  non-linear contrast, bias, noise, 6 degrees and 7 mm misaligned) from an
  hMRI-style derivatives dataset, and a manual mask (bert's FreeSurfer 6.0
  thalamus) from another derivatives dataset;
- ses-2: the same FLAIR, but noise as its R1 map, which the QC must exclude
  without stopping the session.

FSL's run_first_all and DBSegment are the test suite's fakes (FSL without
flirt, so registration falls back to ANTs rigid alone, as recorded), FreeSurfer
is bert's finished subject, MeshNet and MindGlide are real (MindGlide with a
randomly initialised checkpoint made here).
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
from tests.registration_helpers import make_brain_mask, make_noise_like, make_r1_like, make_shifted
from thalamus_bidsapp.bidsio.atomic import read_tsv
from thalamus_bidsapp.cli.run import main
from thalamus_bidsapp.tools import dbsegment

torch = pytest.importorskip("torch")
pytest.importorskip("mindglide")

FAKES = Path(__file__).parent / "fakes"
HALF_WIDTH = (48, 30, 48)  # voxels each side of bert's thalamus centre, LIA storage
T1W_METHODS = ("freesurfer", "first", "dbsegment", "meshnet")
SES1_MINDGLIDE = ("mindglideT1w", "mindglideFLAIR", "mindglideR1",
                  "ensembleT1wFLAIR", "ensembleT1wR1", "ensembleR1FLAIR", "ensembleT1wFLAIRR1")
#: Two T1w sessions would also get the longitudinal mode (a template, each method on it, one SyN per session):
#: minutes more, and outputs these checks of the cross-sectional methods do not cover (tests/longitudinal/ do).
LONGITUDINAL_OFF = ("--longitudinal", "off")

pytestmark = pytest.mark.slow


def _crop(img: nib.spatialimages.SpatialImage, centre: np.ndarray, dtype) -> nib.Nifti1Image:
    window = tuple(slice(c - h, c + h) for c, h in zip(centre, HALF_WIDTH))
    data = np.asanyarray(img.dataobj)[window].astype(dtype)
    return nib.Nifti1Image(data, img.slicer[window].affine)


def _mask(path: Path) -> np.ndarray:
    return np.asanyarray(nib.load(str(path)).dataobj) > 0


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("all_methods")
    aseg = nib.load(str(shared_file("freesurfer_bert_7.2", "mri", "aseg.mgz")))
    labels = np.asanyarray(aseg.dataobj)
    centre = np.array(np.nonzero(np.isin(labels, [10, 49]))).mean(axis=1).round().astype(int)
    t1w = _crop(nib.load(str(shared_file("freesurfer_bert_7.2", "mri", "brainmask.mgz"))), centre, np.float32)

    bids, r1_deriv, manual_deriv = root / "bids", root / "hmri", root / "manual"
    for folder, name in ((bids, "bert two sessions"), (r1_deriv, "hMRI"), (manual_deriv, "manual masks")):
        write_description(folder, name)
    scratch = root / "scratch"
    scratch.mkdir()
    nib.save(t1w, str(scratch / "t1w.nii.gz"))
    brain = make_brain_mask(scratch / "t1w.nii.gz", scratch / "brain.nii.gz")
    make_r1_like(scratch / "t1w.nii.gz", brain, scratch / "r1.nii.gz",
                 rotation_deg=(6.0, -4.0, 3.0), translation_mm=(5.0, -4.0, 7.0))
    make_shifted(scratch / "t1w.nii.gz", scratch / "flair.nii.gz", (4.0, 0.0, -3.0))
    make_noise_like(scratch / "r1.nii.gz", scratch / "noise.nii.gz")
    manual = _crop(nib.load(str(shared_file("freesurfer_bert_6.0", "mri", "aseg.mgz"))), centre, np.int16)
    manual = nib.Nifti1Image(np.isin(np.asanyarray(manual.dataobj), [10, 49]).astype(np.uint8), manual.affine)
    for session, r1_source in (("1", "r1.nii.gz"), ("2", "noise.nii.gz")):
        anat = bids / "sub-01" / f"ses-{session}" / "anat"
        anat.mkdir(parents=True)
        shutil.copy(scratch / "t1w.nii.gz", anat / f"sub-01_ses-{session}_T1w.nii.gz")
        shutil.copy(scratch / "flair.nii.gz", anat / f"sub-01_ses-{session}_FLAIR.nii.gz")
        r1_anat = r1_deriv / "sub-01" / f"ses-{session}" / "anat"
        r1_anat.mkdir(parents=True)
        shutil.copy(scratch / r1_source, r1_anat / f"sub-01_ses-{session}_R1map.nii.gz")
    manual_anat = manual_deriv / "sub-01" / "ses-1" / "anat"
    manual_anat.mkdir(parents=True)
    nib.save(manual, str(manual_anat / "sub-01_ses-1_label-thalamus_desc-manual_mask.nii.gz"))
    (bids / "participants.tsv").write_text("participant_id\tage\tsex\nsub-01\t35\tM\n")
    (bids / "sub-01" / "sub-01_sessions.tsv").write_text(
        "session_id\tacq_time\tedss\nses-1\t2020-01-01T10:00:00\t2.0\nses-2\t2021-01-10T10:00:00\t2.5\n")
    subjects_dir = root / "freesurfer"
    subjects_dir.mkdir()
    (subjects_dir / "sub-01").symlink_to(shared_file("freesurfer_bert_7.2"))

    # Tools: FSL with run_first_all only, DBSegment on PATH, a MindGlide checkpoint.
    fsl = root / "fsl"
    (fsl / "bin").mkdir(parents=True)
    (fsl / "etc").mkdir()
    (fsl / "etc" / "fslversion").write_text("6.0.7.9\n")
    shutil.copy2(FAKES / "run_first_all", fsl / "bin" / "run_first_all")
    bin_dir = root / "bin"
    bin_dir.mkdir()
    shutil.copy2(FAKES / "DBSegment", bin_dir / "DBSegment")
    models = root / "dbsegment_models"
    trainer = models / dbsegment.MODEL_BUNDLE_ALL_FOLDS / dbsegment.TRAINER_SUBDIR
    for fold in range(5):
        (trainer / f"fold_{fold}").mkdir(parents=True)
    from mindglide import network

    torch.manual_seed(0)
    checkpoint = root / "mindglide_random.pt"
    torch.save(network.get_network(torch.device("cpu")).state_dict(), checkpoint)

    env = {
        "FSLDIR": str(fsl),
        "PATH": os.pathsep.join([str(bin_dir), str(Path(sys.executable).parent), os.environ["PATH"]]),
        "FAKE_FIRST_ASEG": str(shared_file("freesurfer_bert_7.2", "mri", "aseg.mgz")),
        "FAKE_DBSEGMENT_TRUTH": str(shared_file("freesurfer_bert_7.2", "mri", "aseg.mgz")),
        "DBSEGMENT_MODEL_PATH": str(models),
        "HF_HUB_OFFLINE": "1",
    }
    out, work = root / "out", root / "work"
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        patch.delenv("MODEL_PATH", raising=False)
        code = main([str(bids), str(out), "participant", "--fs-subjects-dir", str(subjects_dir),
                     "--derivatives", f"r1={r1_deriv}", f"manual={manual_deriv}",
                     "--mindglide-model", str(checkpoint), "-w", str(work), "--nprocs", "1",
                     "--omp-nthreads", "2", *LONGITUDINAL_OFF])
        group_code = main([str(bids), str(out), "group", "--derivatives", f"manual={manual_deriv}",
                           "-w", str(work)])
    truth = _crop(aseg, centre, np.int16)
    return {"out": out, "code": code, "group_code": group_code,
            "truth": np.isin(np.asanyarray(truth.dataobj), [10, 49])}


def _anat(run, session: str) -> Path:
    return run["out"] / "sub-01" / f"ses-{session}" / "anat"


def _thalamus(run, session: str, method: str) -> Path:
    return _anat(run, session) / f"sub-01_ses-{session}_space-T1w_label-thalamus_desc-{method}_mask.nii.gz"


def test_exit_codes(run):
    assert run["code"] == 0 and run["group_code"] == 0


def test_every_method_writes_a_mask(run):
    for method in (*T1W_METHODS, *SES1_MINDGLIDE):
        assert _thalamus(run, "1", method).is_file(), method


def test_tool_masks_voxel_for_voxel(run):
    # The fakes write bert's aseg thalamus in the tools' own spaces and file names.
    for method in ("freesurfer", "first", "dbsegment"):
        mask = _mask(_thalamus(run, "1", method))
        assert mask.sum() == 17060, method
        # The masks are on the reoriented (RAS) T1w grid; the truth is in LIA storage.
        img = nib.load(str(_thalamus(run, "1", method)))
        assert "".join(nib.aff2axcodes(img.affine)) == "RAS"
    freesurfer = _mask(_thalamus(run, "1", "freesurfer"))
    assert np.array_equal(freesurfer, _mask(_thalamus(run, "1", "first")))
    assert np.array_equal(freesurfer, _mask(_thalamus(run, "1", "dbsegment")))


def test_meshnet_agrees_with_freesurfer(run):
    a, b = _mask(_thalamus(run, "1", "meshnet")), _mask(_thalamus(run, "1", "freesurfer"))
    assert 2 * (a & b).sum() / (a.sum() + b.sum()) > 0.8


def test_mindglide_masks_and_ensembles(run):
    envelope = _mask(_thalamus(run, "1", "first"))
    masks = {c: _mask(_thalamus(run, "1", f"mindglide{c}")) for c in ("T1w", "FLAIR", "R1")}
    for contrast, mask in masks.items():
        assert not (mask & ~envelope).any(), f"mindglide{contrast} leaves its FIRST envelope"
    ensemble = {name: _mask(_thalamus(run, "1", f"ensemble{name}"))
                for name in ("T1wFLAIR", "T1wR1", "R1FLAIR", "T1wFLAIRR1")}
    assert np.array_equal(ensemble["T1wFLAIR"], masks["T1w"] | masks["FLAIR"])
    assert np.array_equal(ensemble["T1wR1"], masks["T1w"] | masks["R1"])
    assert np.array_equal(ensemble["R1FLAIR"], masks["R1"] | masks["FLAIR"])
    votes = masks["T1w"].astype(int) + masks["FLAIR"] + masks["R1"]
    assert np.array_equal(ensemble["T1wFLAIRR1"], votes >= 2)
    sidecar = json.loads(_thalamus(run, "1", "mindglideR1").with_suffix("").with_suffix(".json").read_text())
    assert sidecar["Contrast"] == "R1map"
    assert sidecar["Envelope"] == "first" and len(sidecar["ModelSHA256"]) == 64


def test_sidecars_record_tool_version_call_and_labels(run):
    first = json.loads(_thalamus(run, "1", "first").with_suffix("").with_suffix(".json").read_text())
    assert first["Tool"] == "FSL FIRST (run_first_all)"
    assert "run_first_all" in json.dumps(first) and "6.0.7.9" in json.dumps(first)
    dbseg = json.loads(_thalamus(run, "1", "dbsegment").with_suffix("").with_suffix(".json").read_text())
    assert "-mp" in dbseg["Command"] and dbseg["ModelChecksums"] is not None
    assert set(dbseg["LabelsTaken"]) == {"24", "25", "26", "27", "30", "31"}
    meshnet = json.loads(_thalamus(run, "1", "meshnet").with_suffix("").with_suffix(".json").read_text())
    assert "d28521c0965e452c371314e4b5b4dcef7b19aa91241b17ef894ac24952139701" in json.dumps(meshnet)


def test_registration_qc_and_outputs(run):
    anat = _anat(run, "1")
    qc = read_tsv(anat / "sub-01_ses-1_desc-registration_qc.tsv")
    selected = qc[qc["selected"].astype(str).str.lower() == "true"]
    assert set(selected["image"]) == {"FLAIR", "R1map"}
    assert set(selected["strategy"]) == {"ants_rigid"}
    assert (selected["mi"] >= selected["cutoff"]).all()
    assert qc["reason"].str.contains("FSL").any()  # FLIRT not available: recorded
    r1 = nib.load(str(anat / "sub-01_ses-1_space-T1w_desc-scaled_R1map.nii.gz"))
    t1w = nib.load(str(anat / "sub-01_ses-1_desc-preproc_T1w.nii.gz"))
    assert r1.shape == t1w.shape and np.allclose(r1.affine, t1w.affine)
    values = np.asanyarray(r1.dataobj)
    brain = _mask(anat / "sub-01_ses-1_space-T1w_desc-brain_mask.nii.gz")
    assert values.min() >= 0 and values.max() == pytest.approx(1000, abs=1e-3)
    assert not values[~brain].any()
    assert (anat / "sub-01_ses-1_space-T1w_desc-preproc_FLAIR.nii.gz").is_file()
    assert list(anat.glob("sub-01_ses-1_from-R1map_to-T1w_mode-image_xfm.*"))
    assert list(anat.glob("sub-01_ses-1_from-FLAIR_to-T1w_mode-image_xfm.*"))
    figures = run["out"] / "sub-01" / "figures"
    assert (figures / "sub-01_ses-1_space-T1w_desc-registration_R1map.svg").is_file()


def test_wrong_r1_is_excluded_and_the_session_completes(run):
    anat = _anat(run, "2")
    qc = read_tsv(anat / "sub-01_ses-2_desc-registration_qc.tsv")
    r1_rows = qc[qc["image"] == "R1map"]
    assert not (r1_rows["selected"].astype(str).str.lower() == "true").any()
    assert r1_rows["reason"].str.contains("excluded").any()
    assert not list(anat.glob("*R1map.nii.gz"))
    for method in ("mindglideR1", "ensembleT1wR1", "ensembleR1FLAIR", "ensembleT1wFLAIRR1"):
        assert not _thalamus(run, "2", method).exists(), method
    for method in (*T1W_METHODS, "mindglideT1w", "mindglideFLAIR", "ensembleT1wFLAIR"):
        assert _thalamus(run, "2", method).is_file(), method


def test_volumes_match_the_masks(run):
    full = read_tsv(_anat(run, "1") / "sub-01_ses-1_label-thalamus_volumes.tsv")
    table = full[full["hemisphere"] == "bilateral"].set_index("method")
    assert set(table.index) == {*T1W_METHODS, *SES1_MINDGLIDE}
    for method in table.index:
        assert table.loc[method, "n_voxels"] == _mask(_thalamus(run, "1", method)).sum()
    assert table.loc["ensembleT1wFLAIR", "contrast"] == "T1w+FLAIR"
    # Every mask has a left and a right row adding up to it.
    for method, rows in full.groupby("method"):
        rows = rows.set_index("hemisphere")
        assert list(rows.index) == ["bilateral", "left", "right"], method
        assert rows.loc["left", "n_voxels"] + rows.loc["right", "n_voxels"] == rows.loc["bilateral", "n_voxels"]


def test_without_a_lesion_mask_nothing_is_filled_or_recorded_as_filled(run):
    assert not list(_anat(run, "1").glob("*lesion*"))  # no lesion mask, no filled T1w
    for method in (*T1W_METHODS, *SES1_MINDGLIDE):
        sidecar = json.loads(_thalamus(run, "1", method).with_suffix("").with_suffix(".json").read_text())
        assert sidecar["LesionFilled"] is False, method
    table = read_tsv(_anat(run, "1") / "sub-01_ses-1_label-thalamus_volumes.tsv")
    assert table["lesion_volume_ml"].isna().all() and not table["lesion_filled"].astype(bool).any()


def test_every_mask_has_sides_from_its_labels_or_its_envelope(run):
    sides = {}
    for method in (*T1W_METHODS, *SES1_MINDGLIDE):
        path = _anat(run, "1") / f"sub-01_ses-1_space-T1w_seg-thalamus_desc-{method}_dseg.nii.gz"
        sides[method] = np.asanyarray(nib.load(str(path)).dataobj)
        assert np.array_equal(sides[method] > 0, _mask(_thalamus(run, "1", method))), method
        assert path.with_name(path.name.replace(".nii.gz", ".tsv")).is_file()
    # The fakes write bert's aseg: FreeSurfer, FIRST and DBSegment sides agree voxel for voxel.
    assert int((sides["freesurfer"] == 1).sum()) == 8431 and int((sides["freesurfer"] == 2).sum()) == 8629
    assert np.array_equal(sides["freesurfer"], sides["first"])
    assert np.array_equal(sides["freesurfer"], sides["dbsegment"])
    # MindGlide masks and ensembles take the FIRST envelope's side of each voxel.
    for method in SES1_MINDGLIDE:
        inside = sides[method] > 0
        assert np.array_equal(sides[method][inside], sides["first"][inside]), method


def test_group_agreement_and_containment(run):
    group = run["out"] / "group"
    voxelwise = read_tsv(group / "agreement_voxelwise.tsv")
    rows = voxelwise[voxelwise["session_id"] == "ses-1"].set_index("method")
    # bert FreeSurfer 7.2 against the 6.0 "manual" mask of the same T1w.
    assert rows.loc["freesurfer", "dice"] == pytest.approx(0.96, abs=0.01)
    assert (group / "containment.tsv").is_file()
    volumes = read_tsv(group / "volumes.tsv")
    assert {"age", "sex", "edss"} <= set(volumes.columns)


def test_segmentation_qc_per_session_and_group(run):
    qc = read_tsv(_anat(run, "1") / "sub-01_ses-1_label-thalamus_desc-segmentation_qc.tsv")
    assert set(qc["method"]) == {*T1W_METHODS, *SES1_MINDGLIDE}
    assert (qc.groupby("method").size() == 10).all()  # the group level adds cohort_robust_z and annual_change
    rows = qc.set_index(["method", "check"])
    # MindGlide's seven masks (a random checkpoint here) count as one method: they do not outvote the others.
    assert rows.loc[("freesurfer", "dice_methods"), "status"] == "pass"
    assert "4 other method(s)" in rows.loc[("freesurfer", "dice_methods"), "reason"]
    for side in ("left", "right"):
        assert rows.loc[("freesurfer", f"components_{side}"), "status"] == "pass"
    assert rows.loc[("freesurfer", "lr_ratio"), "value"] == pytest.approx(8431 / 8629, abs=1e-3)
    # The template prior (registered with the fast schedule on this crop) feeds the prior checks of every mask.
    prior = qc[qc["check"].isin(["dice_prior", "centroid_left", "centroid_right", "side_swap"])]
    assert (prior["status"] != "skipped").all() and prior["reason"].str.contains("prior").all()
    assert len(list(_anat(run, "1").glob("*_desc-prior_probseg.nii.gz"))) == 2
    same = qc[qc["method"].isin(["freesurfer", "first", "dbsegment"]) & (qc["check"] == "dice_prior")]
    assert same["value"].nunique() == 1  # the fakes write bert's aseg: one mask, one Dice with the prior
    assert rows.loc[("freesurfer", "side_swap"), "value"] == 0
    # The registration MI is folded in for the FLAIR and R1 masks (ANTs passed its cut-off), not for T1w ones.
    assert rows.loc[("freesurfer", "registration_mi"), "status"] == "skipped"
    assert rows.loc[("mindglideFLAIR", "registration_mi"), "value"] >= 0
    assert rows.loc[("ensembleT1wFLAIRR1", "registration_mi"), "status"] in {"pass", "warn"}
    volumes = read_tsv(_anat(run, "1") / "sub-01_ses-1_label-thalamus_volumes.tsv")
    assert set(volumes["qc_status"]) <= {"pass", "warn", "fail"}
    group = run["out"] / "group"
    group_qc = read_tsv(group / "qc.tsv")
    change = group_qc[(group_qc["check"] == "annual_change") & (group_qc["method"] == "freesurfer")]
    # The same T1w a year apart: no change, flagged on neither session.
    assert change["session_id"].tolist() == ["ses-1", "ses-2"]
    assert change["value"].abs().max() < 1e-9 and (change["status"] == "pass").all()
    assert (group_qc.loc[group_qc["check"] == "cohort_robust_z", "status"] == "skipped").all()
    assert "qc_status" in read_tsv(group / "volumes.tsv")
