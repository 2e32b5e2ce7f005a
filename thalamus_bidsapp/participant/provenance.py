"""What a run used, beyond its options: the app's version and commit, the model files and template files.

``logs/<run>/config.json`` records it under ``provenance`` beside the
configuration, so that a run can be traced to the bytes it read: each
model folder or file a method's tool check resolved (from an option, an
environment variable or the user cache) with the sha256 of its files, and
the TemplateFlow files with theirs.
"""

from __future__ import annotations

import json
import logging
import subprocess
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from thalamus_bidsapp import __version__
from thalamus_bidsapp.bidsio.checksums import remembered_model_digest

if TYPE_CHECKING:
    from thalamus_bidsapp.config import RunConfig
    from thalamus_bidsapp.tools.templateflow import TemplateFiles

LOGGER = logging.getLogger(__name__)

#: Files hashed at most per model folder: a folder is a model's few weight files, never a dataset.
MAX_FILES_PER_FOLDER = 200


def run_provenance(config: RunConfig, tool_settings: Mapping[str, Mapping[str, Any]],
                   template: TemplateFiles | None) -> dict[str, Any]:
    """The ``provenance`` entry of ``config.json``.

    Parameters
    ----------
    config
        The run's configuration (for TemplateFlow's home).
    tool_settings
        Method -> what its tool check found (``ToolCheck.settings``); each
        path among the values is a model file or folder, hashed here.
    template
        The template files the run reads, or None (``--template none``).
    """
    models = {}
    for method, settings in tool_settings.items():
        found = {key: describe_path(Path(value)) for key, value in settings.items() if isinstance(value, Path)}
        if found:
            models[method] = found
    templateflow = None
    if template is not None:
        templateflow = {"home": str(config.templateflow_home) if config.templateflow_home else None,
                        "template": template.template,
                        "files": {role: describe_path(path) for role, path in (("target", template.target),
                                                                               ("prior", template.prior))}}
    return {"app_version": __version__, "app_commit": source_commit(), "models": models,
            "templateflow": templateflow}


def describe_path(path: Path) -> dict[str, Any]:
    """``{"path", "sha256"}`` of a file, ``{"path", "files": {relative path: sha256}}`` of a folder."""
    if path.is_file():
        return {"path": str(path), "sha256": remembered_model_digest(path)}
    if not path.is_dir():
        return {"path": str(path), "missing": True}
    files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
    described = {"path": str(path),
                 "files": {p.relative_to(path).as_posix(): remembered_model_digest(p)
                           for p in files[:MAX_FILES_PER_FOLDER]}}
    if len(files) > MAX_FILES_PER_FOLDER:
        described["files_not_hashed"] = len(files) - MAX_FILES_PER_FOLDER
    return described


def source_commit() -> str | None:
    """The git commit of the installed app: from pip's record of a git install, else from a source
    checkout (``+dirty`` when it has uncommitted changes); None when neither is known."""
    try:
        text = metadata.distribution("thalamus-bidsapp").read_text("direct_url.json")
        commit = (json.loads(text).get("vcs_info") or {}).get("commit_id") if text else None
        if commit:
            return str(commit)
    except (metadata.PackageNotFoundError, ValueError, AttributeError):
        pass
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError) as err:
        LOGGER.debug("no git commit for %s: %s", root, err)
        return None
    return f"{head}+dirty" if dirty else head or None
