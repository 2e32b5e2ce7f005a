"""MeshNet thalamus segmentation: brainchop's licence-free CPU models, run with PyTorch.

The default model is brainchop's (neuroneural/brainchop, MIT licence)
30-channel, 18-class MeshNet ``model30chan18cls``: nine 3x3x3 dilated
convolutions with ELU activations and a 1x1x1 output convolution, trained on
FreeSurfer-conformed T1w images against FreeSurfer's aseg; other pinned
models of ``data/meshnet_models.json`` are selected by name. This module

1. finds the model files (:func:`resolve_model_dir`, from the torch-free
   :mod:`thalamus_bidsapp.tools.meshnet_models`, which the main process
   uses to check the tools without importing torch);
2. reads the TensorFlow.js layers format into PyTorch
   (:mod:`thalamus_bidsapp.tools.tfjs`), no TensorFlow needed;
3. segments (:func:`segment_thalamus`): conform to 256^3 1 mm LIA uint8,
   min-max scale to 0..1, crop to the head, run the network, argmax, keep the
   largest connected component of non-background labels, take the thalamus
   class(es), and bring the mask back onto the native grid by nearest neighbour;
4. splits the bilateral mask into left and right
   (:func:`segment_thalamus_sides`): the 18-class model has one bilateral
   Thalamus class (the better bilateral mask), the 104-class FreeSurfer model
   ``model21_104class`` has Left- and Right-Thalamus-Proper; both run on the
   same conformed volume and crop, and each voxel of the bilateral mask takes
   the side of the nearer 104-class thalamus label.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch

from thalamus_bidsapp.errors import EXIT_DATAERR, ThalamusError
from thalamus_bidsapp.image.conform import (
    CONFORMED_ORIENTATION,
    CONFORMED_SHAPE,
    CONFORMED_VOXEL_MM,
    conform,
    labels_to_native,
)
from thalamus_bidsapp.image.sides import check_sides_match, split_by_nearest
from thalamus_bidsapp.tools.meshnet_models import (  # noqa: F401 - re-exported: the MeshNet interface
    CACHE_SUBDIR,
    MODEL_ENV_VAR,
    SIDES_MODEL,
    SIDES_MODEL_ENV_VAR,
    MeshNetModelSpec,
    default_cache_dir,
    model_spec,
    read_class_names,
    resolve_and_verify,
    resolve_model_dir,
    verify_model_dir,
)
from thalamus_bidsapp.tools.tfjs import TfjsLayersNet, load_tfjs_layers_model

logger = logging.getLogger(__name__)


#: Voxels brighter than this fraction of the maximum (after 0..1 scaling) define the crop box.
CROP_THRESHOLD = 0.2
#: Extra voxels kept around the crop box on each side.
CROP_MARGIN = 2

# Axis order in which the network sees the conformed LIA array: the NIfTI
# array order itself (i: L, j: I, k: A). brainchop's JavaScript reads the
# x-fastest voxel buffer as a [slice][row][column] tensor and transposes it,
# which, as far as we can tell from its code, lands on the same order; the
# experiment decides: on bert (norm.mgz vs aseg 10+49) this order gives Dice
# 0.91 while (2,1,0), (1,0,2), (0,2,1) and (2,0,1) find no thalamus at all.
_NET_AXES: tuple[int, int, int] = (0, 1, 2)


_NET_CACHE: dict[tuple[str, ...], TfjsLayersNet] = {}
_NET_CACHE_LOCK = threading.Lock()


def load_meshnet(model_dir: Path | None = None, model: str | None = None) -> tuple[TfjsLayersNet, Path, dict[str, str]]:
    """A verified pinned MeshNet, loaded once per process, model folder and checksums.

    Returns
    -------
    tuple
        ``(network, model folder, {file name: sha256})``.
    """
    resolved, checksums = resolve_and_verify(model_dir, model_spec(model))
    key = (str(resolved), *sorted(checksums.values()))
    with _NET_CACHE_LOCK:
        net = _NET_CACHE.get(key)
        if net is None:
            net = load_tfjs_layers_model(resolved)
            _NET_CACHE[key] = net
            logger.info("loaded MeshNet from %s (%d layers)", resolved, len(net.layers))
    return net, resolved, checksums


# --------------------------------------------------------------------------- inference


@contextmanager
def _torch_threads(threads: int | None) -> Iterator[int]:
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(max(1, int(threads)))
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(previous)


def crop_box(volume: np.ndarray, threshold: float = CROP_THRESHOLD, margin: int = CROP_MARGIN) -> tuple[slice, ...]:
    """Bounding box of the voxels brighter than ``threshold`` x max, widened by ``margin`` voxels.

    Parameters
    ----------
    volume
        Shape (X, Y, Z), any intensity units.

    Returns
    -------
    tuple of slice
        One slice per axis; the whole volume when nothing passes the threshold.
    """
    peak = float(volume.max())
    mask = volume > threshold * peak if peak > 0 else np.zeros(volume.shape, bool)
    if not mask.any():
        return tuple(slice(0, n) for n in volume.shape)
    box = []
    for axis in range(volume.ndim):
        other = tuple(a for a in range(volume.ndim) if a != axis)
        present = np.flatnonzero(mask.any(axis=other))
        box.append(slice(max(int(present[0]) - margin, 0), min(int(present[-1]) + 1 + margin, volume.shape[axis])))
    return tuple(box)


def keep_largest_component(labels: np.ndarray, connectivity: int = 26) -> np.ndarray:
    """Zero every non-background voxel outside the largest connected component of ``labels > 0``."""
    import cc3d

    components = cc3d.connected_components(labels > 0, connectivity=connectivity)
    if components.max() == 0:
        return labels
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    largest = int(np.argmax(sizes))
    out = labels.copy()
    out[components != largest] = 0
    return out


def receptive_radius(net: TfjsLayersNet) -> int:
    """Voxels from an output voxel to the farthest input voxel it depends on: sum of dilation x (kernel - 1) / 2."""
    radius = 0
    for module in net.modules():
        if isinstance(module, torch.nn.Conv3d):
            radius += int(module.dilation[0]) * (int(module.kernel_size[0]) - 1) // 2
    return radius


def intersect_boxes(a: tuple[slice, ...], b: tuple[slice, ...]) -> tuple[slice, ...]:
    """The voxels both boxes hold (an empty slice where they do not meet)."""
    out = []
    for first, second in zip(a, b):
        start = max(first.start, second.start)
        out.append(slice(start, max(start, min(first.stop, second.stop))))
    return tuple(out)


def box_around(mask: np.ndarray, margin: int) -> tuple[slice, ...]:
    """Bounding box of ``mask``'s non-zero voxels widened by ``margin`` voxels, within the array."""
    where = np.argwhere(mask)
    low = np.maximum(where.min(axis=0) - margin, 0)
    high = np.minimum(where.max(axis=0) + margin + 1, mask.shape)
    return tuple(slice(int(lo), int(hi)) for lo, hi in zip(low, high))


def predict_labels(
    net: TfjsLayersNet,
    volume: np.ndarray,
    *,
    crop: bool = True,
    threshold: float = CROP_THRESHOLD,
    margin: int = CROP_MARGIN,
    region: tuple[slice, ...] | None = None,
) -> tuple[np.ndarray, tuple[slice, ...]]:
    """Class labels of a conformed uint8 volume (network orientation already applied).

    Parameters
    ----------
    volume
        Shape (X, Y, Z), intensities 0..255.
    region
        Run the network on this box only (within the crop box): the labels
        inside it are those of the whole crop wherever the box holds every
        voxel within the network's receptive field (see :func:`receptive_radius`).

    Returns
    -------
    tuple
        Labels (X, Y, Z) uint8 (0 outside the crop box), and the crop box used.
    """
    scaled = volume.astype(np.float32)
    lo, hi = float(scaled.min()), float(scaled.max())
    scaled = (scaled - lo) / (hi - lo) if hi > lo else np.zeros_like(scaled)
    box = crop_box(scaled, threshold, margin) if crop else tuple(slice(0, n) for n in scaled.shape)
    if region is not None:
        box = intersect_boxes(box, region)
    block = np.ascontiguousarray(scaled[box])
    labels = np.zeros(volume.shape, dtype=np.uint8)
    with torch.inference_mode():
        # Channels-last activations let oneDNN skip layout reorders: about 1.5x faster on CPU.
        x = torch.from_numpy(block)[None, None].contiguous(memory_format=torch.channels_last_3d)
        for layer in net.layers[:-1]:
            x = layer(x)
        # The last (1x1x1) layer and the argmax go slab by slab: the full logits
        # tensor would be the largest allocation of the run.
        last = net.layers[-1]
        out = np.empty(block.shape, dtype=np.uint8)
        step = 16
        for start in range(0, block.shape[0], step):
            logits = last(x[:, :, start : start + step])
            out[start : start + step] = logits.argmax(dim=1)[0].to(torch.uint8).numpy()
        del x
    labels[box] = out
    return labels, box


@dataclass
class Labelling:
    """One model's labels of a conformed T1w, with what the provenance records of the run."""

    spec: MeshNetModelSpec
    labels: np.ndarray  # conformed array order
    box: tuple[slice, ...]
    class_names: tuple[str, ...]
    indices: list[int]  # the thalamus classes
    checksums: dict[str, str]
    n_classes: int
    network_s: float
    n_threads: int


def label_conformed(volume: np.ndarray, model_dir: Path | None, spec: MeshNetModelSpec, *, crop: bool,
                     threads: int | None, around: np.ndarray | None = None) -> Labelling:
    """Run a pinned model on a conformed uint8 volume: argmax labels, largest component kept.

    ``around``: a mask on the conformed grid; the network then runs only on
    the box holding it plus its receptive field, which gives the same labels
    inside the mask's box as the whole crop does, for a fraction of the work.
    """
    net, resolved, checksums = load_meshnet(model_dir, model=spec.name)
    class_names = read_class_names(resolved, net.n_classes, spec)
    missing = [c for c in spec.thalamus_classes if c not in class_names]
    if missing:
        raise ThalamusError(f"MeshNet model in {resolved} has no class {missing[0]!r}", EXIT_DATAERR)
    indices = [class_names.index(c) for c in spec.thalamus_classes]
    net_volume = np.transpose(volume, _NET_AXES)
    region = None
    if around is not None and np.any(around):
        region = box_around(np.transpose(around, _NET_AXES), receptive_radius(net))
    with _torch_threads(threads) as n_threads:
        t0 = time.perf_counter()
        labels, box = predict_labels(net, net_volume, crop=crop, region=region)
        network_s = time.perf_counter() - t0
    labels = keep_largest_component(labels)
    # Back from the network's axis order to the conformed array's.
    labels = np.transpose(labels, np.argsort(_NET_AXES))
    return Labelling(spec, labels, box, class_names, indices, checksums, int(net.n_classes), network_s,
                      int(n_threads))


def segment_thalamus(
    t1w: nib.Nifti1Image,
    model_dir: Path | None = None,
    *,
    crop: bool = True,
    threads: int | None = None,
    model: str | None = None,
) -> tuple[nib.Nifti1Image, dict[str, Any]]:
    """Bilateral thalamus mask of a T1w with brainchop's MeshNet ``model30chan18cls``.

    Parameters
    ----------
    t1w
        T1-weighted image, 3D, any grid and orientation (NIfTI or MGH).
    model_dir
        Folder with the model files (``--meshnet-model`` or its environment
        variable, read with the configuration); None: the user cache (see
        :func:`resolve_model_dir`).
    crop
        Run the network only on the bounding box of voxels brighter than
        0.2 x max (plus 2 voxels), about four times faster and leaner.
    threads
        Torch CPU threads for this call (restored afterwards); None keeps torch's setting.
    model
        Model name in ``data/meshnet_models.json`` (default: its ``default``);
        the mask is the union of the model's thalamus classes.

    Returns
    -------
    tuple
        ``(mask, provenance)``: mask is uint8 0/1 on ``t1w``'s exact grid
        (shape ``t1w.shape[:3]``, ``t1w.affine``); provenance is a JSON-ready
        dict (model, sha256 of both files, preprocessing, class index, torch version).

    Raises
    ------
    ThalamusError
        Missing, corrupted or unreadable model files.
    """
    result = segment_conformed(t1w, model_dir, crop=crop, threads=threads, model=model)
    return result.mask, result.provenance


@dataclass
class ConformedSegmentation:
    """A bilateral MeshNet segmentation and what a second model needs to run on the same input."""

    mask: nib.Nifti1Image  # on the native grid
    thalamus: np.ndarray  # the mask on the conformed grid
    conformed: nib.Nifti1Image
    provenance: dict[str, Any]


def segment_conformed(t1w: nib.Nifti1Image, model_dir: Path | None = None, *, crop: bool = True,
                      threads: int | None = None, model: str | None = None) -> ConformedSegmentation:
    """:func:`segment_thalamus`, keeping the conformed image and mask (for the sides model)."""
    started = time.perf_counter()
    conformed = conform(t1w)
    run = label_conformed(np.asarray(conformed.dataobj), model_dir, model_spec(model), crop=crop, threads=threads)
    thalamus = np.isin(run.labels, run.indices).astype(np.uint8)
    mask = labels_to_native(nib.Nifti1Image(thalamus, conformed.affine), t1w, dtype=np.uint8)
    elapsed = time.perf_counter() - started
    logger.info(
        "MeshNet thalamus: %d voxels on the native grid (%.1f s, network %.1f s, %d threads)",
        int(np.count_nonzero(np.asarray(mask.dataobj))),
        elapsed,
        run.network_s,
        run.n_threads,
    )
    return ConformedSegmentation(mask, thalamus, conformed, _provenance(run, crop, elapsed))


def _provenance(run: Labelling, crop: bool, elapsed: float) -> dict[str, Any]:
    spec = run.spec
    return {
        "Method": "meshnet",
        "Model": spec.name,
        "ModelSource": f"{spec.source} (commit {spec.commit}, {spec.licence} licence)",
        "ModelURL": spec.url_base,
        "ModelSha256": dict(run.checksums),
        **_class_fields(run.indices, run.class_names),
        "NumClasses": run.n_classes,
        "Preprocessing": {
            "Conform": {
                "Shape": list(CONFORMED_SHAPE),
                "VoxelSizeMM": CONFORMED_VOXEL_MM,
                "Orientation": CONFORMED_ORIENTATION,
                "Interpolation": "trilinear",
                "Intensity": "uint8, FreeSurfer robust range (integer data already in 0..255 kept)",
            },
            "Scaling": "min-max to 0..1",
            "Crop": bool(crop),
            "CropThreshold": CROP_THRESHOLD if crop else None,
            "CropMargin": CROP_MARGIN if crop else None,
            "CropBox": [[s.start, s.stop] for s in run.box],
            "NetworkAxisOrder": list(_NET_AXES),
        },
        "Postprocessing": "argmax; largest 26-connected component of non-background labels; "
        "class mask mapped to the native grid by nearest neighbour",
        "TorchVersion": torch.__version__,
        "TorchThreads": run.n_threads,
        "RuntimeSeconds": round(elapsed, 2),
    }


def _class_fields(indices: list[int], class_names: tuple[str, ...]) -> dict[str, Any]:
    """Sidecar fields naming the classes taken (one class: as the 18-class model always recorded it)."""
    if len(indices) == 1:
        return {"ClassIndex": int(indices[0]), "ClassName": class_names[indices[0]]}
    return {"ClassIndex": [int(i) for i in indices], "ClassName": [class_names[i] for i in indices]}


# --------------------------------------------------------------------------- left and right

def segment_thalamus_sides(
    t1w: nib.Nifti1Image,
    model_dir: Path | None = None,
    sides_model_dir: Path | None = None,
    *,
    crop: bool = True,
    threads: int | None = None,
    model: str | None = None,
    sides_model: str = SIDES_MODEL,
) -> tuple[nib.Nifti1Image, np.ndarray, dict[str, Any]]:
    """The bilateral mask of :func:`~thalamus_bidsapp.tools.meshnet.segment_thalamus` and its sides.

    The bilateral mask is unchanged; each of its voxels takes the side of the
    nearer left or right thalamus class of ``sides_model``, run on the same
    conformed volume and crop. Nearness is Euclidean distance on the 1 mm
    conformed grid; the side map is brought onto the native grid by the same
    nearest neighbour mapping as the mask, so their voxels coincide.

    Parameters
    ----------
    t1w
        T1-weighted image, 3D, any grid and orientation.
    model_dir, sides_model_dir
        Folders of the bilateral and the sides model (None: the user cache;
        see :func:`~thalamus_bidsapp.tools.meshnet.resolve_model_dir`).
    crop, threads, model
        As for :func:`~thalamus_bidsapp.tools.meshnet.segment_thalamus`.
    sides_model
        Pinned model with one left and one right thalamus class.

    Returns
    -------
    tuple
        ``(mask, sides, provenance)``: ``sides`` is uint8 on the native grid,
        0 outside the mask, 1 left, 2 right; the provenance gains ``Sides``.
    """
    result = segment_conformed(t1w, model_dir, crop=crop, threads=threads, model=model)
    # Only the sides of the bilateral mask's voxels are needed: the model runs on their box and its receptive field.
    run = label_conformed(np.asarray(result.conformed.dataobj), sides_model_dir, model_spec(sides_model),
                          crop=crop, threads=threads, around=result.thalamus)
    if len(run.indices) != 2:
        raise ThalamusError(f"MeshNet model {run.spec.name} does not have one left and one right thalamus class",
                            EXIT_DATAERR)
    left, right = (run.labels == index for index in run.indices)
    conformed = result.conformed
    conformed_sides = split_by_nearest(result.thalamus, left, right, zooms=conformed.header.get_zooms()[:3],
                                       affine=conformed.affine)
    sides = np.asarray(labels_to_native(nib.Nifti1Image(conformed_sides, conformed.affine), t1w,
                                        dtype=np.uint8).dataobj)
    check_sides_match(np.asarray(result.mask.dataobj), sides)
    provenance = dict(result.provenance)
    provenance["Sides"] = {
        "Model": run.spec.name,
        "ModelSource": f"{run.spec.source} (commit {run.spec.commit}, {run.spec.licence} licence)",
        "ModelURL": run.spec.url_base,
        "ModelSha256": dict(run.checksums),
        "LeftClass": run.class_names[run.indices[0]],
        "RightClass": run.class_names[run.indices[1]],
        "ClassIndex": [int(i) for i in run.indices],
        "Rule": "each voxel of the bilateral mask takes the side of the nearer left or right thalamus class "
                "(Euclidean distance on the conformed 1 mm grid); same conform, crop and argmax; the model runs on "
                "the bilateral mask's box widened by its receptive field",
        "CropBox": [[s.start, s.stop] for s in run.box],
        "NetworkSeconds": round(run.network_s, 2),
    }
    return result.mask, sides, provenance
