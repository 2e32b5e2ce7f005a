"""MeshNet thalamus segmentation: brainchop's licence-free CPU models, run with PyTorch.

The default model is brainchop's (neuroneural/brainchop, MIT licence)
30-channel, 18-class MeshNet ``model30chan18cls``: nine 3x3x3 dilated
convolutions with ELU activations and a 1x1x1 output convolution, trained on
FreeSurfer-conformed T1w images against FreeSurfer's aseg; other pinned
models of ``data/meshnet_models.json`` are selected by name. This module

1. finds the model files (:func:`resolve_model_dir`): ``--meshnet-model DIR``,
   else the environment variable ``THALAMUS_MESHNET_MODEL``, else a user
   cache folder filled on first use from a pinned brainchop commit, always
   checking the sha256 of every file (:mod:`thalamus_bidsapp.interfaces.weights`);
2. reads the TensorFlow.js layers format into PyTorch
   (:mod:`thalamus_bidsapp.interfaces.tfjs`), no TensorFlow needed;
3. segments (:func:`segment_thalamus`): conform to 256^3 1 mm LIA uint8,
   min-max scale to 0..1, crop to the head, run the network, argmax, keep the
   largest connected component of non-background labels, take the thalamus
   class(es), and bring the mask back onto the native grid by nearest neighbour.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
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
from thalamus_bidsapp.interfaces import weights
from thalamus_bidsapp.interfaces.tfjs import TfjsLayersNet, load_tfjs_layers_model

logger = logging.getLogger(__name__)

MODEL_ENV_VAR = "THALAMUS_MESHNET_MODEL"
SIDES_MODEL_ENV_VAR = "THALAMUS_MESHNET_SIDES_MODEL"
#: The pinned model whose left and right thalamus classes split the bilateral mask into sides.
SIDES_MODEL = "model21_104class"
CACHE_SUBDIR = ("meshnet",)

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


# --------------------------------------------------------------------------- model files


@dataclass(frozen=True)
class MeshNetModelSpec:
    """What ``data/meshnet_models.json`` says about one pinned model."""

    name: str
    url_base: str
    sha256: dict[str, str]
    classes: tuple[str, ...]
    thalamus_classes: tuple[str, ...]
    source: str = ""
    commit: str = ""
    licence: str = ""
    nbytes: dict[str, int] = field(default_factory=dict)
    #: Environment variable naming the model's folder (each model its own, so that two can be given).
    env_var: str = MODEL_ENV_VAR

    @property
    def option(self) -> str:
        """The command-line option giving the model's folder."""
        return "--meshnet-sides-model" if self.env_var == SIDES_MODEL_ENV_VAR else "--meshnet-model"

    @property
    def thalamus_class(self) -> str:
        """The thalamus class of a model with one (bilateral) thalamus class."""
        return self.thalamus_classes[0]

    def pinned(self) -> weights.PinnedFiles:
        files = " and ".join(self.sha256)
        return weights.PinnedFiles(
            label=f"MeshNet model {self.name}", sha256=self.sha256, url_base=self.url_base, env_var=self.env_var,
            how_to_provide=(f"get {files} from {self.url_base} and pass their folder with {self.option} DIR "
                            f"or the environment variable {self.env_var}"),
        )


def model_spec(name: str | None = None) -> MeshNetModelSpec:
    """Read a pinned model's URL, checksums and class names from the package data.

    Parameters
    ----------
    name
        Model name in ``data/meshnet_models.json``; default: its ``default``.
    """
    text = resources.files("thalamus_bidsapp").joinpath("data", "meshnet_models.json").read_text("utf-8")
    table = json.loads(text)
    name = name or table["default"]
    try:
        entry = table["models"][name]
    except KeyError:
        raise ThalamusError(f"unknown MeshNet model {name!r}; known: {sorted(table['models'])}", EXIT_DATAERR) from None
    return MeshNetModelSpec(
        name=name,
        url_base=entry["url_base"],
        sha256={fname: info["sha256"] for fname, info in entry["files"].items()},
        nbytes={fname: int(info.get("bytes", -1)) for fname, info in entry["files"].items()},
        classes=tuple(entry.get("classes", ())),
        thalamus_classes=tuple(entry["thalamus_classes"]),
        source=entry.get("source", ""),
        commit=entry.get("commit", ""),
        licence=entry.get("licence", ""),
        env_var=entry.get("env_var", MODEL_ENV_VAR),
    )


def verify_model_dir(model_dir: Path, spec: MeshNetModelSpec | None = None) -> dict[str, str]:
    """Check that ``model_dir`` holds the pinned model files, byte for byte; ``{file name: sha256}``.

    Raises
    ------
    ThalamusError
        (exit code 66) naming the missing or corrupted file and the sha256 expected.
    """
    return weights.verify_files(model_dir, (spec or model_spec()).pinned())


def default_cache_dir(spec: MeshNetModelSpec | None = None) -> Path:
    """User cache folder of the model: ``<user cache>/thalamus_bidsapp/meshnet/<model name>``."""
    return weights.user_cache_dir(*CACHE_SUBDIR, (spec or model_spec()).name)


def resolve_model_dir(model_dir: Path | None = None, model: str | None = None) -> Path:
    """Folder holding the verified files of a pinned MeshNet model.

    Order: ``model_dir`` (``--meshnet-model DIR``), else the environment
    variable ``THALAMUS_MESHNET_MODEL``, else the user cache folder
    (:func:`default_cache_dir`), downloaded there on first use from the
    pinned brainchop commit. The sha256 of every file is always checked.

    Parameters
    ----------
    model_dir
        Folder given by the user, or None.
    model
        Model name in ``data/meshnet_models.json`` (default: its ``default``).

    Raises
    ------
    ThalamusError
        (exit code 66) when a file is missing, corrupted, or cannot be downloaded;
        the message names the file and the sha256 expected.
    """
    return _resolve_and_verify(model_dir, model_spec(model))[0]


def _resolve_and_verify(model_dir: Path | None, spec: MeshNetModelSpec) -> tuple[Path, dict[str, str]]:
    return weights.resolve_folder(model_dir, spec.pinned(), default_cache_dir(spec))


def read_class_names(model_dir: Path, n_classes: int | None = None,
                     spec: MeshNetModelSpec | None = None) -> tuple[str, ...]:
    """Class names of the model: ``labels.json`` or ``colormap.json`` in the folder, else the package data.

    Parameters
    ----------
    model_dir
        Model folder.
    n_classes
        Number of output channels of the network, to check the names against.
    spec
        The pinned model (default: the default model), for its listed classes.
    """
    names: tuple[str, ...] | None = None
    labels_path = Path(model_dir) / "labels.json"
    colormap_path = Path(model_dir) / "colormap.json"
    try:
        if labels_path.is_file():
            table = json.loads(labels_path.read_text("utf-8"))
            names = tuple(table[str(i)] for i in range(len(table)))
        elif colormap_path.is_file():
            names = tuple(json.loads(colormap_path.read_text("utf-8"))["labels"])
    except (KeyError, ValueError, TypeError) as exc:
        logger.warning("ignoring unreadable class names in %s (%s)", model_dir, exc)
        names = None
    if names is None:
        names = (spec or model_spec()).classes
    if n_classes is not None and len(names) != n_classes:
        raise ThalamusError(
            f"MeshNet model in {model_dir} has {n_classes} output classes but {len(names)} class names",
            EXIT_DATAERR,
        )
    return names


_NET_CACHE: dict[tuple[str, ...], TfjsLayersNet] = {}
_NET_CACHE_LOCK = threading.Lock()


def load_meshnet(model_dir: Path | None = None, model: str | None = None) -> tuple[TfjsLayersNet, Path, dict[str, str]]:
    """A verified pinned MeshNet, loaded once per process, model folder and checksums.

    Returns
    -------
    tuple
        ``(network, model folder, {file name: sha256})``.
    """
    resolved, checksums = _resolve_and_verify(model_dir, model_spec(model))
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


def predict_labels(
    net: TfjsLayersNet,
    volume: np.ndarray,
    *,
    crop: bool = True,
    threshold: float = CROP_THRESHOLD,
    margin: int = CROP_MARGIN,
) -> tuple[np.ndarray, tuple[slice, ...]]:
    """Class labels of a conformed uint8 volume (network orientation already applied).

    Parameters
    ----------
    volume
        Shape (X, Y, Z), intensities 0..255.

    Returns
    -------
    tuple
        Labels (X, Y, Z) uint8 (0 outside the crop box), and the crop box used.
    """
    scaled = volume.astype(np.float32)
    lo, hi = float(scaled.min()), float(scaled.max())
    scaled = (scaled - lo) / (hi - lo) if hi > lo else np.zeros_like(scaled)
    box = crop_box(scaled, threshold, margin) if crop else tuple(slice(0, n) for n in scaled.shape)
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
                     threads: int | None) -> Labelling:
    """Run a pinned model on a conformed uint8 volume: argmax labels, largest component kept."""
    net, resolved, checksums = load_meshnet(model_dir, model=spec.name)
    class_names = read_class_names(resolved, net.n_classes, spec)
    missing = [c for c in spec.thalamus_classes if c not in class_names]
    if missing:
        raise ThalamusError(f"MeshNet model in {resolved} has no class {missing[0]!r}", EXIT_DATAERR)
    indices = [class_names.index(c) for c in spec.thalamus_classes]
    net_volume = np.transpose(volume, _NET_AXES)
    with _torch_threads(threads) as n_threads:
        t0 = time.perf_counter()
        labels, box = predict_labels(net, net_volume, crop=crop)
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
        Folder with the model files (``--meshnet-model``); None: environment
        variable, then user cache (see :func:`resolve_model_dir`).
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
