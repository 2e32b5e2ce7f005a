"""A lesion segmentation's (``dseg``) lookup table, read and checked, and its lesion labels chosen exactly."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from thalamus_bidsapp.bidsio.atomic import TSV_READ_ERRORS, read_tsv_with_columns
from thalamus_bidsapp.errors import EXIT_DATAERR, ThalamusError
from thalamus_bidsapp.image.lesion_mask import LesionLabels, lesion_labels_from_lookup


def is_dseg(path: str | Path) -> bool:
    """Whether ``path`` is a segmentation (``*_dseg.nii[.gz]``), whose lesion labels come from a lookup table."""
    return Path(path).name.split(".")[0].endswith("_dseg")


def lookup_table(path: str | Path) -> Path:
    """The lookup table of a dseg: the same name with ``.tsv``."""
    return Path(str(path).split(".nii")[0] + ".tsv")


def read_lookup(lookup: Path) -> list[tuple[int, str]]:
    """The (index, name) rows of a dseg lookup table.

    Raises
    ------
    ThalamusError
        Exit 65 naming the file: missing, unreadable, empty, without the
        ``index`` and ``name`` columns, an index that is not a whole number,
        or one listed twice.
    """
    if not lookup.is_file():
        raise ThalamusError(f"the lesion segmentation's lookup table {lookup} is missing: a dseg needs it to name "
                            "its lesion label", EXIT_DATAERR)
    try:
        table = read_tsv_with_columns(lookup, ("index", "name"))
    except TSV_READ_ERRORS as err:
        reason = "it is empty" if "No columns to parse" in str(err) else str(err)
        raise ThalamusError(f"cannot use the lesion lookup table {lookup}: {reason} (a BIDS dseg table needs the "
                            "columns index and name)", EXIT_DATAERR) from err
    if table.empty:
        raise ThalamusError(f"the lesion lookup table {lookup} has no rows", EXIT_DATAERR)
    rows = []
    for line, (index, name) in enumerate(zip(table["index"], table["name"]), start=2):
        try:
            value = float(index)
        except (TypeError, ValueError):
            value = float("nan")
        if not (math.isfinite(value) and value == int(value)):
            raise ThalamusError(f"the lesion lookup table {lookup}, line {line}: index {index!r} is not a whole "
                                "number", EXIT_DATAERR)
        rows.append((int(value), str(name)))
    seen = [index for index, _ in rows]
    twice = sorted({index for index in seen if seen.count(index) > 1})
    if twice:
        raise ThalamusError(f"the lesion lookup table {lookup} lists index {', '.join(map(str, twice))} more than "
                            "once", EXIT_DATAERR)
    return rows


def lesion_labels(path: str | Path, wanted: Sequence[str] = ()) -> LesionLabels | None:
    """The lesion labels of a lesion file: None for a binary mask; for a dseg, chosen exactly from its table.

    See :func:`thalamus_bidsapp.image.lesion_mask.lesion_labels_from_lookup` for the rule.
    """
    if not is_dseg(path):
        return None
    lookup = lookup_table(path)
    if not lookup.is_file():
        raise ThalamusError(f"lesion segmentation {path} has no lookup table {lookup} naming its lesion label",
                            EXIT_DATAERR)
    return lesion_labels_from_lookup(read_lookup(lookup), str(lookup), wanted=wanted,
                                     bids_label_lesion="_label-lesion_" in f"_{Path(path).name}")
