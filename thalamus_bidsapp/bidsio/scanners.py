"""Scanner and site of each session, from the BIDS sidecars of the images it used.

The images a session used are read back from the participant outputs: the
``Sources`` of the preprocessed T1w (``desc-preproc_T1w.json``) and of the
FLAIR and R1 map registered to it, as BIDS URIs resolved with the output
dataset's ``DatasetLinks``. A session without them (outputs copied without
their sidecars) falls back to the T1w images of its folder in the input
dataset. Each image's metadata follows the BIDS inheritance principle: every
``.json`` with the same suffix from the dataset root down to the image's
folder whose entities the image also has, the nearer overriding the farther.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import pandas as pd

LOGGER = logging.getLogger(__name__)

#: Sidecar field -> column of group/volumes.tsv.
SCANNER_FIELDS = {
    "Manufacturer": "manufacturer",
    "ManufacturersModelName": "manufacturers_model_name",
    "MagneticFieldStrength": "magnetic_field_strength",
    "DeviceSerialNumber": "device_serial_number",
    "InstitutionName": "institution_name",
    "SoftwareVersions": "software_versions",
}
#: Input roles whose sidecars are read, with the suffix of their output and of the input image.
ROLES = {"T1w": ("desc-preproc_T1w", "T1w"), "FLAIR": ("space-T1w_*FLAIR", "FLAIR"),
         "R1map": ("space-T1w_*R1map", "R1map")}
_URI = re.compile(r"^bids:(?P<dataset>[^:]*):(?P<path>.+)$")
_IMAGE_EXT = re.compile(r"\.nii(\.gz)?$")


def scanner_label(meta: Mapping[str, Any]) -> str | None:
    """``Manufacturer ManufacturersModelName <field>T [SN <serial>]``, or None when no part is known."""
    parts = [str(meta[k]).strip() for k in ("Manufacturer", "ManufacturersModelName") if meta.get(k)]
    field = meta.get("MagneticFieldStrength")
    if field not in (None, ""):
        try:
            parts.append(f"{float(field):g}T")
        except (TypeError, ValueError):
            parts.append(str(field))
    if not parts:
        return None
    serial = meta.get("DeviceSerialNumber")
    return " ".join(parts) + (f" SN {serial}" if serial not in (None, "") else "")


def entities_of(path: Path) -> tuple[dict[str, str], str]:
    """The key-value entities and the suffix of a BIDS file name."""
    stem = _IMAGE_EXT.sub("", path.name.removesuffix(".json"))
    parts = stem.split("_")
    pairs = dict(p.split("-", 1) for p in parts[:-1] if "-" in p)
    return pairs, parts[-1]


def inherited_metadata(image: Path, root: Path) -> dict[str, Any]:
    """The image's sidecar metadata under the BIDS inheritance principle (nearest file wins).

    Unreadable JSON files are skipped with a warning naming them.
    """
    image, root = Path(image), Path(root)
    ents, suffix = entities_of(image)
    try:
        levels = image.parent.relative_to(root).parts
    except ValueError:
        levels = ()
        root = image.parent
    folders = [root.joinpath(*levels[:depth]) for depth in range(len(levels) + 1)]
    merged: dict[str, Any] = {}
    for folder in folders:
        candidates = []
        for path in sorted(folder.glob(f"*{suffix}.json")):
            their, their_suffix = entities_of(path)
            if their_suffix == suffix and all(ents.get(k) == v for k, v in their.items()):
                candidates.append((len(their), path))
        for _, path in sorted(candidates):
            merged.update(_read_json(path))
    return merged


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        LOGGER.warning("cannot read the sidecar %s (%s): its scanner fields are not used", path, err)
        return {}
    return data if isinstance(data, dict) else {}


def resolve_uri(uri: str, roots: Mapping[str, Path]) -> Path | None:
    """The file of a ``bids:<dataset>:<path>`` or ``file://`` URI, or None when its dataset is unknown."""
    match = _URI.match(uri)
    if match:
        root = roots.get(match["dataset"])
        return Path(root) / match["path"] if root is not None else None
    if uri.startswith("file:"):
        return Path(unquote(urlparse(uri).path))
    return None


def _used_images(session_dir: Path, roots: Mapping[str, Path]) -> dict[str, Path]:
    """role -> input image, from the Sources of the session's published T1w, FLAIR and R1 map."""
    used: dict[str, Path] = {}
    for role, (pattern, suffix) in ROLES.items():
        for sidecar in sorted(session_dir.glob(f"*_{pattern}.json")):
            for source in _read_json(sidecar).get("Sources") or []:
                path = resolve_uri(str(source), roots)
                if path is not None and entities_of(path)[1] == suffix:
                    used.setdefault(role, path)
    return used


def session_scanners(sessions: pd.DataFrame, output_dir: Path, bids_dir: Path,
                     derivatives: Mapping[str, Path] | None = None) -> pd.DataFrame:
    """One row per session: the T1w's scanner fields and label, and the FLAIR's and R1 map's labels.

    Parameters
    ----------
    sessions
        participant_id, session_id (None without sessions).
    output_dir, bids_dir, derivatives
        The output dataset (its sidecars name the inputs used), the input
        dataset and the ``--derivatives`` datasets (where an R1 map may come from).

    Returns
    -------
    DataFrame
        participant_id, session_id, ``scanner`` (:func:`scanner_label` of the
        T1w, else of the FLAIR or R1 map), one column per
        :data:`SCANNER_FIELDS` present, and ``flair_scanner`` /
        ``r1map_scanner`` when those images were used and have scanner fields.
    """
    # The datasets named on this command line first; the links the participant level recorded fill the rest.
    roots = {**_dataset_links(Path(output_dir)), "raw": Path(bids_dir),
             **{k: Path(v) for k, v in (derivatives or {}).items()}}
    rows = []
    for pid, sid in sessions[["participant_id", "session_id"]].drop_duplicates().itertuples(index=False):
        sid = sid if isinstance(sid, str) and sid else None
        rel = Path(pid, sid) if sid else Path(pid)
        used = _used_images(Path(output_dir) / rel / "anat", roots)
        if "T1w" not in used:
            found = sorted((Path(bids_dir) / rel / "anat").glob(f"{pid}{'_' + sid if sid else ''}*_T1w.nii*"))
            if found:
                used["T1w"] = found[0]
        row: dict[str, Any] = {"participant_id": pid, "session_id": sid}
        labels = {}
        for role, image in used.items():
            root = next((Path(r) for r in roots.values() if Path(r).resolve() in image.resolve().parents), image.parent)
            meta = inherited_metadata(image, root)
            labels[role] = scanner_label(meta)
            if role == "T1w":
                row.update({column: meta[key] for key, column in SCANNER_FIELDS.items() if meta.get(key) not in
                            (None, "")})
        row["scanner"] = labels.get("T1w") or labels.get("FLAIR") or labels.get("R1map")
        for role in ("FLAIR", "R1map"):
            if labels.get(role):
                row[f"{role.lower()}_scanner"] = labels[role]
                if labels.get("T1w") and labels[role] != labels["T1w"]:
                    LOGGER.warning("%s %s: the %s was acquired on %s, the T1w on %s", pid, sid or "", role,
                                   labels[role], labels["T1w"])
        rows.append(row)
    columns = ["participant_id", "session_id", "scanner", *SCANNER_FIELDS.values(), "flair_scanner", "r1map_scanner"]
    table = pd.DataFrame(rows)
    return table[[c for c in columns if c in table]] if rows else pd.DataFrame(columns=columns[:3])


def _dataset_links(output_dir: Path) -> dict[str, Path]:
    """``DatasetLinks`` of the output dataset's description (dataset name -> folder)."""
    description = _read_json(output_dir / "dataset_description.json") if (
        output_dir / "dataset_description.json").is_file() else {}
    links = description.get("DatasetLinks") or {}
    out = {}
    for name, target in links.items() if isinstance(links, dict) else ():
        path = resolve_uri(str(target), {}) if str(target).startswith("file:") else Path(str(target))
        if path is not None and path.is_dir():
            out[str(name)] = path
    return out
