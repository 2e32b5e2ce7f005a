"""Which thalamus segmentation methods run for a session, and why others do not.

By default every registered method whose tool is found runs and the others
are listed with the reason; a method named in ``--methods`` that cannot run
is an error (exit 66) that says how to provide it. Nothing here names a
method: each declares its own checks (:mod:`thalamus_bidsapp.methods.base`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from thalamus_bidsapp.errors import EXIT_NOINPUT, ThalamusError
from thalamus_bidsapp.methods.base import ToolStatus
from thalamus_bidsapp.methods.capabilities import EnvelopeUser, needs_envelope
from thalamus_bidsapp.methods.registry import all_methods, envelope_names, get_method, method_names

if TYPE_CHECKING:
    from thalamus_bidsapp.bidsio.inputs import SessionInputs
    from thalamus_bidsapp.config import RunConfig

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class MethodPlan:
    """The methods a session runs (``run``), the skipped ones with reasons, and each one's settings."""

    run: tuple[str, ...]
    skipped: dict[str, str] = field(default_factory=dict)
    settings: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    envelope: str | None = None

    def settings_of(self, method: str) -> Mapping[str, Any]:
        return self.settings.get(method, {})


@dataclass(frozen=True)
class ToolCheck:
    """Whether each method's session-independent tools are installed.

    ``reasons``: method -> why it cannot run (None: it can; a method absent
    from the mapping is taken as able to run). ``settings``: method -> what
    the check found (model folders, executables), passed to its nodes.
    """

    reasons: dict[str, str | None]
    settings: dict[str, Mapping[str, Any]] = field(default_factory=dict)

    def status(self, method: str) -> ToolStatus:
        return ToolStatus(self.reasons.get(method), self.settings.get(method, {}))


def check_tools(config: RunConfig) -> ToolCheck:
    """Run every wanted method's tool check once per run (per-session checks happen in planning)."""
    wanted = config.methods if config.methods is not None else method_names()
    reasons: dict[str, str | None] = {}
    settings: dict[str, Mapping[str, Any]] = {}
    for name in wanted:
        status = get_method(name).check_tools(config)
        reasons[name], settings[name] = status.reason, dict(status.settings)
    return ToolCheck(reasons=reasons, settings=settings)


def plan_methods(session: SessionInputs, config: RunConfig, tools: ToolCheck) -> MethodPlan:
    """Decide the methods of one session.

    Raises
    ------
    ThalamusError
        A method asked for with ``--methods`` whose tool or inputs are
        missing (exit 66).
    """
    required = config.methods is not None
    wanted = list(config.methods) if required else list(method_names())
    run: list[str] = []
    skipped: dict[str, str] = {}
    settings: dict[str, Mapping[str, Any]] = {}
    for name in wanted:
        method = get_method(name)
        status = method.plan(session, config, tools.status(name), required=required)
        reason = status.reason
        if reason is None and needs_envelope(method) and _envelope(method, config, run) is None:
            reason = (f"no envelope method for {name}: "
                      f"{method.envelope_choice(config) or ' or '.join(envelope_names())} does not run")
        if reason is None:
            run.append(name)
            settings[name] = status.settings
        elif required:
            raise ThalamusError(f"{session.name}: method {name!r} cannot run: {reason}", EXIT_NOINPUT)
        else:
            skipped[name] = reason
            LOGGER.info("%s: method %s skipped: %s", session.name, name, reason)
    needing = next((get_method(name) for name in run if needs_envelope(get_method(name))), None)
    return MethodPlan(run=tuple(run), skipped=skipped, settings=settings,
                      envelope=_envelope(needing, config, run) if needing else None)


def _envelope(method: EnvelopeUser, config: RunConfig, run: list[str]) -> str | None:
    """The envelope of ``method``: the one asked for, else the first in order of preference that runs."""
    asked = method.envelope_choice(config)
    if asked:
        return asked if asked in run else None
    return next((m for m in envelope_names() if m in run), None)


def plan_summary(plan: MethodPlan) -> dict[str, Any]:
    """Each method's settings as ``logs/<run>/methods.json`` records them (only the methods with some)."""
    out = {}
    for method in all_methods():
        if method.name in plan.run:
            summary = method.summary(plan.settings_of(method.name))
            if summary is not None:
                out[method.name] = summary
    return out
