#!/usr/bin/env python3
"""Check the code-size and method-isolation limits of thalamus_bidsapp/.

- no module over MAX_MODULE_LINES lines;
- no function over MAX_FUNCTION_LINES lines, not counting its docstring;
- each registered method (``thalamus_bidsapp.methods.registry``) keeps to its
  rooms: its method module and the tool adapters only it imports. No other
  module imports them, and its name appears as an identifier word or as a
  code string (``"meshnet"``, ``"meshnet_model"``, ``"--meshnet-sides"``; not
  in comments, docstrings or messages) in at most MAX_MODULES_PER_METHOD
  modules. A name that is also an ordinary word (``first``, as in
  ``keep="first"``) is checked by its imports only.

Prints every violation and the name counts; exits 1 when a limit is broken.
``tests/test_layout.py`` runs it.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80
MAX_MODULES_PER_METHOD = 3
#: Method names that are also ordinary words in code and messages: checked by their imports only.
ORDINARY_WORDS = frozenset({"first"})
PACKAGE = Path(__file__).resolve().parents[1] / "thalamus_bidsapp"
TOOLS = "thalamus_bidsapp.tools."


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


def _words(text: str) -> set[str]:
    """Lower-case words of an identifier or string: ``segment_meshnetSides`` -> segment, meshnet, sides."""
    words = set()
    for part in re.split(r"[^A-Za-z0-9]+", text):
        words.update(w.lower() for w in re.findall(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])", part))
    return words


def names_used(source: str, names: tuple[str, ...]) -> set[str]:
    """Which of ``names`` are a word of an identifier or of a code string (not of comments, docstrings, messages).

    A code string is one whose whole value is an identifier or an option
    (``"meshnet_model"``, ``"--meshnet-sides"``); a sentence is a message.
    """
    docstrings = _docstring_positions(source)
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Name):
            text = node.id
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            text = node.name
        elif isinstance(node, ast.Attribute):
            text = node.attr
        elif isinstance(node, ast.arg):
            text = node.arg
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and (node.lineno, node.col_offset) not in docstrings and _CODE_STRING.fullmatch(node.value):
            text = node.value
        else:
            continue
        found.update(_words(text) & set(names))
    return found


_CODE_STRING = re.compile(r"(--)?[A-Za-z][A-Za-z0-9_\-]*")


def imported_modules(source: str) -> set[str]:
    """The ``thalamus_bidsapp`` modules (and names) ``source`` imports, lazily imported ones too.

    The package imports absolutely, so ``from thalamus_bidsapp.tools import first``
    gives ``thalamus_bidsapp.tools`` and ``thalamus_bidsapp.tools.first``.
    """
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name.startswith("thalamus_bidsapp")}


def method_rooms(imports: dict[str, set[str]]) -> dict[str, set[str]]:
    """Each registered method -> its rooms: its module and the tool adapters no other method module imports."""
    from thalamus_bidsapp.methods.registry import all_methods

    method_modules = {m.name: type(m).__module__ for m in all_methods() if type(m).__module__ in imports}
    rooms = {}
    for name, module in method_modules.items():
        others = set().union(*(imports[m] for n, m in method_modules.items() if n != name))
        adapters = {i for i in imports[module] if i.startswith(TOOLS) and i in imports and i not in others}
        rooms[name] = {module, *adapters}
    return rooms


def _module_name(path: Path, package: Path) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def check(package: Path = PACKAGE) -> tuple[list[str], dict[str, list[str]]]:
    """(violations, method name -> modules naming it)."""
    problems: list[str] = []
    sources = {_module_name(path, package): path for path in sorted(package.rglob("*.py"))}
    imports = {module: imported_modules(path.read_text()) for module, path in sources.items()}
    rooms = method_rooms(imports)
    named = tuple(name for name in rooms if name not in ORDINARY_WORDS)
    modules: dict[str, list[str]] = {name: [] for name in named}
    for module, path in sources.items():
        rel = path.relative_to(package.parent).as_posix()
        source = path.read_text()
        n_lines = len(source.splitlines())
        if n_lines > MAX_MODULE_LINES:
            problems.append(f"{rel}: {n_lines} lines (limit {MAX_MODULE_LINES})")
        for name, line, length in long_functions(source):
            problems.append(f"{rel}:{line}: function {name} has {length} lines (limit {MAX_FUNCTION_LINES})")
        for name in names_used(source, named):
            modules[name].append(rel)
        for name, own in rooms.items():
            if module not in own and imports[module] & own:
                problems.append(f"{rel} imports {', '.join(sorted(imports[module] & own))}: the rooms of method "
                                f"{name!r} (only its module and its own adapters may)")
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
