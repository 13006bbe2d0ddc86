"""Study-file errors: a pydantic validation error as one line naming the section, the key and what is allowed."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel, ValidationError

from sparsearch.errors import SpecError, closest

__all__ = ["format_error"]


def format_error(exc: ValidationError, origin: str, *, models: Mapping[str, type[BaseModel]],
                 section: str | None = None) -> SpecError:
    """The first error of a pydantic validation as one line: where (``[section] key``), what, and what was given.

    ``models`` maps each study-file section to its model, in the order errors list them; an unknown key is named
    with the closest valid one of its section, an unknown section with the closest section.
    """
    sections = list(models)
    err = exc.errors(include_url=False)[0]
    # keys come from the user's file: escape what would break the one-line error (a key may be "\n")
    loc = [str(p) if str(p).isprintable() else repr(str(p))[1:-1]
           for p in err["loc"] if not str(p).startswith(("function-", "tagged-"))]
    if section is not None:
        loc = [section, *loc]
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    if err["type"] == "extra_forbidden":
        key = loc[-1]
        section = loc[0] if len(loc) > 1 else None
        if section is None:
            hint = closest(key, sections)
            did = f" (did you mean [{hint}]?)" if hint else ""
            return SpecError(f"{origin}: unknown section [{key}]{did}; allowed: {', '.join(sections)}{more}")
        model = models.get(section)
        allowed = list(model.model_fields) if model is not None else []
        hint = closest(key, allowed)
        did = f" (did you mean '{hint}'?)" if hint else ""
        return SpecError(f"{origin}: unknown key '{key}' in [{section}]{did}; allowed: {', '.join(allowed)}{more}")
    where = (f"[{loc[0]}] " + ".".join(loc[1:])) if len(loc) > 1 else (f"[{loc[0]}]" if loc else "study")
    msg = err["msg"].removeprefix("Value error, ")
    given = err.get("input")
    shown = "" if isinstance(given, dict) or err["type"] == "missing" else f" (got {given!r})"
    return SpecError(f"{origin}: {where}: {msg}{shown}{more}")
