"""The import layers of pyproject.toml's [tool.importlinter] contracts hold (``lint-imports``)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import missing_prerequisite

REPO_ROOT = Path(__file__).resolve().parents[1]


def _lint_imports() -> list[str]:
    found = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    if not Path(found).is_file():
        missing_prerequisite("import-linter is not installed (pip install -e .[test])")
    return [found]


def test_import_layers_are_kept():
    # The subprocess imports this checkout (PYTHONPATH from the environment, or the repo as the working folder).
    result = subprocess.run([*_lint_imports(), "--no-cache", "--config", str(REPO_ROOT / "pyproject.toml")],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def test_every_module_sits_in_a_layer():
    """Each top-level module and package of the app is named by the layers contract: nothing floats loose."""
    import tomllib

    config = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    (layers,) = [c["layers"] for c in config["tool"]["importlinter"]["contracts"] if c["type"] == "layers"]
    named = {name.strip().removeprefix("thalamus_bidsapp.") for layer in layers for name in layer.split("|")}
    package = REPO_ROOT / "thalamus_bidsapp"
    top = {p.stem for p in package.glob("*.py") if p.stem not in {"__init__", "__main__"}}
    top |= {p.name for p in package.iterdir() if (p / "__init__.py").is_file() and p.name != "data"}
    assert top - named == set(), f"not in any layer of pyproject.toml: {sorted(top - named)}"
