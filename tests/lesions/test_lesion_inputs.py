"""Lesion masks are found under the names lesion tools write, and with a --bids-filter-file role ``lesion``."""

from __future__ import annotations

import json

from tests.conftest import shared_file
from thalamus_bidsapp.bidsio import inputs


def _layouts(tmp_path, names: list[str]):
    layout = inputs.open_layout(shared_file("ds002748_subset"), validate=True, database_dir=None)
    deriv = tmp_path / "lesions"
    (deriv / "sub-01" / "anat").mkdir(parents=True)
    (deriv / "dataset_description.json").write_text(json.dumps({"Name": "lesions", "BIDSVersion": "1.10.0"}))
    for name in names:
        (deriv / "sub-01" / "anat" / name).write_bytes(b"")
    return layout, {"lesions": inputs.open_layout(deriv, validate=False, database_dir=None, derivatives=True)}, deriv


def _session(layout, derivs, queries):
    (session,) = inputs.collect_sessions(layout, derivs, queries, participant_labels=["01"], session_labels=None)
    return session


def test_label_lesion_mask_is_preferred_then_desc_lesion(tmp_path):
    layout, derivs, deriv = _layouts(tmp_path, ["sub-01_desc-lesion_mask.nii.gz", "sub-01_label-lesion_mask.nii.gz"])
    assert _session(layout, derivs, inputs.default_queries()).lesion.name == "sub-01_label-lesion_mask.nii.gz"
    (deriv / "sub-01" / "anat" / "sub-01_label-lesion_mask.nii.gz").unlink()
    layout, derivs, _ = _layouts(tmp_path / "b", ["sub-01_space-FLAIR_desc-lesion_mask.nii.gz"])
    found = _session(layout, derivs, inputs.default_queries()).lesion
    assert found.name == "sub-01_space-FLAIR_desc-lesion_mask.nii.gz"


def test_a_lesion_dseg_is_found(tmp_path):
    layout, derivs, _ = _layouts(tmp_path, ["sub-01_desc-lesion_dseg.nii.gz"])
    assert _session(layout, derivs, inputs.default_queries()).lesion.name == "sub-01_desc-lesion_dseg.nii.gz"


def test_no_lesion_mask_and_thalamus_masks_are_not_lesions(tmp_path):
    layout, derivs, _ = _layouts(tmp_path, ["sub-01_label-thalamus_desc-manual_mask.nii.gz"])
    session = _session(layout, derivs, inputs.default_queries())
    assert session.lesion is None and session.manual is not None


def test_the_bids_filter_file_role_lesion(tmp_path):
    layout, derivs, _ = _layouts(tmp_path, ["sub-01_label-lesion_desc-samseg_mask.nii.gz",
                                            "sub-01_label-lesion_desc-lst_mask.nii.gz"])
    filter_file = tmp_path / "filter.json"
    filter_file.write_text(json.dumps({"lesion": {"desc": "samseg"}}))
    session = _session(layout, derivs, inputs.load_queries(filter_file))
    assert session.lesion.name == "sub-01_label-lesion_desc-samseg_mask.nii.gz"
