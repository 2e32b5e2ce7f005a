"""The QC thresholds: ``data/qc_thresholds.yaml``, with a user's ``--qc-thresholds`` file merged over it."""

from __future__ import annotations

import importlib.resources
import json
import math
import os
from pathlib import Path
from typing import Any

import yaml

from thalamus_bidsapp.errors import EXIT_NOINPUT, EXIT_USAGE, ThalamusError
from thalamus_bidsapp.stats.qc import RULE_KINDS

DEFAULTS_FILE = "qc_thresholds.yaml"
_SETTINGS = {"prior_threshold": (0.0, 1.0), "component_min_fraction": (0.0, 1.0), "min_cohort_sessions": (2, None)}
_RULE_KEYS = {"kind", "warn", "fail", "source"}


def default_thresholds() -> dict[str, Any]:
    """The packaged defaults."""
    return yaml.safe_load(importlib.resources.files("thalamus_bidsapp.data").joinpath(DEFAULTS_FILE).read_text())


def load_thresholds(path: str | os.PathLike | None = None) -> dict[str, Any]:
    """The QC thresholds: the defaults, with ``path`` (YAML or JSON) merged over them key by key.

    Raises
    ------
    ThalamusError
        Exit 66 for a missing file; exit 64 for a file that cannot be parsed,
        an unknown key (named) or a value of the wrong kind.
    """
    settings = default_thresholds()
    if path is None:
        return settings
    path = Path(path)
    if not path.is_file():
        raise ThalamusError(f"QC thresholds file not found: {path}", EXIT_NOINPUT)
    try:
        text = path.read_text()
        user = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as err:
        raise ThalamusError(f"cannot read the QC thresholds file {path}: {err}", EXIT_USAGE) from err
    user = {} if user is None else user
    if not isinstance(user, dict):
        raise ThalamusError(f"QC thresholds file {path}: expected a mapping at the top level", EXIT_USAGE)
    for key, value in user.items():
        if key == "checks":
            settings["checks"] = _merge_checks(settings["checks"], value, path)
        elif key in _SETTINGS:
            settings[key] = _setting(key, value, path)
        else:
            raise ThalamusError(f"QC thresholds file {path}: unknown key '{key}' (known: checks, "
                                f"{', '.join(_SETTINGS)})", EXIT_USAGE)
    return settings


def _setting(key: str, value: Any, path: Path) -> float:
    low, high = _SETTINGS[key]
    if not _number(value) or value < low \
            or (high is not None and value > high):
        bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ThalamusError(f"QC thresholds file {path}: '{key}' must be a number {bounds}, not {value!r}",
                            EXIT_USAGE)
    return value


def _merge_checks(defaults: dict[str, Any], user: Any, path: Path) -> dict[str, Any]:
    if not isinstance(user, dict):
        raise ThalamusError(f"QC thresholds file {path}: 'checks' must be a mapping of check names", EXIT_USAGE)
    merged = {name: dict(rule) for name, rule in defaults.items()}
    for name, rule in user.items():
        if name not in defaults:
            raise ThalamusError(f"QC thresholds file {path}: unknown check 'checks.{name}' (known: "
                                f"{', '.join(defaults)})", EXIT_USAGE)
        if not isinstance(rule, dict):
            raise ThalamusError(f"QC thresholds file {path}: 'checks.{name}' must be a mapping "
                                "(kind, warn, fail)", EXIT_USAGE)
        for key in rule:
            if key not in _RULE_KEYS:
                raise ThalamusError(f"QC thresholds file {path}: unknown key 'checks.{name}.{key}' (known: "
                                    f"{', '.join(sorted(_RULE_KEYS))})", EXIT_USAGE)
        merged[name].update(rule)
        _check_rule(name, merged[name], path)
    return merged


def _check_rule(name: str, rule: dict[str, Any], path: Path) -> None:
    """A rule's levels have the shape its kind needs, and fail is at least as strict as warn allows."""
    where = f"QC thresholds file {path}: 'checks.{name}"
    if rule["kind"] not in RULE_KINDS:
        raise ThalamusError(f"{where}.kind' must be one of {', '.join(RULE_KINDS)}, not {rule['kind']!r}",
                            EXIT_USAGE)
    for level in ("warn", "fail"):
        value = rule[level]
        if rule["kind"] == "range":
            ok = (isinstance(value, list) and len(value) == 2 and all(_number(v) for v in value)
                  and value[0] <= value[1])
            wanted = "a pair [low, high] of numbers"
        else:
            ok, wanted = _number(value), "a number"
        if not ok:
            raise ThalamusError(f"{where}.{level}' must be {wanted} (finite), not {value!r}", EXIT_USAGE)


def _number(value: Any) -> bool:
    """A finite int or float: a NaN threshold would make every comparison false (the check always passes)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
