"""Source rules the import linter cannot see: no shadowed ``resources``, no comments citing issues or the spec."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGE = REPO_ROOT / "thalamus_bidsapp"
#: Folders whose comments and docstrings are checked.
CHECKED = ("thalamus_bidsapp", "scripts", "benchmarks", "tests")
#: A comment or docstring that points at the project's issue tracker or at a spec file outside the repository.
CITES_TRACKER = re.compile(r"\b[Ii]ssue\s*#?\d+|\bSPEC\b|\breference 000\b")


def _sources(*folders: str) -> list[Path]:
    files = [p for folder in folders for p in (REPO_ROOT / folder).rglob("*.py")]
    return sorted(files)


def _importlib_resources_alias(tree: ast.Module) -> bool:
    return any(isinstance(node, ast.ImportFrom) and node.module == "importlib"
               and any(alias.name == "resources" and alias.asname in (None, "resources") for alias in node.names)
               for node in ast.walk(tree))


def _local_resources(tree: ast.Module) -> bool:
    """Whether the module also means something else by ``resources``: an argument, a variable, the local module."""
    for node in ast.walk(tree):
        if isinstance(node, ast.arg) and node.arg == "resources":
            return True
        if isinstance(node, ast.Name) and node.id == "resources" and isinstance(node.ctx, ast.Store):
            return True
        if isinstance(node, ast.ImportFrom) and node.module == "thalamus_bidsapp.participant.resources":
            return True
    return False


@pytest.mark.parametrize("path", _sources("thalamus_bidsapp"), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_importlib_resources_is_not_shadowed_by_the_local_resources(path: Path) -> None:
    """``resources`` is the package's resource plan (thalamus_bidsapp/participant/resources.py), never importlib's."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    assert not (_importlib_resources_alias(tree) and _local_resources(tree)), (
        f"{path}: 'from importlib import resources' beside a local 'resources'; use 'import importlib.resources'")


def test_the_participant_level_reads_package_data_without_the_alias() -> None:
    for path in sorted((PACKAGE / "participant").glob("*.py")):
        assert not _importlib_resources_alias(ast.parse(path.read_text(encoding="utf-8"))), path


def test_no_comment_cites_an_issue_or_the_spec() -> None:
    found = []
    for path in _sources(*CHECKED):
        text = path.read_text(encoding="utf-8")
        for number, line in enumerate(text.splitlines(), 1):
            # tracker numbers of other projects (pybids issue 1270) are references, not history
            if CITES_TRACKER.search(line) and "pybids issue" not in line and path.name != "test_source_hygiene.py":
                found.append(f"{path.relative_to(REPO_ROOT)}:{number}: {line.strip()}")
    assert not found, "comments cite the issue tracker or a spec outside the repository:\n" + "\n".join(found)
