"""Occupied hours: when a room's indoor-climate rules apply.

BR18 §447 and EN 16798-1 judge a classroom while people are in it. A room is occupied
when its occupancy or motion sensor says so (the latest reading at or before a sample,
if recent enough), otherwise when the municipality's school calendar says the schools are
open: opening hours per weekday, minus holidays, in local time (analytics/localtime.py).

Seasons: EN 16798-1 gives heating-season and cooling-season temperature bands; a sample
belongs to the heating season when its local month is one of `heating_months`.

Everything here is pure: arrays in, boolean masks out; no loop over samples or rooms.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from datetime import date, time

import numpy as np

from analytics.localtime import DEFAULT_TIMEZONE, day_of, local_month, local_parts

WEEKDAY_NAMES = {
    # ISO numbers and English/Danish names (mandag … søndag), any case, 3 letters or full
    **{str(n): n for n in range(1, 8)},
    **{name: n for n, name in enumerate(("mon", "tue", "wed", "thu", "fri", "sat", "sun"), 1)},
    **{name: n for n, name in enumerate(("man", "tir", "ons", "tor", "fre", "lør", "søn"), 1)},
}
DEFAULT_HEATING_MONTHS = (10, 11, 12, 1, 2, 3, 4)


@dataclass(frozen=True)
class SchoolCalendar:
    """Opening hours per ISO weekday (1 = Monday) and holidays (inclusive date ranges)."""

    hours: dict[int, tuple[time, time]] = field(default_factory=dict)
    holidays: tuple[tuple[date, date, str], ...] = ()
    is_default: bool = False

    @classmethod
    def default(cls) -> SchoolCalendar:
        """Monday–Friday 08:00–16:00, no holidays: for a municipality without a calendar."""
        return cls({d: (time(8), time(16)) for d in range(1, 6)}, (), True)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(opens_s, closes_s) per weekday 0 = Monday (NaN: closed), and the holidays'
        first and last local days (days since 1970-01-01), sorted, overlaps merged."""
        opens = np.full(7, np.nan)
        closes = np.full(7, np.nan)
        for weekday, (start, end) in self.hours.items():
            opens[weekday - 1] = start.hour * 3600 + start.minute * 60 + start.second
            closes[weekday - 1] = end.hour * 3600 + end.minute * 60 + end.second
        spans = sorted((day_of(first), day_of(last)) for first, last, _ in self.holidays)
        merged: list[list[int]] = []
        for first, last in spans:
            if merged and first <= merged[-1][1] + 1:
                merged[-1][1] = max(merged[-1][1], last)
            else:
                merged.append([first, last])
        firsts = np.array([m[0] for m in merged], dtype=float)
        lasts = np.array([m[1] for m in merged], dtype=float)
        return opens, closes, firsts, lasts


def calendar_mask(
    time_s: np.ndarray, calendar: SchoolCalendar, zone: str = DEFAULT_TIMEZONE
) -> np.ndarray:
    """True where `time_s` (UTC seconds, any shape) falls in the calendar's opening hours
    on a day that is no holiday, in `zone`'s local time (08:00 is 08:00 on the wall clock
    in summer and winter). NaN times are False."""
    time_s = np.asarray(time_s, dtype=float)
    day, seconds, weekday = local_parts(time_s, zone)
    opens, closes, firsts, lasts = calendar.arrays()
    index = np.where(weekday < 0, 0, weekday)
    with np.errstate(invalid="ignore"):
        mask = (seconds >= opens[index]) & (seconds < closes[index])
    mask &= weekday >= 0
    if firsts.size:
        holiday = np.searchsorted(firsts, day, side="right") - 1
        inside = holiday >= 0
        with np.errstate(invalid="ignore"):
            inside &= day <= lasts[np.maximum(holiday, 0)]
        mask &= ~inside
    return mask


def sensor_state_at(
    time_s: np.ndarray,
    state_time_s: np.ndarray,
    state_value: np.ndarray,
    max_age_s: float,
) -> np.ndarray:
    """Per row, the latest state reading at or before each sample: 1.0 / 0.0, NaN where
    the row has none within `max_age_s` before the sample.

    `time_s` is (rooms, samples); `state_time_s`/`state_value` are (rooms, k) in the padded
    layout (rows sorted by time, NaN padding), row i being room i's occupancy sensor.
    One searchsorted over keys row × span + time does every room at once.
    """
    time_s = np.atleast_2d(np.asarray(time_s, dtype=float))
    state_time_s = np.atleast_2d(np.asarray(state_time_s, dtype=float))
    state_value = np.atleast_2d(np.asarray(state_value, dtype=float))
    rooms = time_s.shape[0]
    result = np.full(time_s.shape, np.nan)
    valid = ~np.isnan(state_time_s) & ~np.isnan(state_value)
    if not valid.any() or time_s.size == 0:
        return result
    both = np.concatenate([time_s[~np.isnan(time_s)], state_time_s[valid]])
    low = float(both.min())
    span = float(both.max()) - low + 2 * max_age_s + 1.0
    state_rows = np.nonzero(valid)[0]
    keys = state_rows * span + (state_time_s[valid] - low)
    values = state_value[valid]
    order = np.argsort(keys, kind="stable")
    keys, values, state_rows = keys[order], values[order], state_rows[order]
    sample_rows = np.broadcast_to(np.arange(rooms)[:, None], time_s.shape)
    known = ~np.isnan(time_s)
    sample_keys = sample_rows[known] * span + (time_s[known] - low)
    found = np.searchsorted(keys, sample_keys, side="right") - 1
    ok = found >= 0
    safe = np.maximum(found, 0)
    ok &= state_rows[safe] == sample_rows[known]
    ok &= (sample_keys - keys[safe]) <= max_age_s
    picked = np.where(ok, values[safe] >= 0.5, np.nan)
    result[known] = picked
    return result


def occupied_mask(
    time_s: np.ndarray,
    calendar: SchoolCalendar,
    zone: str = DEFAULT_TIMEZONE,
    sensor_state: np.ndarray | None = None,
) -> np.ndarray:
    """Occupied samples of (rooms, samples): the occupancy sensor's state where known
    (`sensor_state` from `sensor_state_at`, NaN unknown), else the school calendar."""
    mask = calendar_mask(time_s, calendar, zone)
    if sensor_state is not None:
        known = ~np.isnan(sensor_state)
        mask = np.where(known, sensor_state >= 0.5, mask)
    return mask


def heating_season(
    time_s: np.ndarray,
    zone: str = DEFAULT_TIMEZONE,
    heating_months: tuple[int, ...] = DEFAULT_HEATING_MONTHS,
) -> np.ndarray:
    """True for samples in the heating season (their local month in `heating_months`)."""
    day, _, _ = local_parts(np.asarray(time_s, dtype=float), zone)
    month = local_month(np.nan_to_num(day))
    return np.isin(month, np.asarray(heating_months)) & ~np.isnan(day)


def seasonal_band(
    time_s: np.ndarray,
    heating_band: tuple[float, float],
    cooling_band: tuple[float, float],
    zone: str = DEFAULT_TIMEZONE,
    heating_months: tuple[int, ...] = DEFAULT_HEATING_MONTHS,
) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) per sample: the heating band in the heating season, else the cooling one."""
    heating = heating_season(time_s, zone, heating_months)
    low = np.where(heating, heating_band[0], cooling_band[0])
    high = np.where(heating, heating_band[1], cooling_band[1])
    return low, high


# --- CSV ---------------------------------------------------------------------------------

CSV_COLUMNS = ("type", "weekday", "opens", "closes", "first_day", "last_day", "name")


class CalendarCsvError(ValueError):
    """The CSV cannot become a calendar; `problems` name the line and column of each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def parse_calendar_csv(text: str) -> SchoolCalendar:
    """A calendar from CSV with the header `type,weekday,opens,closes,first_day,last_day,name`:

    - `hours` rows: `weekday` (1–7, mon…sun or man…søn), `opens` and `closes` (HH:MM);
      a weekday without a row is closed;
    - `holiday` rows: `first_day` and `last_day` (YYYY-MM-DD, inclusive), `name`.

    Every problem is collected (line and column named) and raised together; nothing
    partial comes out. A `;`-separated file (Danish Excel) is read as well.
    """
    try:
        return _parse_calendar_csv(text)
    except csv.Error as exc:  # a stray carriage return, a NUL byte: not a CSV
        raise CalendarCsvError([f"the CSV cannot be read: {exc}"]) from None


def _parse_calendar_csv(text: str) -> SchoolCalendar:
    sample = text[:2048]
    delimiter = ";" if sample.count(";") > sample.count(",") else ","
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    header = [h.strip().lower() for h in (reader.fieldnames or [])]
    missing = [c for c in ("type",) if c not in header]
    if missing or not header:
        raise CalendarCsvError([f"line 1: the header needs the columns {','.join(CSV_COLUMNS)}"])
    reader.fieldnames = header
    hours: dict[int, tuple[time, time]] = {}
    holidays: list[tuple[date, date, str]] = []
    problems: list[str] = []
    for line, row in enumerate(reader, start=2):
        row = {k: (v or "").strip() for k, v in row.items() if k is not None}
        kind = row.get("type", "").lower()
        if kind == "hours":
            weekday = WEEKDAY_NAMES.get(row.get("weekday", "").lower()[:3])
            if weekday is None:
                problems.append(
                    f"line {line}: weekday {row.get('weekday')!r} is not 1–7 or mon–sun"
                )
                continue
            opens = _time(row.get("opens", ""), line, "opens", problems)
            closes = _time(row.get("closes", ""), line, "closes", problems)
            if opens is None or closes is None:
                continue
            if opens >= closes:
                problems.append(f"line {line}: opens {opens:%H:%M} is not before closes")
            elif weekday in hours:
                problems.append(f"line {line}: weekday {weekday} has hours twice")
            else:
                hours[weekday] = (opens, closes)
        elif kind in ("holiday", "ferie"):
            first = _date(row.get("first_day", ""), line, "first_day", problems)
            last = _date(
                row.get("last_day", "") or row.get("first_day", ""), line, "last_day", problems
            )
            if first is None or last is None:
                continue
            if last < first:
                problems.append(f"line {line}: last_day {last} is before first_day {first}")
            else:
                holidays.append((first, last, row.get("name", "")[:200]))
        elif kind or any(row.values()):
            problems.append(f"line {line}: type {kind!r} is neither 'hours' nor 'holiday'")
    firsts = [h[0] for h in holidays]
    for duplicate in sorted({d for d in firsts if firsts.count(d) > 1}):
        problems.append(f"two holidays start on {duplicate}")
    if problems:
        raise CalendarCsvError(problems)
    return SchoolCalendar(hours, tuple(sorted(holidays)))


def _time(text: str, line: int, column: str, problems: list[str]) -> time | None:
    try:
        return time.fromisoformat(text.replace(".", ":"))
    except ValueError:
        problems.append(f"line {line}: {column} {text!r} is not a time such as 08:00")
        return None


def _date(text: str, line: int, column: str, problems: list[str]) -> date | None:
    try:
        return date.fromisoformat(text)
    except ValueError:
        problems.append(f"line {line}: {column} {text!r} is not a date such as 2026-10-12")
        return None
