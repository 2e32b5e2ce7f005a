"""What the app's nipype interfaces share: the files a node reads, and saving results in its folder."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import nibabel as nib
from nipype.interfaces.base import (
    isdefined,
)

LOGGER = logging.getLogger(__name__)


def read_files(node_inputs) -> list[str]:
    """The files outside the work folder that a node with these inputs reads, known before it runs."""
    names = {"in_file", "t1w", "t2w", "lesion_file", "raw_flair", "raw_t1w"}
    files = [getattr(node_inputs, name) for name in sorted(names & set(node_inputs.copyable_trait_names()))]
    files = [f for f in files if isdefined(f)]
    subject_dir = getattr(node_inputs, "subject_dir", None)
    if subject_dir is not None and isdefined(subject_dir):
        # What thalamus_from_subject reads of a finished FreeSurfer subject.
        files += [str(p) for p in (Path(subject_dir) / "mri" / "aseg.mgz", Path(subject_dir) / "stats" / "aseg.stats")
                  if p.is_file()]
    return files


def load_image_file(path: str) -> nib.spatialimages.SpatialImage:
    from thalamus_bidsapp.image.nifti import load_image

    return load_image(path)


def nifti_extension(path: str) -> str:
    name = Path(path).name
    return ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix


def node_file(name: str) -> str:
    return os.path.abspath(name)


def save_image(img: nib.spatialimages.SpatialImage, name: str) -> str:
    """Save ``img`` in the node's folder; return its absolute path."""
    path = node_file(name)
    nib.save(img, path)
    return path


def save_json(data: dict, name: str) -> str:
    """Save ``data`` as JSON in the node's folder; return its absolute path."""
    path = node_file(name)
    Path(path).write_text(json.dumps(data, indent=2, default=str))
    return path


def defined_or_none(value):
    """A nipype input's value, or None where it was left undefined."""
    return value if isdefined(value) else None
