"""Configuration of the clinical analyses: column roles, outcomes and settings.

The defaults live in ``thalamus_bidsapp/data/clinical_defaults.yaml`` (each
setting is documented there). A user file given with ``--clinical-config``
(YAML or JSON) is merged over them: mappings key by key, lists and scalars
replaced. The result is a frozen :class:`ClinicalConfig`.
"""

from __future__ import annotations

import copy
import importlib.resources
import json
import logging
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pandas as pd
import yaml

from thalamus_bidsapp.errors import EXIT_DATAERR, EXIT_NOINPUT, EXIT_USAGE, ThalamusError

LOGGER = logging.getLogger(__name__)

DEFAULTS_RESOURCE = "clinical_defaults.yaml"
TRANSFORMS = ("none", "log")
HEMISPHERES = ("bilateral", "left", "right")
HC3_POLICIES = ("auto", "always", "never")


@dataclass(frozen=True)
class RoleSpec:
    """Where the dataset keeps one clinical variable.

    Attributes
    ----------
    role
        The analysis' name for the variable (``age``, ``edss``, ...).
    column
        The dataset's column name.
    aliases
        Other column names tried, in order, when ``column`` is absent.
    table
        ``participants`` or ``sessions``: the BIDS table the column comes from.
    units
        The unit the analyses assume.
    scale
        Factor converting the dataset's values to ``units``.
    required
        Whether a missing column is an error (otherwise the analyses needing it are skipped).
    """

    role: str
    column: str
    aliases: tuple[str, ...] = ()
    table: str = "sessions"
    units: str = ""
    scale: float = 1.0
    required: bool = False

    @property
    def candidates(self) -> tuple[str, ...]:
        return (self.column, *self.aliases)

    @property
    def source_file(self) -> str:
        return "participants.tsv" if self.table == "participants" else "sub-*/[ses-*/]sub-*_sessions.tsv"


@dataclass(frozen=True)
class OutcomeSpec:
    """One clinical outcome of a regression family."""

    role: str
    transform: str = "none"
    hc3: str = "auto"


@dataclass(frozen=True)
class ProgressionBand:
    """EDSS change needed for progression/improvement when baseline EDSS <= ``max_baseline``."""

    max_baseline: float
    change: float


@dataclass(frozen=True)
class ClinicalConfig:
    """Merged clinical configuration (defaults overridden by the user's file).

    See ``clinical_defaults.yaml`` for the meaning of each field.
    """

    columns: Mapping[str, RoleSpec]
    sex_levels: Mapping[str, tuple[str, ...]]
    boolean_values: Mapping[str, tuple[str, ...]]
    methods_include: tuple[str, ...]
    methods_exclude: tuple[str, ...]
    baseline: str
    followup: str
    hc3_alpha: float
    cross_sectional_outcomes: tuple[OutcomeSpec, ...]
    longitudinal_outcomes: tuple[OutcomeSpec, ...]
    winsorize_limits: tuple[tuple[float, float], ...]
    edss_change_categories: str
    edss_change_min: float
    progression_followup: str
    progression_thresholds: tuple[ProgressionBand, ...]
    ancova_covariates: tuple[str, ...]
    logistic_covariates: tuple[str, ...]
    power_difference: float
    power: float
    power_alpha: float
    hemispheres: tuple[str, ...] = ("bilateral",)
    covariates: tuple[str, ...] = ()
    volume_source: str = "raw"
    change_source: str = "longitudinal"
    source: str = "defaults"
    raw: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    # ------------------------------------------------------------------ columns
    def resolve(self, role: str, frame: pd.DataFrame) -> str | None:
        """The column of ``frame`` holding ``role`` (its name or first alias present), or None."""
        spec = self.columns[role]
        for name in spec.candidates:
            if name in frame.columns:
                return name
        return None

    def require(self, frame: pd.DataFrame, roles: Iterable[str], source: str | os.PathLike = "volumes table") -> dict[str, str]:
        """Resolve ``roles`` in ``frame``; raise :class:`ThalamusError` naming the first missing column.

        Parameters
        ----------
        frame
            The table the analyses read (the group volumes table with the clinical columns joined).
        roles
            Roles the analysis cannot do without.
        source
            The file ``frame`` was read from, for the error message.

        Returns
        -------
        dict
            role -> column name.
        """
        found: dict[str, str] = {}
        for role in roles:
            if role not in self.columns:
                raise ThalamusError(f"clinical config ({self.source}): unknown role {role!r}", exit_code=EXIT_USAGE)
            column = self.resolve(role, frame)
            if column is None:
                spec = self.columns[role]
                tried = " or ".join(repr(name) for name in spec.candidates)
                raise ThalamusError(
                    f"column {tried} (clinical role {role!r}, expected from {spec.source_file}) is missing "
                    f"from {os.fspath(source)}; add it to the dataset or map it with "
                    f"'columns: {{{role}: {{column: <name>}}}}' in --clinical-config ({self.source})",
                    exit_code=EXIT_DATAERR,
                )
            found[role] = column
        return found

    def required_roles(self) -> tuple[str, ...]:
        return tuple(role for role, spec in self.columns.items() if spec.required)

    def method_selected(self, method: str, contrast: str) -> bool:
        """Whether the (method, contrast) volumes enter the clinical analyses."""
        base = hemisphere_method(str(method))[0]
        keys = {str(method), f"{method}:{contrast}", base, f"{base}:{contrast}"}
        if self.methods_include and not keys & set(self.methods_include):
            return False
        return not keys & set(self.methods_exclude)

    def to_json(self) -> dict[str, Any]:
        """The merged settings as plain JSON data (for provenance sidecars)."""
        return _thaw(self.raw)


# ---------------------------------------------------------------------- loading
def default_settings() -> dict[str, Any]:
    """The packaged defaults as a plain dictionary."""
    text = importlib.resources.files("thalamus_bidsapp.data").joinpath(DEFAULTS_RESOURCE).read_text()
    return yaml.safe_load(text)


def load_clinical_config(path: str | os.PathLike | None = None) -> ClinicalConfig:
    """Load ``--clinical-config`` merged over the packaged defaults.

    Parameters
    ----------
    path
        A ``.yaml``/``.yml`` or ``.json`` file, or None for the defaults alone.

    Raises
    ------
    ThalamusError
        Missing file (exit 66); unreadable, unknown keys or invalid values (exit 64).
    """
    settings = default_settings()
    source = "defaults"
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ThalamusError(f"clinical config file not found: {path}", exit_code=EXIT_NOINPUT)
        try:
            text = path.read_text()
            user = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
        except (OSError, ValueError, yaml.YAMLError) as exc:
            raise ThalamusError(f"cannot read clinical config {path}: {exc}", exit_code=EXIT_USAGE) from exc
        if user is None:
            user = {}
        if not isinstance(user, Mapping):
            raise ThalamusError(f"clinical config {path}: expected a mapping at the top level", exit_code=EXIT_USAGE)
        _check_keys(user, settings, str(path), prefix="")
        settings = _deep_merge(settings, user)
        source = str(path)
        LOGGER.info("clinical config: %s merged over the packaged defaults", path)
    return config_from_settings(settings, source)


def config_from_settings(settings: Mapping[str, Any], source: str = "defaults") -> ClinicalConfig:
    """Build and validate a :class:`ClinicalConfig` from a merged settings mapping."""
    try:
        return _build(settings, source)
    except ThalamusError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ThalamusError(f"invalid clinical config ({source}): {exc!r}", exit_code=EXIT_USAGE) from exc


def _role_specs(spec_by_role: Mapping[str, Any], fail: Any) -> dict[str, RoleSpec]:
    """The ``columns`` section: one :class:`RoleSpec` per role (``fail(message)`` makes the error)."""
    columns: dict[str, RoleSpec] = {}
    for role, spec in spec_by_role.items():
        if isinstance(spec, str):  # shorthand "edss: EDSS_score"
            spec = {"column": spec}
        if not isinstance(spec, Mapping):
            raise fail(f"key 'columns.{role}' must be a column name or a mapping with 'column', not {spec!r}")
        if "column" not in spec:
            raise fail(f"columns.{role} has no 'column'")
        unknown = set(spec) - _ROLE_KEYS
        if unknown:
            raise fail(f"columns.{role}: unknown key(s) {sorted(unknown)}")
        scale = float(spec.get("scale", 1.0))
        if not math.isfinite(scale) or scale == 0:
            raise fail(f"columns.{role}.scale must be a finite non-zero number")
        aliases = spec.get("aliases") or ()
        if isinstance(aliases, str):
            aliases = (aliases,)
        columns[role] = RoleSpec(
            role=role,
            column=str(spec["column"]),
            aliases=tuple(str(a) for a in aliases),
            table=str(spec.get("table", "sessions")),
            units=str(spec.get("units", "")),
            scale=scale,
            required=bool(spec.get("required", False)),
        )
    return columns


def _winsorize_limits(pairs: Any, fail: Any) -> list[tuple[float, float]]:
    limits = []
    for pair in pairs:
        low, high = (float(v) for v in pair)
        if not (0 <= low < 0.5 and 0 <= high < 0.5):
            raise fail(f"winsorize limits must lie in [0, 0.5): {pair}")
        limits.append((low, high))
    return limits


def _progression_bands(thresholds: Any, fail: Any) -> tuple[ProgressionBand, ...]:
    bands = tuple(ProgressionBand(float(b["max_baseline"]), float(b["change"])) for b in thresholds)
    if not bands or any(b.change <= 0 for b in bands):
        raise fail("progression.thresholds need at least one band, each with a positive change")
    if any(b2.max_baseline <= b1.max_baseline for b1, b2 in zip(bands, bands[1:])):
        raise fail("progression.thresholds must be sorted by increasing max_baseline")
    return bands


def _build(s: Mapping[str, Any], source: str) -> ClinicalConfig:
    def fail(message: str) -> ThalamusError:
        return ThalamusError(f"invalid clinical config ({source}): {message}", exit_code=EXIT_USAGE)

    columns = _role_specs(s["columns"], fail)

    def outcomes(key: str) -> tuple[OutcomeSpec, ...]:
        out = []
        for item in s[key]["outcomes"]:
            if isinstance(item, str):
                item = {"role": item}
            spec = OutcomeSpec(role=str(item["role"]), transform=str(item.get("transform", "none")), hc3=str(item.get("hc3", "auto")))
            if spec.role not in columns:
                raise fail(f"{key}.outcomes: role {spec.role!r} has no entry under 'columns'")
            if spec.transform not in TRANSFORMS:
                raise fail(f"{key}.outcomes.{spec.role}.transform must be one of {TRANSFORMS}")
            if spec.hc3 not in HC3_POLICIES:
                raise fail(f"{key}.outcomes.{spec.role}.hc3 must be one of {HC3_POLICIES}")
            out.append(spec)
        return tuple(out)

    limits = _winsorize_limits(s["longitudinal"]["winsorize_limits"], fail)
    bands = _progression_bands(s["progression"]["thresholds"], fail)

    followup = str(s["sessions"]["followup"])
    prog_followup = str(s["progression"]["followup"])
    categories = str(s["longitudinal"]["edss_change_categories"])
    if categories not in ("fixed", "thresholds"):
        raise fail("longitudinal.edss_change_categories must be 'fixed' or 'thresholds'")
    power = float(s["power"]["power"])
    alpha = float(s["power"]["alpha"])
    if not (0 < power < 1 and 0 < alpha < 1):
        raise fail("power.power and power.alpha must lie in (0, 1)")
    difference = float(s["power"]["difference_pct_per_year"])
    if not difference > 0:
        raise fail("power.difference_pct_per_year must be positive")

    def strings(values: Any) -> tuple[str, ...]:
        if values is None:
            return ()
        if isinstance(values, str):
            return (values,)
        return tuple(str(v) for v in values)

    return ClinicalConfig(
        columns=MappingProxyType(columns),
        sex_levels=MappingProxyType({str(k): tuple(str(v).lower() for v in vals) for k, vals in s["sex_levels"].items()}),
        boolean_values=MappingProxyType(
            {str(k).lower(): tuple(str(v).lower() for v in vals) for k, vals in s["boolean_values"].items()}
        ),
        methods_include=strings(s["methods"].get("include")),
        methods_exclude=strings(s["methods"].get("exclude")),
        baseline=str(s["sessions"]["baseline"]),
        followup=followup,
        hc3_alpha=float(s["hc3_alpha"]),
        cross_sectional_outcomes=outcomes("cross_sectional"),
        longitudinal_outcomes=outcomes("longitudinal"),
        winsorize_limits=tuple(limits),
        edss_change_categories=categories,
        edss_change_min=float(s["longitudinal"]["edss_change_min"]),
        progression_followup=prog_followup,
        progression_thresholds=bands,
        ancova_covariates=strings(s["progression"]["ancova_covariates"]),
        logistic_covariates=strings(s["progression"]["logistic_covariates"]),
        power_difference=difference,
        power=power,
        power_alpha=alpha,
        hemispheres=_hemispheres(s.get("hemispheres", ["bilateral"]), fail),
        covariates=_covariates(strings(s.get("covariates")), columns, fail),
        volume_source=_volume_source(s.get("volume_source", "raw"), fail),
        change_source=_change_source(s.get("change_source", "longitudinal"), fail),
        source=source,
        raw=_freeze(copy.deepcopy(dict(s))),
    )


#: Covariates computed by the app (not columns of the dataset's tables): name -> volumes table column.
COMPUTED_COVARIATES = {"lesion_volume": "lesion_volume_ml"}


def _covariates(names: tuple[str, ...], columns: Mapping[str, Any], fail) -> tuple[str, ...]:
    """The ``covariates`` list, each a computed covariate (lesion_volume) or a role of ``columns``."""
    for name in names:
        if name not in COMPUTED_COVARIATES and name not in columns:
            raise fail(f"covariates: unknown covariate {name!r}; use {', '.join(COMPUTED_COVARIATES)} or a role of "
                       "'columns'")
    return names


def _deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


_ROLE_KEYS = {"column", "aliases", "table", "units", "scale", "required"}

# Under these keys the user may add new entries (new roles, sex levels).
_OPEN_KEYS = {"columns", "sex_levels", "boolean_values"}


def _check_keys(user: Mapping[str, Any], defaults: Mapping[str, Any], source: str, prefix: str) -> None:
    """Reject misspelt keys early: a typo would otherwise silently keep a default."""
    for key, value in user.items():
        if key not in defaults:
            if prefix.rstrip(".") in _OPEN_KEYS:
                continue
            raise ThalamusError(f"clinical config {source}: unknown key '{prefix}{key}'", exit_code=EXIT_USAGE)
        shorthand = prefix == "columns." and isinstance(value, str)  # "edss: EDSS_score"
        if isinstance(defaults[key], Mapping) and not isinstance(value, Mapping) and not shorthand:
            raise ThalamusError(f"clinical config {source}: key '{prefix}{key}' must be a mapping "
                                f"(key: value entries), not {value!r}", exit_code=EXIT_USAGE)
        if isinstance(value, Mapping) and isinstance(defaults[key], Mapping) and prefix.count(".") < 1:
            _check_keys(value, defaults[key], source, f"{prefix}{key}.")


def _freeze(value: Any) -> Any:
    if isinstance(value, Mapping):
        return MappingProxyType({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


def _thaw(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    return value


VOLUME_SOURCES = ("raw", "harmonized")


def _volume_source(value: Any, fail) -> str:
    """The ``volume_source`` setting: raw or harmonized."""
    if value not in VOLUME_SOURCES:
        raise fail(f"volume_source must be one of {list(VOLUME_SOURCES)} (got {value!r})")
    return str(value)


CHANGE_SOURCES = ("longitudinal", "cross-sectional")


def _change_source(value: Any, fail) -> str:
    """The ``change_source`` setting: longitudinal (where the longitudinal mode measured it) or cross-sectional."""
    if value not in CHANGE_SOURCES:
        raise fail(f"change_source must be one of {list(CHANGE_SOURCES)} (got {value!r})")
    return str(value)


def _hemispheres(values: Any, fail) -> tuple[str, ...]:
    """The ``hemispheres`` setting: a non-empty list of bilateral, left, right (each once)."""
    values = [values] if isinstance(values, str) else list(values or [])
    wrong = [v for v in values if v not in HEMISPHERES]
    if not values or wrong or len(set(values)) != len(values):
        raise fail(f"hemispheres must list some of {list(HEMISPHERES)}, each once (got {values})")
    return tuple(str(v) for v in values)


def hemisphere_method(method: str) -> tuple[str, str]:
    """``freesurfer_left`` -> (``freesurfer``, ``left``); a method without a side suffix is bilateral."""
    for side in ("left", "right"):
        if method.endswith(f"_{side}"):
            return method[: -len(side) - 1], side
    return method, "bilateral"
