"""Small real BIDS datasets built in temporary folders from ../shared/data."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import nibabel as nib
import numpy as np

from tests.conftest import shared_file

BERT_THALAMUS_VOXELS = 8431 + 8629  # aseg labels 10 and 49 of freesurfer_bert_7.2


def write_description(root: Path, name: str) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text(json.dumps({"Name": name, "BIDSVersion": "1.10.0"}))


def bert_t1w() -> nib.Nifti1Image:
    """bert's conformed, skull-stripped T1 (brainmask.mgz) as a NIfTI image."""
    img = nib.load(str(shared_file("freesurfer_bert_7.2", "mri", "brainmask.mgz")))
    return nib.Nifti1Image(np.asanyarray(img.dataobj).astype(np.uint8), img.affine)


def make_bert_dataset(root: Path, subjects: tuple[str, ...] = ("01",)) -> tuple[Path, Path]:
    """A BIDS dataset whose subjects are bert, and a subjects dir holding bert as each of them."""
    bids, subjects_dir = root / "bids", root / "freesurfer"
    write_description(bids, "bert")
    subjects_dir.mkdir(parents=True)
    rows = ["participant_id\tage\tsex"]
    for index, label in enumerate(subjects):
        anat = bids / f"sub-{label}" / "anat"
        anat.mkdir(parents=True)
        nib.save(bert_t1w(), str(anat / f"sub-{label}_T1w.nii.gz"))
        (subjects_dir / f"sub-{label}").symlink_to(shared_file("freesurfer_bert_7.2"))
        rows.append(f"sub-{label}\t{30 + index}\tM")
    (bids / "participants.tsv").write_text("\n".join(rows) + "\n")
    return bids, subjects_dir


def tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (following links), by relative path."""
    digests = {}
    for path in sorted(Path(root).rglob("*")):
        if path.is_file():
            digests[path.relative_to(root).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digests


def make_read_only(root: Path) -> None:
    for path in [root, *root.rglob("*")]:
        if not path.is_symlink():
            path.chmod(path.stat().st_mode & ~0o222)


def make_writable(root: Path) -> None:
    for path in [root, *root.rglob("*")]:
        if not path.is_symlink():
            path.chmod(path.stat().st_mode | 0o200)
