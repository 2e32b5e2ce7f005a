"""A session's lesion mask in the derivatives datasets: one file, or a clear note or problem naming the search."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from thalamus_bidsapp.bidsio.inputs import default_queries, role_queries


def lesion_input(derivative_layouts, queries, entities: dict[str, Any], notes: list[str],
                 problems: list[str]) -> Path | None:
    """The session's lesion mask: the one file the first matching query finds in the derivatives datasets.

    Two or more candidates are a problem (the session fails, naming them): a
    filter must choose. Nothing found is a note naming what was looked for
    when lesions are looked for (``--derivatives`` given, or a lesion filter),
    and a problem with an explicit lesion filter.
    """
    explicit = queries["lesion"] != default_queries()["lesion"]
    if not derivative_layouts:
        return None  # an explicit filter without --derivatives is refused when the run starts
    for query in role_queries(queries, "lesion"):
        files = sorted({Path(f) for deriv in derivative_layouts.values()
                        for f in deriv.get(return_type="file", **{**query, **entities})})
        if len(files) > 1:
            problems.append(f"{len(files)} lesion masks found ({', '.join(map(str, files))}): choose one with the "
                            "'lesion' key of --bids-filter-file (e.g. {\"lesion\": {\"desc\": \"...\"}})")
            return None
        if files:
            return files[0]
    looked = (" or ".join(_describe_query(q) for q in role_queries(queries, "lesion"))
              + " in " + ", ".join(f"{name} ({deriv.root})" for name, deriv in derivative_layouts.items()))
    misplaced = _without_session_entity(derivative_layouts, queries, entities)
    message = f"no lesion mask found: looked for {looked}" + (
        f"; {', '.join(misplaced)} lack the ses-{entities['session']} entity this session needs"
        if misplaced else "")
    (problems if explicit else notes).append(message)
    return None


def _describe_query(query: dict[str, Any]) -> str:
    return "{" + ", ".join(f"{key}={value}" for key, value in sorted(query.items()) if value is not None) + "}"


def _without_session_entity(derivative_layouts, queries, entities: dict[str, Any]) -> list[str]:
    """Lesion files of the subject without a session entity, when the session has one (named in the note)."""
    from bids.layout import Query

    if not isinstance(entities.get("session"), str):
        return []
    names = set()
    for query in role_queries(queries, "lesion"):
        for deriv in derivative_layouts.values():
            names |= {Path(f).name for f in deriv.get(return_type="file", **{**query, "subject": entities["subject"],
                                                                             "session": Query.NONE})}
    return sorted(names)
