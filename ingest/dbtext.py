"""Text that is safe to hand to PostgreSQL, whatever a sender put in it.

PostgreSQL text cannot hold NUL (U+0000), and UTF-8 cannot encode lone surrogates (which
a JSON ``\\ud800`` escape may produce). Either in one dead letter's detail, device id or
topic made its COPY fail, and with it the whole batch. Every text ingest writes passes
through `db_text`; the bytes of the message itself are kept unchanged in the payload.
"""

from __future__ import annotations

# Longest detail kept: enough for every refused value of a message of
# IOT_MAX_MESSAGE_BYTES to be named, short enough that a dead letter stays small.
MAX_TEXT_CHARS = 2000


def db_text(value: str, limit: int = MAX_TEXT_CHARS) -> str:
    """`value` with NUL written as ``\\x00`` and lone surrogates escaped, cut to `limit`
    characters (marked with an ellipsis)."""
    if "\x00" in value:
        value = value.replace("\x00", "\\x00")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            value = value.encode("utf-8", "backslashreplace").decode("utf-8")
    if len(value) > limit:
        value = value[: limit - 1] + "…"
    return value


def db_text_or_none(value: str | None, limit: int = MAX_TEXT_CHARS) -> str | None:
    return None if value is None else db_text(value, limit)
