"""Several methods in longitudinal mode: one SyN per session, each method's rows and masks, failures kept apart.

The subject is a 2 mm crop of bert around the thalami, rescanned twice (the
second time with a -3 % radial contraction of the thalamic region). FSL FIRST
is the test suite's fake ``run_first_all`` (bert's aseg thalamus, through the
real adapter: temp folder, firstseg labels, left/right split); MeshNet's
networks are replaced by bert's aseg thalamus eroded by one voxel, so that the
two methods' template masks differ.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from tests.conftest import shared_file
from tests.longitudinal.simulate import Contraction, covering_ball, crop_around, rescan
from thalamus_bidsapp.bidsio.atomic import read_tsv
from thalamus_bidsapp.methods.capabilities import SIDE_REGIONS
from thalamus_bidsapp.methods.planning import ToolCheck
from thalamus_bidsapp.tools import ants_longitudinal as al
from thalamus_bidsapp.workflows import longitudinal_outputs as lo
from thalamus_bidsapp.workflows.longitudinal import TemplateSegmentation, segment_template

FAKES = Path(__file__).resolve().parents[1] / "fakes"
ASEG = ("freesurfer_bert_7.2", "mri", "aseg.mgz")


def _aseg_sides_on(image: nib.Nifti1Image) -> np.ndarray:
    """bert's aseg thalamus (1 left, 2 right) on ``image``'s grid, nearest neighbour through world coordinates."""
    aseg = nib.load(str(shared_file(*ASEG)))
    ijk = np.indices(image.shape[:3]).reshape(3, -1).T
    source = nib.affines.apply_affine(np.linalg.inv(aseg.affine) @ image.affine, ijk).T
    labels = ndimage.map_coordinates(np.asarray(aseg.dataobj), source, order=0).reshape(image.shape[:3])
    return ((labels == 10) * 1 + (labels == 49) * 2).astype(np.uint8)


@pytest.fixture(scope="module")
def subject(tmp_path_factory):
    """Two published sessions of sub-01 (a preproc T1w and a brain mask each) and an empty BIDS folder."""
    t1w = nib.load(str(shared_file("freesurfer_bert_7.2", "mri", "norm.mgz")))
    aseg = nib.load(str(shared_file(*ASEG)))
    thalamus = nib.Nifti1Image(np.isin(np.asarray(aseg.dataobj), (10, 49)).astype(np.uint8), aseg.affine)
    center, radius = covering_ball(thalamus)
    image = crop_around(nib.Nifti1Image(np.asarray(t1w.dataobj, np.float32), t1w.affine), center, 40.0, zoom=2.0)
    root = tmp_path_factory.mktemp("long_methods")
    out = root / "out"
    for label, seed, change in (("1", 1, 0.0), ("2", 2, -0.03)):
        anat = out / "sub-01" / f"ses-{label}" / "anat"
        anat.mkdir(parents=True)
        session = rescan(image, seed, contraction=Contraction(center, radius, change) if change else None)
        nib.save(session, anat / f"sub-01_ses-{label}_desc-preproc_T1w.nii.gz")
        nib.save(nib.Nifti1Image(np.ones(image.shape, np.uint8), image.affine),
                 anat / f"sub-01_ses-{label}_space-T1w_desc-brain_mask.nii.gz")
    (root / "bids" / "sub-01").mkdir(parents=True)
    return root


@pytest.fixture
def fsl_home(fsl_home, monkeypatch):
    """The fake FSLDIR of tests/conftest.py, its run_first_all reading bert's aseg."""
    monkeypatch.setenv("FAKE_FIRST_ASEG", str(shared_file(*ASEG)))
    return fsl_home


@pytest.fixture
def meshnet_eroded(monkeypatch):
    """MeshNet's two networks replaced by bert's aseg thalamus eroded by one voxel (counts the calls)."""
    from thalamus_bidsapp.tools import meshnet

    calls = []

    def segment_thalamus_sides(image, model_dir, sides_model_dir, *, threads=None, **_):
        calls.append(image.shape)
        sides = _aseg_sides_on(image)
        for side in (1, 2):
            sides[(sides == side) & ~ndimage.binary_erosion(sides == side)] = 0
        return nib.Nifti1Image((sides > 0).astype(np.uint8), image.affine), sides, {"Tool": "MeshNet (test)"}

    monkeypatch.setattr(meshnet, "segment_thalamus_sides", segment_thalamus_sides)
    return calls


@pytest.fixture
def syn_calls(monkeypatch):
    """The real SyN, with each call counted."""
    calls = []
    real = al.syn_to_template

    def counted(template_box, session_box, **kwargs):
        calls.append(template_box.shape)
        return real(template_box, session_box, **kwargs)

    monkeypatch.setattr(al, "syn_to_template", counted)
    return calls


def _tools(tmp_path, **reasons):
    models = {"model_dir": tmp_path, "sides_model_dir": tmp_path}
    return ToolCheck(reasons={"meshnet": None, "first": None, **reasons}, settings={"meshnet": models})


def _run(root, work, methods, tools):
    config = SimpleNamespace(methods=methods, output_dir=root / "out", bids_dir=root / "bids", work_dir=work)
    return lo.longitudinal_step(config, _inputs(), tools, threads=1)


def _inputs():
    from thalamus_bidsapp.bidsio.inputs import SessionInputs

    return [SessionInputs("01", label, Path("t1w.nii.gz")) for label in ("1", "2")]


def _anat(root, label):
    return root / "out" / "sub-01" / f"ses-{label}" / "anat"


@pytest.mark.slow
def test_two_methods_share_one_syn_per_session(subject, tmp_path, fsl_home, meshnet_eroded, syn_calls, caplog):
    tools = _tools(tmp_path, dbsegment="DBSegment not found on PATH")
    with caplog.at_level(logging.INFO):
        outcomes = _run(subject, tmp_path / "work", ("first", "meshnet", "dbsegment"), tools)
    assert outcomes["01"].startswith("ok: 2 sessions measured by first, meshnet"), outcomes
    assert len(syn_calls) == 2 and len(meshnet_eroded) == 1  # one SyN per session, one MeshNet on the template
    table = read_tsv(subject / "out" / "sub-01" / "anat" / "sub-01_label-thalamus_desc-longitudinal_volumes.tsv")
    long = table[table["mode"] == "longitudinal"].set_index(["method", "hemisphere"])
    assert set(long.index) == {(m, h) for m in ("first", "meshnet") for h in ("left", "right", "bilateral")}
    # The same deformation over two boundaries: both see the contraction, and the eroded mask is smaller.
    for method in ("first", "meshnet"):
        assert -5.5 < long.loc[(method, "bilateral"), "change_pct"] < -2.0  # truth -3 %
        assert long.loc[(method, "bilateral"), "volume_from_ml"] == pytest.approx(
            long.loc[(method, "left"), "volume_from_ml"] + long.loc[(method, "right"), "volume_from_ml"])
    assert long.loc[("meshnet", "bilateral"), "volume_from_ml"] < 0.8 * long.loc[("first", "bilateral"),
                                                                                 "volume_from_ml"]
    assert 10.0 < long.loc[("first", "bilateral"), "volume_from_ml"] < 22.0  # an adult thalamus, both sides
    # Per-method masks in each session, one rigid transform per session, each method's template labels.
    for label in ("1", "2"):
        anat = _anat(subject, label)
        masks = {m: np.asarray(nib.load(str(anat / f"sub-01_ses-{label}_space-T1w_label-thalamus_desc-{m}Long_"
                                              "mask.nii.gz")).dataobj) for m in ("first", "meshnet")}
        assert masks["meshnet"].sum() < masks["first"].sum()
        assert len(list(anat.glob("*_to-longitudinal_mode-image_xfm.txt"))) == 1
        assert not list(anat.glob("*dbsegmentLong*"))
        sidecar = json.loads((anat / f"sub-01_ses-{label}_space-T1w_label-thalamus_desc-firstLong_mask.json")
                             .read_text())
        assert sidecar["Method"] == "first" and set(sidecar["VolumesML"]) == {"left", "right", "bilateral"}
    subject_anat = subject / "out" / "sub-01" / "anat"
    first_template = json.loads((subject_anat / "sub-01_seg-thalamus_desc-firstLongTemplate_dseg.json").read_text())
    assert first_template["Tool"] == "FSL FIRST (run_first_all)" and "-b" in first_template["Command"]
    template = json.loads((subject_anat / "sub-01_desc-longitudinaltemplate_T1w.json").read_text())
    assert template["Methods"] == ["first", "meshnet"]
    assert "DBSegment not found" in template["MethodsNotMeasured"]["dbsegment"]
    assert "dbsegment left out" in caplog.text
    # The SyN box holds both methods' masks.
    folders = list((tmp_path / "work" / "longitudinal" / "sub-01").iterdir())
    assert len(folders) == 1
    record = json.loads((folders[0] / "result.json").read_text())
    low, high = np.array(record["box"]).T
    for method in ("first", "meshnet"):
        where = np.argwhere(np.asarray(nib.load(str(folders[0] / f"labels_{method}.nii.gz")).dataobj) > 0)
        assert (where.min(axis=0) >= low).all() and (where.max(axis=0) < high).all()
    # The same methods again: everything reused; another set of methods: another cache entry.
    with caplog.at_level(logging.INFO):
        _run(subject, tmp_path / "work", ("first", "meshnet", "dbsegment"), tools)
    assert "longitudinal results reused" in caplog.text and len(syn_calls) == 2
    key_one = lo.cache_key(lo.published_sessions(subject / "out", "01")[0], ["first", "meshnet"])
    assert key_one != lo.cache_key(lo.published_sessions(subject / "out", "01")[0], ["meshnet"])
    assert folders[0].name == key_one


@pytest.mark.slow
def test_a_method_failing_on_the_template_leaves_the_others(subject, tmp_path, fsl_home, meshnet_eroded,
                                                            cheap_syn, monkeypatch, caplog):
    # An earlier run's FIRST files in the sessions: they go, since FIRST has no longitudinal volumes now.
    stale = _anat(subject, "1") / "sub-01_ses-1_space-T1w_label-thalamus_desc-firstLong_mask.nii.gz"
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_bytes(b"old")
    monkeypatch.delenv("FAKE_FIRST_ASEG")  # the fake run_first_all then exits 1, as a failing FIRST does
    with caplog.at_level(logging.INFO):
        outcomes = _run(subject, tmp_path / "work", ("first", "meshnet"), _tools(tmp_path))
    assert outcomes["01"].startswith("ok: 2 sessions measured by meshnet") and "not measured: first" in outcomes["01"]
    assert len(cheap_syn) == 2
    table = read_tsv(subject / "out" / "sub-01" / "anat" / "sub-01_label-thalamus_desc-longitudinal_volumes.tsv")
    long = table[table["mode"] == "longitudinal"]
    assert set(long["method"]) == {"meshnet"}
    assert long["change_pct"].abs().max() < 1e-6  # no deformation, no change
    template = json.loads((subject / "out" / "sub-01" / "anat" / "sub-01_desc-longitudinaltemplate_T1w.json")
                          .read_text())
    assert template["Methods"] == ["meshnet"] and "FSL FIRST failed" in template["MethodsNotMeasured"]["first"]
    assert "first not measured in longitudinal mode" in caplog.text and "Traceback" not in caplog.text
    assert not stale.exists() and (_anat(subject, "1") / stale.name.replace("first", "meshnet")).is_file()
    assert not (tmp_path / "work" / "longitudinal" / "sub-01").exists() or not any(
        (tmp_path / "work" / "longitudinal" / "sub-01").iterdir())  # not cached: FIRST is tried again next run


def _fixed(labels: np.ndarray, name: str, calls: list):
    def segment(image, threads, **kwargs):
        calls.append((name, kwargs.get("envelope")))
        return labels, dict(SIDE_REGIONS), {"Tool": name}

    return segment


def _failing(image, threads, **_):
    raise RuntimeError("tool crashed")


def test_envelope_user_runs_after_and_takes_the_first_envelope_that_worked():
    image = nib.Nifti1Image(np.zeros((8, 8, 8), np.float32), np.eye(4))
    labels = np.zeros((8, 8, 8), np.uint8)
    labels[2:4, 3:5, 3:5], labels[5:7, 3:5, 3:5] = 1, 2
    calls: list = []
    segmentations = [TemplateSegmentation("mindglideT1w", _fixed(labels > 0, "mindglideT1w", calls),
                                          ("first", "meshnet")),
                     TemplateSegmentation("first", _failing),
                     TemplateSegmentation("meshnet", _fixed(labels, "meshnet", calls))]
    measured, failed, seconds = segment_template(image, segmentations, 1, "01")
    assert list(measured) == ["meshnet", "mindglideT1w"]
    assert failed == {"first": "segmentation of the template failed: tool crashed"}
    envelope = calls[1][1]
    assert calls[0] == ("meshnet", None) and envelope.method == "meshnet" and envelope.has_sides
    assert np.array_equal(envelope.labels, labels)
    assert set(seconds) == {"segmentation meshnet", "segmentation mindglideT1w"}
    # Without any envelope on the template, the envelope user is recorded, not run.
    measured, failed, _ = segment_template(image, segmentations[:2], 1, "01")
    assert not measured and "no envelope on the template: first or meshnet" in failed["mindglideT1w"]


def test_empty_or_misshapen_labels_are_a_failure_of_that_method_only():
    image = nib.Nifti1Image(np.zeros((8, 8, 8), np.float32), np.eye(4))
    calls: list = []
    good = np.zeros((8, 8, 8), np.uint8)
    good[3:5, 3:5, 3:5] = 1
    measured, failed, _ = segment_template(image, [
        TemplateSegmentation("first", _fixed(np.zeros((8, 8, 8), np.uint8), "first", calls)),
        TemplateSegmentation("dbsegment", _fixed(np.ones((4, 4, 4), np.uint8), "dbsegment", calls)),
        TemplateSegmentation("meshnet", _fixed(good, "meshnet", calls))], 1)
    assert list(measured) == ["meshnet"]
    assert "found no thalamus" in failed["first"] and "shape (4, 4, 4)" in failed["dbsegment"]


def test_selected_methods_and_their_tools(tmp_path):
    """Every selected method that segments an image takes part; a missing tool or model is said, FreeSurfer is not."""
    config = SimpleNamespace(methods=("freesurfer", "first", "dbsegment", "meshnet", "mindglide"),
                             option=lambda name, default=None: None)
    tools = ToolCheck(reasons={"freesurfer": None, "first": None, "dbsegment": "DBSegment not found", "meshnet": None,
                               "mindglide": None},
                      settings={"meshnet": {"model_dir": tmp_path, "sides_model_dir": None},
                                "mindglide": {"model_path": tmp_path / "model.pth", "device": "cpu"}})
    segmentations, not_run = lo.template_segmentations(config, tools)
    assert [s.method for s in segmentations] == ["first", "meshnet", "mindglideT1w"]
    assert segmentations[2].envelopes == ("first", "meshnet")  # the envelope methods that segment the template
    assert not_run == {"dbsegment": "its tool cannot run here: DBSegment not found"}
    # MindGlide without its checkpoint: said, not silently dropped; --mindglide-envelope narrows the envelopes.
    tools.settings["mindglide"] = {}
    config.option = lambda name, default=None: "meshnet" if name == "mindglide_envelope" else None
    segmentations, not_run = lo.template_segmentations(config, tools)
    assert "mindglideT1w" in not_run and [s.method for s in segmentations] == ["first", "meshnet"]
    tools.settings["mindglide"] = {"model_path": tmp_path / "model.pth"}
    segmentations, _ = lo.template_segmentations(config, tools)
    assert segmentations[-1].envelopes == ("meshnet",)
    # An envelope that does not segment the template (FreeSurfer): MindGlide is left out up front, with why.
    config.option = lambda name, default=None: "freesurfer" if name == "mindglide_envelope" else None
    segmentations, not_run = lo.template_segmentations(config, tools)
    assert [s.method for s in segmentations] == ["first", "meshnet"]
    assert not_run["mindglideT1w"] == "no envelope on the template: freesurfer does not segment it here"


@pytest.fixture(scope="module")
def template_like():
    """A 2 mm crop of bert around the thalami, standing in for a template, and bert's aseg sides on its grid."""
    t1w = nib.load(str(shared_file("freesurfer_bert_7.2", "mri", "norm.mgz")))
    aseg = nib.load(str(shared_file(*ASEG)))
    thalamus = nib.Nifti1Image(np.isin(np.asarray(aseg.dataobj), (10, 49)).astype(np.uint8), aseg.affine)
    center, _ = covering_ball(thalamus)
    image = crop_around(nib.Nifti1Image(np.asarray(t1w.dataobj, np.float32), t1w.affine), center, 30.0, zoom=2.0)
    return image, _aseg_sides_on(image)


def test_dbsegment_segments_the_template_through_its_adapter(template_like, tmp_path, monkeypatch):
    """The fake DBSegment (bert's aseg thalamus as THAL/VPL/VIM) through the same adapter and label split."""
    from thalamus_bidsapp.methods.registry import get_method
    from thalamus_bidsapp.tools import dbsegment

    image, truth = template_like
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shutil.copy2(FAKES / "DBSegment", bin_dir / "DBSegment")
    monkeypatch.setenv("PATH", os.pathsep.join([str(bin_dir), str(Path(sys.executable).parent),
                                                os.environ.get("PATH", "")]))
    monkeypatch.setenv("FAKE_DBSEGMENT_TRUTH", str(shared_file(*ASEG)))
    models = tmp_path / "models"
    trainer = models / dbsegment.MODEL_BUNDLE_ALL_FOLDS / dbsegment.TRAINER_SUBDIR
    for fold in range(5):
        (trainer / f"fold_{fold}").mkdir(parents=True)
    (trainer / "fold_0" / "model_final_checkpoint.model").write_bytes(b"not a real model")
    segment = get_method("dbsegment").template_segmenter({"model_folder": models})
    sides, regions, provenance = segment(image, 1)
    assert regions == SIDE_REGIONS and sides.shape == image.shape and sides.dtype == np.uint8
    # The fake draws bert's aseg through DBSegment's 1 mm conformed grid: the same thalamus, side for side.
    agree = np.count_nonzero((sides == truth) & (truth > 0)) / np.count_nonzero(truth)
    assert agree > 0.85 and np.count_nonzero((sides == 1) & (truth == 2)) == 0
    assert provenance["Folds"] == [0, 1, 2, 3, 4] and provenance["SideLabels"]["Left"] == [24, 26, 30]


def test_mindglide_on_the_template_is_bounded_by_the_envelope_and_takes_its_sides(template_like, monkeypatch):
    """MindGlide's glue on the template: its DGM label x the envelope's template mask, sides from the envelope."""
    from thalamus_bidsapp.methods.capabilities import TemplateEnvelope
    from thalamus_bidsapp.methods.registry import get_method
    from thalamus_bidsapp.tools import mindglide

    image, truth = template_like
    seen = []

    def segment_image(path, model):
        seen.append(Path(path).name)
        grid = nib.load(str(path))
        dgm = np.zeros(grid.shape, np.uint8)
        dgm[:, :, : grid.shape[2] // 2 + 3] = mindglide.dgm_label()  # a DGM label over the lower half and more
        return nib.Nifti1Image(dgm, grid.affine)

    monkeypatch.setattr(mindglide, "load_model", lambda *a, **k: SimpleNamespace(
        version="test", model_path=Path("model.pth"), sha256="0", device="cpu"))
    monkeypatch.setattr(mindglide, "segment_image", segment_image)
    method = get_method("mindglide")
    assert method.template_mask_name == "mindglideT1w" and method.template_segmenter({}) is None
    segment = method.template_segmenter({"model_path": "model.pth", "device": "cpu"})
    sides, regions, provenance = segment(image, 1, envelope=TemplateEnvelope("first", truth, SIDE_REGIONS))
    expected = truth.copy()
    expected[:, :, image.shape[2] // 2 + 3:] = 0
    assert seen == ["template_T1w.nii.gz"] and regions == SIDE_REGIONS
    assert np.array_equal(sides, expected) and 0 < np.count_nonzero(sides) < np.count_nonzero(truth)
    assert provenance["Envelope"] == "first" and provenance["Contrast"] == "T1w"
    # An envelope without sides gives a bilateral mask only.
    mask, regions, _ = segment(image, 1, envelope=TemplateEnvelope("meshnet", (truth > 0).astype(np.uint8),
                                                                   {"bilateral": (1,)}))
    assert regions == {"bilateral": (1,)} and np.array_equal(mask, (expected > 0).astype(np.uint8))


def test_the_box_covers_every_method_and_each_integrates_its_own_mask(tmp_path, monkeypatch, cheap_syn):
    """Two methods with masks far apart: one box around both, one SyN per session, each its own volume."""
    from thalamus_bidsapp.workflows.longitudinal import LongSession, measure_subject

    shape, affine = (60, 40, 30), np.diag([2.0, 2.0, 2.0, 1.0])
    image = nib.Nifti1Image(np.ones(shape, np.float32), affine)
    monkeypatch.setattr(al, "build_template", lambda images: al.SubjectTemplate(
        image, [np.eye(4)] * len(images), [image] * len(images), 0, {"Passes": 2}))
    near, far = np.zeros(shape, np.uint8), np.zeros(shape, np.uint8)
    near[5:8, 10:14, 10:12], near[9:12, 10:14, 10:12] = 1, 2  # 24 + 24 voxels
    far[50:53, 20:23, 15:18] = 1  # 27 voxels, bilateral only
    path = tmp_path / "t1w.nii.gz"
    nib.save(image, path)
    sessions = [LongSession(label, path, path, False) for label in ("1", "2")]
    calls: list = []
    segmentations = [TemplateSegmentation("near", _fixed(near, "near", calls)),
                     TemplateSegmentation("far", lambda img, threads: (far, {"bilateral": (1,)}, {"Tool": "far"}))]
    result = measure_subject("01", sessions, segmentations=segmentations)
    assert len(cheap_syn) == 2 and list(result.methods) == ["near", "far"]
    low = np.array([s.start for s in result.box])
    high = np.array([s.stop for s in result.box])
    for labels in (near, far):
        where = np.argwhere(labels > 0)
        assert (where.min(axis=0) >= low).all() and (where.max(axis=0) < high).all()
    # No deformation: each method's volume is its own voxel count times 8 mm3.
    assert result.methods["near"].volumes["2"] == pytest.approx({"left": 0.192, "right": 0.192, "bilateral": 0.384})
    assert result.methods["far"].volumes["1"] == pytest.approx({"bilateral": 0.216})
    assert result.measured_sessions() == ["1", "2"] and not result.methods_failed
    # The cache keeps every method: labels, regions, provenance and volumes come back as they were.
    from thalamus_bidsapp.workflows.longitudinal import read_cache, write_cache

    write_cache(tmp_path / "cache", result)
    back = read_cache(tmp_path / "cache", "01", sessions)
    assert list(back.methods) == ["near", "far"] and back.box == result.box
    for name, method in result.methods.items():
        assert np.array_equal(back.methods[name].labels, method.labels)
        assert back.methods[name].regions == method.regions and back.methods[name].volumes == method.volumes
        assert back.methods[name].provenance == method.provenance


@pytest.mark.slow
def test_mindglide_network_runs_on_the_template_file(template_like, tmp_path, monkeypatch):
    """The real MindGlide inference (random weights: the glue, not the anatomy) on the template written to disk."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("mindglide")
    from mindglide import network

    from thalamus_bidsapp.methods.capabilities import TemplateEnvelope
    from thalamus_bidsapp.methods.registry import get_method
    from thalamus_bidsapp.tools import mindglide

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    image, truth = template_like
    torch.manual_seed(0)
    checkpoint = tmp_path / "mindglide_random.pt"
    torch.save(network.get_network(torch.device("cpu")).state_dict(), checkpoint)
    mindglide.clear_model_cache()
    segmentations = []
    real_segment_image = mindglide.segment_image

    def kept(path, model, **kwargs):
        segmentations.append(real_segment_image(path, model, **kwargs))
        return segmentations[-1]

    monkeypatch.setattr(mindglide, "segment_image", kept)
    segment = get_method("mindglide").template_segmenter({"model_path": checkpoint, "device": "cpu"})
    sides, regions, provenance = segment(image, 1, envelope=TemplateEnvelope("first", truth, SIDE_REGIONS))
    assert sides.shape == image.shape and sides.dtype == np.uint8 and regions == SIDE_REGIONS
    dgm = np.asarray(segmentations[0].dataobj) == mindglide.dgm_label()
    assert segmentations[0].shape == image.shape and np.allclose(segmentations[0].affine, image.affine, atol=1e-4)
    assert sides.any() and np.array_equal(sides, np.where(dgm, truth, 0))  # DGM x envelope, the envelope's sides
    assert provenance["ModelPath"] == str(checkpoint) and provenance["Envelope"] == "first"
