"""Registration strategies, the MI QC selection rule, and QC overlays.

FLIRT is faked by tests/fakes/flirt (FSL is not installed); ANTs runs for real
through antspyx. Branch tests use real anatomy at 3 mm so ANTs takes seconds;
the recovery tests at full resolution are marked slow.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from nibabel.processing import resample_to_output

from tests import registration_helpers as helpers
from tests.conftest import shared_file
from thalamus_bidsapp.errors import ThalamusError
from thalamus_bidsapp.image.mutual_information import mutual_information_images
from thalamus_bidsapp.tools import flirt as flirt_iface
from thalamus_bidsapp.tools.ants import (
    RIGID_SCHEDULE,
    RigidSchedule,
    read_itk_affine_ras,
    rigid_registration_kwargs,
)
from thalamus_bidsapp.tools.registration import (
    ANTS_RIGID,
    FLIRT_MI_AFFINE,
    FLIRT_NORMCORR,
    FLIRT_NORMCORR_WEIGHTED,
    QC_COLUMNS,
    register_to_t1w,
    select_registration,
)

FAKES = Path(__file__).resolve().parent / "fakes"
MS = ("ms_lesjak2017_mni", "patient07")
MS_T1 = "T1_N4_noneck_reduced_winsor_regtoFLAIR_brain_N4_regtoMNI.nii.gz"
MS_FLAIR = "FLAIR_N4_noneck_reduced_winsor_regtoFLAIR_brain_N4_regtoMNI.nii.gz"


# --------------------------------------------------------------------------- fixtures


def _downsample(src: Path, dst: Path, voxel_mm: float) -> Path:
    img = nib.load(str(src))
    img = nib.Nifti1Image(np.asarray(img.dataobj, dtype=np.float32), img.affine)
    nib.save(resample_to_output(img, voxel_sizes=(voxel_mm,) * 3, order=1), str(dst))
    return dst


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Colin27 at 3 mm: T1w, brain mask, an aligned R1-like image, noise; MS T1w/FLAIR at 3 mm."""
    d = tmp_path_factory.mktemp("small")
    t1 = _downsample(shared_file("colin27_aal", "ch2.nii.gz"), d / "t1w.nii.gz", 3.0)
    mask = helpers.make_brain_mask(t1, d / "mask.nii.gz")
    r1 = d / "r1.nii.gz"
    helpers.make_r1_like(t1, mask, r1, rotation_deg=(0, 0, 0), translation_mm=(0, 0, 0), voxel_mm=3.0)
    noise = helpers.make_noise_like(r1, d / "noise.nii.gz")
    ms_t1 = _downsample(shared_file(*MS, MS_T1), d / "ms_t1w.nii.gz", 3.0)
    ms_mask = helpers.make_brain_mask(ms_t1, d / "ms_mask.nii.gz")
    ms_flair = _downsample(shared_file(*MS, MS_FLAIR), d / "ms_flair.nii.gz", 3.0)
    return {"t1w": t1, "mask": mask, "r1": r1, "noise": noise, "ms_t1w": ms_t1, "ms_mask": ms_mask, "ms_flair": ms_flair}


class FakeFSL:
    """The fake flirt on PATH and a fake FSLDIR; set modes per cost function."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.fsldir = root / "fsl"
        (self.fsldir / "etc").mkdir(parents=True)
        (self.fsldir / "etc" / "fslversion").write_text("6.0.7.9:deadbeef\n")
        self.log = root / "flirt_calls.jsonl"
        self._mp = monkeypatch
        for key in list(os.environ):
            if key.startswith("FAKE_FLIRT_"):
                monkeypatch.delenv(key)
        monkeypatch.setenv("FSLDIR", str(self.fsldir))
        # The fake's "#!/usr/bin/env python3" must find this interpreter (with nibabel).
        path = os.pathsep.join([str(FAKES), str(Path(sys.executable).parent), os.environ.get("PATH", "")])
        monkeypatch.setenv("PATH", path)
        monkeypatch.setenv("FAKE_FLIRT_LOG", str(self.log))

    def mode(self, cost: str, mode: str) -> None:
        self._mp.setenv(f"FAKE_FLIRT_MODE_{cost.upper()}", mode)

    def matrix(self, mat: np.ndarray) -> None:
        self._mp.setenv("FAKE_FLIRT_MATRIX", " ".join(f"{v:.10f}" for v in mat.ravel()))

    def calls(self) -> list[list[str]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]


@pytest.fixture
def fake_fsl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeFSL:
    return FakeFSL(tmp_path, monkeypatch)


def _row(qc: pd.DataFrame, strategy: str) -> pd.Series:
    rows = qc[qc["strategy"] == strategy]
    assert len(rows) == 1, qc
    return rows.iloc[0]


def _assert_on_grid(image: Path, reference: Path) -> None:
    img, ref = nib.load(str(image)), nib.load(str(reference))
    assert img.shape == ref.shape
    assert np.array_equal(img.affine, ref.affine)


# --------------------------------------------------------------------------- selection rule (pure)

R1_CASES = [
    # (mi_affine, normcorr_weighted, ants, expected)
    (0.40, 0.50, None, FLIRT_NORMCORR_WEIGHTED),  # both FLIRT pass: higher MI; ANTs not needed
    (0.50, 0.40, None, FLIRT_MI_AFFINE),
    (0.45, 0.45, None, FLIRT_MI_AFFINE),  # tie: first in order
    (0.40, 0.10, 0.35, ANTS_RIGID),  # one FLIRT fails: ANTs if it passes
    (0.10, 0.40, 0.35, ANTS_RIGID),
    (0.10, 0.10, 0.35, ANTS_RIGID),  # both FLIRT fail, ANTs passes
    (0.40, 0.10, 0.20, None),  # only one FLIRT passed, ANTs failed: excluded (stricter than the paper)
    (0.10, 0.10, 0.29, None),  # all fail (0.29 < 0.30): excluded
    (None, float("nan"), 0.10, None),  # crashes count as failures
    (0.25, 0.25, None, FLIRT_MI_AFFINE),  # the cut-off itself passes
]


@pytest.mark.parametrize(("mi_a", "mi_b", "mi_ants", "expected"), R1_CASES)
def test_selection_rule_r1(mi_a: float | None, mi_b: float | None, mi_ants: float | None, expected: str | None) -> None:
    mi = {FLIRT_MI_AFFINE: mi_a, FLIRT_NORMCORR_WEIGHTED: mi_b}
    if mi_ants is not None:
        mi[ANTS_RIGID] = mi_ants
    selected, why = select_registration("R1map", mi)
    assert selected == expected, why
    if expected is None:
        assert "excluded" in why


@pytest.mark.parametrize(
    ("mi_flirt", "mi_ants", "expected"),
    [(0.26, None, FLIRT_NORMCORR), (0.20, 0.31, ANTS_RIGID), (0.20, 0.29, None), (None, 0.5, ANTS_RIGID)],
)
def test_selection_rule_flair(mi_flirt: float | None, mi_ants: float | None, expected: str | None) -> None:
    mi = {FLIRT_NORMCORR: mi_flirt}
    if mi_ants is not None:
        mi[ANTS_RIGID] = mi_ants
    assert select_registration("FLAIR", mi)[0] == expected


def test_selection_rule_custom_cutoffs_and_unknown_modality() -> None:
    mi = {FLIRT_MI_AFFINE: 0.4, FLIRT_NORMCORR_WEIGHTED: 0.4, ANTS_RIGID: 0.45}
    assert select_registration("R1map", mi, flirt_cutoff=0.5, ants_cutoff=0.6)[0] is None
    assert select_registration("R1map", mi, flirt_cutoff=0.5, ants_cutoff=0.45)[0] == ANTS_RIGID
    with pytest.raises(ValueError, match="modality"):
        select_registration("T2w", mi)


# --------------------------------------------------------------------------- FSL discovery


def test_find_fsl_reads_version_and_prefers_fsldir_bin(tmp_path: Path) -> None:
    fsldir = tmp_path / "fsl"
    (fsldir / "bin").mkdir(parents=True)
    (fsldir / "etc").mkdir()
    (fsldir / "etc" / "fslversion").write_text("6.0.5:9e026117\n")
    flirt = fsldir / "bin" / "flirt"
    flirt.write_text("#!/bin/sh\nexit 0\n")
    flirt.chmod(0o755)
    found = flirt_iface.find_fsl({"FSLDIR": str(fsldir), "PATH": str(FAKES)})
    assert found is not None
    assert found.flirt == flirt.resolve()
    assert found.version == "6.0.5"
    # flirt on PATH only, FSLDIR unset: found, version unknown.
    found = flirt_iface.find_fsl({"PATH": str(FAKES)})
    assert found is not None and found.flirt == (FAKES / "flirt").resolve() and found.version is None
    assert flirt_iface.find_fsl({"PATH": str(tmp_path)}) is None


def test_flirt_command_lines(small: dict[str, Path], tmp_path: Path) -> None:
    install = flirt_iface.FslInstallation(FAKES / "flirt", tmp_path, "6.0.7")
    iface = flirt_iface.build_flirt(
        small["r1"], small["t1w"], tmp_path / "o.nii.gz", tmp_path / "o.mat", dof=12, cost="mutualinfo",
        interp="spline", init_matrix=small["r1"], no_search=True, fsl_install=install,
    )
    cmd = iface.cmdline.split()
    assert cmd[0] == "flirt"
    for flag, value in [("-dof", "12"), ("-cost", "mutualinfo"), ("-searchcost", "mutualinfo"), ("-interp", "spline"),
                        ("-init", str(small["r1"])), ("-ref", str(small["t1w"]))]:
        assert cmd[cmd.index(flag) + 1] == value
    assert "-nosearch" in cmd
    assert iface.inputs.environ["PATH"].split(os.pathsep)[0] == str(FAKES)


# --------------------------------------------------------------------------- register_to_t1w with the fake FLIRT


def test_r1_both_flirt_pass_keeps_higher_mi(small: dict[str, Path], fake_fsl: FakeFSL, tmp_path: Path) -> None:
    fake_fsl.mode("mutualinfo", "resample")  # the aligned R1-like image: good, MI ~ 0.9
    fake_fsl.mode("normcorr", "reference")  # sqrt(T1w): MI higher still
    out = register_to_t1w(small["r1"], small["t1w"], small["mask"], "R1map", tmp_path / "work")

    assert out.selected == FLIRT_NORMCORR_WEIGHTED and not out.excluded
    assert list(out.qc.columns) == QC_COLUMNS
    a, b, ants = (_row(out.qc, s) for s in (FLIRT_MI_AFFINE, FLIRT_NORMCORR_WEIGHTED, ANTS_RIGID))
    assert a["passed"] and b["passed"] and b["mi"] > a["mi"] >= 0.25
    assert b["selected"] and not a["selected"] and not ants["selected"]
    assert pd.isna(ants["passed"]) and np.isnan(ants["mi"]) and ants["reason"].startswith("not run")
    assert out.transform_format == "fsl"
    assert out.transform.name == "from-R1map_to-T1w_mode-image_xfm.mat"
    assert out.mi == pytest.approx(b["mi"])
    assert out.fsl_version == "6.0.7.9"
    _assert_on_grid(out.registered_image, small["t1w"])

    calls = fake_fsl.calls()
    assert len(calls) == 3  # (a) rigid + affine, (b) one call
    rigid, affine, weighted = calls

    def opt(call: list[str], flag: str) -> str:
        return call[call.index(flag) + 1]

    assert (opt(rigid, "-dof"), opt(rigid, "-cost"), opt(rigid, "-interp")) == ("6", "mutualinfo", "spline")
    assert "-nosearch" not in rigid
    assert (opt(affine, "-dof"), opt(affine, "-cost"), opt(affine, "-interp")) == ("12", "mutualinfo", "spline")
    assert opt(affine, "-init") == opt(rigid, "-omat") and "-nosearch" in affine
    assert (opt(weighted, "-dof"), opt(weighted, "-cost"), opt(weighted, "-interp")) == ("6", "normcorr", "spline")
    assert opt(weighted, "-refweight") == str(small["mask"])
    for call in calls:
        assert opt(call, "-ref") == str(small["t1w"]) and opt(call, "-in") == str(small["r1"])


def test_r1_flirt_matrix_is_kept(small: dict[str, Path], fake_fsl: FakeFSL, tmp_path: Path) -> None:
    known = np.array([[0.99, 0.02, 0.0, 1.5], [-0.02, 0.99, 0.01, -2.0], [0.0, -0.01, 1.0, 0.5], [0, 0, 0, 1]])
    fake_fsl.matrix(known)
    fake_fsl.mode("mutualinfo", "reference")
    fake_fsl.mode("normcorr", "reference")
    out = register_to_t1w(small["r1"], small["t1w"], small["mask"], "R1map", tmp_path / "work")
    assert out.selected == FLIRT_MI_AFFINE  # equal MI: the first strategy
    np.testing.assert_allclose(np.loadtxt(out.transform), known, atol=1e-9)
    expected = flirt_iface.fsl_matrix_to_ras(known, small["r1"], small["t1w"])
    np.testing.assert_allclose(out.t1w_to_moving_ras, expected)


def test_r1_one_flirt_passes_ants_fails_is_excluded(small: dict[str, Path], fake_fsl: FakeFSL, tmp_path: Path) -> None:
    fake_fsl.mode("mutualinfo", "reference")
    fake_fsl.mode("normcorr", "noise")
    out = register_to_t1w(small["noise"], small["t1w"], small["mask"], "R1map", tmp_path / "work")
    assert out.selected is None and out.excluded
    ants = _row(out.qc, ANTS_RIGID)
    assert ants["passed"] == False  # noqa: E712 - pandas nullable boolean
    assert ants["mi"] < 0.30
    assert "only flirt_mi_affine passed" in _row(out.qc, FLIRT_MI_AFFINE)["reason"]
    assert "excluded" in _row(out.qc, FLIRT_MI_AFFINE)["reason"]


def test_r1_both_flirt_fail_ants_passes(small: dict[str, Path], fake_fsl: FakeFSL, tmp_path: Path) -> None:
    fake_fsl.mode("mutualinfo", "noise")
    fake_fsl.mode("normcorr", "crash")
    out = register_to_t1w(small["r1"], small["t1w"], small["mask"], "R1map", tmp_path / "work")
    assert out.selected == ANTS_RIGID
    assert _row(out.qc, ANTS_RIGID)["mi"] >= 0.30
    assert out.transform.name == "from-R1map_to-T1w_mode-image_xfm.txt" and out.transform_format == "itk"
    # The ITK file round-trips to the world matrix the outcome reports; the image is aligned, so ~identity.
    np.testing.assert_allclose(read_itk_affine_ras(out.transform), out.t1w_to_moving_ras)
    assert helpers.mean_displacement_mm(out.t1w_to_moving_ras, np.eye(4), small["mask"]) < 1.5
    crashed = _row(out.qc, FLIRT_NORMCORR_WEIGHTED)
    assert np.isnan(crashed["mi"]) and crashed["passed"] == False  # noqa: E712
    assert "FlirtError" in crashed["reason"]
    _assert_on_grid(out.registered_image, small["t1w"])


def test_r1_all_fail_is_excluded_and_recorded(small: dict[str, Path], fake_fsl: FakeFSL, tmp_path: Path) -> None:
    fake_fsl.mode("mutualinfo", "noise")
    fake_fsl.mode("normcorr", "noise")
    out = register_to_t1w(small["noise"], small["t1w"], small["mask"], "R1map", tmp_path / "work")
    assert out.excluded and out.selected is None and out.registered_image is None and out.transform is None
    assert len(out.qc) == 3 and not out.qc["selected"].any() and not out.qc["passed"].any()
    assert out.qc["reason"].str.contains("R1map excluded").all()
    assert "excluded" in out.summary


def test_fsl_absent_runs_ants_alone(small: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FSLDIR", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no flirt anywhere
    out = register_to_t1w(small["r1"], small["t1w"], small["mask"], "R1map", tmp_path / "work")
    assert out.selected == ANTS_RIGID and out.fsl_version is None
    for strategy in (FLIRT_MI_AFFINE, FLIRT_NORMCORR_WEIGHTED):
        row = _row(out.qc, strategy)
        assert pd.isna(row["passed"]) and "FSL not found" in row["reason"]
    assert "ANTs rigid used alone" in _row(out.qc, ANTS_RIGID)["reason"]


def test_flair_flirt_passes(small: dict[str, Path], fake_fsl: FakeFSL, tmp_path: Path) -> None:
    fake_fsl.mode("normcorr", "resample")  # the MS FLAIR is already aligned with its T1w
    out = register_to_t1w(small["ms_flair"], small["ms_t1w"], small["ms_mask"], "FLAIR", tmp_path / "work")
    assert out.selected == FLIRT_NORMCORR
    assert list(out.qc["strategy"]) == [FLIRT_NORMCORR, ANTS_RIGID]
    (call,) = fake_fsl.calls()
    assert call[call.index("-interp") + 1] == "trilinear" and call[call.index("-cost") + 1] == "normcorr"
    assert call[call.index("-dof") + 1] == "6" and "-refweight" not in call
    assert out.transform.name == "from-FLAIR_to-T1w_mode-image_xfm.mat"


def test_flair_flirt_fails_falls_back_to_ants(small: dict[str, Path], fake_fsl: FakeFSL, tmp_path: Path) -> None:
    fake_fsl.mode("normcorr", "noise")
    out = register_to_t1w(small["ms_flair"], small["ms_t1w"], small["ms_mask"], "FLAIR", tmp_path / "work")
    assert out.selected == ANTS_RIGID
    assert _row(out.qc, FLIRT_NORMCORR)["passed"] == False  # noqa: E712


@pytest.mark.slow
def test_wrong_pairing_other_subject_excludes_r1_and_flair_still_completes(
    small: dict[str, Path], fake_fsl: FakeFSL, tmp_path: Path
) -> None:
    # bert's anatomy as the "R1" of Colin27: FLIRT (fake, header alignment) and ANTs both fail.
    bert_mgz = nib.load(str(shared_file("freesurfer_bert_7.2", "mri", "brain.mgz")))
    bert = tmp_path / "bert.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(bert_mgz.dataobj, dtype=np.float32), bert_mgz.affine), str(bert))
    bert3 = _downsample(bert, tmp_path / "bert3.nii.gz", 3.0)
    bert_r1 = tmp_path / "bert_r1.nii.gz"
    helpers.make_r1_like(bert3, helpers.make_brain_mask(bert3, tmp_path / "bm.nii.gz"), bert_r1,
                         rotation_deg=(0, 0, 0), translation_mm=(0, 0, 0), voxel_mm=3.0)
    work = tmp_path / "work"
    r1 = register_to_t1w(bert_r1, small["t1w"], small["mask"], "R1map", work)
    assert r1.excluded
    assert (r1.qc["mi"] < 0.25).all()
    # The session goes on: a FLAIR registration in the same work folder still succeeds.
    fake_fsl.mode("normcorr", "reference")
    flair = register_to_t1w(small["r1"], small["t1w"], small["mask"], "FLAIR", work)
    assert flair.selected == FLIRT_NORMCORR
    qc = pd.concat([r1.qc, flair.qc], ignore_index=True)
    assert set(qc["image"]) == {"R1map", "FLAIR"}


def test_missing_input_and_bad_mask(small: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ThalamusError) as err:
        register_to_t1w(tmp_path / "nope.nii.gz", small["t1w"], small["mask"], "R1map", tmp_path, fsl_available=False)
    assert err.value.exit_code == 66
    with pytest.raises(ThalamusError) as err:
        register_to_t1w(small["r1"], small["t1w"], small["ms_mask"], "R1map", tmp_path, fsl_available=False)
    assert err.value.exit_code == 65
    with pytest.raises(ValueError, match="modality"):
        register_to_t1w(small["r1"], small["t1w"], small["mask"], "T2w", tmp_path, fsl_available=False)


# --------------------------------------------------------------------------- the ANTs rigid schedule


def test_rigid_schedule_arguments() -> None:
    kwargs = rigid_registration_kwargs()
    assert kwargs == {"type_of_transform": "Rigid", "initial_transform": "Identity", "aff_metric": "mattes",
                      "aff_sampling": 32, "aff_random_sampling_rate": 0.25, "aff_shrink_factors": (4, 2, 1),
                      "aff_smoothing_sigmas": (2, 1, 0), "aff_iterations": (100, 20, 3)}
    masked = rigid_registration_kwargs(RIGID_SCHEDULE, fixed_mask="mask")
    assert masked["mask"] == "mask" and masked["mask_all_stages"] is True
    with pytest.raises(ValueError, match="as many"):
        RigidSchedule(shrink_factors=(4, 2))
    with pytest.raises(ValueError, match="sampling rate"):
        RigidSchedule(sampling_rate=0.0)


def test_ants_rigid_in_the_brain_mask_recovers_a_planted_misalignment_identically(tmp_path: Path) -> None:
    # Colin27 at 2 mm, a rotated and shifted R1-like copy: seconds, and the seeded sampling gives one answer.
    t1 = _downsample(shared_file("colin27_aal", "ch2.nii.gz"), tmp_path / "t1w.nii.gz", 2.0)
    mask = helpers.make_brain_mask(t1, tmp_path / "mask.nii.gz")
    r1 = tmp_path / "r1.nii.gz"
    true = helpers.make_r1_like(t1, mask, r1, rotation_deg=(5.0, -3.0, 4.0), translation_mm=(5.0, -4.0, 6.0),
                                voxel_mm=2.0)
    assert helpers.mean_displacement_mm(np.eye(4), true, mask) > 5.0
    # ITK reads its thread count once per process; a participant run keeps it at 1 (resources.ITK_THREADS).
    env = {**os.environ, "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])}
    subprocess.run([sys.executable, "-c", _TWO_RIGID_RUNS, str(r1), str(t1), str(mask), str(tmp_path)], check=True,
                   timeout=600, env=env)
    found = [read_itk_affine_ras(tmp_path / f"{run}.txt") for run in ("a", "b")]
    assert (tmp_path / "a.txt").read_bytes() == (tmp_path / "b.txt").read_bytes()
    assert helpers.mean_displacement_mm(found[0], true, mask) < 1.0
    registered = tmp_path / "a.nii.gz"
    _assert_on_grid(registered, t1)
    assert mutual_information_images(t1, registered, mask) > mutual_information_images(t1, r1, mask)


_TWO_RIGID_RUNS = """
import sys
from pathlib import Path
from thalamus_bidsapp.tools.ants import ants_rigid
moving, fixed, mask, out = map(Path, sys.argv[1:5])
for run in ("a", "b"):
    ants_rigid(moving, fixed, out / f"{run}.nii.gz", out / f"{run}.txt", fixed_mask=mask)
"""


# --------------------------------------------------------------------------- real anatomy, full resolution


@pytest.mark.slow
def test_ants_recovers_r1_like_colin27(tmp_path: Path) -> None:
    t1 = shared_file("colin27_aal", "ch2.nii.gz")
    mask = helpers.make_brain_mask(t1, tmp_path / "mask.nii.gz")
    r1 = tmp_path / "r1.nii.gz"
    true = helpers.make_r1_like(t1, mask, r1, rotation_deg=(6.0, -4.0, 5.0), translation_mm=(6.0, -5.0, 7.0))
    assert helpers.rotation_angle_deg(true) >= 5.0 and np.linalg.norm(true[:3, 3]) >= 5.0
    assert helpers.mean_displacement_mm(np.eye(4), true, mask) > 5.0

    out = register_to_t1w(r1, t1, mask, "R1map", tmp_path / "work", fsl_available=False)
    assert out.selected == ANTS_RIGID
    assert helpers.mean_displacement_mm(out.t1w_to_moving_ras, true, mask) < 1.0
    assert out.mi >= 0.30
    assert "FSL disabled" in _row(out.qc, ANTS_RIGID)["reason"]
    _assert_on_grid(out.registered_image, t1)


@pytest.mark.slow
def test_ants_recovers_shifted_ms_flair(tmp_path: Path) -> None:
    t1 = shared_file(*MS, MS_T1)
    flair = shared_file(*MS, MS_FLAIR)
    mask = helpers.make_brain_mask(t1, tmp_path / "mask.nii.gz")
    shifted = tmp_path / "flair_shifted.nii.gz"
    true = helpers.make_shifted(flair, shifted, (5.0, -6.0, 4.0))
    before = mutual_information_images(t1, shifted, mask)

    out = register_to_t1w(shifted, t1, mask, "FLAIR", tmp_path / "work", fsl_available=False)
    assert out.selected == ANTS_RIGID
    assert helpers.mean_displacement_mm(out.t1w_to_moving_ras, true, mask) < 1.0
    assert out.mi >= 0.30 > before
