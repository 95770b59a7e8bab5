"""School calendars in the database (tables school_hours, school_holidays; migration 0014).

`load_calendar` is what the evaluation job and the reports read; `replace_calendar` is the
one write (staff import), in one transaction: the municipality's calendar is what the CSV
says, all of it or none.
"""

from __future__ import annotations

from typing import Any

import psycopg

from analytics.occupancy import SchoolCalendar


def load_calendar(conn: psycopg.Connection, municipality_id: int) -> SchoolCalendar:
    """The municipality's calendar; the default (Mon–Fri 08–16) when it has none."""
    hours = conn.execute(
        "SELECT weekday, opens, closes FROM school_hours WHERE municipality_id = %s",
        (municipality_id,),
    ).fetchall()
    holidays = conn.execute(
        "SELECT first_day, last_day, name FROM school_holidays WHERE municipality_id = %s "
        "ORDER BY first_day",
        (municipality_id,),
    ).fetchall()
    if not hours and not holidays:
        return SchoolCalendar.default()
    return SchoolCalendar({w: (o, c) for w, o, c in hours}, tuple(holidays))


def replace_calendar(
    conn: psycopg.Connection, municipality_id: int, calendar: SchoolCalendar
) -> dict[str, int]:
    """Make the municipality's calendar `calendar` (its rows only); counts stored."""
    with conn.transaction():
        conn.execute("DELETE FROM school_hours WHERE municipality_id = %s", (municipality_id,))
        conn.execute("DELETE FROM school_holidays WHERE municipality_id = %s", (municipality_id,))
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO school_hours (municipality_id, weekday, opens, closes) "
                "VALUES (%s, %s, %s, %s)",
                [(municipality_id, w, o, c) for w, (o, c) in sorted(calendar.hours.items())],
            )
            cur.executemany(
                "INSERT INTO school_holidays (municipality_id, first_day, last_day, name) "
                "VALUES (%s, %s, %s, %s)",
                [(municipality_id, f, last, n) for f, last, n in calendar.holidays],
            )
    return {"hours": len(calendar.hours), "holidays": len(calendar.holidays)}


def calendar_as_json(calendar: SchoolCalendar) -> dict[str, Any]:
    """The calendar as the staff API shows it."""
    return {
        "default": calendar.is_default,
        "hours": [
            {"weekday": w, "opens": o.strftime("%H:%M"), "closes": c.strftime("%H:%M")}
            for w, (o, c) in sorted(calendar.hours.items())
        ],
        "holidays": [
            {"first_day": f.isoformat(), "last_day": last.isoformat(), "name": n}
            for f, last, n in calendar.holidays
        ],
    }
