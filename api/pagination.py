"""Opaque keyset cursors: the position after the last row of a page.

A cursor is base64url JSON ``{"k": [...], "f": "<filter fingerprint>"}``. It holds no
rights: every query re-applies all filters (including "public only"), so an edited cursor
can at worst move the position. It is still validated strictly, and a cursor made for
other filters is refused, so a mistake gives a 400 instead of a confusing page.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson
from fastapi import HTTPException

MAX_CURSOR_CHARS = 512


def filter_fingerprint(**filters: Any) -> str:
    """A short hash of the filters a cursor belongs to (order of keys is irrelevant)."""
    canonical = orjson.dumps(filters, option=orjson.OPT_SORT_KEYS | orjson.OPT_UTC_Z)
    return hashlib.blake2b(canonical, digest_size=6).hexdigest()


def encode_cursor(key: Sequence[int | str | datetime], fingerprint: str) -> str:
    """The cursor for the position just after `key` (datetimes become ISO strings)."""
    values = [v.isoformat() if isinstance(v, datetime) else v for v in key]
    raw = orjson.dumps({"k": values, "f": fingerprint})
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(cursor: str, fingerprint: str, shape: Sequence[type]) -> list[Any]:
    """The key stored in `cursor`, typed by `shape` (int, str or datetime); 400 if invalid."""
    if len(cursor) > MAX_CURSOR_CHARS:
        raise bad_cursor("it is too long")
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        data = orjson.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    except (ValueError, binascii.Error, UnicodeEncodeError):
        raise bad_cursor("it is not a cursor this API made") from None
    if not isinstance(data, dict) or set(data) != {"k", "f"} or not isinstance(data["k"], list):
        raise bad_cursor("it is not a cursor this API made")
    if data["f"] != fingerprint:
        raise bad_cursor("it belongs to a request with other filters")
    if len(data["k"]) != len(shape):
        raise bad_cursor("it is not a cursor this API made")
    return [_typed(value, kind) for value, kind in zip(data["k"], shape, strict=True)]


def _typed(value: Any, kind: type) -> Any:
    if kind is int and isinstance(value, int) and not isinstance(value, bool):
        if -(2**63) <= value < 2**63:
            return value
    elif kind is str and isinstance(value, str):
        return value
    elif kind is datetime and isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            if parsed.tzinfo is not None:
                return parsed
    raise bad_cursor("it has been altered")


def bad_cursor(why: str) -> HTTPException:
    return HTTPException(
        400,
        f"query parameter 'cursor' is invalid: {why}. Use the next_cursor of the previous "
        "page unchanged, with the same filters, or leave cursor out to start again.",
    )
