"""The thread count neither enters a node's hash nor changes a result: reruns with other --nprocs redo nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests.conftest import REPO_ROOT, shared_file
from thalamus_bidsapp.interfaces.images import BrainMask
from thalamus_bidsapp.methods.freesurfer import ReconAll
from thalamus_bidsapp.methods.meshnet import MeshNetThalamus
from thalamus_bidsapp.tools.threads import thread_limits


def _hash(interface, **inputs) -> str:
    """The hash nipype keys a node's cached result with (both of its hash methods agree here)."""
    return interface(**inputs).inputs.get_hashval("content")[1]


@pytest.mark.parametrize("interface, field, extra", [
    (BrainMask, "threads", {}),
    (MeshNetThalamus, "threads", {"model_dir": "model"}),
    (ReconAll, "nthreads", {"subject_id": "sub-01", "subjects_dir": "/tmp"}),
])
def test_thread_count_does_not_enter_the_node_hash(tmp_path, interface, field, extra):
    t1w = tmp_path / "t1w.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4)), str(t1w))
    spec = interface.input_spec().copyable_trait_names()
    file_input = "in_file" if "in_file" in spec else "t1w"
    inputs = {file_input: str(t1w), **{k: v for k, v in extra.items() if k in spec}}
    one = _hash(interface, **inputs, **{field: 1})
    assert one == _hash(interface, **inputs, **{field: 7})
    # ... while a real input still does
    other = tmp_path / "other.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.float32), np.eye(4)), str(other))
    assert one != _hash(interface, **{**inputs, file_input: str(other)}, **{field: 1})


def test_thread_limits_keep_itk_single_threaded():
    with thread_limits(6):
        assert os.environ["OMP_NUM_THREADS"] == "6"
        assert os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] == "1"


def test_meshnet_logits_do_not_depend_on_the_torch_threads():
    """MeshNet's logits, and so its labels, are bit for bit the same with 1 and 2 torch threads: every layer on a
    block of bert (the network is fully convolutional; a small block keeps the test short)."""
    torch = pytest.importorskip("torch")
    from thalamus_bidsapp.tools.meshnet import load_meshnet

    net, _, _ = load_meshnet(shared_file("brainchop", "models", "model30chan18cls"))
    norm = np.asarray(nib.load(str(shared_file("freesurfer_bert_7.2", "mri", "norm.mgz"))).dataobj)
    block = np.ascontiguousarray(norm[96:144, 96:144, 96:144], dtype=np.float32) / 255.0
    previous = torch.get_num_threads()
    logits = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            with torch.inference_mode():
                x = torch.from_numpy(block)[None, None].contiguous(memory_format=torch.channels_last_3d)
                for layer in net.layers:
                    x = layer(x)
            logits.append(x.numpy().copy())
    finally:
        torch.set_num_threads(previous)
    assert np.ptp(logits[0]) > 0  # the block is too small for MeshNet's context to label it; its sums still count
    assert np.array_equal(logits[0], logits[1])


_RIGID = """
import sys, numpy as np
from pathlib import Path
from thalamus_bidsapp.tools.ants import ants_rigid
out = Path(sys.argv[1])
result = ants_rigid(out / "moving.nii.gz", out / "fixed.nii.gz", out / (sys.argv[2] + ".nii.gz"),
                    out / (sys.argv[2] + ".txt"))
np.save(out / (sys.argv[2] + ".npy"), result.fixed_to_moving_ras)
"""


@pytest.mark.slow
def test_ants_rigid_is_identical_on_identical_runs_whatever_the_threads(tmp_path):
    """Two processes, each with the thread limits of a run with 4 threads per step: the same transform."""
    src = nib.load(str(shared_file("ds002748_subset", "sub-01", "anat", "sub-01_T1w.nii.gz")))
    data = src.get_fdata(dtype=np.float32)[::2, ::2, ::2]
    affine = src.affine @ np.diag([2.0, 2.0, 2.0, 1.0])
    nib.save(nib.Nifti1Image(data, affine), str(tmp_path / "fixed.nii.gz"))
    angle = np.deg2rad(4.0)
    rotation = np.eye(4)
    rotation[1:3, 1:3] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    rotation[:3, 3] = [2.0, -3.0, 1.0]
    nib.save(nib.Nifti1Image(np.sqrt(np.abs(data)) * 10, rotation @ affine), str(tmp_path / "moving.nii.gz"))
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    matrices = []
    for run in ("a", "b"):
        with thread_limits(4):
            subprocess.run([sys.executable, "-c", _RIGID, str(tmp_path), run], check=True, timeout=900,
                           env={**env, **{k: os.environ[k] for k in os.environ if k.endswith("THREADS")}})
        matrices.append(np.load(tmp_path / f"{run}.npy"))
    assert np.array_equal(matrices[0], matrices[1])
    assert (tmp_path / "a.txt").read_bytes() == (tmp_path / "b.txt").read_bytes()
    # ... and the registration QC: the registered images, and so their MI with the T1w, are identical too
    from thalamus_bidsapp.image.mutual_information import mutual_information_images

    registered = [nib.load(str(tmp_path / f"{run}.nii.gz")) for run in ("a", "b")]
    assert np.array_equal(registered[0].get_fdata(), registered[1].get_fdata())
    brain = nib.Nifti1Image((data > np.percentile(data, 50)).astype(np.uint8), affine)
    mi = [mutual_information_images(tmp_path / "fixed.nii.gz", image, brain) for image in registered]
    assert mi[0] == mi[1] and mi[0] > 0


def _run(bids: Path, out: Path, work: Path, *more: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run([sys.executable, "-m", "thalamus_bidsapp", str(bids), str(out), "participant",
                             "--methods", "meshnet", "--skip-bids-validation", "-w", str(work), *more],
                            capture_output=True, text=True, env=env, timeout=3600)
    assert result.returncode == 0, result.stderr[-3000:]


def _masks(out: Path) -> dict[str, bytes]:
    anat = out / "sub-01" / "anat"
    return {p.name: np.asarray(nib.load(str(p)).dataobj).tobytes() for p in sorted(anat.glob("*_mask.nii.gz"))}


@pytest.mark.slow
@pytest.mark.heavy
def test_rerun_with_other_nprocs_runs_no_tool_and_identical_runs_agree(tmp_path):
    """Default path (template space, prior, MeshNet) on a real T1w: a rerun with other thread counts reuses
    every step; a second run in a fresh work folder gives the same masks and template transform."""
    from thalamus_bidsapp.bidsio.atomic import read_tsv

    src = shared_file("ds002748_subset", "sub-01", "anat", "sub-01_T1w.nii.gz")
    bids = tmp_path / "bids"
    (bids / "sub-01" / "anat").mkdir(parents=True)
    (bids / "dataset_description.json").write_text('{"Name": "threads", "BIDSVersion": "1.9.0"}')
    (bids / "sub-01" / "anat" / "sub-01_T1w.nii.gz").write_bytes(src.read_bytes())
    _run(bids, tmp_path / "out", tmp_path / "work", "--nprocs", "2", "--omp-nthreads", "2")
    first = _masks(tmp_path / "out")
    assert any("space-MNI152NLin2009cAsym" in name for name in first)
    _run(bids, tmp_path / "out", tmp_path / "work", "--nprocs", "1", "--omp-nthreads", "1")
    timings = read_tsv(sorted((tmp_path / "out" / "logs").glob("*/timings.tsv"))[-1])
    tools = timings[(timings["kind"] == "tool") & timings["session"].notna()]  # the session's steps, not phases
    assert tools.empty, tools
    assert _masks(tmp_path / "out") == first
    _run(bids, tmp_path / "out2", tmp_path / "work2", "--nprocs", "2", "--omp-nthreads", "2")
    assert _masks(tmp_path / "out2") == first  # T1w and template-space masks, voxel for voxel
    # the QC of the registration (the prior it brings: Dice and centroids against it) agrees to the digit
    columns = ["method", "contrast", "check", "value", "status"]
    qc = [read_tsv(out / "sub-01" / "anat" / "sub-01_label-thalamus_desc-segmentation_qc.tsv")[columns]
          for out in (tmp_path / "out", tmp_path / "out2")]
    assert qc[0].equals(qc[1]) and "dice_prior" in set(qc[0]["check"])
