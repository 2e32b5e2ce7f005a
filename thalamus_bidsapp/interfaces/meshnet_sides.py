"""Left and right thalamus for MeshNet: the 18-class bilateral mask split by the 104-class model.

brainchop's 18-class ``model30chan18cls`` has one bilateral Thalamus class
(the better bilateral mask); its 104-class FreeSurfer model
``model21_104class`` has Left- and Right-Thalamus-Proper. Both run on the same
conformed volume with the same crop and slab-by-slab last layer
(:mod:`thalamus_bidsapp.interfaces.meshnet`); each voxel of the bilateral mask
takes the side of the nearer 104-class thalamus label.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from thalamus_bidsapp.errors import EXIT_DATAERR, ThalamusError
from thalamus_bidsapp.image.conform import labels_to_native
from thalamus_bidsapp.image.sides import check_sides_match, split_by_nearest
from thalamus_bidsapp.interfaces.meshnet import SIDES_MODEL, label_conformed, model_spec, segment_conformed


def segment_thalamus_sides(
    t1w: nib.Nifti1Image,
    model_dir: Path | None = None,
    sides_model_dir: Path | None = None,
    *,
    crop: bool = True,
    threads: int | None = None,
    model: str | None = None,
    sides_model: str = SIDES_MODEL,
) -> tuple[nib.Nifti1Image, np.ndarray, dict[str, Any]]:
    """The bilateral mask of :func:`~thalamus_bidsapp.interfaces.meshnet.segment_thalamus` and its sides.

    The bilateral mask is unchanged; each of its voxels takes the side of the
    nearer left or right thalamus class of ``sides_model``, run on the same
    conformed volume and crop. Nearness is Euclidean distance on the 1 mm
    conformed grid; the side map is brought onto the native grid by the same
    nearest neighbour mapping as the mask, so their voxels coincide.

    Parameters
    ----------
    t1w
        T1-weighted image, 3D, any grid and orientation.
    model_dir, sides_model_dir
        Folders of the bilateral and the sides model (None: their environment
        variable, then the user cache; see :func:`~thalamus_bidsapp.interfaces.meshnet.resolve_model_dir`).
    crop, threads, model
        As for :func:`~thalamus_bidsapp.interfaces.meshnet.segment_thalamus`.
    sides_model
        Pinned model with one left and one right thalamus class.

    Returns
    -------
    tuple
        ``(mask, sides, provenance)``: ``sides`` is uint8 on the native grid,
        0 outside the mask, 1 left, 2 right; the provenance gains ``Sides``.
    """
    result = segment_conformed(t1w, model_dir, crop=crop, threads=threads, model=model)
    run = label_conformed(np.asarray(result.conformed.dataobj), sides_model_dir, model_spec(sides_model),
                          crop=crop, threads=threads)
    if len(run.indices) != 2:
        raise ThalamusError(f"MeshNet model {run.spec.name} does not have one left and one right thalamus class",
                            EXIT_DATAERR)
    left, right = (run.labels == index for index in run.indices)
    conformed = result.conformed
    conformed_sides = split_by_nearest(result.thalamus, left, right, zooms=conformed.header.get_zooms()[:3],
                                       affine=conformed.affine)
    sides = np.asarray(labels_to_native(nib.Nifti1Image(conformed_sides, conformed.affine), t1w,
                                        dtype=np.uint8).dataobj)
    check_sides_match(np.asarray(result.mask.dataobj), sides)
    provenance = dict(result.provenance)
    provenance["Sides"] = {
        "Model": run.spec.name,
        "ModelSource": f"{run.spec.source} (commit {run.spec.commit}, {run.spec.licence} licence)",
        "ModelURL": run.spec.url_base,
        "ModelSha256": dict(run.checksums),
        "LeftClass": run.class_names[run.indices[0]],
        "RightClass": run.class_names[run.indices[1]],
        "ClassIndex": [int(i) for i in run.indices],
        "Rule": "each voxel of the bilateral mask takes the side of the nearer left or right thalamus class "
                "(Euclidean distance on the conformed 1 mm grid); same conform, crop and argmax",
        "NetworkSeconds": round(run.network_s, 2),
    }
    return result.mask, sides, provenance
