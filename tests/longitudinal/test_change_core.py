"""Pure measurement core: Jacobian integration inside a mask, and the change-table maths."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd
import pytest

from thalamus_bidsapp.image.jacobian import integrate_jacobian, jacobian_determinant, scaling_field
from thalamus_bidsapp.stats.change import (
    CHANGE_COLUMNS,
    annualized_change_pct,
    change_pct,
    change_rows,
    interval_years,
    order_sessions,
)

REGIONS = {"left": (1,), "right": (2,), "bilateral": (1, 2)}


@pytest.mark.parametrize("affine", [np.diag([1.0, 1.0, 1.0, 1.0]),
                                    np.array([[-0.9, 0, 0, 10], [0, 0, 1.2, -5], [0, 0.8, 0, 3], [0, 0, 0, 1]])])
def test_uniform_scaling_has_determinant_scale_cubed(affine):
    field = scaling_field((12, 10, 9), affine, center_mm=(2.0, -1.0, 0.5), scale=0.99)
    det = jacobian_determinant(field, affine)
    assert np.allclose(det, 0.99 ** 3)


def test_determinant_of_a_local_bump_integrates_to_the_moved_volume():
    # u(x) = a * g(x) along x: det = 1 + a dg/dx; its integral over the whole grid is the grid volume.
    shape = (40, 30, 30)
    i = np.arange(shape[0], dtype=float)[:, None, None]
    g = np.exp(-((i - 20) ** 2) / 20) * np.ones(shape)
    field = np.zeros((*shape, 3))
    field[..., 0] = 0.5 * g
    det = jacobian_determinant(field, np.eye(4))
    assert det.sum() == pytest.approx(np.prod(shape), rel=1e-6)
    assert det[15, 5, 5] > 1 > det[25, 5, 5]


def test_integrate_per_side():
    labels = np.zeros((10, 10, 10), np.uint8)
    labels[2:4, 2:4, 2:4] = 1
    labels[6:9, 6:9, 6:9] = 2
    det = np.full(labels.shape, 0.98)
    volumes = integrate_jacobian(det, labels, voxel_volume_mm3=2.0, regions=REGIONS)
    assert volumes["left"] == pytest.approx(8 * 2 * 0.98 / 1000)
    assert volumes["right"] == pytest.approx(27 * 2 * 0.98 / 1000)
    assert volumes["bilateral"] == pytest.approx(volumes["left"] + volumes["right"])
    assert np.isnan(integrate_jacobian(det, labels, 1.0, {"none": (3,)})["none"])
    det[3, 3, 3] = -0.1
    with pytest.raises(ValueError, match="folds"):
        integrate_jacobian(det, labels, 1.0, REGIONS)
    with pytest.raises(ValueError, match="same grid"):
        integrate_jacobian(det[1:], labels, 1.0, REGIONS)


def test_change_maths():
    assert change_pct(10.0, 9.9) == pytest.approx(-1.0)
    assert np.isnan(change_pct(0.0, 1.0))
    years = interval_years(datetime(2020, 1, 1), datetime(2022, 1, 1))
    assert years == pytest.approx(731 / 365.25)
    assert annualized_change_pct(-1.0, 0.5) == pytest.approx(-2.0)
    assert annualized_change_pct(-1.0, None) is None and annualized_change_pct(-1.0, 0.0) is None
    assert interval_years(None, datetime(2020, 1, 1)) is None


def test_change_rows_consecutive_pairs_and_columns():
    volumes = pd.DataFrame([(s, h, v) for s, base in (("1", 8.0), ("2", 7.9), ("3", 7.8))
                            for h, v in (("left", base / 2), ("right", base / 2), ("bilateral", base))],
                           columns=["session", "hemisphere", "volume_ml"])
    table = change_rows("sub-01", "meshnet", "longitudinal", volumes, ["1", "2", "3"], [1.0, None])
    assert tuple(table.columns) == CHANGE_COLUMNS
    assert len(table) == 6
    first = table[(table.session_from == "1") & (table.hemisphere == "bilateral")].iloc[0]
    assert first.change_ml == pytest.approx(-0.1) and first.change_pct == pytest.approx(-1.25)
    assert first.annualized_change_pct == pytest.approx(-1.25)
    second = table[(table.session_from == "2") & (table.hemisphere == "bilateral")].iloc[0]
    assert second.annualized_change_pct is None or np.isnan(second.annualized_change_pct)
    with pytest.raises(ValueError):
        change_rows("sub-01", "meshnet", "longitudinal", volumes, ["1", "2", "3"], [1.0])
    assert change_rows("sub-01", "m", "longitudinal", volumes, ["1"], []).empty


def test_order_sessions():
    dates = {"10": datetime(2019, 1, 1), "2": datetime(2021, 1, 1), "1": datetime(2020, 1, 1)}
    ordered, note = order_sessions(dates)
    assert ordered == ["10", "1", "2"] and "date" in note and "not the order" in note
    ordered, note = order_sessions({**dates, "3": None})
    assert ordered == ["1", "2", "3", "10"] and "label" in note and "3" in note


def test_invert_displacement_at_undoes_a_smooth_field():
    from thalamus_bidsapp.image.jacobian import invert_displacement_at

    shape = (30, 30, 30)
    grid = np.indices(shape).astype(float)
    field = np.stack([0.8 * np.sin(grid[1] / 6), 0.5 * np.cos(grid[0] / 7), 0.3 * np.sin(grid[2] / 5)], axis=-1)
    x = np.array([[10.2, 12.7, 14.1], [20.0, 5.5, 9.9]])
    y = x + np.array([[0.8 * np.sin(p[1] / 6), 0.5 * np.cos(p[0] / 7), 0.3 * np.sin(p[2] / 5)] for p in x])
    assert np.allclose(invert_displacement_at(y, field, np.eye(4), iterations=10), x, atol=0.02)
