"""The output side: BIDS derivative names, sidecars and the dataset description."""

from __future__ import annotations

import importlib.resources
import json
import logging
from pathlib import Path
from typing import Any

from thalamus_bidsapp import __version__
from thalamus_bidsapp.bidsio.atomic import atomic_path, json_text, write_if_changed, write_json

LOGGER = logging.getLogger(__name__)

PIPELINE_NAME = "thalamus_bidsapp"
CODE_URL = "https://github.com/thalamus-bidsapp/thalamus_bidsapp"
#: Files that are not BIDS derivatives (bids-validator-deno needs folder names without a trailing slash).
BIDSIGNORE = ("logs", "group", "sub-*.html", "sub-*/figures", "*_volumes.tsv", "*_volumes.json", "*_qc.tsv", "*_qc.json",
              # BIDS 1.10 has no rule yet for transforms, nor hemi- on a probseg (the prior's contract name).
              "*_xfm.h5", "*_xfm.txt", "*_xfm.mat", "*_xfm.json", "*_hemi-*_probseg.nii.gz", "*_hemi-*_probseg.json")


def path_patterns() -> list[str]:
    text = importlib.resources.files("thalamus_bidsapp.data").joinpath("derivatives_patterns.json").read_text()
    return json.loads(text)


def derivative_path(output_dir: Path, entities: dict[str, Any]) -> Path:
    """The BIDS path of a derivative inside ``output_dir``.

    ``entities`` uses pybids names: ``subject``, ``session``, ``space``,
    ``label``, ``desc``, ``from``, ``to``, ``mode``, ``suffix``, ``extension``.

    Raises
    ------
    ValueError
        When no pattern of ``data/derivatives_patterns.json`` fits.
    """
    from bids.layout.writing import build_path

    relative = build_path({k: v for k, v in entities.items() if v is not None}, path_patterns(), strict=True)
    if relative is None:
        raise ValueError(f"no derivative path pattern fits the entities {entities}")
    return Path(output_dir) / relative


def bids_uri(path: Path, root: Path, dataset: str = "") -> str:
    """``bids:<dataset>:<path relative to root>``; dataset "" is the output dataset itself."""
    return f"bids:{dataset}:{Path(path).resolve().relative_to(Path(root).resolve()).as_posix()}"


def publish(in_file: Path, out_file: Path, sidecar: dict[str, Any] | None = None) -> Path:
    """Copy a finished file into the output dataset, atomically, with its JSON sidecar.

    A destination that already holds the same bytes is left alone, so a re-run
    does not touch finished outputs.
    """
    out_file = Path(out_file)
    target = out_file
    try:
        write_if_changed(Path(in_file).read_bytes(), out_file)
        if sidecar is not None:
            name = out_file.name
            for ext in (".nii.gz", ".nii", ".tsv", ".txt", ".mat", ".h5", ".svg", ".png"):
                if name.endswith(ext):
                    name = name[: -len(ext)]
                    break
            target = out_file.with_name(name + ".json")
            write_if_changed(json_text(json.loads(json.dumps(sidecar, default=str))), target)
    except OSError as err:
        if err.filename is None and err.errno is not None:
            # Some writers (a full disk during a flush) raise without a file name: name the file written.
            raise OSError(err.errno, err.strerror or str(err), str(target)) from err
        raise
    return out_file


def write_dataset_description(output_dir: Path, bids_dir: Path, derivatives: dict[str, Path],
                              container: str | None = None) -> Path:
    """``dataset_description.json`` of the output dataset, plus its ``.bidsignore``.

    GeneratedBy names the pipeline, its version and the container it ran in
    (``container``: ``$THALAMUS_CONTAINER`` as the run's configuration read
    it, set by the Docker and Apptainer images).
    """
    output_dir = Path(output_dir)
    generated_by: dict[str, Any] = {"Name": PIPELINE_NAME, "Version": __version__, "CodeURL": CODE_URL}
    if container:
        ctype, _, tag = container.partition(":")
        generated_by["Container"] = {"Type": ctype, "Tag": tag or container}
    links = {"raw": str(Path(bids_dir).resolve())}
    links.update({name: str(Path(path).resolve()) for name, path in derivatives.items()})
    source_datasets = [{"URL": Path(bids_dir).resolve().as_uri()}]
    raw_description = Path(bids_dir) / "dataset_description.json"
    if raw_description.is_file():
        try:
            doi = json.loads(raw_description.read_text()).get("DatasetDOI")
        except json.JSONDecodeError:
            doi = None
        if doi:
            source_datasets[0]["DOI"] = doi
    description = {
        "Name": "thalamus_bidsapp: thalamus segmentations, volumes and registration QC",
        "BIDSVersion": "1.10.0",
        "DatasetType": "derivative",
        "GeneratedBy": [generated_by],
        "SourceDatasets": source_datasets,
        "DatasetLinks": links,
    }
    path = output_dir / "dataset_description.json"
    existing = json.loads(path.read_text()) if path.is_file() else None
    if existing != json.loads(json.dumps(description)):
        write_json(description, path)
    bidsignore = output_dir / ".bidsignore"
    text = "\n".join(BIDSIGNORE) + "\n"
    if not (bidsignore.is_file() and bidsignore.read_text() == text):
        with atomic_path(bidsignore) as tmp:
            tmp.write_text(text)
    return path
