"""DBSegment 0.2.2 adapter: command line, outputs, and the way back to the native T1w grid.

DBSegment (Baniasadi et al. 2023; github.com/LuxImagingAI/DBSegment) is a
command-line tool that segments every ``*.nii.gz``/``*.nii`` in an input
folder. What its source does, and what this module relies on:

- ``-i`` input folder, ``-o`` output folder, ``-mp`` model folder (string-
  concatenated with the zip name when it downloads, hence the trailing
  slash), ``-f`` folds (default: folds 4 and 6 of the 2-fold bundle
  ``deep_brain_seg_model_2f``; any ``-f`` selects the 7-fold bundle
  ``deep_brain_seg_model_7f``), ``-v v3`` preprocessing, and
  ``--disable_tta``, a *string* whose default ``None`` means "disabled":
  ``--disable_tta False`` switches test-time augmentation (mirroring) on.
  The paper ran a 5-fold ensemble with TTA, so the command here passes
  ``-f 0 1 2 3 4 --disable_tta False``.
- Preprocessing (``correct_header`` + ``conform_v3``): the input's sform is
  replaced by its qform, then the image is resampled (trilinear) through
  world coordinates onto a 256^3, 1 mm grid with direction cosines = identity
  (nibabel's RAS+, which ITK-SNAP calls "LPI"), centred on the world point
  ``affine @ (shape / 2)`` of the input. The conformed input is
  ``<in>/preprocessed_v3/<stem>_0000.nii.gz``.
- nnU-Net writes the segmentation with the geometry of that conformed input:
  ``<out>/preprocessed_v3/<stem>.nii.gz``. Newer versions also write
  ``<out>/<stem>.nii.gz``, an ANTs *affine registration* of the conformed
  image back to the native one, and ``<out>/<stem>_brainmask.nii.gz``.

This adapter reads the conformed-space segmentation (exact geometry, no
registration) and maps it onto the native grid by nearest neighbour through
world coordinates: native voxel -> world (the T1w qform, which is what
DBSegment used) -> conformed voxel (the segmentation's affine). When the
native grid is offset from the conformed one by exactly half a voxel (odd
matrix sizes at 1 mm), ties are broken to invert scipy.ndimage's
nearest-neighbour convention that DBSegment's conform uses, so a native ->
conformed -> native round trip of a 1 mm label map is the identity.
"""

from __future__ import annotations

import importlib.resources
import json
import logging
import os
import shlex
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from scipy.ndimage import map_coordinates

from thalamus_bidsapp.errors import EXIT_DATAERR, EXIT_NOINPUT, ThalamusError
from thalamus_bidsapp.image.ensembles import mask_like
from thalamus_bidsapp.tools import weights

logger = logging.getLogger(__name__)

EXECUTABLE = "DBSegment"
#: Environment variable naming the DBSegment model folder (the ``-mp`` argument).
MODEL_ENV = "DBSEGMENT_MODEL_PATH"
#: The paper's settings: 5-fold ensemble with test-time augmentation.
DEFAULT_FOLDS: tuple[int, ...] = (0, 1, 2, 3, 4)
PREPROCESSING = "v3"
INPUT_STEM = "T1w"
#: Model bundle and nnU-Net trainer folder DBSegment uses when ``-f`` is given.
MODEL_BUNDLE_ALL_FOLDS = "deep_brain_seg_model_7f"
MODEL_BUNDLE_DEFAULT = "deep_brain_seg_model_2f"
TRAINER_SUBDIR = "model/nnUNet/3d_fullres/Task054_Mri/nnUNetTrainerV2__nnUNetPlansv2.1"
#: Folders nnunet 1.7.1 creates on import inside the bundle DBSegment points it at
#: (nnUNet_raw_data_base = the bundle, nnUNet_preprocessed, RESULTS_FOLDER/nnUNet).
NNUNET_SUBDIRS: tuple[str, ...] = ("nnUNet_raw_data", "nnUNet_cropped_data", "preprocess_nnUNet", "model/nnUNet")
CONFORMED_SHAPE = (256, 256, 256)
STDERR_TAIL_LINES = 20
#: Native-voxel nudge that breaks exact half-voxel ties (see :func:`to_native_grid`).
TIE_NUDGE = 1e-6


def label_table() -> dict[str, Any]:
    """DBSegment's label table (``data/dbsegment_labels.json``)."""
    return json.loads(importlib.resources.files("thalamus_bidsapp").joinpath("data/dbsegment_labels.json").read_text())


#: DBSegment labels merged into the thalamus (THAL, VPL, VIM; left and right).
THALAMUS_LABELS: tuple[int, ...] = tuple(label_table()["Thalamus"])

_HOW_TO_PROVIDE = (
    "Install DBSegment 0.2.2 (pip install DBSegment==0.2.2, or its docker image) so that the "
    "'DBSegment' executable is on PATH or pass its path, and give its model folder (-mp) "
    f"with the option or the {MODEL_ENV} environment variable; or leave 'dbsegment' out of --methods."
)


def find_dbsegment(executable: str | os.PathLike | None = None) -> Path:
    """Path of the DBSegment executable (given path, else ``DBSegment`` on PATH).

    Raises
    ------
    ThalamusError
        Exit 66 when it cannot be found or is not executable.
    """
    if executable is not None:
        path = Path(executable)
        if path.is_file() and os.access(path, os.X_OK):
            return path.resolve()
        found = shutil.which(str(executable))
        if found:
            return Path(found)
        raise ThalamusError(f"DBSegment executable not found or not executable: {executable}. {_HOW_TO_PROVIDE}",
                            EXIT_NOINPUT)
    found = shutil.which(EXECUTABLE)
    if not found:
        raise ThalamusError(f"DBSegment not found: no '{EXECUTABLE}' on PATH. {_HOW_TO_PROVIDE}", EXIT_NOINPUT)
    return Path(found)


def model_bundle(model_folder: str | os.PathLike, folds: Sequence[int] | None = DEFAULT_FOLDS) -> Path:
    """The nnU-Net trainer folder DBSegment will load for these folds."""
    bundle = MODEL_BUNDLE_ALL_FOLDS if folds else MODEL_BUNDLE_DEFAULT
    return Path(model_folder) / bundle / TRAINER_SUBDIR


def find_model_folder(
    model_folder: str | os.PathLike | None = None, folds: Sequence[int] | None = DEFAULT_FOLDS
) -> Path:
    """The DBSegment model folder (``-mp``), checked to hold the requested folds.

    DBSegment downloads a missing model (3 GB for all folds) without asking;
    this check turns that into an error that says how to provide it.

    Parameters
    ----------
    model_folder
        Folder given to ``-mp`` (``--dbsegment-model``, or ``$DBSEGMENT_MODEL_PATH`` read when the
        configuration was built); None is an error.
    folds
        Folds to be used (``None``: DBSegment's default 2-fold bundle).

    Raises
    ------
    ThalamusError
        Exit 66 when the folder or a fold is missing.
    """
    value = model_folder
    if not value:
        raise ThalamusError(f"DBSegment model folder not given (option or {MODEL_ENV}). {_HOW_TO_PROVIDE}",
                            EXIT_NOINPUT)
    root = Path(value)
    trainer = model_bundle(root, folds)
    wanted = [trainer / f"fold_{f}" for f in (folds or (4, 6))]
    missing = [p for p in wanted if not p.is_dir()]
    if missing:
        raise ThalamusError(
            f"DBSegment model incomplete in {root}: missing {', '.join(str(p) for p in missing)}. "
            f"Unpack {MODEL_BUNDLE_ALL_FOLDS if folds else MODEL_BUNDLE_DEFAULT}.zip from "
            "https://webdav-r3lab.uni.lu/public/deep_brain_seg/ into it (DBSegment would otherwise "
            f"download it unasked). {_HOW_TO_PROVIDE}",
            EXIT_NOINPUT,
        )
    problem = nnunet_folders_problem(root, folds)
    if problem:
        raise ThalamusError(f"DBSegment cannot start with the model in {root}: {problem}", EXIT_NOINPUT)
    return root


def nnunet_folders_problem(model_folder: str | os.PathLike, folds: Sequence[int] | None = DEFAULT_FOLDS) -> str | None:
    """Why nnU-Net would fail to start on this model folder, or None.

    DBSegment sets nnU-Net's folders inside the model bundle (overriding the
    environment) and nnunet creates them on import: they must exist already
    or the bundle must be writable by this user (a root-owned folder in an
    image, or a read-only ``.sif``, is not).
    """
    bundle = Path(model_folder) / (MODEL_BUNDLE_ALL_FOLDS if folds else MODEL_BUNDLE_DEFAULT)
    missing = [bundle / sub for sub in NNUNET_SUBDIRS if not (bundle / sub).is_dir()]
    if not missing or (bundle.is_dir() and os.access(bundle, os.W_OK | os.X_OK)
                       and all(os.access(p.parent, os.W_OK | os.X_OK) for p in missing if p.parent.is_dir())):
        return None
    return (f"nnU-Net's folders {', '.join(str(p) for p in missing)} do not exist and {bundle} is not writable "
            "by this user (nnunet creates them on import): create them once as the folder's owner "
            f"(mkdir -p {' '.join(str(p) for p in missing)})")


def dbsegment_version(executable: str | os.PathLike) -> str | None:
    """Installed DBSegment version, asked of the Python interpreter in the executable's shebang.

    DBSegment has no ``--version`` (and parses ``-i``/``-o`` as required at
    import), so the package metadata is read instead. Returns None when that
    is not possible (not a Python script, package metadata absent).
    """
    try:
        first_line = Path(executable).read_bytes()[:256].split(b"\n", 1)[0].decode()
    except (OSError, UnicodeDecodeError):
        return None
    if not first_line.startswith("#!"):
        return None
    interp = shlex.split(first_line[2:].strip())
    code = "import importlib.metadata as m; print(m.version('DBSegment'))"
    try:
        proc = subprocess.run([*interp, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    version = proc.stdout.strip()
    return version if proc.returncode == 0 and version else None


def dbsegment_command(
    executable: str | os.PathLike,
    input_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    model_folder: str | os.PathLike,
    folds: Sequence[int] | None = DEFAULT_FOLDS,
    tta: bool = True,
) -> list[str]:
    """The DBSegment command line as an argument list.

    ``[DBSegment, -i, <in>, -o, <out>, -mp, <models>/, -v, v3, -f, 0, 1, 2, 3, 4, --disable_tta, False]``

    Parameters
    ----------
    folds
        nnU-Net folds to ensemble; None keeps DBSegment's default (folds 4, 6).
    tta
        Test-time augmentation; DBSegment's own default is off.
    """
    cmd = [
        str(executable),
        "-i",
        str(input_dir),
        "-o",
        str(output_dir),
        "-mp",
        # DBSegment builds the download path as model_path + 'deep_brain_seg_model.zip'.
        os.path.join(str(model_folder), ""),
        "-v",
        PREPROCESSING,
    ]
    if folds:
        cmd += ["-f", *[str(int(f)) for f in folds]]
    cmd += ["--disable_tta", "False" if tta else "True"]
    return cmd


def prepare_input(t1w_path: str | os.PathLike, input_dir: str | os.PathLike) -> Path:
    """Put the T1w alone into a fresh DBSegment input folder as ``T1w.nii.gz``.

    DBSegment segments every NIfTI in its input folder and derives names by
    splitting extensions, so a dedicated folder and a dot-free stem avoid
    surprises. A ``.nii.gz`` is copied byte for byte (same header, so the
    same qform DBSegment conforms from).
    """
    input_dir = Path(input_dir)
    input_dir.mkdir(parents=True, exist_ok=True)
    target = input_dir / f"{INPUT_STEM}.nii.gz"
    src = Path(t1w_path)
    if src.name.endswith(".nii.gz"):
        shutil.copyfile(src, target)
    else:
        nib.save(nib.load(str(src)), str(target))
    return target


def find_output(output_dir: str | os.PathLike, stem: str = INPUT_STEM) -> Path:
    """DBSegment's segmentation: the conformed-space one if present, else the top-level one.

    Raises
    ------
    ThalamusError
        Exit 66 when neither exists.
    """
    out = Path(output_dir)
    for path in (out / f"preprocessed_{PREPROCESSING}" / f"{stem}.nii.gz", out / f"{stem}.nii.gz"):
        if path.is_file():
            return path
    raise ThalamusError(f"DBSegment output not found: {out / ('preprocessed_' + PREPROCESSING) / (stem + '.nii.gz')}",
                        EXIT_NOINPUT)


def run_dbsegment(
    t1w_path: str | os.PathLike,
    work_dir: str | os.PathLike,
    executable: str | os.PathLike | None = None,
    model_folder: str | os.PathLike | None = None,
    folds: Sequence[int] | None = DEFAULT_FOLDS,
    tta: bool = True,
    timeout: float | None = None,
) -> tuple[Path, list[str]]:
    """Run DBSegment on one T1w; return (segmentation path, command).

    ``work_dir/input`` and ``work_dir/output`` are DBSegment's folders.

    Raises
    ------
    ThalamusError
        Exit 66 for a missing executable or model; exit 65 when DBSegment
        fails, with the command and the last lines of its output.
    """
    exe = find_dbsegment(executable)
    models = find_model_folder(model_folder, folds)
    work = Path(work_dir)
    in_dir, out_dir = work / "input", work / "output"
    prepare_input(t1w_path, in_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cmd = dbsegment_command(exe, in_dir, out_dir, models, folds, tta)
    logger.info("running DBSegment: %s", shlex.join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout or "").strip().splitlines()[-STDERR_TAIL_LINES:])
        raise ThalamusError(f"DBSegment failed (exit {proc.returncode}): {shlex.join(cmd)}\n{tail}", EXIT_DATAERR)
    return find_output(out_dir), cmd


def dbsegment_world_affine(t1w_img: nib.spatialimages.SpatialImage) -> np.ndarray:
    """Voxel-to-world affine of the native T1w as DBSegment sees it (its qform).

    DBSegment's ``correct_header`` overwrites the sform with the qform before
    conforming, so the conformed space is tied to the qform. When the two
    differ the qform is used and a warning is logged.
    """
    if isinstance(t1w_img, nib.Nifti1Image):
        qform = t1w_img.header.get_qform()
        if not np.allclose(qform, t1w_img.affine, atol=1e-3):
            logger.warning("T1w sform and qform differ; DBSegment conforms from the qform, so it is used here")
        return qform
    return np.asarray(t1w_img.affine, dtype=np.float64)


def conformed_affine(img: nib.spatialimages.SpatialImage) -> np.ndarray:
    """The affine of DBSegment's ``conform_v3`` grid for an input image.

    256^3, 1 mm, identity direction cosines, centre (``c_ras``) at the world
    position of voxel ``shape / 2`` of the input (after the qform fix).
    """
    c_ras = dbsegment_world_affine(img) @ np.r_[np.asarray(img.shape[:3], float) / 2.0, 1.0]
    affine = np.eye(4)
    affine[:3, 3] = c_ras[:3] - np.asarray(CONFORMED_SHAPE, float) / 2.0
    return affine


def to_native_grid(
    seg_img: nib.spatialimages.SpatialImage, t1w_img: nib.spatialimages.SpatialImage, chunk: int = 16
) -> nib.Nifti1Image:
    """Resample a DBSegment label image onto the native T1w grid (nearest neighbour, world coordinates).

    Parameters
    ----------
    seg_img
        DBSegment segmentation (any grid with a correct affine; normally the
        256^3 conformed one), integer labels.
    t1w_img
        The native T1w exactly as given to DBSegment (its header defines the
        world coordinates DBSegment used).
    chunk
        Native slices (last axis) resampled at once, to bound memory.

    Returns
    -------
    nibabel.Nifti1Image
        int16 labels of shape ``t1w_img.shape[:3]`` with the T1w affine;
        0 outside the segmentation's field of view.
    """
    labels = np.asanyarray(seg_img.dataobj)
    if labels.ndim == 4 and labels.shape[3] == 1:
        labels = labels[..., 0]
    labels = np.rint(labels).astype(np.int16)
    vox2vox = np.linalg.inv(seg_img.affine) @ dbsegment_world_affine(t1w_img)
    shape = tuple(int(s) for s in t1w_img.shape[:3])
    out = np.zeros(shape, dtype=np.int16)
    ii, jj = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    for k0 in range(0, shape[2], chunk):
        kk = np.arange(k0, min(k0 + chunk, shape[2]))
        grid = np.stack(np.broadcast_arrays(ii[..., None], jj[..., None], kk[None, None, :])).reshape(3, -1)
        # Nudging the native point by -1e-6 voxel only decides exact half-voxel
        # ties: it picks the conformed voxel whose centre lies on the lower-index
        # side in native space. DBSegment conforms with scipy.ndimage, whose
        # nearest-neighbour rounding sends such a conformed voxel to the higher
        # native index, i.e. back to this voxel, so a native -> conformed ->
        # native round trip on a 1 mm grid is the identity in any orientation.
        coords = vox2vox[:3, :3] @ (grid - TIE_NUDGE) + vox2vox[:3, 3:4]
        idx = np.floor(coords + 0.5)
        vals = map_coordinates(labels, idx, order=0, mode="constant", cval=0, prefilter=False)
        out[:, :, kk] = vals.reshape(shape[0], shape[1], len(kk))
    img = nib.Nifti1Image(out, t1w_img.affine)
    ref = mask_like(np.zeros(shape, bool), t1w_img)
    img.set_qform(ref.affine, code=int(ref.header["qform_code"]))
    img.set_sform(ref.affine, code=int(ref.header["sform_code"]))
    img.set_data_dtype(np.int16)
    return img


def dbsegment_labels_on_grid(
    seg: str | os.PathLike | nib.spatialimages.SpatialImage, t1w_img: nib.spatialimages.SpatialImage
) -> np.ndarray:
    """The labels of a DBSegment output (path or image) on the native T1w grid."""
    seg_img = nib.load(str(seg)) if isinstance(seg, (str, os.PathLike)) else seg
    return np.asanyarray(to_native_grid(seg_img, t1w_img).dataobj)


def dbsegment_thalamus_mask(
    seg: str | os.PathLike | nib.spatialimages.SpatialImage, t1w_img: nib.spatialimages.SpatialImage
) -> nib.Nifti1Image:
    """Thalamus (labels 24, 25, 26, 27, 30, 31 merged) of a DBSegment output, on the native T1w grid.

    Parameters
    ----------
    seg
        DBSegment segmentation (path or image), conformed or native space.
    t1w_img
        The native T1w as given to DBSegment (defines the output grid).

    Returns
    -------
    nibabel.Nifti1Image
        uint8 0/1 mask, shape and affine of ``t1w_img``.
    """
    mask = np.isin(dbsegment_labels_on_grid(seg, t1w_img), THALAMUS_LABELS)
    if not mask.any():
        logger.warning("DBSegment segmentation has no thalamus voxels (labels %s) on the T1w grid", THALAMUS_LABELS)
    return mask_like(mask, t1w_img)


def model_checksums(model_folder: str | os.PathLike, folds: Sequence[int] | None = DEFAULT_FOLDS) -> dict[str, str]:
    """sha256 of each fold's ``model_final_checkpoint.model`` (fold name -> hex digest; absent files skipped)."""
    bundle = model_bundle(model_folder, folds)
    return weights.checksums({f"fold_{fold}": bundle / f"fold_{fold}" / "model_final_checkpoint.model"
                              for fold in folds or (4, 6)})


def provenance(
    cmd: list[str] | None = None,
    executable: str | os.PathLike | None = None,
    model_folder: str | os.PathLike | None = None,
    folds: Sequence[int] | None = DEFAULT_FOLDS,
    tta: bool = True,
    checksums: bool = False,
) -> dict[str, Any]:
    """Sidecar fields for a DBSegment thalamus mask."""
    names = label_table()["Labels"]
    return {
        "Tool": "DBSegment",
        "Version": dbsegment_version(executable) if executable else None,
        "Command": shlex.join(cmd) if cmd else None,
        "ModelFolder": str(model_folder) if model_folder else None,
        "ModelChecksums": model_checksums(model_folder, folds) if (checksums and model_folder) else None,
        "Folds": list(folds) if folds else [4, 6],
        "TestTimeAugmentation": tta,
        "LabelsTaken": {str(v): names[str(v)] for v in THALAMUS_LABELS},
        "Resampling": "conformed-space segmentation (preprocessed_v3) mapped onto the native T1w grid by "
        "nearest neighbour through world coordinates (T1w qform, as DBSegment uses)",
    }
