"""Small hostile-image datasets for the fuzz tests, built from bert (../shared/data) at test time.

bert's skull-stripped T1w is cropped around the thalamus (64 x 48 x 64 voxels)
so a run with FreeSurfer-from-an-existing-subject and the deepbet brain mask
takes seconds. Each case writes one BIDS dataset whose sub-01 T1w (or another
input) carries one defect.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

from tests.conftest import REPO_ROOT, shared_file
from tests.foundation.datasets import write_description

HALF_WIDTH = (32, 24, 32)  # voxels each side of bert's thalamus centre (LIA storage)


def cropped_bert(dtype=np.float32) -> nib.Nifti1Image:
    """bert's skull-stripped T1 (brainmask.mgz) cropped around the thalamus, as NIfTI with qform = sform."""
    aseg = nib.load(str(shared_file("freesurfer_bert_7.2", "mri", "aseg.mgz")))
    centre = np.array(np.nonzero(np.isin(np.asanyarray(aseg.dataobj), [10, 49]))).mean(axis=1).round().astype(int)
    img = nib.load(str(shared_file("freesurfer_bert_7.2", "mri", "brainmask.mgz")))
    window = tuple(slice(c - h, c + h) for c, h in zip(centre, HALF_WIDTH))
    data = np.asanyarray(img.dataobj)[window].astype(dtype)
    out = nib.Nifti1Image(data, img.slicer[window].affine)
    out.set_qform(out.affine, code=1)
    out.set_sform(out.affine, code=1)
    return out


def write_dataset(root: Path, t1w: nib.Nifti1Image | None = None, extra: dict[str, nib.Nifti1Image] | None = None,
                  subjects: tuple[str, ...] = ("01",)) -> tuple[Path, Path]:
    """A BIDS dataset (``root/bids``) and a FreeSurfer subjects dir (``root/freesurfer``) holding bert.

    ``t1w`` replaces sub-01's T1w (the other subjects get the clean crop);
    ``extra`` adds images to sub-01/anat by suffix (``{"FLAIR": img}``).
    """
    bids, subjects_dir = root / "bids", root / "freesurfer"
    write_description(bids, "hostile images")
    subjects_dir.mkdir(parents=True, exist_ok=True)
    clean = cropped_bert()
    rows = ["participant_id\tage\tsex"]
    for index, label in enumerate(subjects):
        anat = bids / f"sub-{label}" / "anat"
        anat.mkdir(parents=True, exist_ok=True)
        image = t1w if (t1w is not None and label == subjects[0]) else clean
        save_raw(image, anat / f"sub-{label}_T1w.nii.gz")
        for suffix, img in (extra or {}).items():
            if label == subjects[0]:
                save_raw(img, anat / f"sub-{label}_{suffix}.nii.gz")
        link = subjects_dir / f"sub-{label}"
        if not link.exists():
            link.symlink_to(shared_file("freesurfer_bert_7.2"))
        rows.append(f"sub-{label}\t{30 + index}\tF")
    (bids / "participants.tsv").write_text("\n".join(rows) + "\n")
    return bids, subjects_dir


def save_raw(img: nib.Nifti1Image, path: Path) -> None:
    """Save ``img`` keeping its header's qform/sform exactly as set (no recomputation from the affine)."""
    header = img.header.copy()
    out = nib.Nifti1Image(np.asanyarray(img.dataobj), None, header)
    nib.save(out, str(path))


def with_header(img: nib.Nifti1Image, *, sform=None, qform=None, sform_code=1, qform_code=1) -> nib.Nifti1Image:
    """A copy of ``img`` whose header holds the given sform and qform rows verbatim."""
    header = img.header.copy()
    if qform is not None:
        header.set_qform(qform, code=qform_code)
    else:
        header["qform_code"] = qform_code
    if sform is not None:
        header["srow_x"], header["srow_y"], header["srow_z"] = np.asarray(sform, dtype=float)[:3]
    header["sform_code"] = sform_code
    return nib.Nifti1Image(np.asanyarray(img.dataobj), None, header)


def run_cli(args: list[str], *, env: dict[str, str] | None = None, timeout: float = 600, **popen) -> subprocess.CompletedProcess:
    """``thalamus-bidsapp ARGS`` in a subprocess using this checkout (PYTHONPATH from the environment)."""
    return subprocess.run([sys.executable, "-m", "thalamus_bidsapp", *args], capture_output=True, text=True,
                          env=cli_env(env), timeout=timeout, cwd=popen.pop("cwd", None), **popen)


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env.update({"HF_HUB_OFFLINE": "1", "NIPYPE_NO_ET": "1", "MPLBACKEND": "Agg"})
    env.update(extra or {})
    return env


def derivative_files(out: Path) -> dict[str, bytes]:
    """Every file under the output's sub-* folders and the reports, by relative path (content)."""
    files = {}
    if not out.is_dir():
        return files
    for path in sorted(out.rglob("*")):
        relative = path.relative_to(out)
        if path.is_file() and relative.parts[0].startswith("sub-"):
            files[relative.as_posix()] = path.read_bytes()
    return files


def leftovers(out: Path) -> list[str]:
    """Temporary files, backups or staging folders left in the output dataset."""
    if not out.is_dir():
        return []
    bad = [p for p in out.rglob("*") if ".tmp" in p.name or p.name.endswith(".bak") or p.name == ".thalamus_staging"]
    return sorted(str(p.relative_to(out)) for p in bad)


def sessions_table(out: Path) -> list[dict[str, str]]:
    """Rows of the latest run's logs/<run>/sessions.tsv."""
    runs = sorted(p for p in (out / "logs").iterdir() if p.is_dir())
    lines = (runs[-1] / "sessions.tsv").read_text().splitlines()
    header = lines[0].split("\t")
    return [dict(zip(header, line.split("\t"))) for line in lines[1:]]


def write_json(path: Path, data) -> Path:
    path.write_text(json.dumps(data))
    return path
