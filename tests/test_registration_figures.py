"""Registration QC figures: niworkflows before/after flicker SVGs drawn from published files."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import nibabel as nib
import pytest

from tests.conftest import shared_file
from tests.registration_helpers import make_brain_mask
from thalamus_bidsapp.reports.registration_figures import draw_registration_figures

MS = ("ms_lesjak2017_mni", "patient07")
SESSION = "sub-07"


def _published(tmp_path: Path) -> Path:
    """A session's anat folder as the participant level publishes it (MS patient, FLAIR already aligned)."""
    anat = tmp_path / SESSION / "anat"
    anat.mkdir(parents=True)
    t1w = anat / f"{SESSION}_desc-preproc_T1w.nii.gz"
    shutil.copy(shared_file(*MS, "T1_N4_noneck_reduced_winsor_regtoFLAIR_brain_N4_regtoMNI.nii.gz"), t1w)
    shutil.copy(shared_file(*MS, "FLAIR_N4_noneck_reduced_winsor_regtoFLAIR_brain_N4_regtoMNI.nii.gz"),
                anat / f"{SESSION}_space-T1w_desc-preproc_FLAIR.nii.gz")
    (anat / f"{SESSION}_space-T1w_desc-preproc_FLAIR.json").write_text(json.dumps(
        {"Registration": {"SelectedStrategy": "flirt_normcorr", "MutualInformation": 0.4512}}))
    make_brain_mask(t1w, anat / f"{SESSION}_space-T1w_desc-brain_mask.nii.gz")
    return anat


@pytest.mark.slow
def test_flicker_svg_from_published_files_is_deterministic(tmp_path):
    anat = _published(tmp_path)
    figures = tmp_path / SESSION / "figures"
    (svg,) = draw_registration_figures(anat, SESSION, figures)
    assert svg.name == f"{SESSION}_space-T1w_desc-registration_FLAIR.svg"
    text = svg.read_text()
    assert "foreground-svg" in text and "background-svg" in text and "flickerAnimation" in text
    assert "FLAIR (flirt_normcorr, MI 0.451)" in text and "T1w" in text
    first = svg.read_bytes()
    mtime = svg.stat().st_mtime_ns
    draw_registration_figures(anat, SESSION, figures)  # a redraw (--reports-only) leaves it alone
    assert svg.read_bytes() == first and svg.stat().st_mtime_ns == mtime


def test_no_registered_image_no_figure(tmp_path):
    anat = _published(tmp_path)
    for path in anat.glob("*_FLAIR.*"):
        path.unlink()
    assert draw_registration_figures(anat, SESSION, tmp_path / "figures") == []
    assert not (tmp_path / "figures").exists()
    assert nib.load(str(anat / f"{SESSION}_space-T1w_desc-brain_mask.nii.gz")).shape


def test_unchanged_inputs_are_not_drawn_again(tmp_path, monkeypatch):
    from thalamus_bidsapp.reports import registration_figures

    anat = _published(tmp_path)
    figures = tmp_path / SESSION / "figures"
    drawn = []

    def fake_svg(t1w, registered, brain_mask, *, label, processes=1):
        drawn.append(label)
        return f"<?xml version='1.0' encoding='utf-8'?>\n<svg>{label} {len(drawn)}</svg>"

    monkeypatch.setattr(registration_figures, "flicker_svg", fake_svg)
    (svg,) = draw_registration_figures(anat, SESSION, figures)
    assert len(drawn) == 1 and svg.read_text().startswith("<?xml version='1.0' encoding='utf-8'?>\n<!-- ")
    mtime = svg.stat().st_mtime_ns
    assert draw_registration_figures(anat, SESSION, figures) == [svg]
    assert len(drawn) == 1 and svg.stat().st_mtime_ns == mtime  # the inputs did not change: not drawn

    # A new registration (its sidecar records another MI) is drawn again.
    sidecar = anat / f"{SESSION}_space-T1w_desc-preproc_FLAIR.json"
    sidecar.write_text(json.dumps({"Registration": {"SelectedStrategy": "ants_rigid", "MutualInformation": 0.5}}))
    draw_registration_figures(anat, SESSION, figures)
    assert drawn == ["FLAIR (flirt_normcorr, MI 0.451)", "FLAIR (ants_rigid, MI 0.500)"]
    assert "ants_rigid" in svg.read_text()
    # So is a figure edited or written by an older version (no key in it).
    svg.write_text("<svg>old</svg>")
    draw_registration_figures(anat, SESSION, figures)
    assert len(drawn) == 3


@pytest.mark.slow
def test_two_processes_draw_the_same_figure(tmp_path, monkeypatch, caplog):
    from thalamus_bidsapp.reports import registration_figures

    anat = _published(tmp_path)
    paths = (anat / f"{SESSION}_desc-preproc_T1w.nii.gz", anat / f"{SESSION}_space-T1w_desc-preproc_FLAIR.nii.gz",
             anat / f"{SESSION}_space-T1w_desc-brain_mask.nii.gz")
    alone = registration_figures.flicker_svg(*paths, label="FLAIR", processes=1)
    with caplog.at_level(logging.DEBUG, logger=registration_figures.__name__):
        side_by_side = registration_figures.flicker_svg(*paths, label="FLAIR", processes=2)
    assert side_by_side == alone
    assert "drawn here" not in caplog.text and "one process" not in caplog.text  # the child drew its half

    # A child that cannot draw its half costs time, not the figure: the half is drawn in this process.
    monkeypatch.setattr(registration_figures, "_in_child", lambda job: _failed_future())
    assert registration_figures.flicker_svg(*paths, label="FLAIR", processes=2) == alone
    assert "drawn here instead" in caplog.text


def _failed_future():
    from concurrent.futures import Future, ThreadPoolExecutor

    pool = ThreadPoolExecutor(max_workers=1)
    future: Future = Future()
    future.set_exception(RuntimeError("the child died"))
    return pool, future
