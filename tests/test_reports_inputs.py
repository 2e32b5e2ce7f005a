"""The participant report's "Inputs used": each input named for what it is and credited to its dataset."""

from __future__ import annotations

from thalamus_bidsapp.reports.session import _collect_inputs
from thalamus_bidsapp.workflows.participant import source_uri


def test_a_dataset_inside_the_raw_one_is_credited(tmp_path):
    raw = tmp_path / "bids"
    lesions = raw / "derivatives" / "lesion_tool"
    mask = lesions / "sub-01" / "anat" / "sub-01_desc-lesion_mask.nii.gz"
    mask.parent.mkdir(parents=True)
    mask.write_bytes(b"")
    t1w = raw / "sub-01" / "anat" / "sub-01_T1w.nii.gz"
    t1w.parent.mkdir(parents=True)
    t1w.write_bytes(b"")
    roots = {"raw": raw, "lesions": lesions}
    assert source_uri(mask, roots) == "bids:lesions:sub-01/anat/sub-01_desc-lesion_mask.nii.gz"
    assert source_uri(t1w, roots) == "bids:raw:sub-01/anat/sub-01_T1w.nii.gz"


def test_inputs_are_named_for_what_they_are():
    sidecars = {"a.json": {"Sources": [
        "bids:raw:sub-01/anat/sub-01_T1w.nii.gz",
        "bids:lesions:sub-01/anat/sub-01_desc-lesion_mask.nii.gz",
        "bids::sub-01/anat/sub-01_desc-preproc_T1w.nii.gz",
        "templateflow:tpl-MNI152NLin2009cAsym_res-02_desc-brain_T1w.nii.gz",
        "templateflow:tpl-MNI152NLin2009cAsym_res-02_atlas-HOSPA_probseg.nii.gz"]}}
    rows = _collect_inputs(sidecars, {"raw": "/data/bids", "lesions": "/data/bids/derivatives/lesion_tool"})
    assert [(r["role"], r["dataset"], r["location"]) for r in rows] == [
        ("T1w", "raw", "/data/bids"),
        ("lesion mask", "lesions", "/data/bids/derivatives/lesion_tool"),
        ("template", "TemplateFlow", "$TEMPLATEFLOW_HOME"),
        ("thalamus atlas", "TemplateFlow", "$TEMPLATEFLOW_HOME")]
    assert rows[2]["file"] == "tpl-MNI152NLin2009cAsym_res-02_desc-brain_T1w.nii.gz"
