"""TemplateFlow, offline: the template files the app reads, found in ``TEMPLATEFLOW_HOME``.

TemplateFlow is never reached at run time. The ``templateflow`` package only
tells where its home is (``$TEMPLATEFLOW_HOME``, else its user cache folder);
the files are looked up by their TemplateFlow names there, and a file that is
absent, empty (TemplateFlow's skeleton holds empty placeholders) or a
git-annex pointer is a missing input (exit 66) naming the template,
resolution, suffix and where to put it. Runs never call
``templateflow.api.get`` (it downloads what is missing); only
``thalamus-bidsapp --fetch-templates`` and the image build do, through
:func:`fetch_template_files`.

Which files are read is in ``data/templates.json``: per template, at 2 mm
(``res-02``), the skull-stripped T1w (registration target and template grid)
and the Harvard-Oxford subcortical probabilistic atlas (the thalamus prior).
"""

from __future__ import annotations

import importlib.resources
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from thalamus_bidsapp.errors import EXIT_NOINPUT, ThalamusError

LOGGER = logging.getLogger(__name__)

#: ``--template none`` leaves template space (and the thalamus prior) out.
NO_TEMPLATE = "none"
#: fMRIPrep's default output space.
DEFAULT_TEMPLATE = "MNI152NLin2009cAsym"


@dataclass(frozen=True)
class TemplateFile:
    """One file of a TemplateFlow template, by its entities."""

    template: str
    resolution: str
    suffix: str
    desc: str | None = None
    atlas: str | None = None

    @property
    def name(self) -> str:
        """The TemplateFlow file name, e.g. ``tpl-MNI152NLin6Asym_res-02_desc-brain_T1w.nii.gz``."""
        parts = [f"tpl-{self.template}", f"res-{self.resolution}"]
        if self.atlas:
            parts.append(f"atlas-{self.atlas}")
        if self.desc:
            parts.append(f"desc-{self.desc}")
        return "_".join(parts) + f"_{self.suffix}.nii.gz"

    def path(self, home: Path) -> Path:
        return Path(home) / f"tpl-{self.template}" / self.name

    def describe(self) -> str:
        entities = [f"template {self.template}", f"resolution {self.resolution}", f"suffix {self.suffix}"]
        entities += [f"desc {self.desc}"] if self.desc else []
        entities += [f"atlas {self.atlas}"] if self.atlas else []
        return ", ".join(entities)


@dataclass(frozen=True)
class TemplateFiles:
    """The files of one template the app reads, resolved in ``TEMPLATEFLOW_HOME``."""

    template: str
    target: Path
    prior: Path
    prior_volumes: dict[str, int]
    prior_description: str
    prior_atlas: str


def template_settings() -> dict:
    """``data/templates.json``: supported templates, resolution, target and prior files."""
    return json.loads(importlib.resources.files("thalamus_bidsapp.data").joinpath("templates.json").read_text())


def supported_templates() -> tuple[str, ...]:
    return tuple(template_settings()["templates"])


def required_files(template: str) -> list[TemplateFile]:
    """Every TemplateFlow file the app reads for ``template`` (listed in the README too)."""
    settings = template_settings()
    if template not in settings["templates"]:
        raise ThalamusError(f"unknown template {template!r}: choose one of "
                            f"{', '.join(settings['templates'])} or {NO_TEMPLATE}", 64)
    resolution = settings["resolution"]
    target, prior = settings["target"], settings["prior"]
    return [
        TemplateFile(template, resolution, target["suffix"], desc=target["desc"]),
        TemplateFile(template, resolution, prior["suffix"], atlas=prior["atlas"]),
    ]


def templateflow_home() -> Path:
    """TemplateFlow's home folder, as the ``templateflow`` package resolves it, without updating it."""
    os.environ.setdefault("TEMPLATEFLOW_AUTOUPDATE", "0")  # never refresh the skeleton from the network
    try:
        from templateflow.conf.env import get_templateflow_home
    except OSError as err:  # importing templateflow populates an empty home; a read-only one fails
        raise ThalamusError(f"cannot use TEMPLATEFLOW_HOME={os.environ.get('TEMPLATEFLOW_HOME', '(unset)')}: "
                            f"{err}", EXIT_NOINPUT) from err
    return Path(get_templateflow_home())


def usable_file(path: Path) -> bool:
    """A real image: present, not empty (a skeleton placeholder), not a git-annex pointer."""
    try:
        if not path.is_file() or path.stat().st_size < 64:
            return False
        with path.open("rb") as handle:
            return not handle.read(64).startswith((b"/annex/objects", b"../../.git/annex"))
    except OSError:
        return False


def find_template_files(template: str, home: Path | None = None) -> TemplateFiles:
    """Resolve the template's files in TemplateFlow's home; exit 66 naming each missing one.

    Raises
    ------
    ThalamusError
        Exit 66 when a file is missing, with its TemplateFlow name and path.
    """
    home = Path(home) if home is not None else templateflow_home()
    files = required_files(template)
    missing = [f for f in files if not usable_file(f.path(home))]
    if missing:
        listing = "\n".join(f"  - {f.describe()}: {f.path(home)}" for f in missing)
        raise ThalamusError(
            f"TemplateFlow template files missing (TemplateFlow is never downloaded at run time):\n{listing}\n"
            f"with network access, run 'thalamus-bidsapp --fetch-templates --template {template}' once; "
            f"without, put them in TEMPLATEFLOW_HOME={home} under these names (see the README, 'Template space'); "
            f"or run with --template {NO_TEMPLATE}",
            EXIT_NOINPUT,
        )
    prior = template_settings()["prior"]
    for item, dimensions in ((files[0], 3), (files[1], 4)):
        problem = content_problem(item.path(home), dimensions, max(prior["volumes"].values()) + 1)
        if problem:
            raise ThalamusError(f"TemplateFlow file {item.path(home)} ({item.describe()}) cannot be used: {problem}; "
                                f"replace it (run 'thalamus-bidsapp --fetch-templates --template {template}' after "
                                "removing it, or copy it again) or run with --template none", EXIT_NOINPUT)
    LOGGER.info("template %s: %s", template, ", ".join(str(f.path(home)) for f in files))
    return TemplateFiles(template, files[0].path(home), files[1].path(home), dict(prior["volumes"]),
                         prior["description"], prior["atlas"])


#: (path, size, mtime_ns, dimensions) -> the problem found ("" for none): each file version is read once.
_CHECKED: dict[tuple, str] = {}


def content_problem(path: Path, dimensions: int, volumes: int) -> str:
    """Why the image at ``path`` cannot be used ("" when it can): unreadable, truncated, or of the wrong shape.

    ``dimensions``: 3 (the registration target) or 4 (the prior atlas, with at least ``volumes`` volumes).
    The whole file is read (decompressed as a stream, never held), so a truncated download is found here,
    before any tool runs, not by every session's registration.
    """
    import gzip
    import zlib

    import nibabel as nib

    info = path.stat()
    key = (str(path), info.st_size, info.st_mtime_ns, dimensions, volumes)
    if key in _CHECKED:
        return _CHECKED[key]
    try:
        img = nib.load(str(path))
        shape = tuple(int(n) for n in img.shape)
        expected = int(img.header.get_data_offset()) + int(np.prod(shape)) * img.get_data_dtype().itemsize
    except Exception as err:  # nibabel raises many types for a damaged header
        return _CHECKED.setdefault(key, f"not a readable NIfTI image ({type(err).__name__}: {err})")
    if dimensions == 3 and not (len(shape) == 3 or (len(shape) == 4 and shape[3] == 1)):
        problem = f"a 3-D image is needed, it has shape {shape}"
    elif dimensions == 4 and (len(shape) != 4 or shape[3] < volumes):
        problem = f"a 4-D atlas of at least {volumes} volumes (one per structure) is needed, it has shape {shape}"
    else:
        try:
            if path.name.endswith(".gz"):
                size = 0
                with gzip.open(path, "rb") as handle:
                    while chunk := handle.read(1 << 22):
                        size += len(chunk)
            else:
                size = info.st_size
            problem = f"truncated: {size} of {expected} bytes" if size < expected else ""
        except EOFError:
            problem = "truncated: the compressed data ends before its end marker"
        except (OSError, zlib.error) as err:
            problem = f"corrupt compressed data ({err})"
    return _CHECKED.setdefault(key, problem)


def fetch_template_files(template: str, home: Path | None = None) -> TemplateFiles:
    """Download the template's missing files into TemplateFlow's home (``--fetch-templates``, image builds).

    Runs never call this: they read what is there (:func:`find_template_files`).

    Raises
    ------
    ThalamusError
        Exit 66 naming the file that could not be downloaded and why (typically no network).
    """
    home = Path(home) if home is not None else templateflow_home()
    from templateflow import api

    for item in required_files(template):
        if usable_file(item.path(home)):
            continue
        LOGGER.info("downloading %s into %s", item.describe(), home)
        try:
            # desc=None asks for the file without a desc entity (TemplateFlow's convention).
            api.get(template, resolution=int(item.resolution), suffix=item.suffix, desc=item.desc,
                    extension=".nii.gz", raise_empty=True, **({"atlas": item.atlas} if item.atlas else {}))
        except Exception as err:  # noqa: BLE001 - templateflow raises network, S3 and lookup errors alike
            raise ThalamusError(f"could not download {item.describe()} into {item.path(home)} "
                                f"({type(err).__name__}: {err}); without network access, copy the file there "
                                f"by hand (see the README, 'Template space')", EXIT_NOINPUT) from err
    return find_template_files(template, home)
