"""Time-range parameters shared by readings and exports: timezone-aware, ordered, bounded."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
from fastapi import HTTPException

from analytics.localtime import utc_offsets_s

_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


def require_aware(name: str, value: datetime | None) -> datetime | None:
    """`value` in UTC; 400 naming `name` when it has no timezone."""
    if value is None:
        return None
    if value.tzinfo is None or value.utcoffset() is None:
        raise HTTPException(
            400,
            f"query parameter '{name}' needs a timezone, e.g. 2026-01-31T00:00:00Z or "
            "2026-01-31T01:00:00+01:00",
        )
    if value.year < 1970 or value.year > 9000:
        raise HTTPException(400, f"query parameter '{name}' must be between 1970 and 9000")
    return value.astimezone(UTC)


def time_range(
    start: datetime | None,
    end: datetime | None,
    *,
    max_span: timedelta,
    default_span: timedelta,
    what: str,
) -> tuple[datetime, datetime]:
    """[from, to) from the parameters, defaulting to the `default_span` up to now.

    400 when from is not before to, or the range exceeds `max_span` (the message says
    the limit and how to stay under it).
    """
    end = require_aware("to", end) or datetime.now(UTC)
    start = require_aware("from", start) or end - default_span
    if start >= end:
        raise HTTPException(400, "query parameter 'from' must be before 'to'")
    if end - start > max_span:
        raise HTTPException(
            400,
            f"the range from {start.isoformat()} to {end.isoformat()} is longer than "
            f"{_human(max_span)}, the limit for {what}; ask for a shorter range or "
            "split it into several requests",
        )
    return start, end


def floor_to(value: datetime, width: timedelta) -> datetime:
    """`value` rounded down to a multiple of `width` since 2000-01-01 UTC."""
    return value - (value - _EPOCH) % width


def ceil_to(value: datetime, width: timedelta) -> datetime:
    """`value` rounded up to a multiple of `width` since 2000-01-01 UTC."""
    floored = floor_to(value, width)
    return floored if floored == value else floored + width


def floor_to_local_day(value: datetime, zone: str) -> datetime:
    """Local midnight of `zone` at or before `value`, in UTC."""
    local = value.astimezone(ZoneInfo(zone))
    midnight = datetime(local.year, local.month, local.day, tzinfo=ZoneInfo(zone))
    return midnight.astimezone(UTC)


def ceil_to_local_day(value: datetime, zone: str) -> datetime:
    """Local midnight of `zone` at or after `value`, in UTC."""
    floored = floor_to_local_day(value, zone)
    if floored == value:
        return floored
    local = floored.astimezone(ZoneInfo(zone))
    following = datetime(local.year, local.month, local.day, tzinfo=ZoneInfo(zone)) + timedelta(
        days=1
    )  # wall-clock arithmetic: the next local midnight, 23, 24 or 25 hours later
    return following.astimezone(UTC)


def whole_hour_offsets(start: datetime, end: datetime, zone: str) -> bool:
    """True when `zone` is a whole number of hours from UTC over [start, end] (probed
    daily: offsets last months), so local days are whole sets of UTC hours."""
    times = np.append(np.arange(start.timestamp(), end.timestamp(), 86400.0), end.timestamp())
    return bool(np.all(np.mod(utc_offsets_s(times, zone), 3600.0) == 0.0))


def _human(span: timedelta) -> str:
    return f"{span.days} days" if span.days else f"{int(span.total_seconds() // 3600)} hours"
