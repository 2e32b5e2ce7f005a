"""Thalamus segmentation methods: one module per method, and the registry that lists them.

See :mod:`thalamus_bidsapp.methods.base` for what every method declares,
:mod:`thalamus_bidsapp.methods.capabilities` for what only some can do, and
:mod:`thalamus_bidsapp.methods.registry` for the list everything loops over.
"""

from thalamus_bidsapp.methods.base import CliOption, SegmentationMethod, SideLabels, ToolSettings, ToolStatus
from thalamus_bidsapp.methods.capabilities import (
    EnvelopeSource,
    EnvelopeUser,
    LesionSource,
    TemplateSegmenter,
    needs_envelope,
    provides_lesions,
)
from thalamus_bidsapp.methods.planning import MethodPlan, ToolCheck, check_tools, plan_methods, plan_summary
from thalamus_bidsapp.methods.registry import (
    all_methods,
    envelope_names,
    get_method,
    method_names,
    method_of_mask,
    register,
)

__all__ = [
    "CliOption", "EnvelopeSource", "EnvelopeUser", "LesionSource", "MethodPlan", "SegmentationMethod", "SideLabels",
    "TemplateSegmenter", "ToolCheck", "ToolSettings", "ToolStatus", "all_methods", "check_tools", "envelope_names",
    "get_method", "method_names", "method_of_mask", "needs_envelope", "plan_methods", "plan_summary",
    "provides_lesions", "register",
]
