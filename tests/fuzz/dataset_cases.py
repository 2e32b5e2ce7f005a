"""Hostile datasets and output folders for the fuzz corpus, built at test time from ../shared/data.

Images are bert's (FreeSurfer sample subject) T1w and aseg cropped around
the thalamus, so a participant run takes seconds of compute; FreeSurfer's
thalamus comes from bert's finished subject through ``--fs-subjects-dir``.
The group-level cases get a participant output dataset written directly
(masks from bert's FreeSurfer 7.2 and 6.0 asegs, volumes from those masks),
named by the app's own derivative patterns.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from tests.conftest import REPO_ROOT, shared_file
from thalamus_bidsapp.bidsio.atomic import write_tsv
from thalamus_bidsapp.bidsio.derivatives import derivative_path, write_dataset_description
from thalamus_bidsapp.image.masks import mask_volume

HALF_WIDTH = (48, 30, 48)  # voxels each side of bert's thalamus centre (LIA storage): 96 x 60 x 96
MASK_HALF_WIDTH = (20, 14, 20)


@functools.lru_cache(maxsize=1)
def _thalamus_centre() -> tuple[int, ...]:
    aseg = nib.load(str(shared_file("freesurfer_bert_7.2", "mri", "aseg.mgz")))
    centre = np.array(np.nonzero(np.isin(np.asanyarray(aseg.dataobj), [10, 49]))).mean(axis=1)
    return tuple(int(c) for c in centre.round())


def _crop(path: Path, half_width: tuple[int, ...], dtype) -> nib.Nifti1Image:
    img = nib.load(str(path))
    window = tuple(slice(c - h, c + h) for c, h in zip(_thalamus_centre(), half_width))
    return nib.Nifti1Image(np.asanyarray(img.dataobj)[window].astype(dtype), img.slicer[window].affine)


@functools.lru_cache(maxsize=1)
def cropped_t1w() -> nib.Nifti1Image:
    """bert's skull-stripped T1 cropped around the thalamus (96 x 60 x 96, float32)."""
    return _crop(shared_file("freesurfer_bert_7.2", "mri", "brainmask.mgz"), HALF_WIDTH, np.float32)


@functools.lru_cache(maxsize=2)
def thalamus_mask(version: str = "7.2") -> nib.Nifti1Image:
    """bert's aseg thalamus (labels 10 and 49) of FreeSurfer ``version``, cropped small (uint8)."""
    aseg = _crop(shared_file(f"freesurfer_bert_{version}", "mri", "aseg.mgz"), MASK_HALF_WIDTH, np.int16)
    return nib.Nifti1Image(np.isin(np.asanyarray(aseg.dataobj), [10, 49]).astype(np.uint8), aseg.affine)


def write_description(root: Path, name: str = "fuzz") -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text(json.dumps({"Name": name, "BIDSVersion": "1.10.0"}))


def add_t1w(bids: Path, subject: str, session: str | None = None, *, run: int | None = None,
            extension: str = ".nii.gz") -> Path:
    """Write the cropped T1w as ``sub-<subject>[_ses-<session>][_run-<run>]_T1w``; returns its path."""
    folder = bids / f"sub-{subject}" / (f"ses-{session}" if session else "") / "anat"
    folder.mkdir(parents=True, exist_ok=True)
    name = f"sub-{subject}" + (f"_ses-{session}" if session else "") + (f"_run-{run}" if run else "") + "_T1w"
    path = folder / (name + extension)
    nib.save(cropped_t1w(), str(path))
    return path


def make_dataset(root: Path, subjects: tuple[str, ...] = ("01",), *, participants: bool = True) -> tuple[Path, Path]:
    """A BIDS dataset at ``root`` (one cropped T1w per subject) and a FreeSurfer subjects dir beside it."""
    write_description(root)
    for subject in subjects:
        add_t1w(root, subject)
    if participants:
        rows = ["participant_id\tage\tsex"] + [f"sub-{s}\t{30 + i}\tF" for i, s in enumerate(subjects)]
        (root / "participants.tsv").write_text("\n".join(rows) + "\n")
    return root, fs_subjects_dir(root.parent / f"{root.name}_freesurfer", subjects)


def fs_subjects_dir(folder: Path, subjects: tuple[str, ...]) -> Path:
    """A SUBJECTS_DIR where each subject is bert's finished FreeSurfer 7.2 subject (a link)."""
    folder.mkdir(parents=True, exist_ok=True)
    for subject in subjects:
        link = folder / f"sub-{subject}"
        if not link.exists():
            link.symlink_to(shared_file("freesurfer_bert_7.2"))
    return folder


def write_participant_outputs(out: Path, bids: Path, sessions: dict[tuple[str, str | None], str],
                              *, run_id: str = "20260101-000000_fuzz0000") -> dict[tuple[str, str | None], dict]:
    """An output dataset as the participant level writes it, without running it.

    ``sessions`` maps (subject, session or None) to the latest status recorded
    in ``logs/<run_id>/sessions.tsv`` (``ok``, ``failed``, ``running``).
    Each session gets a ``freesurfer`` mask (bert, FS 7.2) and a ``first``
    mask (bert, FS 6.0) and the volumes table of both. Returns the paths
    written per session.
    """
    write_dataset_description(out, bids, {})
    written = {}
    rows = []
    for (subject, session), status in sessions.items():
        ents = {"subject": subject, "session": session, "datatype": "anat"}
        files, volume_rows = {}, []
        for method, version in (("freesurfer", "7.2"), ("first", "6.0")):
            mask = thalamus_mask(version)
            path = derivative_path(out, {**ents, "space": "T1w", "label": "thalamus", "desc": method,
                                         "suffix": "mask", "extension": ".nii.gz"})
            path.parent.mkdir(parents=True, exist_ok=True)
            nib.save(mask, str(path))
            files[method] = path
            volume_rows.append({"method": method, "contrast": "T1w", **mask_volume(mask), "icv_ml": 1500.0,
                                "icv_source": "test"})
        volumes = derivative_path(out, {**ents, "label": "thalamus", "suffix": "volumes", "extension": ".tsv"})
        write_tsv(pd.DataFrame(volume_rows), volumes)
        files["volumes"] = volumes
        written[(subject, session)] = files
        rows.append({"session": f"sub-{subject}" + (f"_ses-{session}" if session else ""), "status": status,
                     "reason": "" if status == "ok" else f"test: {status}"})
    log_dir = out / "logs" / run_id
    write_tsv(pd.DataFrame(rows, columns=["session", "status", "reason"]), log_dir / "sessions.tsv")
    return written


def tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (links followed), with each folder listed, by relative path."""
    digests = {}
    for path in sorted(Path(root).rglob("*")):
        key = path.relative_to(root).as_posix()
        if path.is_file():
            digests[key] = hashlib.sha256(path.read_bytes()).hexdigest()
        elif path.is_dir():
            digests[key + "/"] = "dir"
    return digests


@dataclass
class Result:
    code: int
    console: str


def run_app(*args: str | os.PathLike, cwd: Path | None = None, timeout: float = 900) -> Result:
    """``python -m thalamus_bidsapp ARGS`` in a subprocess, as a user runs it; console = stdout + stderr."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("NIPYPE_NO_ET", "1")
    env.setdefault("MPLBACKEND", "Agg")
    proc = subprocess.run([sys.executable, "-m", "thalamus_bidsapp", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
    return Result(proc.returncode, proc.stdout + proc.stderr)


def start_app(*args: str | os.PathLike, log: Path) -> subprocess.Popen:
    """Start ``python -m thalamus_bidsapp ARGS`` in the background, its console going to ``log``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])])
    handle = open(log, "w")  # noqa: SIM115 - closed by the caller through wait_app
    proc = subprocess.Popen([sys.executable, "-m", "thalamus_bidsapp", *map(str, args)], env=env,
                            stdout=handle, stderr=subprocess.STDOUT)
    proc.log_handle = handle  # type: ignore[attr-defined]
    return proc


def wait_app(proc: subprocess.Popen, log: Path, timeout: float = 900) -> Result:
    code = proc.wait(timeout=timeout)
    proc.log_handle.close()  # type: ignore[attr-defined]
    return Result(code, Path(log).read_text())
