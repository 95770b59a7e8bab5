"""JSON responses with a weak ETag, If-None-Match → 304, and Cache-Control."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
from fastapi import Request, Response

# Seconds a browser or proxy may reuse an answer.
MAX_AGE_LATEST_S = 30
MAX_AGE_LISTS_S = 300
MAX_AGE_OPEN_RANGE_S = 60
MAX_AGE_CLOSED_RANGE_S = 86400


def json_body(payload: Any) -> bytes:
    """Serialise `payload` (dicts, lists, datetimes, numbers) to JSON bytes."""
    return orjson.dumps(payload, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_UTC_Z)


def cached_response(
    request: Request,
    body: bytes,
    max_age_s: int,
    media_type: str = "application/json",
    headers: dict[str, str] | None = None,
) -> Response:
    """`body` with a weak ETag from its hash; an empty 304 when the client has it already."""
    etag = 'W/"' + hashlib.blake2b(body, digest_size=16).hexdigest() + '"'
    cache_headers = {
        "ETag": etag,
        "Cache-Control": f"public, max-age={max_age_s}",
        "Vary": "Accept, Accept-Encoding, Origin",
        **(headers or {}),
    }
    if etag_matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=cache_headers)
    return Response(content=body, media_type=media_type, headers=cache_headers)


def cached_json(request: Request, payload: Any, max_age_s: int) -> Response:
    """`payload` as JSON with ETag and Cache-Control."""
    return cached_response(request, json_body(payload), max_age_s)


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """Weak comparison (RFC 9110 §13.1.2): ``W/"x"`` matches ``"x"``; ``*`` matches all."""
    if not if_none_match:
        return False
    wanted = etag.removeprefix("W/")
    for candidate in if_none_match.split(","):
        candidate = candidate.strip()
        if candidate == "*" or candidate.removeprefix("W/") == wanted:
            return True
    return False
