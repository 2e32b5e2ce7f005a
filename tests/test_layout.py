"""Code-size and method-isolation limits of thalamus_bidsapp/ (scripts/check_layout.py)."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "check_layout.py"


def _checker():
    spec = importlib.util.spec_from_file_location("check_layout", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_no_long_module_or_function_and_methods_stay_in_their_modules():
    problems, modules = _checker().check()
    assert problems == []
    for name, where in modules.items():
        assert 1 <= len(where) <= 3, (name, where)


def test_the_checker_sees_names_but_not_comments_docstrings_or_messages():
    checker = _checker()
    source = '"""meshnet in a docstring."""\n# dbsegment in a comment\nx = "dbsegment"\nmeshnet_model = 1\n'
    assert checker.names_used(source, ("dbsegment", "meshnet")) == {"dbsegment", "meshnet"}
    assert checker.names_used('y = "--meshnetSides-off"\n', ("meshnet",)) == {"meshnet"}
    assert checker.names_used('"""dbsegment"""\n# meshnet\nlog("meshnet did not run")\n',
                              ("dbsegment", "meshnet")) == set()
    long = "def f():\n    " + "\n    ".join(f"x{i} = {i}" for i in range(81)) + "\n"
    assert [name for name, _, _ in checker.long_functions(long)] == ["f"]
    assert checker.long_functions('def g():\n    """' + "doc\n" * 100 + '"""\n    return 1\n') == []


def test_the_rooms_of_each_registered_method_come_from_the_registry(tmp_path):
    """Every registered method has rooms (its module, its own adapters); a module elsewhere importing them fails."""
    from thalamus_bidsapp.methods import method_names

    checker = _checker()
    copy = tmp_path / "thalamus_bidsapp"
    shutil.copytree(checker.PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__", "data"))
    problems, _ = checker.check(copy)
    assert problems == []
    (copy / "reports" / "shortcut.py").write_text("from thalamus_bidsapp.tools import first\n")
    problems, _ = checker.check(copy)
    assert any("thalamus_bidsapp/reports/shortcut.py imports thalamus_bidsapp.tools.first" in p
               and "'first'" in p for p in problems), problems
    sources = {checker._module_name(p, checker.PACKAGE): p for p in checker.PACKAGE.rglob("*.py")}
    imports = {m: checker.imported_modules(p.read_text()) for m, p in sources.items()}
    rooms = checker.method_rooms(imports)
    assert set(rooms) == set(method_names())
    assert rooms["meshnet"] >= {"thalamus_bidsapp.methods.meshnet", "thalamus_bidsapp.tools.meshnet"}


def test_the_readme_layout_names_every_module():
    """The README's layout is the floor plan a newcomer reads: every module and package of the app is in it."""
    root = SCRIPT.parents[1]
    readme = (root / "README.md").read_text()
    start = readme.index("## Development")
    plan = readme[start:readme.index("Layers, top to bottom", start)]
    package = root / "thalamus_bidsapp"
    names = {p.stem for p in package.rglob("*.py") if p.stem not in ("__init__", "__main__")}
    names |= {p.name for p in package.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert sorted(n for n in names if n not in plan) == []
