"""School calendars in the database (tables school_hours, school_holidays; migration 0014).

`load_calendar` is what the evaluation job and the reports read; `replace_calendar` is the
one write (staff import, audited), in one transaction: the municipality's calendar is what the CSV
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
    """Make the municipality's calendar `calendar` (its rows only); counts stored.

    Only the rows that differ are written (a weekday by its number, a holiday by its first
    day), so the audit trail of a re-import shows what changed and nothing when nothing did.
    """
    weekdays = sorted(calendar.hours)
    first_days = [first for first, _, _ in calendar.holidays]
    with conn.transaction():
        conn.execute(
            "DELETE FROM school_hours WHERE municipality_id = %s AND weekday <> ALL(%s)",
            (municipality_id, weekdays),
        )
        conn.execute(
            "DELETE FROM school_holidays WHERE municipality_id = %s AND first_day <> ALL(%s)",
            (municipality_id, first_days),
        )
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO school_hours AS h (municipality_id, weekday, opens, closes) "
                "VALUES (%s, %s, %s, %s) ON CONFLICT (municipality_id, weekday) DO UPDATE "
                "SET opens = excluded.opens, closes = excluded.closes "
                "WHERE (h.opens, h.closes) IS DISTINCT FROM (excluded.opens, excluded.closes)",
                [(municipality_id, w, *calendar.hours[w]) for w in weekdays],
            )
            cur.executemany(
                "INSERT INTO school_holidays AS h (municipality_id, first_day, last_day, name) "
                "VALUES (%s, %s, %s, %s) ON CONFLICT (municipality_id, first_day) DO UPDATE "
                "SET last_day = excluded.last_day, name = excluded.name "
                "WHERE (h.last_day, h.name) IS DISTINCT FROM (excluded.last_day, excluded.name)",
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
