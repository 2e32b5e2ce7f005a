"""MindGlide adapter with the real mindglide package and a self-made, randomly initialised checkpoint.

One network forward on CPU takes seconds, so the session outputs are computed
once per module on a 64x64x48 crop around the thalamus of a real MS T1w/FLAIR
pair (Lesjak 2017, LAS, 1 mm).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests.conftest import shared_file
from thalamus_bidsapp.errors import ThalamusError

torch = pytest.importorskip("torch")
pytest.importorskip("mindglide")

from thalamus_bidsapp.tools import mindglide as mg  # noqa: E402

PATIENT = ("ms_lesjak2017_mni", "patient07")
T1 = "T1_N4_noneck_reduced_winsor_regtoFLAIR_brain_N4_regtoMNI.nii.gz"
FLAIR = "FLAIR_N4_noneck_reduced_winsor_regtoFLAIR_brain_N4_regtoMNI.nii.gz"


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("MODEL_PATH", raising=False)


def _crop(src: Path, dst: Path) -> Path:
    img = nib.load(src)
    centre = np.rint(np.linalg.inv(img.affine) @ [0.0, -18.0, 8.0, 1.0]).astype(int)[:3]  # MNI thalamus
    half = (32, 32, 24)
    img = img.slicer[tuple(slice(c - h, c + h) for c, h in zip(centre, half))]
    nib.save(img, dst)
    return dst


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("mindglide")
    t1 = _crop(shared_file(*PATIENT, T1), tmp / "sub-07_T1w.nii.gz")
    flair = _crop(shared_file(*PATIENT, FLAIR), tmp / "sub-07_space-T1w_FLAIR.nii.gz")
    torch.manual_seed(0)
    from mindglide import network

    ckpt = tmp / "mindglide_random.pt"
    torch.save(network.get_network(torch.device("cpu")).state_dict(), ckpt)

    calls = []
    real_get_network = network.get_network

    def counting_get_network(*args, **kwargs):
        calls.append(kwargs.get("checkpoint_path"))
        return real_get_network(*args, **kwargs)

    mg.clear_model_cache()
    loads_before = mg.load_count()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setattr(network, "get_network", counting_get_network)
        segs = mg.segment_contrasts({"T1w": t1, "FLAIR": flair, "R1": None}, model_path=ckpt, device="cpu")
        again = mg.load_model(ckpt, "cpu")
    return {"t1": t1, "flair": flair, "ckpt": ckpt, "segs": segs, "calls": calls,
            "loads": mg.load_count() - loads_before, "model": again, "tmp": tmp}


def test_dgm_label_read_from_package_table() -> None:
    from mindglide.consts import PROPERTIES

    assert mg.dgm_label() == 3
    assert PROPERTIES["labels"]["3"] == "DGM"
    assert mg.label_table()[mg.dgm_label()] == "DGM"
    assert mg.mindglide_version().startswith("1.")


@pytest.mark.slow
def test_network_loaded_once_for_all_contrasts(session: dict) -> None:
    assert set(session["segs"]) == {"T1w", "FLAIR"}  # R1 absent: skipped, not an error
    assert session["loads"] == 1
    assert len(session["calls"]) == 1 and Path(session["calls"][0]) == session["ckpt"].resolve()
    assert session["model"] is mg.load_model(session["ckpt"], "cpu")


def test_outputs_on_input_grid(session: dict) -> None:
    for contrast, path in (("T1w", session["t1"]), ("FLAIR", session["flair"])):
        ref = nib.load(path)
        seg = session["segs"][contrast]
        assert seg.shape == ref.shape == (64, 64, 48)
        assert np.allclose(seg.affine, ref.affine)
        assert nib.aff2axcodes(seg.affine) == ("L", "A", "S")
        labels = np.unique(np.asanyarray(seg.dataobj))
        assert set(labels.tolist()) <= set(range(20))


@pytest.mark.slow
def test_same_result_as_mindglide_run_inference(session: dict) -> None:
    """The preloaded-network call path reproduces the package's own pipeline voxel for voxel."""
    from mindglide.infer import run_inference

    out = session["tmp"] / "ref_T1w_seg.nii.gz"
    n_ok, failed = run_inference([(str(session["t1"]), str(out))], device="cpu", model_path=str(session["ckpt"]))
    assert (n_ok, failed) == (1, [])
    ref = nib.load(out)
    mine = session["segs"]["T1w"]
    assert np.allclose(ref.affine, mine.affine)
    assert np.array_equal(np.asanyarray(ref.dataobj), np.asanyarray(mine.dataobj))


def test_thalamus_is_dgm_within_envelope(session: dict) -> None:
    seg = session["segs"]["T1w"]
    labels = np.asanyarray(seg.dataobj)
    ii, jj, kk = np.indices(seg.shape)
    envelope_arr = ((ii - 32) / 14.0) ** 2 + ((jj - 30) / 18.0) ** 2 + ((kk - 24) / 10.0) ** 2 <= 1
    envelope = nib.Nifti1Image(envelope_arr.astype(np.uint8), nib.load(session["t1"]).affine)
    thal = mg.mindglide_thalamus(seg, envelope)
    assert np.allclose(thal.affine, envelope.affine) and thal.get_data_dtype() == np.uint8
    assert np.array_equal(np.asanyarray(thal.dataobj).astype(bool), (labels == 3) & envelope_arr)
    prov = mg.provenance(session["model"], "first", "T1w")
    assert prov["ModelSHA256"] == hashlib.sha256(session["ckpt"].read_bytes()).hexdigest()
    assert prov["LabelsTaken"] == {"3": "DGM"} and prov["Envelope"] == "first"
    assert prov["Version"] == mg.mindglide_version()


def test_intersection_small_arrays_and_grid_check() -> None:
    aff = np.diag([0.8, 0.8, 0.8, 1.0])
    seg = np.array([[[0, 3, 3], [3, 11, 3]], [[3, 0, 1], [19, 3, 3]]], np.uint8)
    env = np.array([[[1, 1, 0], [1, 1, 1]], [[0, 1, 1], [1, 1, 0]]], np.uint8)
    out = mg.mindglide_thalamus(nib.Nifti1Image(seg, aff), nib.Nifti1Image(env, aff))
    assert np.array_equal(np.asanyarray(out.dataobj), np.array([[[0, 1, 0], [1, 0, 1]], [[0, 0, 0], [0, 1, 0]]]))
    with pytest.raises(ThalamusError, match="not on the grid"):
        mg.mindglide_thalamus(nib.Nifti1Image(seg, aff), nib.Nifti1Image(env, np.eye(4)))


def test_weights_explicit_cached_or_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    ckpt = tmp_path / "w.pt"
    ckpt.write_bytes(b"x")
    assert mg.resolve_weights(ckpt) == ckpt.resolve()
    with pytest.raises(ThalamusError) as err:
        mg.resolve_weights(tmp_path / "missing.pt")
    assert err.value.exit_code == 66 and "--mindglide-model" in str(err.value)

    def no_download(*a, **k):  # pragma: no cover - must not be reached
        raise AssertionError("download attempted")

    import mindglide.infer

    monkeypatch.setattr(mindglide.infer, "resolve_model_path", no_download)
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: None)
    with pytest.raises(ThalamusError) as err:
        mg.resolve_weights(offline=True)
    assert err.value.exit_code == 66 and "HF_HUB_OFFLINE" in str(err.value)
    # MODEL_PATH is read with the run's configuration (as --mindglide-model), never here.
    monkeypatch.setenv("MODEL_PATH", str(ckpt))
    with pytest.raises(ThalamusError):
        mg.resolve_weights(offline=True)
    monkeypatch.delenv("MODEL_PATH")
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: str(ckpt))
    assert mg.resolve_weights(offline=True) == ckpt
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: None)
    with pytest.raises(ThalamusError):
        mg.resolve_weights(allow_download=False)
