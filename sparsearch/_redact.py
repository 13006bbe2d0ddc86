"""Credential redaction: hide the password of any ``scheme://user:password@host`` URL in a text.

Every message, record or tag that may hold a storage or tracking URL goes through :func:`redact` (storage,
tracking, results, the CLI's last-resort error line). It lives here, apart from the storage code, so that a module
needing it imports nothing else.
"""

from __future__ import annotations

import re

__all__ = ["redact"]

_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@/\s]*)@")


def redact(text: str) -> str:
    """Hide passwords in any ``scheme://user:password@host`` URL inside ``text``.

    Example:
        >>> redact("postgresql://bob:s3cret@127.0.0.1:5432/db")
        'postgresql://bob:***@127.0.0.1:5432/db'
    """
    return _CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}:***@", str(text))
