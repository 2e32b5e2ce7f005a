"""The report's methods paragraph says what ran, from the sidecars: template space and lesion filling."""

from __future__ import annotations

from thalamus_bidsapp.reports.methods_text import methods_paragraph
from thalamus_bidsapp.reports.session import SessionReport

TEMPLATE = "MNI152NLin2009cAsym"


def _session(**sidecars) -> SessionReport:
    return SessionReport(name="sub-01", label=None, anat=None, sidecars=dict(sidecars))


def _template_sidecars() -> dict:
    return {
        f"sub-01_from-T1w_to-{TEMPLATE}_mode-image_xfm.json": {
            "FromSpace": "T1w", "ToSpace": TEMPLATE, "Template": TEMPLATE, "Registration": {"Schedule": "standard"}},
        f"sub-01_from-{TEMPLATE}_to-T1w_mode-image_xfm.json": {"FromSpace": TEMPLATE, "ToSpace": "T1w"},
        "sub-01_hemi-L_space-T1w_label-thalamus_desc-prior_probseg.json": {"Atlas": "HOSPA"},
        f"sub-01_space-{TEMPLATE}_label-thalamus_desc-meshnet_mask.json": {"Method": "meshnet"},
    }


def test_template_space_is_described_and_cited():
    body, references = methods_paragraph([_session(**_template_sidecars())], "1.0")
    assert f"registered to the {TEMPLATE} template of TemplateFlow" in body
    assert "SyN; standard schedule" in body
    assert "HOSPA atlas were warped back onto the T1w grid" in body
    assert "resampled onto the template grid" in body
    assert "Ciric R" in references and "Avants BB" in references
    assert "lesions" not in body


def test_lesion_filling_is_described_only_when_lesions_were_filled():
    filled = {"LesionFilled": True, "Algorithm": "lesion voxels replaced by draws from nearby white matter",
              "LesionSource": "MindGlide class 18 (lesion) on the FLAIR"}
    body, _ = methods_paragraph([_session(**{"sub-01_desc-lesionfilled_T1w.json": filled})], "1.0")
    assert "the lesions of the lesion mask (MindGlide class 18 (lesion) on the FLAIR) were filled" in body
    assert "draws from nearby white matter" in body
    empty = {"LesionFilled": False, "Reason": "empty lesion mask"}
    body, references = methods_paragraph([_session(**{"sub-01_desc-lesionfilled_T1w.json": empty})], "1.0")
    assert "lesions" not in body and "TemplateFlow" not in body and "Ciric" not in references
