#!/usr/bin/env python3
"""Check the code-size and method-isolation limits of thalamus_bidsapp/.

- no module over MAX_MODULE_LINES lines;
- no function over MAX_FUNCTION_LINES lines, not counting its docstring;
- each method name in ISOLATED_METHODS appears (in identifiers or strings,
  not in comments or docstrings, case-insensitively) in at most
  MAX_MODULES_PER_METHOD modules.

Prints every violation and the name counts; exits 1 when a limit is broken.
``tests/test_layout.py`` runs it.
"""

from __future__ import annotations

import ast
import io
import sys
import tokenize
from pathlib import Path

MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80
MAX_MODULES_PER_METHOD = 3
ISOLATED_METHODS = ("dbsegment", "meshnet")
PACKAGE = Path(__file__).resolve().parents[1] / "thalamus_bidsapp"


def _docstring_lines(node: ast.AST) -> int:
    body = getattr(node, "body", [])
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        return body[0].end_lineno - body[0].lineno + 1
    return 0


def long_functions(source: str) -> list[tuple[str, int, int]]:
    """(name, first line, length without docstring) of every function longer than the limit."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1 - _docstring_lines(node)
            if length > MAX_FUNCTION_LINES:
                out.append((node.name, node.lineno, length))
    return out


def _docstring_positions(source: str) -> set[tuple[int, int]]:
    positions = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) \
                and _docstring_lines(node):
            positions.add((node.body[0].value.lineno, node.body[0].value.col_offset))
    return positions


def names_used(source: str, names: tuple[str, ...]) -> set[str]:
    """Which of ``names`` occur in an identifier or a non-docstring string (not in comments or docstrings)."""
    docstrings = _docstring_positions(source)
    found = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.NAME or (token.type == tokenize.STRING and token.start not in docstrings):
            text = token.string.lower()
            found.update(name for name in names if name in text)
        elif sys.version_info >= (3, 12) and token.type == tokenize.FSTRING_MIDDLE:
            found.update(name for name in names if name in token.string.lower())
    return found


def check(package: Path = PACKAGE) -> tuple[list[str], dict[str, list[str]]]:
    """(violations, method name -> modules naming it)."""
    problems: list[str] = []
    modules: dict[str, list[str]] = {name: [] for name in ISOLATED_METHODS}
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package.parent).as_posix()
        source = path.read_text()
        n_lines = len(source.splitlines())
        if n_lines > MAX_MODULE_LINES:
            problems.append(f"{rel}: {n_lines} lines (limit {MAX_MODULE_LINES})")
        for name, line, length in long_functions(source):
            problems.append(f"{rel}:{line}: function {name} has {length} lines (limit {MAX_FUNCTION_LINES})")
        for name in names_used(source, ISOLATED_METHODS):
            modules[name].append(rel)
    for name, where in modules.items():
        if len(where) > MAX_MODULES_PER_METHOD:
            problems.append(f"{name!r} appears in {len(where)} modules (limit {MAX_MODULES_PER_METHOD}): "
                            + ", ".join(where))
    return problems, modules


def main() -> int:
    problems, modules = check()
    for name, where in modules.items():
        print(f"{name}: {len(where)} modules: {', '.join(where)}")
    for problem in problems:
        print(problem)
    print("OK" if not problems else f"{len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
