"""Code-size and method-isolation limits of thalamus_bidsapp/ (scripts/check_layout.py)."""

from __future__ import annotations

import importlib.util
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


def test_the_checker_sees_names_but_not_comments_or_docstrings():
    checker = _checker()
    source = '"""meshnet in a docstring."""\n# dbsegment in a comment\nx = "dbsegment"\nmeshnet_model = 1\n'
    assert checker.names_used(source, ("dbsegment", "meshnet")) == {"dbsegment", "meshnet"}
    assert checker.names_used('"""dbsegment"""\n# meshnet\n', ("dbsegment", "meshnet")) == set()
    long = "def f():\n    " + "\n    ".join(f"x{i} = {i}" for i in range(81)) + "\n"
    assert [name for name, _, _ in checker.long_functions(long)] == ["f"]
    assert checker.long_functions('def g():\n    """' + "doc\n" * 100 + '"""\n    return 1\n') == []
