"""Reading a lesion mask: binary voxels out, or a clear reason why the file is not a lesion mask."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

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


#: Lookup-table names taken as lesion labels, matched whole (case, spaces, "-" and "_" ignored), never as a
#: part of a longer name: "non-lesion white matter" and "perilesional NAWM" are not lesions.
LESION_LABEL_NAMES: tuple[str, ...] = (
    "lesion", "lesions", "ms lesion", "ms lesions", "wm lesion", "wm lesions", "white matter lesion",
    "white matter lesions", "wmh", "white matter hyperintensity", "white matter hyperintensities",
)


@dataclass(frozen=True)
class LesionLabels:
    """The lesion labels of a dseg: their values and names in its lookup table, and the rule that chose them."""

    values: tuple[int, ...]
    names: tuple[str, ...]
    rule: str

    def record(self) -> dict[str, Any]:
        """For sidecars and methods.json."""
        return {"LesionLabels": [{"index": v, "name": n} for v, n in zip(self.values, self.names)],
                "LesionLabelRule": self.rule}


def _normal(name: str) -> str:
    return " ".join(str(name).lower().replace("-", " ").replace("_", " ").split())


def lesion_labels_from_lookup(rows: Iterable[tuple[int, str]], name: str, *, wanted: Sequence[str] = (),
                              bids_label_lesion: bool = False) -> LesionLabels:
    """The lesion labels of a dseg's lookup table (``rows``: index, name), matched exactly.

    In order: the labels ``wanted`` (``--lesion-labels``: names, matched whole,
    or index values); else the rows named one of :data:`LESION_LABEL_NAMES`;
    else, for a ``label-lesion`` dseg whose table names nothing like a
    lesion, index 1 (BIDS: the labelled structure is 1).

    Raises
    ------
    ThalamusError
        Exit 65, naming ``name``: a wanted label not in the table; a table whose
        rows mention "lesion" without one being a lesion name (ambiguous: which
        is it?); a table with no lesion label.
    """
    rows = [(int(index), str(label)) for index, label in rows]
    listing = "; ".join(f"{index} {label!r}" for index, label in rows[:12]) + ("; ..." if len(rows) > 12 else "")
    if wanted:
        picked = []
        for item in wanted:
            match = [row for row in rows if _normal(row[1]) == _normal(item) or str(row[0]) == str(item).strip()]
            if not match:
                raise ThalamusError(f"the lookup table of the lesion segmentation {name} has no label {item!r} "
                                    f"(--lesion-labels); its rows: {listing}", EXIT_DATAERR)
            picked += [row for row in match if row not in picked]
        return _labels(picked, "--lesion-labels")
    exact = [row for row in rows if _normal(row[1]) in LESION_LABEL_NAMES]
    if exact:
        return _labels(exact, "lookup name in the documented list of lesion names")
    mentioned = [row for row in rows if "lesion" in row[1].lower()]
    if mentioned:
        raise ThalamusError(
            f"the lookup table of the lesion segmentation {name} is ambiguous: rows "
            + ", ".join(f"{index} {label!r}" for index, label in mentioned)
            + " mention lesions but none is named as a lesion label ("
            + ", ".join(repr(n) for n in LESION_LABEL_NAMES[:3]) + ", ...): name the lesion labels with "
            "--lesion-labels", EXIT_DATAERR)
    if bids_label_lesion:
        one = [row for row in rows if row[0] == 1]
        if one:
            return _labels(one, "index 1 of a label-lesion segmentation (BIDS)")
    raise ThalamusError(f"the lookup table of the lesion segmentation {name} has no lesion label (a row named "
                        f"{LESION_LABEL_NAMES[0]!r}, or --lesion-labels); its rows: {listing or 'none'}",
                        EXIT_DATAERR)


def _labels(rows: list[tuple[int, str]], rule: str) -> LesionLabels:
    return LesionLabels(tuple(index for index, _ in rows), tuple(label for _, label in rows), rule)
