"""MeshNet adapter: layers-format loader, model files, conform round trip, real-data Dice."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from tests.conftest import shared_file
from thalamus_bidsapp.errors import ThalamusError
from thalamus_bidsapp.image.conform import (
    conform,
    conformed_affine,
    is_conformed,
    labels_to_native,
    native_centre_ras,
    robust_uint8_scaling,
)
from thalamus_bidsapp.tools import meshnet, meshnet_models, tfjs, weights

MODEL_NAME = "model30chan18cls"
SHA = {
    "model.json": "d28521c0965e452c371314e4b5b4dcef7b19aa91241b17ef894ac24952139701",
    "model.bin": "7039651d91c4cee0b7b1ddfe93fe2f5cb9b71d99f5a126fdef407e2a36bb52d4",
}


def real_model_dir() -> Path:
    return shared_file("brainchop", "models", MODEL_NAME, "model.bin").parent


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    return float(2 * np.logical_and(a, b).sum() / (a.sum() + b.sum()))


# --------------------------------------------------------------------------- tiny hand-made network


def _conv_layer(name: str, inbound: str, filters: int, kernel: int, dilation: int, activation: str) -> dict:
    return {
        "class_name": "Conv3D",
        "name": name,
        "inbound_nodes": [[[inbound, 0, 0, {}]]],
        "config": {
            "name": name,
            "filters": filters,
            "kernel_size": [kernel] * 3,
            "strides": [1, 1, 1],
            "dilation_rate": [dilation] * 3,
            "padding": "same",
            "data_format": "channels_last",
            "activation": activation,
            "use_bias": True,
            "dtype": "float32",
        },
    }


def write_tiny_model(folder: Path, kernel: int, dilation: int, seed: int = 0) -> dict[str, np.ndarray]:
    """conv(k, dilation) -> ELU (Activation layer) -> conv 1x1x1 (with ELU in its config) -> conv 1x1x1."""
    rng = np.random.default_rng(seed)
    weights = {
        "conv_a/kernel": rng.normal(size=(kernel, kernel, kernel, 1, 2)).astype(np.float32),
        "conv_a/bias": rng.normal(size=2).astype(np.float32),
        "conv_b/kernel": rng.normal(size=(1, 1, 1, 2, 4)).astype(np.float32),
        "conv_b/bias": rng.normal(size=4).astype(np.float32),
        "output/kernel": rng.normal(size=(1, 1, 1, 4, 3)).astype(np.float32),
        "output/bias": rng.normal(size=3).astype(np.float32),
    }
    layers = [
        {
            "class_name": "InputLayer",
            "name": "input",
            "inbound_nodes": [],
            "config": {"batch_input_shape": [None, None, None, None, 1], "dtype": "float32", "name": "input"},
        },
        _conv_layer("conv_a", "input", 2, kernel, dilation, "linear"),
        {
            "class_name": "Activation",
            "name": "act",
            "inbound_nodes": [[["conv_a", 0, 0, {}]]],
            "config": {"name": "act", "activation": "elu"},
        },
        _conv_layer("conv_b", "act", 4, 1, 1, "elu"),
        _conv_layer("output", "conv_b", 3, 1, 1, "linear"),
    ]
    model = {
        "format": "layers-model",
        "modelTopology": {
            "model_config": {
                "class_name": "Functional",
                "config": {"name": "tiny", "layers": layers, "input_layers": [["input", 0, 0]]},
            }
        },
        "weightsManifest": [
            {
                "paths": ["model.bin"],
                "weights": [{"name": k, "shape": list(v.shape), "dtype": "float32"} for k, v in weights.items()],
            }
        ],
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.json").write_text(json.dumps(model))
    (folder / "model.bin").write_bytes(b"".join(v.astype("<f4").tobytes() for v in weights.values()))
    return weights


def numpy_conv_same(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray, dilation: int) -> np.ndarray:
    """TensorFlow's Conv3D, padding 'same', stride 1: x (D, H, W, Cin), kernel (kD, kH, kW, Cin, Cout)."""
    k = kernel.shape[0]
    total = (k - 1) * dilation
    before = total // 2
    padded = np.pad(x, [(before, total - before)] * 3 + [(0, 0)])
    d, h, w = x.shape[:3]
    out = np.zeros((d, h, w, kernel.shape[4]), dtype=np.float64)
    for a in range(k):
        for b in range(k):
            for c in range(k):
                patch = padded[a * dilation : a * dilation + d, b * dilation : b * dilation + h, c * dilation : c * dilation + w]
                out += patch @ kernel[a, b, c]
    return out + bias


def elu(x: np.ndarray) -> np.ndarray:
    return np.where(x > 0, x, np.expm1(np.minimum(x, 0)))


@pytest.mark.parametrize(("kernel", "dilation"), [(3, 1), (3, 2), (2, 1)])
def test_tiny_network_matches_numpy(tmp_path: Path, kernel: int, dilation: int) -> None:
    weights = write_tiny_model(tmp_path, kernel, dilation)
    net = meshnet.load_tfjs_layers_model(tmp_path)
    assert net.n_classes == 3

    # Non-cubic and asymmetric so a swapped axis or a flipped kernel would show.
    x = np.random.default_rng(1).normal(size=(5, 6, 7, 1)).astype(np.float32)
    expected = elu(numpy_conv_same(x, weights["conv_a/kernel"], weights["conv_a/bias"], dilation))
    expected = elu(numpy_conv_same(expected, weights["conv_b/kernel"], weights["conv_b/bias"], 1))
    expected = numpy_conv_same(expected, weights["output/kernel"], weights["output/bias"], 1)

    with torch.inference_mode():
        got = net(torch.from_numpy(x[None, ..., 0][:, None])).numpy()[0]  # (C, D, H, W)
    np.testing.assert_allclose(np.moveaxis(got, 0, -1), expected, rtol=1e-4, atol=1e-5)

    # predict_labels (channels-last path, slabbed last layer) gives the argmax of the same logits.
    volume = (np.random.default_rng(2).random((20, 7, 9)) * 255).astype(np.uint8)
    scaled = (volume.astype(np.float32) - volume.min()) / (float(volume.max()) - volume.min())
    logits = elu(numpy_conv_same(scaled[..., None], weights["conv_a/kernel"], weights["conv_a/bias"], dilation))
    logits = elu(numpy_conv_same(logits, weights["conv_b/kernel"], weights["conv_b/bias"], 1))
    logits = numpy_conv_same(logits, weights["output/kernel"], weights["output/bias"], 1)
    labels, box = meshnet.predict_labels(net, volume, crop=False)
    assert box == (slice(0, 20), slice(0, 7), slice(0, 9))
    np.testing.assert_array_equal(labels, logits.argmax(-1))


def test_loader_rejects_unsupported_layer(tmp_path: Path) -> None:
    write_tiny_model(tmp_path, 3, 1)
    model = json.loads((tmp_path / "model.json").read_text())
    layers = model["modelTopology"]["model_config"]["config"]["layers"]
    layers[2]["class_name"] = "BatchNormalization"
    (tmp_path / "model.json").write_text(json.dumps(model))
    with pytest.raises(ThalamusError, match="BatchNormalization"):
        meshnet.load_tfjs_layers_model(tmp_path)


def test_loader_rejects_short_weights(tmp_path: Path) -> None:
    write_tiny_model(tmp_path, 3, 1)
    data = (tmp_path / "model.bin").read_bytes()
    (tmp_path / "model.bin").write_bytes(data[:-8])
    with pytest.raises(ThalamusError, match="too short"):
        meshnet.load_tfjs_layers_model(tmp_path)


def test_real_model_structure_and_kernel_layout() -> None:
    folder = real_model_dir()
    net = meshnet.load_tfjs_layers_model(folder)
    convs = [m for m in net.layers if isinstance(m, tfjs._Conv3dSame)]
    assert [c.conv.dilation[0] for c in convs] == [1, 2, 4, 8, 16, 8, 4, 2, 1, 1]
    assert [c.conv.kernel_size for c in convs] == [(3, 3, 3)] * 9 + [(1, 1, 1)]
    assert [c.conv.padding for c in convs] == [(d, d, d) for d in (1, 2, 4, 8, 16, 8, 4, 2, 1)] + [(0, 0, 0)]
    assert net.n_classes == 18
    manifest = json.loads((folder / "model.json").read_text())["weightsManifest"][0]["weights"]
    assert manifest[2]["name"] == "conv3d_2/kernel"
    raw = np.frombuffer((folder / "model.bin").read_bytes(), "<f4")
    offset = 3 * 3 * 3 * 1 * 30 + 30
    tf_kernel = raw[offset : offset + 27 * 30 * 30].reshape(3, 3, 3, 30, 30)
    # Keras (kD, kH, kW, in, out) -> torch (out, in, kD, kH, kW)
    np.testing.assert_array_equal(convs[1].conv.weight.numpy()[7, 3, 0, 1, 2], tf_kernel[0, 1, 2, 3, 7])
    assert meshnet.read_class_names(folder, 18)[7] == "Thalamus"


def test_network_loaded_once_per_folder() -> None:
    net1, dir1, sums1 = meshnet.load_meshnet(real_model_dir())
    net2, dir2, sums2 = meshnet.load_meshnet(real_model_dir())
    assert net1 is net2 and dir1 == dir2
    assert sums1 == SHA


# --------------------------------------------------------------------------- model files


def test_model_spec_from_package_data() -> None:
    spec = meshnet.model_spec()
    assert spec.name == MODEL_NAME
    assert spec.sha256 == SHA
    assert spec.url_base.endswith("/4c87885f3a2a8835e260d521dcec922b58d91d41/public/models/model30chan18cls/")
    assert spec.classes[7] == spec.thalamus_class == "Thalamus"


def _copy_model(tmp_path: Path, files=("model.json", "model.bin")) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    for name in files:
        shutil.copyfile(real_model_dir() / name, folder / name)
    return folder


def test_missing_model_file_names_file_and_checksum(tmp_path: Path) -> None:
    folder = _copy_model(tmp_path, files=("model.json",))
    with pytest.raises(ThalamusError) as info:
        meshnet.resolve_model_dir(folder)
    message = str(info.value)
    assert str(folder / "model.bin") in message and SHA["model.bin"] in message
    assert info.value.exit_code == 66


def test_corrupted_model_file_names_file_and_checksum(tmp_path: Path) -> None:
    folder = _copy_model(tmp_path)
    data = bytearray((folder / "model.bin").read_bytes())
    data[1000] ^= 0xFF
    (folder / "model.bin").write_bytes(bytes(data))
    with pytest.raises(ThalamusError) as info:
        meshnet.segment_thalamus(nib.Nifti1Image(np.zeros((4, 4, 4), np.uint8), np.eye(4)), folder)
    message = str(info.value)
    assert str(folder / "model.bin") in message and SHA["model.bin"] in message and "corrupted" in message
    assert info.value.exit_code == 66


def test_missing_model_folder(tmp_path: Path) -> None:
    with pytest.raises(ThalamusError, match=SHA["model.json"]) as info:
        meshnet.resolve_model_dir(tmp_path / "nowhere")
    assert info.value.exit_code == 66


def test_model_folder_from_environment_is_read_with_the_configuration(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from thalamus_bidsapp.cli.run import build_config

    folder = _copy_model(tmp_path)
    bids = shared_file("ds002748_subset")
    environ = {meshnet.MODEL_ENV_VAR: str(folder)}
    config = build_config([str(bids), str(tmp_path / "out"), "participant"], environ=environ)
    assert config.option("meshnet_model") == folder.resolve()
    assert config.option_sources["meshnet_model"] == meshnet.MODEL_ENV_VAR
    assert config.to_json()["method_options"]["meshnet_model"] == str(folder.resolve())
    # An explicit folder wins over the environment.
    other = build_config([str(bids), str(tmp_path / "out"), "participant", "--meshnet-model", str(folder)],
                         environ={meshnet.MODEL_ENV_VAR: str(tmp_path / "nowhere")})
    assert other.option("meshnet_model") == folder.resolve() and "meshnet_model" not in other.option_sources

    # Deep in the code the environment is never read: without a folder, the (empty, offline) cache is used.
    def offline(url: str, timeout: float):
        raise OSError("offline")

    monkeypatch.setenv(meshnet.MODEL_ENV_VAR, str(folder))
    monkeypatch.setattr(meshnet_models, "default_cache_dir", lambda spec=None: tmp_path / "cache")
    monkeypatch.setattr(weights, "_urlopen", offline)
    with pytest.raises(ThalamusError, match="could not download"):
        meshnet.resolve_model_dir(None)


def _serve_files(source: Path, served: list[str], tamper: bool = False):
    def fake_urlopen(url: str, timeout: float):
        served.append(url)
        data = (source / url.rsplit("/", 1)[1]).read_bytes()
        return io.BytesIO(data + b"x" if tamper else data)

    return fake_urlopen


def test_download_to_user_cache_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache" / MODEL_NAME
    served: list[str] = []
    monkeypatch.delenv(meshnet.MODEL_ENV_VAR, raising=False)
    monkeypatch.setattr(meshnet_models, "default_cache_dir", lambda spec=None: cache)
    monkeypatch.setattr(weights, "_urlopen", _serve_files(real_model_dir(), served))
    assert meshnet.resolve_model_dir(None) == cache
    assert sorted(u.rsplit("/", 1)[1] for u in served) == ["model.bin", "model.json"]
    assert all(u.startswith(meshnet.model_spec().url_base) for u in served)
    assert hashlib.sha256((cache / "model.bin").read_bytes()).hexdigest() == SHA["model.bin"]
    assert sorted(p.name for p in cache.iterdir()) == ["model.bin", "model.json"]  # no temporary left

    served.clear()
    meshnet.resolve_model_dir(None)
    assert served == []  # cached

    # A corrupted cached file is fetched again.
    (cache / "model.json").write_text("{}")
    meshnet.resolve_model_dir(None)
    assert [u.rsplit("/", 1)[1] for u in served] == ["model.json"]


def test_tampered_download_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache" / MODEL_NAME
    monkeypatch.delenv(meshnet.MODEL_ENV_VAR, raising=False)
    monkeypatch.setattr(meshnet_models, "default_cache_dir", lambda spec=None: cache)
    monkeypatch.setattr(weights, "_urlopen", _serve_files(real_model_dir(), [], tamper=True))
    with pytest.raises(ThalamusError, match=SHA["model.json"]) as info:
        meshnet.resolve_model_dir(None)
    assert info.value.exit_code == 66
    assert not cache.exists() or list(cache.iterdir()) == []


def test_download_failure_is_clear(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import urllib.error

    def offline(url: str, timeout: float):
        raise urllib.error.URLError("no network")

    monkeypatch.delenv(meshnet.MODEL_ENV_VAR, raising=False)
    monkeypatch.setattr(meshnet_models, "default_cache_dir", lambda spec=None: tmp_path / "cache")
    monkeypatch.setattr(weights, "_urlopen", offline)
    with pytest.raises(ThalamusError, match="--meshnet-model") as info:
        meshnet.resolve_model_dir(None)
    assert "model.json" in str(info.value) and SHA["model.json"] in str(info.value)


def test_default_cache_dir_layout() -> None:
    assert meshnet.default_cache_dir().parts[-3:] == ("thalamus_bidsapp", "meshnet", MODEL_NAME)


# --------------------------------------------------------------------------- conform


def test_conform_keeps_a_conformed_image() -> None:
    img = nib.load(shared_file("freesurfer_bert_7.2", "mri", "norm.mgz"))
    assert is_conformed(img)
    out = conform(img)
    np.testing.assert_allclose(out.affine, img.affine, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(out.dataobj), np.asarray(img.dataobj))
    assert out.get_data_dtype() == np.uint8


def test_conform_grid_of_a_ras_image() -> None:
    img = nib.load(shared_file("colin27_aal", "ch2.nii.gz"))
    out = conform(img)
    assert out.shape == (256, 256, 256) and out.get_data_dtype() == np.uint8
    assert nib.aff2axcodes(out.affine) == ("L", "I", "A")
    np.testing.assert_allclose(nib.affines.voxel_sizes(out.affine), 1.0)
    # FreeSurfer's centre (voxel shape/2) stays where it was.
    np.testing.assert_allclose(nib.affines.apply_affine(out.affine, [128, 128, 128]), native_centre_ras(img))
    np.testing.assert_allclose(out.affine, conformed_affine(img))
    assert not is_conformed(img)
    # Integer-valued data within 0..255 is copied, not rescaled; trilinear keeps the range.
    assert np.asarray(out.dataobj).max() <= float(np.asarray(img.dataobj).max()) + 0.5
    # The image content moves with the grid: a bright native voxel is bright in conformed space.
    native = np.asarray(img.dataobj)
    ijk = np.array(np.unravel_index(np.argmax(native), native.shape))
    cijk = np.rint(nib.affines.apply_affine(np.linalg.inv(out.affine), nib.affines.apply_affine(img.affine, ijk)))
    assert np.asarray(out.dataobj)[tuple(cijk.astype(int))] > 0.5 * native.max()


def test_conform_labels_round_trip_exact() -> None:
    aal = nib.load(shared_file("colin27_aal", "AAL.nii"))
    conformed = conform(aal, order=0, rescale=False)
    back = labels_to_native(conformed, aal)
    assert back.shape == aal.shape
    np.testing.assert_allclose(back.affine, aal.affine)
    np.testing.assert_array_equal(np.asarray(back.dataobj), np.asarray(aal.dataobj))


def test_labels_to_native_on_anisotropic_grid() -> None:
    """Labels drawn on a 0.87 x 0.87 x 1 mm grid survive the trip to conformed space and back."""
    t1 = nib.load(shared_file("ds002748_subset", "sub-01", "anat", "sub-01_T1w.nii.gz"))
    shape = t1.shape[:3]
    labels = np.zeros(shape, np.uint8)
    centre = np.array(shape) // 2
    grid = np.indices(shape)
    radius_mm = ((grid[0] - centre[0]) * 0.87) ** 2 + ((grid[1] - centre[1]) * 0.87) ** 2 + (grid[2] - centre[2]) ** 2
    labels[radius_mm < 20**2] = 1
    native_labels = nib.Nifti1Image(labels, t1.affine)
    back = labels_to_native(conform(native_labels, order=0, rescale=False), t1)
    assert back.shape == shape and np.allclose(back.affine, t1.affine)
    assert dice(np.asarray(back.dataobj), labels) > 0.97


def test_conform_rescales_wide_float_range() -> None:
    rng = np.random.default_rng(0)
    data = rng.uniform(0, 2000, size=(40, 50, 30)).astype(np.float32)
    data[0, 0, :5] = 6000.0  # a few hot voxels (vessels) must not squash the contrast
    img = nib.Nifti1Image(data, np.diag([1.5, 1.5, 2.0, 1.0]))
    src_min, scale = robust_uint8_scaling(data)
    assert src_min == pytest.approx(float(data.min()))
    assert 1900 < src_min + 255 / scale < 2100
    out = np.asarray(conform(img).dataobj)
    assert out.dtype == np.uint8 and out.max() == 255
    assert 100 < np.median(out[out > 0]) < 160


def test_crop_box_and_largest_component() -> None:
    volume = np.zeros((10, 12, 14), np.float32)
    volume[3:6, 4:9, 2:12] = 1.0
    volume[0, 0, 0] = 0.1  # below 0.2 x max
    assert meshnet.crop_box(volume, 0.2, margin=2) == (slice(1, 8), slice(2, 11), slice(0, 14))
    labels = np.zeros((10, 10, 10), np.uint8)
    labels[1:5, 1:5, 1:5] = 3
    labels[2, 2, 2] = 7
    labels[8, 8, 8] = 7  # an island
    out = meshnet.keep_largest_component(labels)
    assert out[8, 8, 8] == 0 and out[2, 2, 2] == 7 and (out[1:5, 1:5, 1:5] > 0).all()


# --------------------------------------------------------------------------- real data


REAL_CASES = [
    ("bert", ("freesurfer_bert_7.2", "mri", "norm.mgz"), ("freesurfer_bert_7.2", "mri", "aseg.mgz"), (10, 49), 0.88),
    ("subject2", ("freesurfer_subject2", "norm.mgz"), ("freesurfer_subject2", "aparc.a2009s+aseg.mgz"), (10, 49), 0.88),
    ("colin27", ("colin27_aal", "ch2.nii.gz"), ("colin27_aal", "AAL.nii"), (77, 78), 0.78),
]


@pytest.mark.slow
@pytest.mark.parametrize(("case", "t1_parts", "ref_parts", "labels", "min_dice"), REAL_CASES, ids=[c[0] for c in REAL_CASES])
def test_meshnet_thalamus_on_real_data(case, t1_parts, ref_parts, labels, min_dice) -> None:
    t1 = nib.load(shared_file(*t1_parts))
    reference = np.isin(np.asarray(nib.load(shared_file(*ref_parts)).dataobj), labels)
    mask, provenance = meshnet.segment_thalamus(t1, real_model_dir(), threads=2)

    assert mask.shape == t1.shape[:3]
    np.testing.assert_allclose(mask.affine, t1.affine)
    data = np.asarray(mask.dataobj)
    assert data.dtype == np.uint8 and set(np.unique(data)) <= {0, 1}
    score = dice(data, reference)
    print(f"{case}: MeshNet thalamus Dice {score:.4f} ({int(data.sum())} vs {int(reference.sum())} voxels)")
    assert score >= min_dice

    assert provenance["Model"] == MODEL_NAME
    assert provenance["ModelSha256"] == SHA
    assert provenance["ClassIndex"] == 7 and provenance["ClassName"] == "Thalamus"
    assert provenance["TorchVersion"] == torch.__version__
    assert provenance["Preprocessing"]["Crop"] is True
    json.dumps(provenance)  # sidecar-ready


# --------------------------------------------------------------------------- another pinned model


def test_model_spec_selects_another_model() -> None:
    spec = meshnet.model_spec("model21_104class")
    assert spec.name == "model21_104class" and spec.thalamus_classes == ("Left-Thalamus-Proper*",
                                                                         "Right-Thalamus-Proper*")
    assert set(spec.sha256) == {"model.json", "group1-shard1of1.bin", "colormap.json"}
    folder = shared_file("brainchop", "models", "model21_104class")
    assert meshnet.resolve_model_dir(folder, model="model21_104class") == folder.resolve()
    with pytest.raises(ThalamusError, match="model.bin"):  # the 18-class files are not there
        meshnet.resolve_model_dir(folder)
    with pytest.raises(ThalamusError, match="unknown MeshNet model"):
        meshnet.model_spec("model99")


@pytest.mark.slow
def test_104_class_model_segments_both_thalami_on_bert() -> None:
    t1 = nib.load(shared_file("freesurfer_bert_7.2", "mri", "norm.mgz"))
    reference = np.isin(np.asarray(nib.load(shared_file("freesurfer_bert_7.2", "mri", "aseg.mgz")).dataobj), (10, 49))
    mask, provenance = meshnet.segment_thalamus(t1, shared_file("brainchop", "models", "model21_104class"),
                                                threads=2, model="model21_104class")
    score = dice(np.asarray(mask.dataobj), reference)
    print(f"bert: 104-class MeshNet thalamus (left + right classes) Dice {score:.4f}")
    assert score >= 0.8
    assert provenance["Model"] == "model21_104class" and provenance["ClassIndex"] == [69, 70]
