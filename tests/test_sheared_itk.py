"""A sheared T1w (qform and sform differ, the sform has shear): every ANTs step gets a grid ITK can read."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from tests.conftest import REPO_ROOT, shared_file
from thalamus_bidsapp.bidsio.atomic import read_tsv
from thalamus_bidsapp.image.orthonormal import is_orthonormal, orthonormal_grid, resample_affine
from thalamus_bidsapp.tools.ants import itk_readable

SHEAR = np.array([[1.0, 0.25, 0.0], [0.0, 1.0, 0.1], [0.0, 0.0, 1.0]])


def _sheared(img: nib.Nifti1Image) -> nib.Nifti1Image:
    """The sform sheared; the qform keeps the original (orthonormal) geometry, so the two disagree."""
    sform = img.affine.copy()
    sform[:3, :3] = sform[:3, :3] @ SHEAR
    out = nib.Nifti1Image(np.asarray(img.dataobj, dtype=np.float32), sform)
    out.set_qform(img.affine, code=1)
    out.set_sform(sform, code=1)
    return out


def _small_t1w() -> nib.Nifti1Image:
    src = nib.load(str(shared_file("ds002748_subset", "sub-01", "anat", "sub-01_T1w.nii.gz")))
    data = src.get_fdata(dtype=np.float32)[::3, ::3, ::3]
    return nib.Nifti1Image(data, src.affine @ np.diag([3.0, 3.0, 3.0, 1.0]))


def test_orthonormal_grid_covers_the_sheared_field_of_view(tmp_path):
    sheared = _sheared(_small_t1w())
    assert not is_orthonormal(sheared.affine) and is_orthonormal(_small_t1w().affine)
    shape, affine = orthonormal_grid(sheared.shape, sheared.affine)
    assert is_orthonormal(affine)
    # every voxel centre of the sheared grid lies inside the new grid
    corners = np.array(np.meshgrid(*[(0, n - 1) for n in sheared.shape], indexing="ij")).reshape(3, -1).T
    world = corners @ sheared.affine[:3, :3].T + sheared.affine[:3, 3]
    index = (world - affine[:3, 3]) @ np.linalg.inv(affine[:3, :3]).T
    assert index.min() > -1e-6 and np.all(index.max(axis=0) <= np.array(shape) - 1 + 1e-6)
    # there and back keeps the image (linear interpolation, away from the edges)
    proxy = resample_affine(sheared, shape, affine, order=1)
    back = resample_affine(proxy, sheared.shape, sheared.affine, order=1).get_fdata()
    original = sheared.get_fdata()
    inner = (slice(3, -3),) * 3
    error = np.abs(back[inner] - original[inner])
    assert np.median(error) < 0.05 * np.percentile(original[original > 0], 50)


def test_itk_reads_the_copy_of_a_sheared_image(tmp_path):
    import ants

    path = tmp_path / "sub-01_desc-preproc_T1w.nii.gz"
    sheared = _sheared(_small_t1w())
    # as the app writes the reoriented T1w: the sform only (ITK would otherwise fall back to the qform,
    # another geometry than the one the app uses)
    nib.save(nib.Nifti1Image(sheared.get_fdata(dtype=np.float32), sheared.affine), str(path))
    with pytest.raises(Exception, match="orthonormal"):
        ants.image_read(str(path))  # ITK refuses the sheared sform: the failure at masks_to_template
    readable = itk_readable(path, tmp_path)
    assert readable != path and ants.image_read(str(readable)).dimension == 3
    clean = tmp_path / "clean.nii.gz"
    nib.save(_small_t1w(), str(clean))
    assert itk_readable(clean, tmp_path) == clean  # an orthonormal grid is used as it is


@pytest.mark.slow
@pytest.mark.heavy
def test_sheared_t1w_through_the_default_path(tmp_path):
    """Real T1w with a sheared sform, the default path (template space, prior, MeshNet): exit 0, volume
    n x |det(A)|, template-space masks written."""
    src = nib.load(str(shared_file("ds002748_subset", "sub-01", "anat", "sub-01_T1w.nii.gz")))
    bids = tmp_path / "bids"
    anat = bids / "sub-01" / "anat"
    anat.mkdir(parents=True)
    (bids / "dataset_description.json").write_text(json.dumps({"Name": "sheared", "BIDSVersion": "1.9.0"}))
    sheared = _sheared(src)
    nib.save(sheared, str(anat / "sub-01_T1w.nii.gz"))
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run([sys.executable, "-m", "thalamus_bidsapp", str(bids), str(out), "participant",
                             "--methods", "meshnet", "--skip-bids-validation", "-w", str(tmp_path / "work")],
                            capture_output=True, text=True, env=env, timeout=3600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "orthonormal direction cosines" not in result.stderr
    volumes = read_tsv(out / "sub-01" / "anat" / "sub-01_label-thalamus_volumes.tsv")
    det = abs(np.linalg.det(sheared.header.get_sform()[:3, :3]))
    row = volumes[volumes["method"] == "meshnet"].iloc[0]
    assert row["volume_mm3"] == pytest.approx(row["n_voxels"] * det, rel=1e-6)
    assert list((out / "sub-01" / "anat").glob("*space-MNI152NLin2009cAsym*label-thalamus*_mask.nii.gz"))
