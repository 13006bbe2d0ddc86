"""Exception types shared by every part of sparsearch.

Every error raised for bad user input is a subclass of :class:`SparsearchError` and of the matching builtin
(``ValueError`` or ``FileNotFoundError``), so callers can catch either. Messages are one line: what is wrong,
what is allowed, and what was given. The CLI turns any :class:`SparsearchError` into exit status 2.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class SparsearchError(Exception):
    """Base class of every error sparsearch raises for bad input or configuration."""


class SpecError(SparsearchError, ValueError):
    """A study file or an override is invalid (unknown key, wrong type, out-of-range value)."""


class DataError(SparsearchError, ValueError):
    """Input data is unusable (missing file or column, empty table, unsupported type, ...)."""


class ConnectionProblem(SparsearchError, ConnectionError):
    """A service sparsearch needs (Ray cluster, storage, tracking server) cannot be reached."""


def first_line(error: BaseException | str, *, limit: int | None = None) -> str:
    """The first line of an error's message, for one-line errors and records (a traceback is never shown).

    An exception with an empty message gives its type's name; an empty text gives ``""``. ``limit`` cuts the line
    to at most that many characters.

    Example:
        >>> first_line(ValueError("bad value\\n  detail"))
        'bad value'
        >>> first_line(KeyError()), first_line("  \\n"), first_line("abcdef", limit=3)
        ('KeyError', '', 'abc')
    """
    text = str(error).strip()
    if not text and isinstance(error, BaseException):
        text = type(error).__name__
    line = text.splitlines()[0] if text else ""
    return line if limit is None else line[:limit]


def closest(name: str, choices: Iterable[str]) -> str | None:
    """Return the choice closest to ``name`` (for 'did you mean' hints), or ``None``."""
    matches = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return matches[0] if matches else None


def unknown_choice(kind: str, name: object, choices: Iterable[str]) -> SpecError:
    """Build the standard error for an unknown registry name.

    Example:
        >>> str(unknown_choice("sampler", "tpee", ["tpe", "random"]))
        "unknown sampler 'tpee' (did you mean 'tpe'?); allowed: random, tpe"
    """
    choices = sorted(choices)
    hint = closest(str(name), choices)
    did = f" (did you mean '{hint}'?)" if hint else ""
    return SpecError(f"unknown {kind} {name!r}{did}; allowed: {', '.join(choices)}")
