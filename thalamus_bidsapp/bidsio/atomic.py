"""Outputs that appear whole or not at all: write to a temporary name, then rename.

Every file the app writes goes through these helpers, so an interrupted run
never leaves a truncated NIfTI, TSV or JSON behind under its final name.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import nibabel as nib
import pandas as pd


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` on success.

    The temporary name keeps the suffixes of ``path`` (``.nii.gz`` stays
    ``.nii.gz``) so writers that infer the format from the name still work.
    On an exception the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    # mkstemp creates 0600; outputs get the usual permissions (0666 less the umask).
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_if_changed(content: str | bytes, path: str | os.PathLike) -> bool:
    """Write ``content`` to ``path`` atomically unless the file already holds it; True if written.

    Outputs, reports and figures are regenerated on every run and with
    ``--reports-only``; leaving identical files alone keeps a re-run from
    touching finished outputs. The one "write only if changed" helper.
    """
    data = content.encode("utf-8") if isinstance(content, str) else content
    path = Path(path)
    if path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data:
        return False
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return True


def json_text(data: Mapping[str, Any]) -> str:
    """The JSON text every sidecar and log is written as: indented, key-sorted, newline-terminated."""
    return json.dumps(data, indent=2, sort_keys=True, default=_json_default) + "\n"


def write_json(data: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write ``data`` as indented, key-sorted JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json_text(data))
    return Path(path)


def write_tsv(
    table: pd.DataFrame,
    path: str | os.PathLike,
    column_descriptions: Mapping[str, Any] | None = None,
) -> Path:
    """Write a BIDS TSV (``n/a`` for missing) and, if given, its JSON sidecar.

    ``column_descriptions`` maps column names to a description string or to a
    BIDS column dictionary (``{"Description": ..., "Units": ...}``); the
    sidecar is written beside the TSV with the ``.json`` extension.
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        table.to_csv(tmp, sep="\t", index=False, na_rep="n/a", float_format="%.10g")
    if column_descriptions is not None:
        sidecar = {
            name: ({"Description": spec} if isinstance(spec, str) else dict(spec))
            for name, spec in column_descriptions.items()
        }
        write_json(sidecar, path.with_suffix(".json"))
    return path


def save_nifti(img: nib.spatialimages.SpatialImage, path: str | os.PathLike) -> Path:
    """Save a NIfTI image atomically."""
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
    return Path(path)


def read_tsv(path: str | os.PathLike) -> pd.DataFrame:
    """Read a BIDS TSV: tab separated, ``n/a`` as missing, identifiers kept as text."""
    return pd.read_csv(path, sep="\t", na_values=["n/a"], keep_default_na=False, dtype={"participant_id": str, "session_id": str})


#: What reading a TSV raises when the file is missing, unreadable, not text or not a table.
TSV_READ_ERRORS = (OSError, ValueError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError)


def read_tsv_with_columns(path: str | os.PathLike, columns: list[str] | tuple[str, ...]) -> pd.DataFrame:
    """:func:`read_tsv`, raising ``ValueError`` ("no column a, b") when any of ``columns`` is missing.

    Callers catch :data:`TSV_READ_ERRORS` to report the file and the reason.
    """
    table = read_tsv(path)
    missing = [column for column in columns if column not in table]
    if missing:
        raise ValueError(f"no column {', '.join(missing)}")
    return table


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
