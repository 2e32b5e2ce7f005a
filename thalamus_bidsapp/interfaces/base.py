"""What the app's nipype interfaces share: loading images and saving results in the node's folder."""

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
