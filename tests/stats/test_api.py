"""The public stats API: every function listed, documented with an example, and the examples run."""

from __future__ import annotations

import doctest
import importlib
import inspect
from pathlib import Path

import pytest

import thalamus_bidsapp.stats as stats_pkg

MODULES = [f"thalamus_bidsapp.stats.{name}" for name in stats_pkg.__all__] + ["thalamus_bidsapp.stats._frame"]
README = Path(__file__).resolve().parents[2] / "README.md"


def _public_functions(module: object) -> list[str]:
    return [name for name in module.__all__ if inspect.isfunction(getattr(module, name))]


def test_every_stats_module_is_listed() -> None:
    on_disk = {p.stem for p in Path(stats_pkg.__file__).parent.glob("*.py") if not p.stem.startswith("_")}
    assert on_disk == set(stats_pkg.__all__)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.attempted > 0, f"{name} has no docstring example"
    assert result.failed == 0, f"{result.failed} docstring example(s) of {name} failed (run python -m doctest -v)"


@pytest.mark.parametrize("name", MODULES[:-1])
def test_every_public_function_has_an_example(name: str) -> None:
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(recurse=False)
    missing = [f for f in _public_functions(module) if not any(t.examples for t in finder.find(getattr(module, f)))]
    assert not missing, f"{name}: no docstring example in {missing}"
    private = [f for f in module.__all__ if f.startswith("_")]
    assert not private


def test_readme_lists_every_public_function() -> None:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("### Statistics library"):]
    missing = [f"{name.rsplit('.', 1)[1]}.{f}" for name in MODULES[:-1]
               for f in _public_functions(importlib.import_module(name)) if f"`{f}`" not in section]
    assert not missing, f"README 'Statistics library' does not list {missing}"


@pytest.mark.parametrize("name", MODULES[:-1])
def test_constants_used_in_results_are_exported(name: str) -> None:
    """Every public upper-case constant a module defines (column orders, levels, limits) is in ``__all__``."""
    module = importlib.import_module(name)
    constants = [attr for attr, value in vars(module).items()
                 if attr.isupper() and not attr.startswith("_") and isinstance(value, (str, int, float, tuple, list))]
    missing = [attr for attr in constants if attr not in module.__all__]
    assert not missing, f"{name}: constants not exported: {missing}"


def test_one_minimum_sample_size_constant() -> None:
    from thalamus_bidsapp.stats import MIN_N, agreement, longitudinal, power

    assert MIN_N == 3
    assert agreement.MIN_N is longitudinal.MIN_N is power.MIN_N is MIN_N
    source = "".join(Path(importlib.import_module(m).__file__).read_text() for m in MODULES)
    assert "MIN_PAIRS" not in source


def test_package_docstring_states_the_conventions() -> None:
    doc = stats_pkg.__doc__
    for phrase in ("keyword-only", "reference=", "method - reference", "first minus second", "x=", "MIN_N",
                   "never switched"):
        assert phrase in doc, phrase
