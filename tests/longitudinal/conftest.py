"""Fixtures of the longitudinal tests."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def cheap_syn(monkeypatch):
    """No deformation (identity) instead of the SyN: for tests of what the step runs and publishes, not what it
    measures. Returns the list of the targets' shapes, one per registration."""
    from thalamus_bidsapp.tools import ants_longitudinal as al

    calls = []

    def identity(template_box, session_box, **_):
        calls.append(template_box.shape)
        affine_lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ template_box.affine
        return al.SessionDeformation(np.zeros((*template_box.shape, 3)), affine_lps, None)

    monkeypatch.setattr(al, "syn_to_template", identity)
    return calls
