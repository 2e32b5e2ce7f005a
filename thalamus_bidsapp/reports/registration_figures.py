"""Registration QC figures: fMRIPrep-style before/after flicker SVGs drawn from the published files.

For each image registered onto the T1w grid (``*_space-T1w_desc-preproc_FLAIR``
and ``*_space-T1w_desc-scaled_R1map``), niworkflows' ``plot_registration``
draws the T1w and the registered image at the same seven cuts per plane, with
the T1w brain mask's outline on both, and ``compose_view`` stacks them into
one SVG that flickers between the two on hover (the reportlet fMRIPrep users
know). The figures are drawn by the reports from the derivatives alone, so
``--reports-only`` redraws them; a figure whose inputs did not change since it
was drawn is left alone without being drawn again (:mod:`.figure_keys`), and
one that is drawn is rewritten only when its content changes (the random
element ids niworkflows gives and matplotlib's date are made deterministic).
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import matplotlib

from thalamus_bidsapp.bidsio.atomic import write_if_changed
from thalamus_bidsapp.reports.figure_keys import figure_key, is_current, with_key

LOGGER = logging.getLogger(__name__)

#: Registered image (desc entity, suffix) on the T1w grid.
REGISTERED = (("preproc", "FLAIR"), ("scaled", "R1map"))
_N_CUTS = 7
#: Voxels shown around the brain mask: the figure draws the brain, not the field of view's empty corners.
_BOX_MARGIN_VOXELS = 4
#: Seconds the forked half of a figure may take before it is drawn in the main process instead.
_CHILD_TIMEOUT_S = 120
_UUID_ID = re.compile(r"(fixed-image|moving-image)-([xyz])-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_ANIMATION_ID = re.compile(r"flickerAnimation[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_SVG_DATE = re.compile(r"<dc:date>[^<]*</dc:date>")


def registration_figure_path(figures_dir: Path, session: str, modality: str) -> Path:
    """Where the figure of ``modality`` of ``session`` goes."""
    return Path(figures_dir) / f"{session}_space-T1w_desc-registration_{modality}.svg"


def flicker_svg(t1w: Path, registered: Path, brain_mask: Path, *, label: str, processes: int = 1) -> str:
    """The before/after SVG: the T1w, then ``registered``, at the same cuts, brain outline on both.

    ``processes`` > 1 draws the two halves side by side (the T1w in a forked
    child); the SVG is the same either way.
    """
    import nibabel as nib
    from niworkflows.viz.utils import _compose_view, cuts_from_bbox

    mask = nib.load(str(brain_mask))
    box = _brain_box(mask)
    cuts = cuts_from_bbox(mask.slicer[box], cuts=_N_CUTS)
    fixed_job = (Path(t1w), "fixed-image", "T1w", Path(brain_mask), box, cuts)
    moving_job = (Path(registered), "moving-image", label, Path(brain_mask), box, cuts)
    fixed = _in_child(fixed_job) if processes > 1 else None
    moving = _plot_half(*moving_job)
    fixed = _result(fixed, fixed_job)
    svg = "\n".join(_compose_view(fixed, moving))
    return _SVG_DATE.sub("", _ANIMATION_ID.sub("flickerAnimation", _UUID_ID.sub(r"\1-\2", svg)))


def _plot_half(image: Path, name: str, label: str, brain_mask: Path, box: tuple[slice, slice, slice],
               cuts: dict) -> list[str]:
    """One half of the flicker figure: ``image`` in the brain's box at ``cuts``, the brain outline on it."""
    import nibabel as nib
    from niworkflows.viz.utils import plot_registration

    with matplotlib.rc_context({"svg.hashsalt": "thalamus_bidsapp"}):
        return plot_registration(nib.load(str(image)).slicer[box], name, estimate_brightness=True, cuts=cuts,
                                 label=label, contour=nib.load(str(brain_mask)).slicer[box], compress=False)


def _plot_half_text(*job) -> list[str]:
    """:func:`_plot_half` as SVG text: what a child process can hand back (the parsed figures do not pickle)."""
    return [figure.to_str().decode("utf-8") for figure in _plot_half(*job)]


def _in_child(job: tuple):
    """Start :func:`_plot_half` in a forked child; None where a child cannot be started (drawn here instead)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    try:
        pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("fork"))
        return pool, pool.submit(_plot_half_text, *job)
    except (OSError, ValueError) as err:
        LOGGER.debug("registration figure drawn in one process: %s", err)
        return None


def _result(started, job: tuple) -> list[str]:
    """The child's half, or the half drawn here when no child ran or it failed."""
    if started is None:
        return _plot_half(*job)
    from svgutils.transform import fromstring

    pool, future = started
    try:
        return [fromstring(text) for text in future.result(timeout=_CHILD_TIMEOUT_S)]
    except Exception as err:  # noqa: BLE001 - a child that fails or hangs costs time, never the figure
        LOGGER.warning("registration figure: the half drawn in a child process failed (%s); drawn here instead", err)
        return _plot_half(*job)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _brain_box(mask, margin: int = _BOX_MARGIN_VOXELS) -> tuple[slice, slice, slice]:
    """The brain mask's bounding box plus ``margin`` voxels: what the figure shows (and all it draws)."""
    import numpy as np

    inside = np.argwhere(np.asanyarray(mask.dataobj) > 0)
    if inside.size == 0:
        return tuple(slice(0, n) for n in mask.shape[:3])
    low = np.maximum(inside.min(axis=0) - margin, 0)
    high = np.minimum(inside.max(axis=0) + margin + 1, mask.shape[:3])
    return tuple(slice(int(a), int(b)) for a, b in zip(low, high))


def draw_registration_figures(anat: Path, session: str, figures_dir: Path, *, processes: int = 1) -> list[Path]:
    """Draw the figure of every registered image of a session that has the T1w and brain mask beside it.

    ``processes``: CPUs the drawing may use (two halves of a figure side by side when more than one).
    """
    t1w = anat / f"{session}_desc-preproc_T1w.nii.gz"
    brain_mask = anat / f"{session}_space-T1w_desc-brain_mask.nii.gz"
    drawn = []
    if not (t1w.is_file() and brain_mask.is_file()):
        return drawn
    for desc, modality in REGISTERED:
        registered = anat / f"{session}_space-T1w_desc-{desc}_{modality}.nii.gz"
        if not registered.is_file():
            continue
        out = registration_figure_path(figures_dir, session, modality)
        sidecar = Path(str(registered).replace(".nii.gz", ".json"))
        key = figure_key((t1w, registered, brain_mask, sidecar), (modality, _N_CUTS, _BOX_MARGIN_VOXELS),
                         code=(__name__,))
        if is_current(out, key):
            LOGGER.debug("registration figure %s is up to date", out)
        else:
            svg = flicker_svg(t1w, registered, brain_mask, label=_label(registered, modality),
                              processes=processes)
            if write_if_changed(with_key(svg, key), out):
                LOGGER.info("wrote registration figure %s", out)
        drawn.append(out)
    return drawn


def _label(registered: Path, modality: str) -> str:
    """``FLAIR (flirt_normcorr, MI 0.452)`` from the registered image's sidecar."""
    try:
        reg = json.loads(Path(str(registered).replace(".nii.gz", ".json")).read_text()).get("Registration", {})
        return f"{modality} ({reg['SelectedStrategy']}, MI {float(reg['MutualInformation']):.3f})"
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return modality
