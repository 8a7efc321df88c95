"""Opaque page tokens: a cursor plus a fingerprint of the filters it was made for.

AIP-158: a token is only valid with the same filters; anything else, or garbage, is refused as
INVALID_ARGUMENT on `page_token`, never treated as "start over".
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from parleyd.domain.errors import InvalidArgument

# Tokens are not signed, so a caller can forge any cursor: keep cursors to values the store can
# bind on every database (PostgreSQL refuses NUL in text and integers beyond int32 for an INTEGER).
_CURSOR_INT_MAX = 2**31 - 1
_CURSOR_STR_MAX_CHARS = 256


def filters_fingerprint(filters: dict[str, Any]) -> str:
    blob = json.dumps(filters, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def encode_page_token(kind: str, cursor: str | int, fingerprint: str) -> str:
    blob = json.dumps({"k": kind, "c": cursor, "f": fingerprint}, separators=(",", ":"))
    return base64.urlsafe_b64encode(blob.encode()).decode().rstrip("=")


def decode_page_token(
    token: str, kind: str, fingerprint: str, field: str = "page_token"
) -> str | int | None:
    """The cursor inside `token`, or None for an empty token."""
    if not token:
        return None
    try:
        padded = token + "=" * (-len(token) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()).decode())
        if not isinstance(data, dict) or data.get("k") != kind:
            raise ValueError
        cursor = data["c"]
        if not isinstance(cursor, str | int) or isinstance(cursor, bool):
            raise ValueError
        if isinstance(cursor, int) and not 0 <= cursor <= _CURSOR_INT_MAX:
            raise ValueError
        if isinstance(cursor, str) and (len(cursor) > _CURSOR_STR_MAX_CHARS or "\x00" in cursor):
            raise ValueError
    # RecursionError: json.loads of a deeply nested array such as "[[[[…".
    except (ValueError, KeyError, UnicodeDecodeError, RecursionError):
        raise InvalidArgument.field(field, "is not a page token this call returned") from None
    if data.get("f") != fingerprint:
        raise InvalidArgument.field(
            field, "was returned for different filters; repeat the same filters or start over"
        )
    return cursor
