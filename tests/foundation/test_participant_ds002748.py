"""Six real subjects of OpenNeuro ds002748: brain masks for all, group table joined with demographics."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from tests.conftest import shared_file
from tests.foundation.datasets import tree_digest
from thalamus_bidsapp.bidsio.atomic import read_tsv
from thalamus_bidsapp.cli.run import main

#: A whole participant run on real images: over a minute.
pytestmark = [pytest.mark.slow]

SUBJECTS = ("01", "02", "03", "52", "53", "54")


@pytest.fixture(scope="module")
def ds_run(tmp_path_factory):
    bids = shared_file("ds002748_subset")
    root = tmp_path_factory.mktemp("ds002748")
    before = tree_digest(bids)
    out = root / "out"
    # Two processes: the MultiProc plugin, as users with several cores run it.
    code = main([str(bids), str(out), "participant", "-w", str(root / "work"), "--nprocs", "2"])
    group_code = main([str(bids), str(out), "group", "-w", str(root / "work")])
    return {"bids": bids, "out": out, "code": code, "group_code": group_code, "before": before}


def test_exit_codes(ds_run):
    assert ds_run["code"] == 0 and ds_run["group_code"] == 0


@pytest.mark.parametrize("label", SUBJECTS)
def test_brain_mask_per_subject(ds_run, label):
    anat = ds_run["out"] / f"sub-{label}" / "anat"
    mask = nib.load(str(anat / f"sub-{label}_space-T1w_desc-brain_mask.nii.gz"))
    t1w = nib.load(str(anat / f"sub-{label}_desc-preproc_T1w.nii.gz"))
    assert mask.shape == t1w.shape == (288, 288, 181)
    assert np.allclose(mask.affine, t1w.affine)
    data = np.asanyarray(mask.dataobj)
    volume_ml = data.sum() * np.prod(mask.header.get_zooms()) / 1000
    # Adult brains: about 1.0 to 1.8 L; these T1w are already skull-stripped, so the mask
    # must follow the non-zero brain voxels closely.
    assert 900 < volume_ml < 1900
    brain = np.asanyarray(t1w.dataobj) > 0
    dice = 2 * (brain & (data > 0)).sum() / (brain.sum() + (data > 0).sum())
    assert dice > 0.9


def test_group_table_joined_with_demographics(ds_run):
    table = read_tsv(ds_run["out"] / "group" / "volumes.tsv")
    # Without FSL, FreeSurfer or DBSegment, MeshNet is the method that runs everywhere.
    meshnet_rows = table[table["method"] == "meshnet"]
    meshnet = meshnet_rows[meshnet_rows["hemisphere"] == "bilateral"].set_index("participant_id")
    assert sorted(meshnet.index) == [f"sub-{label}" for label in SUBJECTS]
    # The left and right rows add up to the bilateral volume.
    sides = meshnet_rows[meshnet_rows["hemisphere"] != "bilateral"].groupby("participant_id")["volume_ml"].sum()
    for subject, total in sides.items():
        assert abs(total - meshnet.loc[subject, "volume_ml"]) < 1e-6
    participants = read_tsv(ds_run["bids"] / "participants.tsv").set_index("participant_id")
    for subject, row in meshnet.iterrows():
        assert row["age"] == participants.loc[subject, "age"]
        assert row["gender"] == participants.loc[subject, "gender"]
        # Adult bilateral thalamus, and the ICV from the brain mask (no FreeSurfer here).
        assert 10 < row["volume_ml"] < 25
        assert row["icv_source"] == "deepbet brain mask volume"


def test_input_untouched(ds_run):
    assert tree_digest(ds_run["bids"]) == ds_run["before"]


def test_timings_of_every_session(ds_run):
    from thalamus_bidsapp.participant.timings import read_timings

    (path,) = (ds_run["out"] / "logs").glob("*/timings.tsv")
    table = read_timings(path)
    assert path.with_suffix(".json").is_file()
    # Six sessions on two processes: one thread per step (min(nprocs - 1, 8)), so two sessions run side by side.
    tools = table[(table["kind"] == "tool") & (table["session"] != "n/a")]
    assert sorted(tools["session"].unique()) == [f"sub-{label}" for label in SUBJECTS]
    # PyTorch is loaded once, before the workers start, and counted as the tools' own time (0 s here:
    # the test process has loaded it already).
    run_tools = table[(table["kind"] == "tool") & (table["session"] == "n/a")]
    assert list(run_tools["step"]) == ["tool_libraries"] and (run_tools["seconds"] >= 0).all()
    # The networks, and ANTs for template space (registration, prior and masks resampled).
    assert set(tools["step"]) == {"brain_mask", "segmentation_wf.meshnet_thalamus", "template_wf.register_template",
                                  "masks_to_template"}
    assert (tools["threads"] == 1).all() and (tools["seconds"] > 0).all()
    phases = set(table.loc[table["session"] == "n/a", "step"])
    assert {"startup", "index", "tool_check", "workflow", "reports", "total"} <= phases
    total = table.loc[table["step"] == "total", "seconds"].iloc[0]
    assert (table["start"] + table["seconds"] <= total + 1).all()


def test_citations_name_what_ran(ds_run):
    # deepbet and MeshNet ran, and template space (TemplateFlow, ANTs); FreeSurfer did not.
    text = (ds_run["out"] / "logs" / "CITATION.md").read_text()
    assert "Fisch L" in text and "Ciric R" in text and "Avants BB" in text
    assert "Fischl B" not in text
