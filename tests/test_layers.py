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
