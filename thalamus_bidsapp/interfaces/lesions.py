"""Lesion masks onto the T1w grid and lesion filling of the T1w, for one session, as nipype nodes.

The lesion mask comes from a derivatives dataset on the T1w grid or on the
FLAIR grid; a FLAIR-grid mask reaches the T1w grid through the FLAIR
registration's selected transform (nearest neighbour). The filled T1w is
what every method that segments the T1w receives (see
:attr:`thalamus_bidsapp.methods.base.SegmentationMethod.consumes_t1w`).
The algorithms are pure functions of ``image/``: lesion_mask, lesion_fill,
tissue_classes, lesion_load.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    InputMultiObject,
    SimpleInterface,
    TraitedSpec,
    isdefined,
    traits,
)

from thalamus_bidsapp.errors import EXIT_DATAERR, ThalamusError
from thalamus_bidsapp.image.lesion_mask import LesionLabels
from thalamus_bidsapp.methods.records import CONTENT_DIGEST_DESC, ReadsOutsideFiles

LOGGER = logging.getLogger(__name__)


def lesion_grid(lesion: nib.spatialimages.SpatialImage, name: str, *, t1w: nib.spatialimages.SpatialImage,
                flair: nib.spatialimages.SpatialImage | None,
                raw_t1w: nib.spatialimages.SpatialImage | None = None) -> str:
    """``"T1w"`` or ``"FLAIR"``: the grid the lesion mask is on (a ``space-FLAIR`` name picks the FLAIR first).

    The T1w grid is the input T1w's (``raw_t1w``) or the reoriented one's (``t1w``).

    Raises
    ------
    ThalamusError
        Exit 65 when the mask is on neither grid (naming the file and the shapes).
    """
    from thalamus_bidsapp.image.grid import same_grid

    on_flair = flair is not None and same_grid(lesion, flair)
    on_t1w = same_grid(lesion, t1w) or (raw_t1w is not None and same_grid(lesion, raw_t1w))
    if on_flair and ("space-FLAIR" in Path(name).name or not on_t1w):
        return "FLAIR"
    if on_t1w:
        return "T1w"
    raise ThalamusError(
        f"lesion mask {name} (shape {lesion.shape[:3]}) is on neither the T1w grid (shape {t1w.shape[:3]})"
        + (f" nor the FLAIR grid (shape {flair.shape[:3]})" if flair is not None else " and the session has no FLAIR")
        + ": it cannot be mapped to the T1w", EXIT_DATAERR)


def needs_flair_transform(lesion_file: Path, raw_t1w: Path, raw_flair: Path) -> bool:
    """Whether the lesion mask is on the FLAIR grid, so that mapping it waits for the FLAIR registration.

    Read from the headers alone, when the workflow is built: a mask on the
    T1w grid does not wait for the registration. A header that cannot be read
    counts as needing it; the node then reads the images and names the problem.
    """
    from nibabel.filebasedimages import ImageFileError

    try:
        lesion, t1w, flair = (nib.load(str(path)) for path in (lesion_file, raw_t1w, raw_flair))
        return lesion_grid(lesion, str(lesion_file), t1w=t1w, flair=flair) == "FLAIR"
    except (ThalamusError, OSError, ValueError, ImageFileError):
        return True


def read_lesion_mask(path: Path, wanted: Sequence[str] = ()) -> tuple[np.ndarray, LesionLabels | None]:
    """The lesion voxels of a mask or dseg file, and a dseg's lesion labels (chosen exactly from its lookup table).

    ``wanted``: the ``--lesion-labels`` (names or index values) of a dseg.
    """
    from thalamus_bidsapp.bidsio.lesion_lookup import lesion_labels
    from thalamus_bidsapp.image.lesion_mask import lesion_voxels
    from thalamus_bidsapp.image.nifti import load_image

    img = load_image(str(path))
    labels = lesion_labels(path, wanted)
    voxels = lesion_voxels(np.asanyarray(img.dataobj), str(path), labels=labels.values if labels else None)
    return voxels, labels


def t1w_to_flair_world(transform: Path, flair: Path, t1w: Path) -> np.ndarray:
    """The registration's selected transform as a world map T1w RAS+ -> FLAIR RAS+, shape (4, 4)."""
    if Path(transform).suffix == ".mat":
        from thalamus_bidsapp.tools.flirt import fsl_matrix_to_ras

        return fsl_matrix_to_ras(transform, flair, t1w)
    from thalamus_bidsapp.tools.ants import read_itk_affine_ras

    return read_itk_affine_ras(transform)


def lesion_on_t1w(lesion_file: Path, t1w_file: Path, *, raw_flair: Path | None = None,
                  flair_transform: Path | None = None, registered_flair_moving: Path | None = None,
                  raw_t1w: Path | None = None, lesion_labels: Sequence[str] = ()) -> tuple[nib.Nifti1Image,
                                                                                          dict[str, Any]]:
    """The lesion mask on the (reoriented) T1w grid (uint8 0/1) and its provenance (with a dseg's labels used).

    ``raw_t1w``: the input T1w before reorientation (a mask on its grid is on the T1w grid).

    ``raw_flair``: the session's FLAIR (its grid identifies a FLAIR-grid
    mask); ``flair_transform`` and ``registered_flair_moving``: the selected
    transform of the FLAIR registration and the FLAIR it moved (reoriented).

    Raises
    ------
    ThalamusError
        Exit 65 for a mask that is not binary, not 3-D, or on a grid that cannot be mapped
        (a FLAIR-grid mask whose FLAIR registration was excluded by the QC rule).
    """
    from thalamus_bidsapp.image.nifti import load_image, new_image
    from thalamus_bidsapp.image.resample import labels_to_grid

    t1w = load_image(str(t1w_file))
    lesion_img = load_image(str(lesion_file))
    voxels, labels = read_lesion_mask(lesion_file, lesion_labels)
    voxels = voxels.astype(np.uint8)
    flair = load_image(str(raw_flair)) if raw_flair is not None else None
    grid = lesion_grid(lesion_img, str(lesion_file), t1w=t1w, flair=flair,
                       raw_t1w=load_image(str(raw_t1w)) if raw_t1w is not None else None)
    source = new_image(voxels, lesion_img.affine)
    provenance: dict[str, Any] = {"LesionMask": str(lesion_file), "LesionMaskGrid": grid}
    if labels is not None:
        provenance |= labels.record()
    if grid == "FLAIR":
        if flair_transform is None or registered_flair_moving is None:
            raise ThalamusError(f"lesion mask {lesion_file} is on the FLAIR grid but the FLAIR registration was "
                                "excluded by its QC rule: the mask cannot be mapped to the T1w", EXIT_DATAERR)
        world = t1w_to_flair_world(flair_transform, registered_flair_moving, t1w_file)
        out = labels_to_grid(source, t1w, world_map=world)
        provenance |= {"Transform": str(flair_transform), "Interpolation": "nearest neighbour"}
    else:
        out = labels_to_grid(source, t1w)
    return new_image(np.asarray(out.dataobj, dtype=np.uint8), t1w.affine), provenance


#: Fraction of a lesion mask's voxels outside the brain mask above which the log warns.
OUTSIDE_BRAIN_WARNING = 0.1


class _LesionMaskInputSpec(BaseInterfaceInputSpec):
    lesion_file = File(exists=True, mandatory=True, desc="lesion mask or dseg from a derivatives dataset")
    t1w = File(exists=True, mandatory=True, desc="reoriented T1w (the output grid)")
    raw_t1w = File(exists=True, desc="the session's T1w before reorientation (its grid is the T1w grid too)")
    raw_flair = File(exists=True, desc="the session's FLAIR, whose grid identifies a FLAIR-grid mask")
    flair_transform = File(exists=True, desc="selected transform of the FLAIR registration (.mat FSL, .txt ITK)")
    flair_moving = File(exists=True, desc="the reoriented FLAIR the registration moved")
    content_digest = traits.Str(desc=CONTENT_DIGEST_DESC)
    lesion_labels = traits.List(traits.Str, desc="--lesion-labels: the lesion labels of a dseg (names or values)")
    brain_mask = File(exists=True, desc="T1w brain mask: the fraction of lesion voxels outside it is recorded")


class _LesionMaskOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="binary lesion mask on the T1w grid")
    provenance_file = File(exists=True, desc="JSON provenance (source, grid, transform, volume)")


class LesionMaskToT1w(ReadsOutsideFiles, SimpleInterface):
    """A derivatives lesion mask checked and brought onto the T1w grid (nearest neighbour)."""

    input_spec = _LesionMaskInputSpec
    output_spec = _LesionMaskOutputSpec
    outside_inputs = ("lesion_file", "raw_flair", "raw_t1w", "t1w")

    def _run_interface(self, runtime):
        from thalamus_bidsapp.image.lesion_load import fraction_outside, lesion_volume_ml

        def optional(name: str) -> Path | None:
            value = getattr(self.inputs, name)
            return Path(value) if isdefined(value) else None

        mask, provenance = lesion_on_t1w(Path(self.inputs.lesion_file), Path(self.inputs.t1w),
                                         raw_flair=optional("raw_flair"), flair_transform=optional("flair_transform"),
                                         registered_flair_moving=optional("flair_moving"), raw_t1w=optional("raw_t1w"),
                                         lesion_labels=list(self.inputs.lesion_labels) if isdefined(self.inputs.lesion_labels) else [])
        data = np.asanyarray(mask.dataobj).astype(bool)
        provenance["LesionVolume_mL"] = lesion_volume_ml(data, mask.affine)
        if not data.any():
            LOGGER.warning("lesion mask %s is empty: nothing is filled", self.inputs.lesion_file)
        if isdefined(self.inputs.brain_mask):
            outside = fraction_outside(data, np.asanyarray(nib.load(self.inputs.brain_mask).dataobj) > 0)
            provenance["LesionFractionOutsideBrainMask"] = None if outside is None else round(outside, 4)
            if outside is not None and outside > OUTSIDE_BRAIN_WARNING:
                LOGGER.warning("lesion mask %s: %.0f %% of its voxels are outside the T1w brain mask (another "
                               "image's grid or a misaligned mask?)", self.inputs.lesion_file, 100 * outside)
        cwd = Path(runtime.cwd)
        nib.save(mask, str(cwd / "lesion_mask.nii.gz"))
        (cwd / "provenance.json").write_text(json.dumps(provenance, indent=2, default=str))
        self._results["out_file"] = str(cwd / "lesion_mask.nii.gz")
        self._results["provenance_file"] = str(cwd / "provenance.json")
        return runtime


class _LesionFillInputSpec(BaseInterfaceInputSpec):
    t1w = File(exists=True, mandatory=True, desc="reoriented T1w")
    lesion_mask = File(exists=True, mandatory=True, desc="binary lesion mask on the T1w grid")
    brain_mask = File(exists=True, mandatory=True, desc="T1w brain mask")
    thalamus_prior = InputMultiObject(File(exists=True), desc="thalamus prior probability maps on the T1w grid")
    thalamus_prior_uris = traits.List(traits.Str, desc="the published prior maps, named in the sidecar")
    lesion_provenance = File(exists=True, desc="provenance of the lesion mask (merged into the sidecar)")
    seed = traits.Int(20161, usedefault=True, desc="seed of the fill's random generator")


class _LesionFillOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="the T1w the methods segment: filled, or the input when nothing was filled")
    filled_file = File(desc="the filled T1w (undefined when the mask is empty)")
    provenance_file = File(exists=True, desc="JSON: LesionFilled, the mask, the method and its figures")


class LesionFill(SimpleInterface):
    """Fill the T1w's lesions from nearby normal-appearing white matter (thalamus from the prior)."""

    input_spec = _LesionFillInputSpec
    output_spec = _LesionFillOutputSpec

    def _run_interface(self, runtime):
        from thalamus_bidsapp.image.lesion_fill import fill_lesions
        from thalamus_bidsapp.image.nifti import float32_like, load_image

        cwd = Path(runtime.cwd)
        t1w = load_image(self.inputs.t1w)
        lesion = np.asanyarray(load_image(self.inputs.lesion_mask).dataobj) > 0
        provenance: dict[str, Any] = {}
        if isdefined(self.inputs.lesion_provenance):
            provenance.update(json.loads(Path(self.inputs.lesion_provenance).read_text()))
        prior = self._thalamus_prior()
        named = self.inputs.thalamus_prior_uris if isdefined(self.inputs.thalamus_prior_uris) else []
        provenance["ThalamusPrior"] = (list(named) or list(self.inputs.thalamus_prior)) if prior is not None else None
        if prior is not None:
            provenance["ThalamusPriorThreshold"] = 0.5
        if not lesion.any():
            provenance |= {"LesionFilled": False, "Reason": "empty lesion mask"}
            self._results["out_file"] = self.inputs.t1w
        else:
            brain = np.asanyarray(load_image(self.inputs.brain_mask).dataobj) > 0
            zooms = tuple(float(z) for z in np.sqrt((t1w.affine[:3, :3] ** 2).sum(axis=0)))
            result = fill_lesions(t1w.get_fdata(dtype=np.float32), lesion, brain, zooms, thalamus=prior,
                                  seed=self.inputs.seed)
            nib.save(float32_like(result.image, t1w), str(cwd / "t1w_lesionfilled.nii.gz"))
            provenance |= {"LesionFilled": True, **result.provenance()}
            if prior is None:
                provenance["ThalamusPriorNote"] = ("no thalamus prior: lesions surrounded by grey matter filled from "
                                                   "it, every other lesion voxel from the white matter")
            if result.fallback:
                LOGGER.warning("lesion filling of %s: %s", self.inputs.t1w, result.thalamus_fill_reason)
            self._results["out_file"] = self._results["filled_file"] = str(cwd / "t1w_lesionfilled.nii.gz")
        (cwd / "provenance.json").write_text(json.dumps(provenance, indent=2, default=str))
        self._results["provenance_file"] = str(cwd / "provenance.json")
        return runtime

    def _thalamus_prior(self) -> np.ndarray | None:
        """The prior maps (left, right) as one thalamus mask at probability >= 0.5 (image.prior), or None."""
        from thalamus_bidsapp.image.prior import DEFAULT_PRIOR_THRESHOLD, prior_mask

        if not isdefined(self.inputs.thalamus_prior) or not self.inputs.thalamus_prior:
            return None
        maps = [nib.load(path) for path in self.inputs.thalamus_prior]
        left, right = (maps[0], maps[-1])
        return np.asanyarray(prior_mask(left, right, threshold=DEFAULT_PRIOR_THRESHOLD).dataobj) > 0


class _SuffixRecordsInputSpec(BaseInterfaceInputSpec):
    record_files = InputMultiObject(File(exists=True), desc="mask records of the run on the unfilled T1w")
    suffix = traits.Str(mandatory=True, desc="appended to each record's method (the desc of its mask)")


class _SuffixRecordsOutputSpec(TraitedSpec):
    record_files = traits.List(File(exists=True), desc="the records, renamed")


class SuffixRecords(SimpleInterface):
    """Rename the masks of the run on the unfilled T1w: ``desc-<mask>`` -> ``desc-<mask>Unfilled``."""

    input_spec = _SuffixRecordsInputSpec
    output_spec = _SuffixRecordsOutputSpec

    def _run_interface(self, runtime):
        out = []
        for index, path in enumerate(self.inputs.record_files if isdefined(self.inputs.record_files) else []):
            record = json.loads(Path(path).read_text())
            record["method"] = f"{record['method']}{self.inputs.suffix}"
            record["provenance"] = {**record.get("provenance", {}), "LesionFilled": False,
                                    "LesionFilling": "made on the unfilled T1w (--lesion-filling both)"}
            target = Path(runtime.cwd) / f"record_{index}_{record['method']}.json"
            target.write_text(json.dumps(record, indent=2, default=str))
            out.append(str(target))
        self._results["record_files"] = out
        return runtime
