"""FSL FLIRT adapter: find FSL, build FLIRT command lines with nipype, run them.

Strategies of the paper (section 2.5.2), every result written on the exact
T1w grid (``-ref`` is the T1w and the output header is then set to the T1w's
affine verbatim):

``flirt_mi_affine`` (R1, strategy a)
    ``flirt -dof 6 -cost mutualinfo -searchcost mutualinfo -interp spline``,
    then ``flirt -dof 12 -cost mutualinfo -searchcost mutualinfo -init <rigid.mat>
    -nosearch -interp spline``: an affine refinement started from the rigid
    matrix, without FLIRT's global angular search.
``flirt_normcorr_weighted`` (R1, strategy b)
    ``flirt -dof 6 -cost normcorr -searchcost normcorr -refweight <T1w brain mask>
    -interp spline``.
``flirt_normcorr`` (FLAIR)
    ``flirt -dof 6 -cost normcorr -searchcost normcorr -interp trilinear``.

``-searchcost`` is set to the same cost as ``-cost`` (as FSL's Flirt GUI
does) so that the whole registration uses the cost the paper names; FLIRT's
default search cost would otherwise be the correlation ratio.

Matrices are FSL ``.mat`` text files (moving "scaled-voxel" coordinates to
reference scaled-voxel coordinates); :func:`fsl_matrix_to_ras` converts one
into the package's world convention (T1w RAS+ point -> moving RAS+ point).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
from nipype.interfaces import fsl

from thalamus_bidsapp.bidsio.atomic import save_nifti
from thalamus_bidsapp.image.grid import same_grid
from thalamus_bidsapp.image.nifti import float32_like
from thalamus_bidsapp.tools.fslinstall import find_fsl_tool, fsl_version  # noqa: F401 - fsl_version re-exported

LOGGER = logging.getLogger(__name__)

class FlirtError(RuntimeError):
    """FLIRT is missing, failed, or wrote something unexpected."""


@dataclass(frozen=True)
class FslInstallation:
    """Where FSL is.

    Attributes
    ----------
    flirt
        Absolute path of the ``flirt`` executable.
    fsldir
        ``$FSLDIR`` (or the folder above ``flirt``'s ``bin``), None if unknown.
    version
        Contents of ``$FSLDIR/etc/fslversion`` up to any ``:``, None if unreadable.
    """

    flirt: Path
    fsldir: Path | None
    version: str | None


@dataclass(frozen=True)
class FlirtResult:
    """Outputs of one FLIRT strategy.

    Attributes
    ----------
    registered_image
        Moving image on the T1w grid (NIfTI, the T1w affine exactly).
    matrix
        Final FSL matrix file (``.mat``, 4x4 text).
    transform_format
        Always ``"fsl"``.
    commands
        The FLIRT command lines that were run, in order.
    """

    registered_image: Path
    matrix: Path
    transform_format: str = "fsl"
    commands: list[str] = field(default_factory=list)


def find_fsl(environ: dict[str, str] | None = None) -> FslInstallation | None:
    """Locate FSL: ``$FSLDIR/bin/flirt`` first, then ``flirt`` on ``PATH``.

    Parameters
    ----------
    environ
        Environment to look in (default ``os.environ``).

    Returns
    -------
    FslInstallation or None
        None when no executable ``flirt`` is found.
    """
    found = find_fsl_tool("flirt", environ=environ)
    if found.executable is None:
        return None
    return FslInstallation(flirt=found.executable, fsldir=found.fsldir, version=fsl_version(found.fsldir))


def fsl_available() -> bool:
    """Whether an executable ``flirt`` can be found (see :func:`find_fsl`)."""
    return find_fsl() is not None


class _Flirt(fsl.FLIRT):
    # Fixing the class default avoids nipype's "FSLOUTPUTTYPE is not set" warning
    # and makes outputs .nii.gz whatever the user's environment says.
    _output_type = "NIFTI_GZ"


def build_flirt(
    moving: Path,
    reference: Path,
    out_file: Path,
    out_matrix: Path,
    *,
    dof: int,
    cost: str,
    interp: str,
    init_matrix: Path | None = None,
    no_search: bool = False,
    ref_weight: Path | None = None,
    fsl_install: FslInstallation | None = None,
) -> fsl.FLIRT:
    """A nipype FLIRT interface for one FLIRT call (not run).

    Parameters
    ----------
    moving, reference
        ``-in`` and ``-ref`` images.
    out_file, out_matrix
        ``-out`` (resampled on the reference grid) and ``-omat``.
    dof
        ``-dof`` (6 rigid, 12 affine).
    cost
        ``-cost`` and ``-searchcost`` (``mutualinfo``, ``normcorr``, ...).
    interp
        ``-interp`` (``spline``, ``trilinear``, ...).
    init_matrix
        ``-init`` starting matrix.
    no_search
        ``-nosearch``: no global angular search.
    ref_weight
        ``-refweight`` image (the T1w brain mask).
    fsl_install
        FSL to use; its ``bin`` folder is put first on the interface's PATH
        and ``FSLDIR`` is set for the call.

    Returns
    -------
    nipype.interfaces.fsl.FLIRT
        Ready to ``.run()``; ``.cmdline`` gives the command.
    """
    kwargs: dict[str, object] = dict(
        in_file=str(moving),
        reference=str(reference),
        out_file=str(out_file),
        out_matrix_file=str(out_matrix),
        dof=dof,
        cost=cost,
        cost_func=cost,
        interp=interp,
        output_type="NIFTI_GZ",
    )
    if init_matrix is not None:
        kwargs["in_matrix_file"] = str(init_matrix)
    if no_search:
        kwargs["no_search"] = True
    if ref_weight is not None:
        kwargs["ref_weight"] = str(ref_weight)
    interface = _Flirt(resource_monitor=False, terminal_output="allatonce", **kwargs)
    if fsl_install is not None:
        path = os.environ.get("PATH", "")
        interface.inputs.environ["PATH"] = os.pathsep.join([str(fsl_install.flirt.parent), path])
        if fsl_install.fsldir is not None:
            interface.inputs.environ["FSLDIR"] = str(fsl_install.fsldir)
    return interface


def _run(interface: fsl.FLIRT, workdir: Path) -> str:
    """Run a FLIRT interface in ``workdir``; return its command line."""
    cmdline = interface.cmdline
    LOGGER.info("Running: %s", cmdline)
    try:
        interface.run(cwd=str(workdir))
    except (OSError, RuntimeError) as exc:
        raise FlirtError(f"FLIRT failed: {cmdline}\n{exc}") from exc
    for name in ("out_file", "out_matrix_file"):
        produced = Path(getattr(interface.inputs, name))
        if not produced.is_file():
            raise FlirtError(f"FLIRT did not write {produced}: {cmdline}")
    return cmdline


def flirt_mi_affine(
    moving: Path, t1w: Path, out_dir: Path, *, modality: str = "R1map", fsl_install: FslInstallation | None = None
) -> FlirtResult:
    """Strategy (a): 6 DOF mutual information (spline), then 12 DOF refinement from it, no search.

    Parameters
    ----------
    moving
        Image to register (R1 map).
    t1w
        Reference T1w; the output is on its grid.
    out_dir
        Folder for the outputs (created).
    modality
        Used in the file names (``from-<modality>_to-T1w_mode-image_xfm.mat``).
    fsl_install
        FSL to use (default: :func:`find_fsl`).

    Returns
    -------
    FlirtResult

    Raises
    ------
    FlirtError
        If FSL is missing or a FLIRT call fails.
    """
    fsl_install = _require_fsl(fsl_install)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rigid_mat = out_dir / f"from-{modality}_to-T1w_mode-image_desc-rigid_xfm.mat"
    rigid_img = out_dir / f"space-T1w_desc-rigid_{modality}.nii.gz"
    final_mat = out_dir / f"from-{modality}_to-T1w_mode-image_xfm.mat"
    final_img = out_dir / f"space-T1w_{modality}.nii.gz"
    rigid = build_flirt(
        moving, t1w, rigid_img, rigid_mat, dof=6, cost="mutualinfo", interp="spline", fsl_install=fsl_install
    )
    affine = build_flirt(
        moving,
        t1w,
        final_img,
        final_mat,
        dof=12,
        cost="mutualinfo",
        interp="spline",
        init_matrix=rigid_mat,
        no_search=True,
        fsl_install=fsl_install,
    )
    commands = [_run(rigid, out_dir), _run(affine, out_dir)]
    conform_to_reference(final_img, t1w)
    return FlirtResult(final_img, final_mat, "fsl", commands)


def flirt_normcorr_weighted(
    moving: Path,
    t1w: Path,
    brain_mask: Path,
    out_dir: Path,
    *,
    modality: str = "R1map",
    fsl_install: FslInstallation | None = None,
) -> FlirtResult:
    """Strategy (b): 6 DOF normalised correlation, T1w brain mask as reference weight, spline.

    Parameters and result as :func:`flirt_mi_affine`, plus ``brain_mask``
    (the ``-refweight`` image, on the T1w grid).
    """
    fsl_install = _require_fsl(fsl_install)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    mat = out_dir / f"from-{modality}_to-T1w_mode-image_xfm.mat"
    img = out_dir / f"space-T1w_{modality}.nii.gz"
    iface = build_flirt(
        moving, t1w, img, mat, dof=6, cost="normcorr", interp="spline", ref_weight=brain_mask, fsl_install=fsl_install
    )
    commands = [_run(iface, out_dir)]
    conform_to_reference(img, t1w)
    return FlirtResult(img, mat, "fsl", commands)


def flirt_normcorr(
    moving: Path, t1w: Path, out_dir: Path, *, modality: str = "FLAIR", fsl_install: FslInstallation | None = None
) -> FlirtResult:
    """FLAIR strategy: 6 DOF normalised correlation, trilinear interpolation.

    Parameters and result as :func:`flirt_mi_affine`.
    """
    fsl_install = _require_fsl(fsl_install)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    mat = out_dir / f"from-{modality}_to-T1w_mode-image_xfm.mat"
    img = out_dir / f"space-T1w_{modality}.nii.gz"
    iface = build_flirt(moving, t1w, img, mat, dof=6, cost="normcorr", interp="trilinear", fsl_install=fsl_install)
    commands = [_run(iface, out_dir)]
    conform_to_reference(img, t1w)
    return FlirtResult(img, mat, "fsl", commands)


def _require_fsl(fsl_install: FslInstallation | None) -> FslInstallation:
    found = fsl_install or find_fsl()
    if found is None:
        raise FlirtError("FSL FLIRT not found: set FSLDIR or put flirt on PATH")
    return found


def conform_to_reference(image: Path, reference: Path) -> Path:
    """Rewrite ``image`` in place with exactly the reference's affine, as float32.

    FLIRT writes its output on the ``-ref`` grid, but its header may differ
    from the T1w's by float rounding (or carry only a qform); downstream
    steps compare grids exactly, so the T1w affine is copied verbatim.

    Raises
    ------
    FlirtError
        If the shapes differ or the affines differ by more than
        :data:`thalamus_bidsapp.image.grid.GRID_ATOL_MM` (i.e. the output is not on the T1w grid).
    """
    img = nib.load(str(image))
    ref = nib.load(str(reference))
    if not same_grid(img, ref):
        raise FlirtError(
            f"{image} is not on the grid of {reference}: shape {img.shape} vs {ref.shape}, "
            f"affine\n{img.affine}\nvs\n{ref.affine}"
        )
    data = np.asarray(img.dataobj, dtype=np.float32).reshape(ref.shape[:3])
    return save_nifti(float32_like(data, ref), image)


def read_fsl_matrix(path: Path | str) -> np.ndarray:
    """Read a FLIRT ``.mat`` file, shape (4, 4)."""
    mat = np.loadtxt(str(path), dtype=float)
    if mat.shape != (4, 4):
        raise FlirtError(f"{path}: expected a 4x4 FSL matrix, got shape {mat.shape}")
    return mat


def _fsl_scaled_voxel(img: nib.spatialimages.SpatialImage) -> np.ndarray:
    """Voxel -> FSL scaled-voxel matrix (voxel size, x flipped for a positive-determinant affine)."""
    zooms = np.array(img.header.get_zooms()[:3], dtype=float)
    scale = np.diag([*zooms, 1.0])
    if np.linalg.det(img.affine[:3, :3]) > 0:
        # FSL works in a left-handed ("radiological") voxel frame.
        flip = np.eye(4)
        flip[0, 0] = -1.0
        flip[0, 3] = img.shape[0] - 1
        scale = scale @ flip
    return scale


def fsl_matrix_to_ras(matrix: np.ndarray | Path | str, moving: Path | str, reference: Path | str) -> np.ndarray:
    """Convert a FLIRT matrix into the world map T1w RAS+ point -> moving RAS+ point.

    Parameters
    ----------
    matrix
        FLIRT matrix (moving scaled-voxel -> reference scaled-voxel), shape
        (4, 4), or its ``.mat`` file.
    moving, reference
        The ``-in`` and ``-ref`` images of the FLIRT call.

    Returns
    -------
    numpy.ndarray, shape (4, 4)
        ``y_moving = M @ [x_t1w, 1]`` in mm (the same direction as ITK/ANTs
        forward transforms, see :func:`thalamus_bidsapp.tools.ants.read_itk_affine_ras`).
    """
    mat = matrix if isinstance(matrix, np.ndarray) else read_fsl_matrix(matrix)
    mov = nib.load(str(moving))
    ref = nib.load(str(reference))
    moving_world_from_ref_world = (
        mov.affine
        @ np.linalg.inv(_fsl_scaled_voxel(mov))
        @ np.linalg.inv(mat)
        @ _fsl_scaled_voxel(ref)
        @ np.linalg.inv(ref.affine)
    )
    return moving_world_from_ref_world
