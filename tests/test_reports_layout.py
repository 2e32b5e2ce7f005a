"""The package's module layout: no import cycle among the report modules, no private name imported across modules."""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

import grimp
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGE = REPO_ROOT / "thalamus_bidsapp"


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("thalamus_bidsapp")


def test_no_import_cycle_among_the_report_modules(graph) -> None:
    # Function-level imports count: a cycle hidden inside a function still ties the modules together.
    modules = sorted(m for m in graph.modules if m.startswith("thalamus_bidsapp.reports."))
    assert "thalamus_bidsapp.reports.figures_group" in modules
    cycles = []
    for first, second in itertools.combinations(modules, 2):
        there = graph.find_shortest_chain(importer=first, imported=second)
        back = graph.find_shortest_chain(importer=second, imported=first)
        if there and back:
            cycles.append(" -> ".join([*there, *back[1:]]))
    assert not cycles, "\n".join(cycles)


def _private_imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.ImportFrom):
            continue
        if not (node.level or (node.module or "").split(".")[0] == "thalamus_bidsapp"):
            continue
        for alias in node.names:
            if alias.name.startswith("_") and not alias.name.startswith("__"):
                found.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno}: {node.module}.{alias.name}")
    return found


def test_no_module_imports_a_private_name_of_another() -> None:
    # What another module uses is part of its interface, and gets a public name.
    found = [hit for path in sorted(PACKAGE.rglob("*.py")) for hit in _private_imports(path)]
    assert not found, "\n".join(found)
