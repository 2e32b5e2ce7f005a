"""With --participant-label, only the requested subjects are indexed and validated."""

from __future__ import annotations

import os

import pytest

from tests.conftest import shared_file
from tests.foundation.datasets import write_description
from thalamus_bidsapp.bidsio import inputs
from thalamus_bidsapp.errors import ThalamusError
from thalamus_bidsapp.participant.plan import other_subjects_pattern


@pytest.fixture
def many_subjects(tmp_path):
    """ds002748's sub-01 T1w (real, linked) as 60 subjects, plus one subject with a non-BIDS file."""
    t1w = shared_file("ds002748_subset", "sub-01", "anat", "sub-01_T1w.nii.gz")
    root = tmp_path / "bids"
    write_description(root, "many")
    for number in range(1, 61):
        anat = root / f"sub-{number:03d}" / "anat"
        anat.mkdir(parents=True)
        os.symlink(t1w, anat / f"sub-{number:03d}_T1w.nii.gz")
    # sub-0100 starts like sub-010: the pattern must not let it through with 010.
    (root / "sub-0100" / "anat").mkdir(parents=True)
    os.symlink(t1w, root / "sub-0100" / "anat" / "sub-0100_T1w.nii.gz")
    return root


def test_only_requested_subjects_are_indexed(many_subjects, tmp_path):
    queries = inputs.default_queries()
    others = other_subjects_pattern(many_subjects, ["sub-010", "042"])
    layout = inputs.open_layout(many_subjects, validate=True, database_dir=tmp_path / "db", extra_ignore=others)
    assert sorted(layout.get_subjects()) == ["010", "042"]
    sessions = inputs.collect_sessions(layout, {}, queries, participant_labels=["010", "sub-042"], session_labels=None)
    assert [s.name for s in sessions] == ["sub-010", "sub-042"]
    assert sessions[0].t1w.name == "sub-010_T1w.nii.gz"

    # The whole dataset keeps its own cached index, apart from the restricted one.
    full = inputs.open_layout(many_subjects, validate=True, database_dir=tmp_path / "db")
    assert len(full.get_subjects()) == 61


def test_unknown_label_lists_the_subjects_on_disk(many_subjects, tmp_path):
    # A label without a folder: nothing is left out, so the error lists every subject.
    assert other_subjects_pattern(many_subjects, ["010", "999"]) == ()
    layout = inputs.open_layout(many_subjects, validate=True, database_dir=None,
                                extra_ignore=other_subjects_pattern(many_subjects, ["999"]))
    with pytest.raises(ThalamusError) as err:
        inputs.collect_sessions(layout, {}, inputs.default_queries(), participant_labels=["999"], session_labels=None)
    assert err.value.exit_code == 66
    assert "999" in str(err.value) and "001" in str(err.value) and "060" in str(err.value)
