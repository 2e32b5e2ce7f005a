"""Interfaces reading files outside the work folder declare it, so their content digest enters the node's hash."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import nibabel as nib
import numpy as np
from nipype.interfaces.base import BaseInterface

import thalamus_bidsapp.interfaces as interfaces_package
import thalamus_bidsapp.methods as methods_package
from thalamus_bidsapp.interfaces.images import Reorient
from thalamus_bidsapp.methods.freesurfer import FreeSurferThalamus
from thalamus_bidsapp.methods.records import ReadsOutsideFiles


def _interfaces() -> list[type]:
    found = []
    for package in (interfaces_package, methods_package):
        for info in pkgutil.iter_modules(package.__path__):
            module = importlib.import_module(f"{package.__name__}.{info.name}")
            found += [obj for _, obj in inspect.getmembers(module, inspect.isclass)
                      if issubclass(obj, BaseInterface) and obj.__module__ == module.__name__]
    return found


def test_a_content_digest_input_and_the_declaration_go_together():
    interfaces = _interfaces()
    assert len(interfaces) > 10
    for interface in interfaces:
        has_digest = "content_digest" in interface.input_spec().copyable_trait_names()
        declares = issubclass(interface, ReadsOutsideFiles)
        assert has_digest == declares, interface.__name__
        if declares:
            names = set(interface.input_spec().copyable_trait_names())
            assert set(interface.outside_inputs) <= names, interface.__name__


def test_outside_files_are_the_defined_inputs_and_a_subjects_aseg(tmp_path):
    image = tmp_path / "t1w.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((2, 2, 2), np.float32), np.eye(4)), image)
    assert Reorient(in_file=str(image)).outside_files() == [str(image)]
    assert Reorient().outside_files() == []
    subject = tmp_path / "sub"
    (subject / "mri").mkdir(parents=True)
    (subject / "mri" / "aseg.mgz").write_bytes(b"x")
    assert FreeSurferThalamus(subject_dir=str(subject)).outside_files() == [str(subject / "mri" / "aseg.mgz")]
