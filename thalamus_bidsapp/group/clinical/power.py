"""Sample size per arm per method for a trial on annual thalamic atrophy."""

from __future__ import annotations

import numpy as np
import pandas as pd

from thalamus_bidsapp.group.clinical.common import ANNUAL, METHOD_KEYS, SUBJECT, Ledger
from thalamus_bidsapp.group.clinical_config import ClinicalConfig
from thalamus_bidsapp.stats import power as pw


def power_table(deltas: pd.DataFrame | None, config: ClinicalConfig, ledger: Ledger) -> pd.DataFrame | None:
    """Subjects per arm per method for the configured difference in annual % atrophy."""
    if deltas is None or deltas.empty or not np.isfinite(deltas[ANNUAL]).any():
        ledger.status("power", False, "no annualised % change (needs follow-up sessions with known intervals)")
        return None
    table = pw.sample_size_table(deltas, ANNUAL, METHOD_KEYS, difference=config.power_difference,
                                 power=config.power, alpha=config.power_alpha)
    ledger.status("power", True, "", int(deltas[SUBJECT].nunique()))
    return table
