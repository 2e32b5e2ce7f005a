#!/usr/bin/env python
"""Benchmark of template space on bert: registration time per schedule and the warped prior's Dice.

For each template and schedule (``standard``, ``fast``): bert's FreeSurfer
``brain.mgz`` (the T1w, already skull-stripped) is registered to the
template's 2 mm brain with :func:`thalamus_bidsapp.tools.ants.ants_to_template`,
the HOSPA left and right thalamus are warped back onto bert's grid, and the
Dice at probability >= 0.5 with aseg labels 10 / 49 is printed with the
registration and warp times. The README quotes the Dice of the standard
schedule; the test suite asserts >= 0.75 (tests/test_template_space.py).

TemplateFlow files come from ``$TEMPLATEFLOW_HOME``; without one, a home is
built from ``../shared/data/templates`` as the tests do.

Usage::

    python benchmarks/bench_template.py [--schedules standard fast] [--templates MNI152NLin2009cAsym ...]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
DATA = Path(os.environ.get("THALAMUS_TEST_DATA", REPO.parent / "shared" / "data"))


def main() -> None:
    from thalamus_bidsapp.image.prior import clip_probability, prior_sides
    from thalamus_bidsapp.tools.ants import ants_apply_transform, ants_to_template
    from thalamus_bidsapp.tools.templateflow import find_template_files, supported_templates

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schedules", nargs="+", default=["standard", "fast"])
    parser.add_argument("--templates", nargs="+", default=list(supported_templates()))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_template_"))
    if "TEMPLATEFLOW_HOME" not in os.environ:
        from tests.templateflow_home import build_templateflow_home

        os.environ["TEMPLATEFLOW_HOME"] = str(build_templateflow_home(DATA / "templates", work / "templateflow"))
    brain = nib.load(str(DATA / "freesurfer_bert_7.2" / "mri" / "brain.mgz"))
    aseg = np.asarray(nib.load(str(DATA / "freesurfer_bert_7.2" / "mri" / "aseg.mgz")).dataobj)
    t1w = work / "brain.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(brain.dataobj, np.float32), brain.affine), str(t1w))
    print("template schedule register_s warp_s dice_left dice_right")
    for template in args.templates:
        files = find_template_files(template)
        sides = prior_sides(nib.load(str(files.prior)), files.prior_volumes)
        for schedule in args.schedules:
            start = time.perf_counter()
            result = ants_to_template(t1w, files.target, work / "fwd.h5", work / "inv.h5", schedule=schedule)
            registered = time.perf_counter() - start
            dice = []
            start = time.perf_counter()
            for side, label in (("L", 10), ("R", 49)):
                nib.save(sides[side], str(work / f"{side}.nii.gz"))
                warped = ants_apply_transform(work / f"{side}.nii.gz", t1w, result.inverse, work / f"{side}_t1w.nii.gz",
                                              opposite_transform=result.forward)
                prior = clip_probability(nib.load(str(warped))).get_fdata() >= 0.5
                truth = aseg == label
                dice.append(2 * np.logical_and(prior, truth).sum() / (prior.sum() + truth.sum()))
            warp = time.perf_counter() - start
            print(f"{template} {schedule} {registered:.1f} {warp:.1f} {dice[0]:.3f} {dice[1]:.3f}", flush=True)


if __name__ == "__main__":
    main()
