"""The shared one-line error helpers of sparsearch.errors."""

from __future__ import annotations

import pytest

from sparsearch.errors import first_line


@pytest.mark.parametrize(("error", "limit", "expected"), [
    (RuntimeError("  storage gone\nTraceback (most recent call last):\n  ..."), None, "storage gone"),
    (RuntimeError("\n\nsecond line first\nthird"), None, "second line first"),
    (ConnectionError(), None, "ConnectionError"),  # an empty message names the type
    (OSError("   "), None, "OSError"),
    ("worker died\n  at line 3", None, "worker died"),
    ("", None, ""),  # a text is never replaced by a type name
    ("x" * 50 + "\nrest", 10, "x" * 10),
    (ValueError("short"), 200, "short"),
])
def test_first_line(error, limit, expected):
    assert first_line(error, limit=limit) == expected
