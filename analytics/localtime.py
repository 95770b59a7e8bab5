"""Local civil time for arrays of UTC seconds, with daylight saving, without a loop per sample.

`zoneinfo` answers one instant at a time. Here a zone's transitions (the instants its UTC
offset changes) are found once per year and cached; a sample's offset is then one
`searchsorted` into them, so a million samples cost a few milliseconds and every sample
gets the offset in force at its own instant (a week spanning the last Sunday of October
gets +2 h before 01:00 UTC that Sunday and +1 h after).

Times are float seconds since the epoch (UTC); NaN stays NaN. Local days are counted
from 1970-01-01 (local), weekday 0 is Monday.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np

DEFAULT_TIMEZONE = "Europe/Copenhagen"
SECONDS_PER_DAY = 86400.0


class UnknownTimezoneError(ValueError):
    """The name is no IANA time zone known to this machine (tzdata)."""


def zone_info(name: str) -> ZoneInfo:
    """The ZoneInfo of an IANA name such as Europe/Copenhagen; UnknownTimezoneError names
    the zone when it does not exist."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # "Europe" is a directory
        raise UnknownTimezoneError(
            f"unknown time zone {name!r}; use an IANA name such as Europe/Copenhagen or UTC"
        ) from None


def _offset_at(zone: ZoneInfo, t: int) -> int:
    offset = datetime.fromtimestamp(t, UTC).astimezone(zone).utcoffset()
    return int(offset.total_seconds()) if offset is not None else 0


@lru_cache(maxsize=256)
def _year_transitions(name: str, year: int) -> tuple[tuple[int, int], ...]:
    """(instant, offset from then on) of each offset change in `year` (UTC seconds).

    Probes every 6 hours (no zone changes its offset twice within 6 hours), then bisects
    each change to the second."""
    zone = zone_info(name)
    start = int(datetime(year, 1, 1, tzinfo=UTC).timestamp())
    end = int(datetime(year + 1, 1, 1, tzinfo=UTC).timestamp())
    step = 6 * 3600
    found = []
    previous_t, previous = start, _offset_at(zone, start)
    for t in range(start + step, end + step, step):
        current = _offset_at(zone, t)
        if current != previous:
            low, high = previous_t, t  # offset(low) = previous, offset(high) = current
            while high - low > 1:
                middle = (low + high) // 2
                if _offset_at(zone, middle) == previous:
                    low = middle
                else:
                    high = middle
            found.append((high, current))
        previous_t, previous = t, current
    return tuple(found)


@lru_cache(maxsize=64)
def _transition_table(name: str, first_year: int, last_year: int) -> tuple[np.ndarray, np.ndarray]:
    """Transition instants and offsets for [first_year, last_year]: offset_s[i] holds from
    instants[i - 1] (inclusive) to instants[i]; offset_s[0] before the first instant."""
    zone = zone_info(name)
    start = int(datetime(first_year, 1, 1, tzinfo=UTC).timestamp())
    instants, offsets = [], [_offset_at(zone, start)]
    for year in range(first_year, last_year + 1):
        for instant, offset in _year_transitions(name, year):
            instants.append(instant)
            offsets.append(offset)
    return np.array(instants, dtype=float), np.array(offsets, dtype=float)


def _year_of(seconds: float) -> int:
    return datetime.fromtimestamp(min(max(seconds, -2e9), 2.5e11), UTC).year


def utc_offsets_s(time_s: np.ndarray | float, zone: str = DEFAULT_TIMEZONE) -> np.ndarray:
    """UTC offset (seconds, e.g. 3600 or 7200 in Copenhagen) in force at each instant."""
    time_s = np.asarray(time_s, dtype=float)
    finite = time_s[np.isfinite(time_s)]
    if finite.size == 0:
        return np.full(time_s.shape, np.nan)
    first_year, last_year = _year_of(float(finite.min())), _year_of(float(finite.max()))
    instants, offsets = _transition_table(zone, first_year, last_year)
    if instants.size == 0:
        result = np.full(time_s.shape, offsets[0])
    else:
        result = offsets[np.searchsorted(instants, time_s, side="right")]
    if finite.size != time_s.size:
        result = np.where(np.isnan(time_s), np.nan, result)
    return result


def local_seconds(time_s: np.ndarray | float, zone: str = DEFAULT_TIMEZONE) -> np.ndarray:
    """Local wall-clock seconds since 1970-01-01 00:00 local (UTC seconds + offset)."""
    time_s = np.asarray(time_s, dtype=float)
    return time_s + utc_offsets_s(time_s, zone)


def local_day(time_s: np.ndarray | float, zone: str = DEFAULT_TIMEZONE) -> np.ndarray:
    """Local calendar day of each instant, as whole days since 1970-01-01 (float; NaN kept)."""
    return np.floor(local_seconds(time_s, zone) / SECONDS_PER_DAY)


def local_day_start_s(day: np.ndarray | float, zone: str = DEFAULT_TIMEZONE) -> np.ndarray:
    """UTC seconds of local midnight starting each local `day` (days since 1970-01-01).

    Twice: the offset at the naive guess, then at the instant it gives, so a day whose
    offset differs from the day before's (a DST change that is not at midnight) is right.
    Zones that skip midnight itself (a few, historically) get the first instant after."""
    wall = np.asarray(day, dtype=float) * SECONDS_PER_DAY
    guess = wall - utc_offsets_s(wall, zone)
    return wall - utc_offsets_s(guess, zone)


def hours_of_local_day(day: np.ndarray | float, zone: str = DEFAULT_TIMEZONE) -> np.ndarray:
    """Length of each local day in hours: 24, or 23 / 25 on the days clocks change."""
    day = np.asarray(day, dtype=float)
    return (local_day_start_s(day + 1, zone) - local_day_start_s(day, zone)) / 3600.0


def weekday_of_day(day: np.ndarray) -> np.ndarray:
    """Weekday (0 = Monday … 6 = Sunday) of local days since 1970-01-01 (a Thursday)."""
    return np.mod(np.asarray(day, dtype=np.int64) + 3, 7)


def local_parts(
    time_s: np.ndarray | float, zone: str = DEFAULT_TIMEZONE
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(local day, seconds since local midnight on the wall clock, weekday) per instant.

    Seconds are wall-clock seconds: 08:00 is 28,800 also on the days clocks change.
    NaN times give NaN day and seconds and weekday −1."""
    local = local_seconds(time_s, zone)
    day = np.floor(local / SECONDS_PER_DAY)
    seconds = local - day * SECONDS_PER_DAY
    weekday = np.where(np.isnan(day), -1, np.mod(np.nan_to_num(day) + 3, 7)).astype(np.int64)
    return day, seconds, weekday


def local_month(day: np.ndarray) -> np.ndarray:
    """Month (1–12) of local days since 1970-01-01, vectorised through datetime64."""
    dates = np.asarray(day, dtype="int64").astype("datetime64[D]")
    return (dates.astype("datetime64[M]").astype(np.int64) % 12 + 1).astype(np.int64)


def day_of(date_like) -> int:
    """Days since 1970-01-01 of a `datetime.date`."""
    return int(np.datetime64(date_like, "D").astype(np.int64))
