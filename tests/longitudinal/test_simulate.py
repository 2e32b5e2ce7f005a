"""The rescan simulation: its moves, fields and noise are in the stated ranges, and its atrophy is exact."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from tests.longitudinal.simulate import (
    Contraction,
    bias_field,
    covering_ball,
    crop_around,
    random_rigid,
    rescan,
)


def _ball_image(radius_mm: float = 12.0, size: int = 48) -> nib.Nifti1Image:
    grid = np.indices((size,) * 3).astype(float) - (size - 1) / 2
    ball = (np.sqrt((grid ** 2).sum(axis=0)) <= radius_mm).astype(np.float32)
    return nib.Nifti1Image(ball * 100.0, np.eye(4))


def test_contraction_scales_volume_by_scale_cubed():
    contraction = Contraction(center=(0.0, 0.0, 0.0), radius=20.0, volume_change=-0.02)
    assert contraction.scale ** 3 == pytest.approx(0.98)
    # Numerical Jacobian of the sampling map: 1 / scale^3 inside the ball, 1 far outside, positive between.
    step = 1e-3
    for r, expected in ((5.0, 1 / 0.98), (15.0, 1 / 0.98), (60.0, 1.0)):
        point = np.array([[r, 0.3 * r, -0.2 * r]]) / np.sqrt(1.13)
        jac = np.stack([(contraction.source_points(point + step * e) - contraction.source_points(point - step * e))[0]
                        / (2 * step) for e in np.eye(3)], axis=1)
        assert np.linalg.det(jac) == pytest.approx(expected, rel=1e-6)
    radii = np.linspace(0, 60, 601)
    mapped = np.linalg.norm(contraction.source_points(np.c_[radii, 0 * radii, 0 * radii]), axis=1)
    assert np.all(np.diff(mapped) > 0)  # monotonic: the map is invertible


def test_contracted_ball_loses_the_analytic_volume():
    # A blurred ball: sampled sums then approximate the integral, which the contraction scales by scale^3.
    from scipy import ndimage

    ball = _ball_image()
    image = nib.Nifti1Image(ndimage.gaussian_filter(np.asarray(ball.dataobj), 2.0), ball.affine)
    contraction = Contraction(center=(23.5, 23.5, 23.5), radius=16.0, volume_change=-0.02)
    plain = rescan(image, seed=1, contraction=None, rigid=False, bias=0, noise=0)
    shrunk = rescan(image, seed=1, contraction=contraction, rigid=False, bias=0, noise=0)
    change = np.asarray(shrunk.dataobj).sum() / np.asarray(plain.dataobj).sum() - 1
    assert change == pytest.approx(-0.02, abs=0.0005)


def test_rigid_move_is_in_range():
    rng = np.random.default_rng(3)
    center = np.array([10.0, -20.0, 5.0])
    for _ in range(20):
        move = random_rigid(rng, center)
        angle = np.degrees(np.arccos((np.trace(move[:3, :3]) - 1) / 2))
        assert 2.0 <= angle <= 4.0
        shift = np.linalg.norm(move[:3, :3] @ center + move[:3, 3] - center)
        assert 1.0 <= shift <= 3.0
        assert np.linalg.det(move[:3, :3]) == pytest.approx(1.0)


def test_bias_field_is_smooth_and_bounded():
    field = bias_field((20, 24, 16), np.random.default_rng(0))
    assert field.min() >= 0.92 - 1e-9 and field.max() <= 1.08 + 1e-9
    assert np.abs(field - 1).max() == pytest.approx(0.08)
    assert np.abs(np.diff(field, axis=0)).max() < 0.03


def test_rescan_is_deterministic_noisy_and_moved():
    image = _ball_image()
    first, again, other = (rescan(image, seed=s) for s in (7, 7, 8))
    assert np.array_equal(np.asarray(first.dataobj), np.asarray(again.dataobj))
    assert not np.array_equal(np.asarray(first.dataobj), np.asarray(other.dataobj))
    data = np.asarray(first.dataobj)
    background = data[:3, :3, :3]
    # Rician noise of sigma = 2 % of the mean foreground (100): background is Rayleigh with mean sigma*sqrt(pi/2).
    assert background.mean() == pytest.approx(2.0 * np.sqrt(np.pi / 2), rel=0.35)
    assert first.shape == image.shape and np.allclose(first.affine, image.affine)


def test_covering_ball_and_crop():
    image = _ball_image(radius_mm=6)
    center, radius = covering_ball(image, margin_mm=2.0)
    assert np.allclose(center, 23.5) and 7.5 < radius < 9.0
    crop = crop_around(image, center, 10.0, zoom=2.0)
    assert crop.shape[0] < 15 and crop.header.get_zooms()[0] == pytest.approx(2.0)
