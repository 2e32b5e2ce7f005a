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
_UUID_ID = re.compile(r"(fixed-image|moving-image)-([xyz])-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_ANIMATION_ID = re.compile(r"flickerAnimation[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_SVG_DATE = re.compile(r"<dc:date>[^<]*</dc:date>")


def registration_figure_path(figures_dir: Path, session: str, modality: str) -> Path:
    """Where the figure of ``modality`` of ``session`` goes."""
    return Path(figures_dir) / f"{session}_space-T1w_desc-registration_{modality}.svg"


def flicker_svg(t1w: Path, registered: Path, brain_mask: Path, *, label: str) -> str:
    """The before/after SVG: the T1w, then ``registered``, at the same cuts, brain outline on both."""
    import nibabel as nib
    from niworkflows.viz.utils import _compose_view, cuts_from_bbox, plot_registration

    mask = nib.load(str(brain_mask))
    box = _brain_box(mask)
    mask = mask.slicer[box]
    cuts = cuts_from_bbox(mask, cuts=_N_CUTS)
    with matplotlib.rc_context({"svg.hashsalt": "thalamus_bidsapp"}):
        fixed = plot_registration(nib.load(str(t1w)).slicer[box], "fixed-image", estimate_brightness=True,
                                  cuts=cuts, label="T1w", contour=mask, compress=False)
        moving = plot_registration(nib.load(str(registered)).slicer[box], "moving-image", estimate_brightness=True,
                                   cuts=cuts, label=label, contour=mask, compress=False)
    svg = "\n".join(_compose_view(fixed, moving))
    return _SVG_DATE.sub("", _ANIMATION_ID.sub("flickerAnimation", _UUID_ID.sub(r"\1-\2", svg)))


def _brain_box(mask, margin: int = _BOX_MARGIN_VOXELS) -> tuple[slice, slice, slice]:
    """The brain mask's bounding box plus ``margin`` voxels: what the figure shows (and all it draws)."""
    import numpy as np

    inside = np.argwhere(np.asanyarray(mask.dataobj) > 0)
    if inside.size == 0:
        return tuple(slice(0, n) for n in mask.shape[:3])
    low = np.maximum(inside.min(axis=0) - margin, 0)
    high = np.minimum(inside.max(axis=0) + margin + 1, mask.shape[:3])
    return tuple(slice(int(a), int(b)) for a, b in zip(low, high))


def draw_registration_figures(anat: Path, session: str, figures_dir: Path) -> list[Path]:
    """Draw the figure of every registered image of a session that has the T1w and brain mask beside it."""
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
            svg = flicker_svg(t1w, registered, brain_mask, label=_label(registered, modality))
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
