"""MindGlide adapter: the ``mindglide`` package's network, loaded once per process.

``mindglide.infer.run_inference`` builds and loads the network on every call
and has no way to take a preloaded one, so a session's three contrasts (T1w,
registered FLAIR, scaled registered R1) would each pay for it. This module
calls the package's lower-level pieces instead, step for step as
``run_inference`` does for one scan: ``mindglide.network.get_network`` (once,
cached per checkpoint and device), ``mindglide.transforms.get_transforms``,
MONAI's ``SlidingWindowInferer`` with the package's patch size, overlap 0.5
and gaussian blending, ``recovery_prediction`` for resampled inputs, padding
back into the bounding box, reorientation to the input orientation and
``keep_largest_component``. The output is the 20-label MindGlide segmentation
on the input grid; the tests check it equals ``run_inference``'s voxel for
voxel.

Weights: an explicit checkpoint (``--mindglide-model``, or the package's
``MODEL_PATH`` convention, read when the run's configuration is built), else
the package's Hugging Face cache. A download happens only through
``mindglide.infer.resolve_model_path``, is logged as a warning, and never
when offline (``HF_HUB_OFFLINE``, passed in by the caller): then a missing
cache is an error (exit 66) that says how to provide the file.

Thalamus: MindGlide has no thalamus label; its deep grey matter label (DGM,
read from ``mindglide.consts.PROPERTIES``; 3 in mindglide 1.x) is intersected
with an envelope mask, FIRST's thalamus by default as in the paper.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from thalamus_bidsapp.errors import EXIT_DATAERR, EXIT_NOINPUT, ThalamusError
from thalamus_bidsapp.image.ensembles import binary, check_same_grid, mask_like
from thalamus_bidsapp.tools import weights
from thalamus_bidsapp.tools.check import CheckOptions, CheckReport, Finding, data_file, python_package

logger = logging.getLogger(__name__)

#: The paper's envelope mask (the methods that can be one are declared in the method registry).
DEFAULT_ENVELOPE = "first"
DGM_NAME = "DGM"
SW_OVERLAP = 0.5
SW_MODE = "gaussian"

#: sha256 of the MindGlide checkpoint per (Hugging Face revision, file name), as MindGlide's own
#: Dockerfile (github.com/MS-PINPOINT/mindGlide, MODEL_SHA256) pins it; the image's default too.
PUBLISHED_SHA256: dict[tuple[str, str], str] = {
    ("a1969821c0a4a37ae54f649a9a0c6fd1b8a48e26", "_20240404_conjurer_trained_dice_7733.pt"):
        "881e30efd9444a25ee70c01d795dd9fb21ac750a48f1ba8070fcd79fb75e76ca",
}

_HOW_TO_PROVIDE = (
    "Pass the MindGlide checkpoint with --mindglide-model (the file "
    "_20240404_conjurer_trained_dice_7733.pt from https://huggingface.co/MS-PINPOINT/mindglide), "
    "set MODEL_PATH, or fill the Hugging Face cache once with network access "
    "(unset HF_HUB_OFFLINE); or leave 'mindglide' out of --methods."
)


def _require_mindglide() -> Any:
    try:
        import mindglide
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ThalamusError(
            "MindGlide not installed: pip install 'thalamus-bidsapp[mindglide]' (mindglide>=1.3). " + _HOW_TO_PROVIDE,
            EXIT_NOINPUT,
        ) from exc
    return mindglide


def mindglide_version() -> str:
    """Installed mindglide package version."""
    return str(_require_mindglide().__version__)


def pinned_weights() -> tuple[str, str, str | None]:
    """The installed mindglide's pinned checkpoint: (revision, file name, published sha256 or None)."""
    _require_mindglide()
    from mindglide.infer import HF_MODEL_FILENAME, HF_MODEL_REVISION

    return HF_MODEL_REVISION, HF_MODEL_FILENAME, PUBLISHED_SHA256.get((HF_MODEL_REVISION, HF_MODEL_FILENAME))


def label_table() -> dict[int, str]:
    """MindGlide's label table (code -> name) from ``mindglide.consts.PROPERTIES``."""
    _require_mindglide()
    from mindglide.consts import PROPERTIES

    return {int(code): str(name) for code, name in PROPERTIES["labels"].items()}


def dgm_label() -> int:
    """The code of the deep grey matter label in the installed mindglide (3 in 1.x).

    Raises
    ------
    ThalamusError
        Exit 65 if the package's label table has no single DGM label.
    """
    codes = [code for code, name in label_table().items() if name == DGM_NAME]
    if len(codes) != 1:
        raise ThalamusError(
            f"mindglide {mindglide_version()} label table has no single '{DGM_NAME}' label: {label_table()}",
            EXIT_DATAERR,
        )
    return codes[0]


#: Name of MindGlide's lesion class in its label table.
LESION_NAME = "lesion"


def lesion_label() -> int:
    """The code of the lesion class in the installed mindglide's label table (18 in 1.x).

    Raises
    ------
    ThalamusError
        Exit 65 if the package's label table has no single class named "Lesion".
    """
    codes = [code for code, name in label_table().items() if name.lower() == LESION_NAME]
    if len(codes) != 1:
        raise ThalamusError(
            f"mindglide {mindglide_version()} label table has no single 'Lesion' class: {label_table()}",
            EXIT_DATAERR,
        )
    return codes[0]


def lesion_mask(seg_img: nib.spatialimages.SpatialImage) -> nib.Nifti1Image:
    """Binary lesion mask (class :func:`lesion_label`) of a MindGlide segmentation, on its grid."""
    labels = np.rint(np.asanyarray(seg_img.dataobj)).astype(np.int32)
    return mask_like(labels == lesion_label(), seg_img)


def resolve_weights(model_path: str | os.PathLike | None = None, allow_download: bool = True,
                    offline: bool = False) -> Path:
    """Locate the MindGlide checkpoint.

    Order: ``model_path`` (``--mindglide-model``, or ``$MODEL_PATH`` read when
    the configuration was built), the package's pinned file in the Hugging
    Face cache, then - only if ``allow_download`` and not ``offline``
    (``HF_HUB_OFFLINE``) - a logged download through
    ``mindglide.infer.resolve_model_path``.

    Raises
    ------
    ThalamusError
        Exit 66 when the weights cannot be found (and may not be downloaded).
    """
    _require_mindglide()
    from mindglide.infer import HF_MODEL_FILENAME, HF_MODEL_REVISION, HF_REPO_ID, UsageError, resolve_model_path

    if model_path is not None:
        try:
            return Path(resolve_model_path(str(model_path))).resolve()
        except UsageError as exc:
            raise ThalamusError(f"MindGlide weights not found: {model_path}. {_HOW_TO_PROVIDE}", EXIT_NOINPUT) from exc
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(HF_REPO_ID, HF_MODEL_FILENAME, revision=HF_MODEL_REVISION)
    except Exception:  # noqa: BLE001 - a broken cache is the same as no cache here
        cached = None
    if isinstance(cached, str) and Path(cached).is_file():
        return Path(cached)
    if offline or not allow_download:
        why = "HF_HUB_OFFLINE is set" if offline else "downloads are not allowed"
        raise ThalamusError(
            f"MindGlide weights not found: not given (--mindglide-model or MODEL_PATH), not in the Hugging Face "
            f"cache, and {why}. {_HOW_TO_PROVIDE}",
            EXIT_NOINPUT,
        )
    logger.warning("MindGlide weights not cached: downloading %s (~123 MB) from huggingface.co/%s "
                   "(set HF_HUB_OFFLINE=1 to forbid)", HF_MODEL_FILENAME, HF_REPO_ID)
    try:
        return Path(resolve_model_path(None))
    except UsageError as exc:
        raise ThalamusError(f"{exc} {_HOW_TO_PROVIDE}", EXIT_NOINPUT) from exc


@dataclass(frozen=True)
class MindGlideModel:
    """A loaded MindGlide network and where it came from."""

    net: Any
    device: Any
    model_path: Path
    sha256: str
    version: str


_CACHE: dict[tuple[str, str], MindGlideModel] = {}
_CACHE_LOCK = threading.Lock()
_LOADS = 0


def load_count() -> int:
    """How many times this process has built and loaded the network (for tests and logs)."""
    return _LOADS


def clear_model_cache() -> None:
    """Forget the loaded networks (frees memory; the next call loads again)."""
    with _CACHE_LOCK:
        _CACHE.clear()


def _resolve_device(device: str) -> Any:
    from mindglide.infer import UsageError, resolve_device

    try:
        return resolve_device(device)
    except UsageError as exc:
        raise ThalamusError(str(exc), EXIT_NOINPUT) from exc


def load_model(model_path: str | os.PathLike | None = None, device: str = "cpu",
               allow_download: bool = True) -> MindGlideModel:
    """The MindGlide network for this checkpoint and device, loaded once per process.

    Parameters
    ----------
    model_path
        Checkpoint file; None resolves it as :func:`resolve_weights` does.
    device
        ``cpu``, ``cuda``, ``mps`` or ``auto`` (mindglide's own resolution).
    """
    global _LOADS
    path = resolve_weights(model_path, allow_download=allow_download)
    dev = _resolve_device(device)
    key = (str(path.resolve()), str(dev))
    with _CACHE_LOCK:
        cached = _CACHE.get(key)
        if cached is not None:
            return cached
        from mindglide import network

        logger.info("loading MindGlide network from %s on %s", path, dev)
        net = network.get_network(device=dev, checkpoint_path=str(path)).eval()
        _LOADS += 1
        model = MindGlideModel(net=net, device=dev, model_path=path, sha256=weights.checksums({"checkpoint": path})["checkpoint"],
                               version=mindglide_version())
        _CACHE[key] = model
        return model


def segment_image(
    image_path: str | os.PathLike,
    model: MindGlideModel,
    sw_batch_size: int = 4,
    keep_largest_component: bool = True,
    reorient: bool = True,
) -> nib.Nifti1Image:
    """MindGlide's 20-label segmentation of one image, on that image's grid.

    Mirrors ``mindglide.infer.run_inference`` for one scan, with a preloaded
    network and without a DataLoader worker process.

    Parameters
    ----------
    image_path
        NIfTI of any contrast (T1w, FLAIR, scaled R1), shape (X, Y, Z).
    model
        From :func:`load_model`.

    Returns
    -------
    nibabel.Nifti1Image
        uint8 labels (codes of :func:`label_table`), same shape and
        orientation as the input.
    """
    import torch
    from mindglide.consts import PATCH_SIZE, PROPERTIES
    from mindglide.transforms import get_transforms, recovery_prediction
    from mindglide.transforms import keep_largest_component as _klc
    from monai.inferers import SlidingWindowInferer
    from monai.transforms import AsDiscrete

    num_classes = len(PROPERTIES["labels"])
    data = get_transforms(no_reorient=not reorient)({"image": str(image_path)})
    image = torch.as_tensor(np.asarray(data["image"]), dtype=torch.float32)[None].to(model.device)
    inferer = SlidingWindowInferer(roi_size=PATCH_SIZE, sw_batch_size=sw_batch_size, overlap=SW_OVERLAP,
                                   mode=SW_MODE)
    with torch.inference_mode():
        prediction = inferer(image, model.net).cpu()[0]

    original_affine = np.asarray(data["image_meta_dict"]["affine"], dtype=np.float64)
    crop_shape = [int(v) for v in np.asarray(data["crop_shape"]).tolist()]
    original_shape = [int(v) for v in np.asarray(data["original_shape"]).tolist()]
    (h0, w0, d0), (h1, w1, d1) = np.asarray(data["bbox"]).astype(int).tolist()
    if bool(data["resample_flag"]):
        onehot = AsDiscrete(argmax=True, to_onehot=num_classes)(prediction)
        pred = recovery_prediction(onehot, [num_classes, *crop_shape], bool(data["anisotropy_flag"]))
        pred = np.argmax(pred, axis=0)
    else:
        pred = prediction.argmax(dim=0).numpy()
    padded = np.zeros(original_shape, dtype=pred.dtype)
    padded[h0:h1, w0:w1, d0:d1] = pred
    current_affine = np.asarray(data["output_affine"], dtype=np.float64)
    seg = nib.Nifti1Image(padded.astype(np.uint8), current_affine)
    current_ornt = nib.orientations.io_orientation(current_affine)
    original_ornt = nib.orientations.io_orientation(original_affine)
    if not np.all(current_ornt == original_ornt):
        seg = seg.as_reoriented(nib.orientations.ornt_transform(current_ornt, original_ornt))
    if keep_largest_component:
        seg = _klc(seg)
    return seg


def segment_contrasts(
    images: Mapping[str, str | os.PathLike | None],
    model_path: str | os.PathLike | None = None,
    device: str = "cpu",
    allow_download: bool = True,
) -> dict[str, nib.Nifti1Image]:
    """Segment every existing contrast of a session with one loaded network.

    Parameters
    ----------
    images
        Contrast (``T1w``, ``FLAIR``, ``R1``) -> image path, or None when the
        contrast is absent for the session (skipped, logged).

    Returns
    -------
    dict
        Contrast -> MindGlide segmentation on that image's grid.
    """
    present = {c: p for c, p in images.items() if p is not None}
    for contrast in images:
        if images[contrast] is None:
            logger.info("MindGlide: no %s image for this session; skipped", contrast)
    if not present:
        return {}
    model = load_model(model_path, device, allow_download)
    out: dict[str, nib.Nifti1Image] = {}
    for contrast, path in present.items():
        logger.info("MindGlide on %s: %s", contrast, path)
        out[contrast] = segment_image(path, model)
    return out


def mindglide_thalamus(
    dgm_seg_img: nib.spatialimages.SpatialImage, envelope_img: nib.spatialimages.SpatialImage
) -> nib.Nifti1Image:
    """Thalamus = MindGlide DGM intersected with an envelope mask (paper: FIRST's thalamus).

    Parameters
    ----------
    dgm_seg_img
        MindGlide label map on the native T1w grid (the DGM label is taken
        from it; other labels are ignored).
    envelope_img
        Binary thalamus mask of another method on the same grid.

    Returns
    -------
    nibabel.Nifti1Image
        uint8 0/1 mask on the T1w grid.
    """
    check_same_grid([envelope_img, dgm_seg_img], ["envelope mask", "MindGlide segmentation"])
    labels = np.rint(np.asanyarray(dgm_seg_img.dataobj)).astype(np.int32)
    return mask_like((labels == dgm_label()) & binary(envelope_img), envelope_img)


def provenance(model: MindGlideModel, envelope: str = DEFAULT_ENVELOPE, contrast: str | None = None) -> dict[str, Any]:
    """Sidecar fields: tool, version, call, model path and sha256, label taken, envelope."""
    from mindglide.consts import PATCH_SIZE

    label = dgm_label()
    return {
        "Tool": "MindGlide",
        "Version": model.version,
        "Call": "thalamus_bidsapp.tools.mindglide.segment_image (mindglide.network.get_network, "
        f"mindglide.transforms.get_transforms, SlidingWindowInferer roi {list(PATCH_SIZE)}, overlap "
        f"{SW_OVERLAP}, {SW_MODE}; keep largest component)",
        "ModelPath": str(model.model_path),
        "ModelSHA256": model.sha256,
        "Device": str(model.device),
        "Contrast": contrast,
        "LabelsTaken": {str(label): label_table()[label]},
        "Envelope": envelope,
        "EnvelopeRule": f"MindGlide {DGM_NAME} intersected with the {envelope} thalamus mask",
    }


# --- --check-tools ------------------------------------------------------------

def check_installation(options: CheckOptions) -> CheckReport:
    """The mindglide package and its checkpoint (sha256 against the published one; never downloaded here)."""
    findings = [python_package("mindglide", "mindglide"), python_package("PyTorch", "torch"),
                python_package("MONAI", "monai")]
    if not findings[0].ok:
        return CheckReport("mindglide", "method", tuple(findings))
    try:
        weights = resolve_weights(options.option("mindglide_model"), allow_download=False,
                                offline=options.environment.hf_hub_offline)
    except ThalamusError as err:
        findings.append(Finding("checkpoint", False, str(err)))
        return CheckReport("mindglide", "method", tuple(findings))
    revision, filename, published = pinned_weights()
    # Only the package's pinned file has a known checksum; a checkpoint of another name is the user's choice.
    expected = published if weights.name == filename else None
    findings.append(data_file(f"checkpoint (revision {revision[:12]})" if expected else "checkpoint",
                              weights, expected))
    return CheckReport("mindglide", "method", tuple(findings))
