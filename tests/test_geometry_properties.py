"""Property tests of the image operations over random valid affines.

Rotations, shears, flips and anisotropic voxels: the volume of a mask is
``n * |det|`` of the affine used (never the product of the header zooms), and
survives reorientation and a save/load round trip; reorientation keeps every
voxel at its world position; a mask survives the trip to FreeSurfer's
conformed space and back.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from thalamus_bidsapp.image.conform import conform, labels_to_native
from thalamus_bidsapp.image.geometry import header_geometry, is_invertible, voxel_volume_mm3
from thalamus_bidsapp.image.masks import mask_volume
from thalamus_bidsapp.image.nifti import new_image
from thalamus_bidsapp.image.reorient import reorient_to_ras

_unit = st.floats(-1.0, 1.0, allow_nan=False)


@st.composite
def affines(draw, max_shear: float = 0.3, zooms=(0.6, 2.5)) -> np.ndarray:
    """A voxel-to-world affine: rotation x shear x (anisotropic voxel sizes with flips) + translation."""
    quaternion = np.array([draw(_unit) for _ in range(4)])
    if np.linalg.norm(quaternion) < 1e-3:
        quaternion = np.array([1.0, 0.0, 0.0, 0.0])
    rotation = nib.quaternions.quat2mat(quaternion / np.linalg.norm(quaternion))
    shear = np.eye(3)
    shear[0, 1], shear[0, 2], shear[1, 2] = (draw(st.floats(-max_shear, max_shear)) for _ in range(3))
    sizes = np.array([draw(st.floats(*zooms)) for _ in range(3)])
    flips = np.array([draw(st.sampled_from([-1.0, 1.0])) for _ in range(3)])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ shear @ np.diag(sizes * flips)
    affine[:3, 3] = [draw(st.floats(-100, 100)) for _ in range(3)]
    return affine


@st.composite
def masks(draw, affine_strategy=None) -> nib.Nifti1Image:
    """A random binary mask (blocks of ones) on a small grid with a random affine."""
    affine = draw(affine_strategy or affines())
    shape = tuple(draw(st.integers(4, 12)) for _ in range(3))
    seed = draw(st.integers(0, 2**32 - 1))
    data = (np.random.default_rng(seed).random(shape) < draw(st.floats(0.05, 0.9))).astype(np.uint8)
    return new_image(data, affine)


@settings(max_examples=150, deadline=None)
@given(masks())
def test_volume_is_count_times_abs_det(mask):
    n = int(np.count_nonzero(np.asanyarray(mask.dataobj)))
    expected = n * abs(np.linalg.det(mask.affine[:3, :3]))
    volume = mask_volume(mask)
    assert volume["n_voxels"] == n
    assert np.isclose(volume["volume_mm3"], expected, rtol=1e-9, atol=1e-9)
    assert np.isclose(volume["volume_ml"], expected / 1000.0, rtol=1e-9, atol=1e-12)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mask=masks())
def test_volume_uses_the_sform_after_a_save_and_load(tmp_path, mask):
    # A sheared sform cannot be stored in the qform (nibabel strips the shear there), so the two disagree;
    # the volume follows the sform, which is what every reader uses.
    path = tmp_path / "mask.nii.gz"
    nib.save(mask, str(path))
    loaded = nib.load(str(path))
    n = int(np.count_nonzero(np.asanyarray(loaded.dataobj)))
    assert np.isclose(mask_volume(loaded)["volume_mm3"], n * voxel_volume_mm3(mask.affine), rtol=1e-5)
    geometry = header_geometry(loaded)
    assert geometry.used == "sform"
    assert np.isclose(geometry.voxel_mm3, voxel_volume_mm3(mask.affine), rtol=1e-5)


def test_sheared_sform_volume_differs_from_zooms():
    # The case: the product of the zooms overstates a sheared voxel.
    affine = np.eye(4)
    affine[:3, :3] = [[1.0, 0.5, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    img = new_image(np.ones((4, 4, 4), np.uint8), affine)
    assert np.prod(img.header.get_zooms()) > 1.1
    assert np.isclose(mask_volume(img)["volume_mm3"], 64.0)


@settings(max_examples=100, deadline=None)
@given(masks())
def test_reorientation_keeps_world_positions_and_volume(mask):
    out, record = reorient_to_ras(mask)
    assert record["orientation"] == "RAS"
    data, new = np.asanyarray(mask.dataobj), np.asanyarray(out.dataobj)
    voxels = np.indices(data.shape).reshape(3, -1).T
    world = nib.affines.apply_affine(mask.affine, voxels)
    new_voxels = nib.affines.apply_affine(np.linalg.inv(out.affine), world)
    assert np.allclose(new_voxels, np.rint(new_voxels), atol=1e-4)  # voxel centres land on voxel centres
    new_voxels = np.rint(new_voxels).astype(int)
    assert np.array_equal(data[tuple(voxels.T)], new[tuple(new_voxels.T)])
    assert np.allclose(nib.affines.apply_affine(np.array(record["voxel_transform"]), voxels), new_voxels)
    assert np.isclose(mask_volume(out)["volume_mm3"], mask_volume(mask)["volume_mm3"], rtol=1e-9)


@settings(max_examples=100, deadline=None)
@given(affines())
def test_valid_affines_are_invertible(affine):
    assert is_invertible(affine)
    singular = affine.copy()
    singular[:3, 2] = 0.0
    assert not is_invertible(singular)
    singular[:3, 2] = singular[:3, 0] * 2.0  # two voxel axes along one world direction
    assert not is_invertible(singular)


@settings(max_examples=8, deadline=None)
@given(affines(max_shear=0.15, zooms=(1.0, 2.0)), st.floats(10.0, 16.0))
def test_ball_mask_survives_the_round_trip_to_conformed_space(affine, radius_mm):
    # A ball of radius 10-16 mm on a grid of 1-2 mm voxels, centred in the grid.
    shape = (36, 36, 36)
    voxels = np.indices(shape).reshape(3, -1).T
    centre = nib.affines.apply_affine(affine, (np.array(shape) - 1) / 2.0)
    world = nib.affines.apply_affine(affine, voxels)
    data = (np.linalg.norm(world - centre, axis=1) <= radius_mm).reshape(shape).astype(np.uint8)
    native = new_image(data, affine)
    back = labels_to_native(conform(native, order=0, rescale=False), native)
    assert back.shape == native.shape and np.allclose(back.affine, native.affine)
    result = np.asanyarray(back.dataobj) > 0
    dice = 2 * np.count_nonzero(result & (data > 0)) / (np.count_nonzero(result) + np.count_nonzero(data))
    assert dice > 0.93
    assert abs(mask_volume(back)["volume_mm3"] / mask_volume(native)["volume_mm3"] - 1) < 0.1
