"""The statistics tables of a simulated cohort's group level, against stored copies (tests/golden/group_tables).

The stored tables were written by the group level on the cohort of
:func:`tests.simulate_cohort.simulate_cohort` (30 subjects, seed 3, the report
methods). A change of the statistics library or of its callers must leave
them as they are: same columns in the same order, same text, same numbers.
Numbers are compared to 1e-9 relative (the TSVs hold 10 significant digits;
another BLAS may move the last one); on the machine that wrote them they are
byte-identical. After an intended change, regenerate them with
``THALAMUS_UPDATE_GOLDEN=1 pytest tests/test_group_golden.py`` and say in
README.md which column changed and why.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.simulate_cohort import REPORT_METHODS, simulate_cohort, write_group_outputs

GOLDEN = Path(__file__).resolve().parent / "golden" / "group_tables"
TABLES = sorted(p.stem for p in GOLDEN.glob("*.tsv"))


@pytest.fixture(scope="module")
def group_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = write_group_outputs(simulate_cohort(n_subjects=30, seed=3, methods=REPORT_METHODS),
                              tmp_path_factory.mktemp("golden"))
    if os.environ.get("THALAMUS_UPDATE_GOLDEN") == "1":
        for name in TABLES:
            shutil.copyfile(out / f"{name}.tsv", GOLDEN / f"{name}.tsv")
    return out


def _read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)


def test_every_statistics_table_is_stored() -> None:
    assert len(TABLES) == 14
    assert {"agreement_volumetric", "agreement_pairwise", "clinical_crosssectional", "clinical_longitudinal_ordinal",
            "clinical_progression_pairwise"} <= set(TABLES)


@pytest.mark.parametrize("name", TABLES)
def test_group_table_matches_the_stored_one(group_dir: Path, name: str) -> None:
    got, want = _read(group_dir / f"{name}.tsv"), _read(GOLDEN / f"{name}.tsv")
    assert list(got.columns) == list(want.columns), f"{name}: the columns changed"
    assert got.shape == want.shape, f"{name}: {got.shape} rows x columns instead of {want.shape}"
    for column in want.columns:
        numbers_want = pd.to_numeric(want[column], errors="coerce")
        numbers_got = pd.to_numeric(got[column], errors="coerce")
        text = numbers_want.isna()
        assert got.loc[text, column].tolist() == want.loc[text, column].tolist(), f"{name}.{column}: text differs"
        assert np.allclose(numbers_got[~text], numbers_want[~text], rtol=1e-9, atol=1e-12), (
            f"{name}.{column}: numbers differ")
