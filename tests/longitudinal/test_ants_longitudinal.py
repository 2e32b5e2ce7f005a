"""The antspyx part of the longitudinal mode on small crops of a real T1w: template geometry and SyN Jacobians."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from tests.conftest import shared_file
from tests.longitudinal.simulate import Contraction, covering_ball, crop_around, rescan
from thalamus_bidsapp.image.jacobian import integrate_jacobian, jacobian_determinant, scaling_field
from thalamus_bidsapp.tools import ants_longitudinal as al


@pytest.fixture(scope="module")
def bert_crop():
    """bert's T1 around the thalami (1.5 mm voxels) and its aseg thalamus (10 left, 49 right) on the same grid."""
    t1w = nib.load(str(shared_file("freesurfer_bert_7.2", "mri", "norm.mgz")))
    aseg = nib.load(str(shared_file("freesurfer_bert_7.2", "mri", "aseg.mgz")))
    labels = np.asarray(aseg.dataobj)
    thalamus = nib.Nifti1Image(np.isin(labels, (10, 49)).astype(np.uint8), aseg.affine)
    center, radius = covering_ball(thalamus)
    image = crop_around(nib.Nifti1Image(np.asarray(t1w.dataobj, np.float32), t1w.affine), center, 42.0, zoom=1.5)
    sides = (labels == 10).astype(np.float32) + 2 * (labels == 49)
    side_crop = crop_around(nib.Nifti1Image(sides, aseg.affine), center, 42.0, zoom=1.5)
    return image, np.rint(np.asarray(side_crop.dataobj)).astype(np.uint8), center, radius


def test_mean_rigid_of_opposite_moves_is_identity():
    rng = np.random.default_rng(0)
    from tests.longitudinal.simulate import random_rigid

    move = random_rigid(rng, np.zeros(3))
    assert np.allclose(al.mean_rigid([move, np.linalg.inv(move)]), np.eye(4), atol=0.05)
    assert np.allclose(al.mean_rigid([move, move]), move)


def test_ants_round_trip_keeps_the_geometry(bert_crop):
    image = bert_crop[0]
    back = al.to_nibabel(al.to_ants(image))
    assert np.allclose(back.affine, image.affine, atol=1e-4)
    assert np.array_equal(np.asarray(back.dataobj), np.asarray(image.dataobj))


def test_template_is_halfway_and_recovers_the_move(bert_crop):
    image = bert_crop[0]
    sessions = [rescan(image, seed, bias=0.0, noise=0.0) for seed in (1, 2)]
    template = al.build_template(sessions)
    assert template.image.shape == image.shape
    # Each session's transform composed with the other's inverse is the relative move of the two rescans.
    relative = template.to_session[1] @ np.linalg.inv(template.to_session[0])
    rng1, rng2 = np.random.default_rng(1), np.random.default_rng(2)
    from tests.longitudinal.simulate import random_rigid

    centre = nib.affines.apply_affine(image.affine, (np.asarray(image.shape) - 1) / 2.0)
    move1, move2 = random_rigid(rng1, centre), random_rigid(rng2, centre)
    # rescan k takes the original at move_k^-1(x): template -> session k is move_k @ (template -> original).
    expected = move2 @ np.linalg.inv(move1)
    points = nib.affines.apply_affine(image.affine, np.argwhere(bert_crop[1] > 0)[::50])
    error = np.linalg.norm(nib.affines.apply_affine(relative, points) - nib.affines.apply_affine(expected, points),
                           axis=1)
    assert error.max() < 0.5  # mm, at 1.5 mm voxels
    # Halfway: the two transforms are equally far from the identity.
    angles = [np.degrees(np.arccos(np.clip((np.trace(m[:3, :3]) - 1) / 2, -1, 1))) for m in template.to_session]
    assert abs(angles[0] - angles[1]) < 1.0


@pytest.mark.slow
@pytest.mark.heavy
def test_syn_jacobian_recovers_a_known_contraction(bert_crop):
    image, sides, center, radius = bert_crop
    before = rescan(image, 5, rigid=False)
    after = rescan(image, 6, rigid=False, contraction=Contraction(center, radius, -0.02))
    box = al.box_around(sides, image.header.get_zooms())
    regions = {"left": (1,), "right": (2,), "bilateral": (1, 2)}
    voxel = float(np.prod(image.header.get_zooms()[:3]))
    volumes = []
    for session in (before, after):
        deformation = al.syn_to_template(before.slicer[box], session.slicer[box])
        det = jacobian_determinant(deformation.displacement, deformation.affine_lps)
        volumes.append(integrate_jacobian(det, sides[box], voxel, regions))
    change = 100 * (volumes[1]["bilateral"] / volumes[0]["bilateral"] - 1)
    assert change == pytest.approx(-2.0, abs=0.6)


def test_the_syn_levels_are_about_4_and_2_mm_whatever_the_voxel_size():
    from thalamus_bidsapp.tools.ants_longitudinal import syn_iterations

    assert syn_iterations((1.0, 1.0, 1.0)) == (40, 20, 0)  # shrink 4, 2, 1: 4 mm, 2 mm, none at 1 mm
    assert syn_iterations((1.0, 1.0, 1.2)) == (40, 20, 0)
    assert syn_iterations((2.0, 2.0, 2.0)) == (40, 20)  # shrink 2, 1: 4 mm, 2 mm
    assert syn_iterations((0.5, 0.5, 0.5)) == (40, 20, 0, 0)


def test_leave_one_out_target_is_the_mean_of_the_other_sessions():
    affine = np.diag([1.5, 1.5, 1.5, 1.0])
    boxes = [nib.Nifti1Image(np.full((3, 4, 5), value, np.float32), affine) for value in (1.0, 2.0, 6.0)]
    target = al.leave_one_out(boxes, 0)
    assert np.allclose(target.get_fdata(), 4.0) and np.allclose(target.affine, affine)
    assert np.allclose(al.leave_one_out(boxes[:2], 1).get_fdata(), 1.0)  # two sessions: the other one
    with pytest.raises(ValueError, match="two sessions"):
        al.leave_one_out(boxes[:1], 0)


def test_the_template_is_one_nth_of_the_way_from_the_others_mean_to_the_session():
    # A uniform scaling s from the others' mean to the session is a scaling of ((N - 1) / N) (s - 1) from the
    # template: with two sessions, half of the change; the volumes then give the session-to-session change.
    shape, affine = (20, 20, 20), np.eye(4)
    scale = 0.98
    field = scaling_field(shape, affine, (9.5, 9.5, 9.5), scale)
    labels = np.zeros(shape, np.uint8)
    labels[5:15, 5:15, 5:15] = 1
    for n in (2, 3, 5):
        det = jacobian_determinant(al.template_displacement(field, n), affine)
        linear = 1 + (n - 1) / n * (scale - 1)
        assert np.allclose(det[labels > 0], linear ** 3)
    # Two sessions, the second the first scaled by s: each one's target is the other.
    to_second = jacobian_determinant(al.template_displacement(field, 2), affine)[labels > 0].mean()
    back = scaling_field(shape, affine, (9.5, 9.5, 9.5), 1 / scale)
    to_first = jacobian_determinant(al.template_displacement(back, 2), affine)[labels > 0].mean()
    assert to_second / to_first - 1 == pytest.approx(scale ** 3 - 1, abs=2e-4)
