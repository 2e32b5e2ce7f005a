"""The one FSL finder: an FSL executable and its installation folder and version.

FIRST and FLIRT both find their executable here. What a missing FSL means
is the caller's decision: FIRST is an error (the method cannot run), FLIRT
is not (registration falls back to ANTs).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class FslTool:
    """An FSL executable found, the FSL folder it belongs to (None: unknown) and where the folder came from."""

    executable: Path | None
    fsldir: Path | None
    source: str  # "FSLDIR", "the given FSL folder" or "PATH"


def find_fsl_tool(tool: str, *, fsldir: str | os.PathLike | None = None,
                  environ: Mapping[str, str] | None = None, search_path: bool = True) -> FslTool:
    """Find ``<FSL folder>/bin/<tool>``: the given folder, else ``$FSLDIR``, else (``search_path``) ``PATH``.

    ``executable`` is None when nothing executable was found; ``fsldir`` is
    still the folder that was looked in (so the caller can say where).
    """
    env = os.environ if environ is None else environ
    source = "the given FSL folder" if fsldir is not None else "FSLDIR"
    root = Path(fsldir) if fsldir is not None else (Path(env["FSLDIR"]) if env.get("FSLDIR") else None)
    if root is not None:
        candidate = root / "bin" / tool
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return FslTool(candidate.resolve(), root, source)
    if search_path and fsldir is None:
        found = shutil.which(tool, path=env.get("PATH"))
        if found:
            # A bare PATH install still has the usual layout: <FSL folder>/bin/<tool>.
            guess = Path(found).parent.parent
            folder = root or (guess if (guess / "etc" / "fslversion").is_file() else None)
            return FslTool(Path(found).resolve(), folder, "PATH")
    return FslTool(None, root, source)


def fsl_version(fsldir: str | os.PathLike | None) -> str | None:
    """FSL version from ``<fsldir>/etc/fslversion`` (e.g. ``6.0.7.9``), or None when unknown."""
    if fsldir is None:
        return None
    try:
        raw = (Path(fsldir) / "etc" / "fslversion").read_text().strip()
    except OSError:
        return None
    # The file may carry a build hash after a colon ("6.0.5:9e026117").
    return raw.split(":")[0].strip() or None
