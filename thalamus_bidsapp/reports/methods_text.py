"""The methods paragraph of the participant report: what actually ran, with numbered references."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from thalamus_bidsapp.methods.registry import all_methods, method_names
from thalamus_bidsapp.reports.html import data_text, esc
from thalamus_bidsapp.reports.session import SessionReport

_STRATEGY_TEXT = {
    "flirt_mi_affine": ("FSL FLIRT (6 DOF mutual information, then 12 DOF affine)", "flirt"),
    "flirt_normcorr_weighted": ("FSL FLIRT (6 DOF normalised correlation weighted by the T1w brain mask)", "flirt"),
    "flirt_normcorr": ("FSL FLIRT (6 DOF normalised correlation)", "flirt"),
    "ants_rigid": ("ANTs rigid registration", "ants"),
}


class _References:
    """Numbered references in order of first citation, from ``data/citations.json``."""

    def __init__(self) -> None:
        self.table: dict[str, dict[str, Any]] = json.loads(data_text("citations.json"))
        self.order: list[str] = []

    def cite(self, *keys: str) -> str:
        """The reference mark of citation keys (``data/citations.json`` keys or registered method names)."""
        for method in all_methods():
            if method.name in keys and method.name not in self.table:
                self.table[method.name] = {"text": method.citation}
        numbers = []
        for key in keys:
            if key not in self.table:
                continue
            if key not in self.order:
                self.order.append(key)
            numbers.append(self.order.index(key) + 1)
        return f"[{', '.join(map(str, numbers))}]" if numbers else ""

    def html(self) -> str:
        items = "".join(f'<li id="ref-{esc(key)}">{esc(self.table[key]["text"])}</li>' for key in self.order)
        return f'<ol class="references">{items}</ol>'


def _tool_text(sidecar: Mapping[str, Any]) -> str:
    tool, version = sidecar.get("Tool"), sidecar.get("Version")
    return " ".join(str(v) for v in (tool, version) if v)


def methods_paragraph(sessions: list[SessionReport], version: str) -> tuple[str, str]:
    """The methods text (HTML paragraphs) and the references (HTML list) of what actually ran."""
    refs = _References()
    paragraphs = [
        f"Thalamus segmentation and volumetry were performed with thalamus_bidsapp {esc(version)} "
        f"{refs.cite('thalamus_bidsapp')}, a BIDS App built on Nipype {refs.cite('nipype')}, PyBIDS "
        f"{refs.cite('pybids')} and NiBabel {refs.cite('nibabel')}."
    ]
    sidecars = [s for session in sessions for s in session.sidecars.items()]
    if any(name.endswith("_desc-preproc_T1w.json") for name, _ in sidecars):
        text = "Each T1-weighted (T1w) image was reoriented to RAS+ without resampling"
        brain = [s for name, s in sidecars if name.endswith("_desc-brain_mask.json")]
        if brain:
            tools = sorted({_tool_text(s) for s in brain if _tool_text(s)}) or ["deepbet"]
            text += f" and skull-stripped with {esc(', '.join(tools))} {refs.cite('deepbet')}"
        paragraphs.append(text + "; this reoriented T1w grid is the reference of every mask.")

    registrations: dict[str, set[str]] = {}
    for name, sidecar in sidecars:
        reg = sidecar.get("Registration")
        if isinstance(reg, Mapping) and "_space-T1w_" in name and reg.get("SelectedStrategy"):
            registrations.setdefault(str(reg.get("Modality", "image")), set()).add(str(reg["SelectedStrategy"]))
    if registrations:
        clauses = []
        for modality, strategies in sorted(registrations.items()):
            described = []
            for strategy in sorted(strategies):
                text, key = _STRATEGY_TEXT.get(strategy, (strategy, ""))
                described.append(f"{esc(text)} {refs.cite(key)}".strip())
            clauses.append(f"the {esc(modality)} image with {' or '.join(described)}")
        paragraphs.append(
            "Registered to the T1w: " + "; ".join(clauses) + ". A registration was accepted only if the mutual "
            "information with the T1w inside the brain mask reached its cut-off (see the registration QC "
            "tables).")
    if any(name.endswith("_desc-scaled_R1map.json") for name, _ in sidecars):
        paragraphs.append("The registered R1 map was clipped at its 99th percentile inside the brain mask and "
                          "rescaled linearly to 0..1000.")

    paragraphs += [text for text in (_template_text(sidecars, refs), _lesion_text(sidecars)) if text]

    masks = [m for session in sessions for m in session.masks]
    clauses = []
    for method in all_methods():
        members = [m for m in masks if m.method_family == method.name]
        if members:
            clauses.append(esc(method.methods_sentence(members, refs.cite)))
    for family in sorted({m.method_family for m in masks} - set(method_names())):
        clauses.append(esc(family))
    if clauses:
        paragraphs.append("The thalamus was segmented with " + "; ".join(clauses) + ". Volumes are the voxel "
                          "count times the voxel volume from the image header, in mL.")
    body = "".join(f"<p>{p}</p>" for p in paragraphs)
    return body, refs.html()


def _template_text(sidecars: list[tuple[str, Mapping[str, Any]]], refs: _References) -> str:
    """Template space: the registration, the prior warped back and the masks resampled (empty when not run)."""
    forward = [s for name, s in sidecars if name.endswith("_xfm.json") and s.get("FromSpace") == "T1w"]
    if not forward:
        return ""
    templates = sorted({str(s.get("Template", s.get("ToSpace"))) for s in forward})
    schedules = sorted({str(s["Registration"].get("Schedule")) for s in forward
                        if isinstance(s.get("Registration"), Mapping) and s["Registration"].get("Schedule")})
    text = (f"The skull-stripped T1w was registered to the {esc(' and '.join(templates))} template of TemplateFlow "
            f"{refs.cite('templateflow')} with antspyx (affine, then SyN"
            + (f"; {esc(' and '.join(schedules))} schedule" if schedules else "") + f") {refs.cite('ants')}")
    atlases = sorted({str(s["Atlas"]) for name, s in sidecars if "_desc-prior_probseg" in name and s.get("Atlas")})
    if atlases:
        text += (f"; the left and right thalamus probability maps of the {esc(' and '.join(atlases))} atlas were "
                 "warped back onto the T1w grid (linear interpolation) as a thalamus prior")
    if any("_space-" in name and "_space-T1w_" not in name and name.endswith("_mask.json") for name, _ in sidecars):
        text += ", and every thalamus mask was resampled onto the template grid (linear interpolation, then >= 0.5)"
    return text + "."


def _lesion_text(sidecars: list[tuple[str, Mapping[str, Any]]]) -> str:
    """Lesion filling before the T1w methods (empty when nothing was filled)."""
    filled = [s for name, s in sidecars if name.endswith("_desc-lesionfilled_T1w.json") and s.get("LesionFilled")]
    if not filled:
        return ""
    sources = sorted({str(s["LesionSource"]) for s in filled if s.get("LesionSource")})
    origin = f" ({esc('; '.join(sources))})" if sources else ""
    algorithms = sorted({str(s["Algorithm"]) for s in filled if s.get("Algorithm")})
    how = f": {esc(' / '.join(algorithms))}" if algorithms else ""
    return (f"Before the methods that segment the T1w ran, the lesions of the lesion mask{origin} were filled "
            f"in the T1w{how}. Every mask's sidecar records whether it was segmented on the filled image.")
