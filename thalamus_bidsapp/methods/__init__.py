"""Thalamus segmentation methods: one module per method, and the registry that lists them.

See :mod:`thalamus_bidsapp.methods.base` for what a method declares and
:mod:`thalamus_bidsapp.methods.registry` for the list everything loops over.
"""

from thalamus_bidsapp.methods.base import CliOption, SegmentationMethod, SideLabels, ToolStatus
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
    "CliOption", "MethodPlan", "SegmentationMethod", "SideLabels", "ToolCheck", "ToolStatus", "all_methods",
    "check_tools", "envelope_names", "get_method", "method_names", "method_of_mask", "plan_methods",
    "plan_summary", "register",
]
