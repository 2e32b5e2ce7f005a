"""MeshNet's pinned models: what ``data/meshnet_models.json`` says, and the verified folder of one.

Finding and verifying the model files needs no PyTorch, so the main process
of a run (which checks the tools before any node starts) imports this module
and not :mod:`thalamus_bidsapp.tools.meshnet`, whose network code needs
torch (seconds to import). The folder is ``--meshnet-model DIR`` (or
``THALAMUS_MESHNET_MODEL``, read when the configuration is built), else a
user cache filled on first use from a pinned brainchop commit; every file's sha256 is checked
(:mod:`thalamus_bidsapp.tools.weights`).
"""

from __future__ import annotations

import importlib.resources
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from thalamus_bidsapp.errors import EXIT_DATAERR, ThalamusError
from thalamus_bidsapp.tools import weights

logger = logging.getLogger(__name__)

MODEL_ENV_VAR = "THALAMUS_MESHNET_MODEL"
SIDES_MODEL_ENV_VAR = "THALAMUS_MESHNET_SIDES_MODEL"
#: The pinned model whose left and right thalamus classes split the bilateral mask into sides.
SIDES_MODEL = "model21_104class"
CACHE_SUBDIR = ("meshnet",)



@dataclass(frozen=True)
class MeshNetModelSpec:
    """What ``data/meshnet_models.json`` says about one pinned model."""

    name: str
    url_base: str
    sha256: dict[str, str]
    classes: tuple[str, ...]
    thalamus_classes: tuple[str, ...]
    source: str = ""
    commit: str = ""
    licence: str = ""
    nbytes: dict[str, int] = field(default_factory=dict)
    #: Environment variable naming the model's folder (each model its own, so that two can be given).
    env_var: str = MODEL_ENV_VAR

    @property
    def option(self) -> str:
        """The command-line option giving the model's folder."""
        return "--meshnet-sides-model" if self.env_var == SIDES_MODEL_ENV_VAR else "--meshnet-model"

    @property
    def thalamus_class(self) -> str:
        """The thalamus class of a model with one (bilateral) thalamus class."""
        return self.thalamus_classes[0]

    def pinned(self) -> weights.PinnedFiles:
        files = " and ".join(self.sha256)
        return weights.PinnedFiles(
            label=f"MeshNet model {self.name}", sha256=self.sha256, url_base=self.url_base, env_var=self.env_var,
            how_to_provide=(f"get {files} from {self.url_base} and pass their folder with {self.option} DIR "
                            f"or the environment variable {self.env_var}"),
        )


def model_spec(name: str | None = None) -> MeshNetModelSpec:
    """Read a pinned model's URL, checksums and class names from the package data.

    Parameters
    ----------
    name
        Model name in ``data/meshnet_models.json``; default: its ``default``.
    """
    text = importlib.resources.files("thalamus_bidsapp").joinpath("data", "meshnet_models.json").read_text("utf-8")
    table = json.loads(text)
    name = name or table["default"]
    try:
        entry = table["models"][name]
    except KeyError:
        raise ThalamusError(f"unknown MeshNet model {name!r}; known: {sorted(table['models'])}", EXIT_DATAERR) from None
    return MeshNetModelSpec(
        name=name,
        url_base=entry["url_base"],
        sha256={fname: info["sha256"] for fname, info in entry["files"].items()},
        nbytes={fname: int(info.get("bytes", -1)) for fname, info in entry["files"].items()},
        classes=tuple(entry.get("classes", ())),
        thalamus_classes=tuple(entry["thalamus_classes"]),
        source=entry.get("source", ""),
        commit=entry.get("commit", ""),
        licence=entry.get("licence", ""),
        env_var=entry.get("env_var", MODEL_ENV_VAR),
    )


def verify_model_dir(model_dir: Path, spec: MeshNetModelSpec | None = None) -> dict[str, str]:
    """Check that ``model_dir`` holds the pinned model files, byte for byte; ``{file name: sha256}``.

    Raises
    ------
    ThalamusError
        (exit code 66) naming the missing or corrupted file and the sha256 expected.
    """
    return weights.verify_files(model_dir, (spec or model_spec()).pinned())


def default_cache_dir(spec: MeshNetModelSpec | None = None) -> Path:
    """User cache folder of the model: ``<user cache>/thalamus_bidsapp/meshnet/<model name>``."""
    return weights.user_cache_dir(*CACHE_SUBDIR, (spec or model_spec()).name)


def resolve_model_dir(model_dir: Path | None = None, model: str | None = None) -> Path:
    """Folder holding the verified files of a pinned MeshNet model.

    Order: ``model_dir`` (``--meshnet-model DIR``, or ``THALAMUS_MESHNET_MODEL``
    read when the configuration is built), else the user cache folder
    (:func:`default_cache_dir`), downloaded there on first use from the
    pinned brainchop commit. The sha256 of every file is always checked.

    Parameters
    ----------
    model_dir
        Folder given by the user, or None.
    model
        Model name in ``data/meshnet_models.json`` (default: its ``default``).

    Raises
    ------
    ThalamusError
        (exit code 66) when a file is missing, corrupted, or cannot be downloaded;
        the message names the file and the sha256 expected.
    """
    return resolve_and_verify(model_dir, model_spec(model))[0]


def resolve_and_verify(model_dir: Path | None, spec: MeshNetModelSpec) -> tuple[Path, dict[str, str]]:
    """The verified folder of ``spec`` (as :func:`resolve_model_dir`) and ``{file name: sha256}``."""
    return weights.resolve_folder(model_dir, spec.pinned(), default_cache_dir(spec))


def read_class_names(model_dir: Path, n_classes: int | None = None,
                     spec: MeshNetModelSpec | None = None) -> tuple[str, ...]:
    """Class names of the model: ``labels.json`` or ``colormap.json`` in the folder, else the package data.

    Parameters
    ----------
    model_dir
        Model folder.
    n_classes
        Number of output channels of the network, to check the names against.
    spec
        The pinned model (default: the default model), for its listed classes.
    """
    names: tuple[str, ...] | None = None
    labels_path = Path(model_dir) / "labels.json"
    colormap_path = Path(model_dir) / "colormap.json"
    try:
        if labels_path.is_file():
            table = json.loads(labels_path.read_text("utf-8"))
            names = tuple(table[str(i)] for i in range(len(table)))
        elif colormap_path.is_file():
            names = tuple(json.loads(colormap_path.read_text("utf-8"))["labels"])
    except (KeyError, ValueError, TypeError) as exc:
        logger.warning("ignoring unreadable class names in %s (%s)", model_dir, exc)
        names = None
    if names is None:
        names = (spec or model_spec()).classes
    if n_classes is not None and len(names) != n_classes:
        raise ThalamusError(
            f"MeshNet model in {model_dir} has {n_classes} output classes but {len(names)} class names",
            EXIT_DATAERR,
        )
    return names
