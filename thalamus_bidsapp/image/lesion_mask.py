"""Reading a lesion mask: binary voxels out, or a clear reason why the file is not a lesion mask."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from thalamus_bidsapp.errors import EXIT_DATAERR, ThalamusError


def lesion_voxels(data: np.ndarray, name: str, *, labels: Iterable[int] | None = None) -> np.ndarray:
    """The lesion voxels of a mask (``labels`` None) or of a label map (the voxels of ``labels``).

    Parameters
    ----------
    data
        The file's voxel values, shape (X, Y, Z) (a trailing axis of length 1 is dropped).
    name
        The file, named in every error.
    labels
        Lesion label values of a segmentation (``dseg``); None for a binary mask.

    Returns
    -------
    Boolean array, shape (X, Y, Z); it may be empty (the caller warns).

    Raises
    ------
    ThalamusError
        Exit 65: not 3-D, non-finite values, or a mask with values other than 0 and 1
        (a probability map must be thresholded by the tool that made it).
    """
    data = np.asanyarray(data)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise ThalamusError(f"lesion mask {name} is not a 3-D image (shape {data.shape})", EXIT_DATAERR)
    if np.issubdtype(data.dtype, np.floating) and not np.isfinite(data).all():
        raise ThalamusError(f"lesion mask {name} holds NaN or infinite values", EXIT_DATAERR)
    if labels is not None:
        return np.isin(np.rint(data).astype(np.int64), list(labels))
    values = np.unique(data)
    if not np.all(np.isin(values, (0, 1))):
        shown = ", ".join(f"{v:g}" for v in values[:6]) + (", ..." if values.size > 6 else "")
        raise ThalamusError(f"lesion mask {name} is not binary (values {shown}); give a 0/1 mask, or a dseg with "
                            "a lesion label in its lookup table", EXIT_DATAERR)
    return data == 1


def lesion_labels_from_lookup(rows: Iterable[tuple[int, str]], name: str) -> tuple[int, ...]:
    """The label values whose name mentions "lesion" in a dseg lookup table (index, name rows).

    Raises
    ------
    ThalamusError
        Exit 65 when no row names a lesion.
    """
    found = tuple(int(index) for index, label in rows if "lesion" in str(label).lower())
    if not found:
        raise ThalamusError(f"the lookup table of the lesion segmentation {name} has no row named like 'lesion'",
                            EXIT_DATAERR)
    return found
