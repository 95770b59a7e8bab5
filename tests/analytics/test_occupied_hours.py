"""Comfort and CO2 rules in occupied hours only: night set-back raises no alert, holidays
from the school calendar count as closed, an occupancy sensor overrides the calendar, and
temperature is judged by the heating- or cooling-season band. Real database, both backends
(the evaluation loads readings with binary COPY)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import psycopg
import pytest

from analytics.calendar_store import load_calendar, replace_calendar
from analytics.evaluation import _binary_array, evaluate_municipality, load_metric
from analytics.occupancy import (
    CalendarCsvError,
    SchoolCalendar,
    calendar_mask,
    parse_calendar_csv,
    sensor_state_at,
)

pytestmark = pytest.mark.storage

CPH = ZoneInfo("Europe/Copenhagen")
STEP = timedelta(minutes=10)


def _local(*args: int) -> datetime:
    return datetime(*args, tzinfo=CPH).astimezone(UTC)


def _setup(db: psycopg.Connection, first: date, last: date) -> tuple[int, dict[str, int]]:
    m = db.execute(
        "INSERT INTO municipalities (slug, name) VALUES ('silkeborg', 'Silkeborg') RETURNING id"
    ).fetchone()[0]
    ids = {
        name: db.execute(
            "INSERT INTO sensors (municipality_id, external_id, kind, expected_interval_s) "
            "VALUES (%s, %s, 'climate', 600) RETURNING id",
            (m, name),
        ).fetchone()[0]
        for name in ("room-a", "room-b")
    }
    db.execute("SELECT iot_ensure_partitions(%s, %s)", (first, last))
    return m, ids


def _write(db: psycopg.Connection, rows: list[tuple[datetime, int, str, float]]) -> None:
    metric = dict(db.execute("SELECT name, id FROM metrics").fetchall())
    with db.cursor().copy("COPY readings (time, sensor_id, metric_id, value) FROM STDIN") as cp:
        for t, sensor, name, value in rows:
            cp.write_row((t, sensor, metric[name], value))
    db.execute(
        "INSERT INTO latest_readings (sensor_id, metric_id, time, value) "
        "SELECT DISTINCT ON (sensor_id, metric_id) sensor_id, metric_id, time, value "
        "FROM readings ORDER BY sensor_id, metric_id, time DESC "
        "ON CONFLICT (sensor_id, metric_id) DO UPDATE SET time = EXCLUDED.time, "
        "value = EXCLUDED.value"
    )


def _series(sensor: int, metric: str, start: datetime, end: datetime, value_at) -> list:
    rows, t = [], start
    while t <= end:
        rows.append((t, sensor, metric, float(value_at(t.astimezone(CPH)))))
        t += STEP
    return rows


def _open(db: psycopg.Connection) -> set[tuple[str, str]]:
    return set(db.execute("SELECT rule, subject FROM alerts WHERE status <> 'resolved'").fetchall())


def _night_setback(local: datetime) -> float:
    """21.5 °C in the day, 17 °C from 18:00 to 06:00 (heating set back at night)."""
    return 17.0 if local.hour >= 18 or local.hour < 6 else 21.5


def test_night_set_back_raises_no_temperature_alert_but_a_cold_lesson_does(db) -> None:
    # Tuesday 2026-01-13 in the heating season. Room a: set back every night. Room b: the
    # heating failed at 07:00 on Tuesday morning.
    m, ids = _setup(db, date(2026, 1, 10), date(2026, 1, 15))
    start, end = _local(2026, 1, 11, 0, 0), _local(2026, 1, 13, 23, 0)
    rows = _series(ids["room-a"], "temperature_c", start, end, _night_setback)
    rows += _series(
        ids["room-b"],
        "temperature_c",
        start,
        _local(2026, 1, 13, 11, 0),
        lambda t: 17.0 if t >= datetime(2026, 1, 13, 7, tzinfo=CPH) else 21.5,
    )
    _write(db, rows)
    # 23:00 local: room a has been at 17 °C for five hours, but nobody is in it.
    evaluate_municipality(db, m, now=end)
    assert ("climate.temperature", f"sensor:{ids['room-a']}") not in _open(db)
    # 11:00 local: room b has been cold through three hours of lessons.
    evaluate_municipality(db, m, now=_local(2026, 1, 13, 11, 0))
    assert ("climate.temperature", f"sensor:{ids['room-b']}") in _open(db)
    assert ("climate.temperature", f"sensor:{ids['room-a']}") not in _open(db)
    # After school (17:00) nobody is in room b: the alert resolves.
    _write(
        db,
        _series(
            ids["room-b"],
            "temperature_c",
            _local(2026, 1, 13, 11, 10),
            _local(2026, 1, 13, 17, 0),
            lambda t: 17.0,
        ),
    )
    evaluate_municipality(db, m, now=_local(2026, 1, 13, 17, 0))
    assert ("climate.temperature", f"sensor:{ids['room-b']}") not in _open(db)


def test_holidays_from_the_calendar_are_closed_and_an_occupancy_sensor_overrides(db) -> None:
    # Wednesday 2026-10-14 is in the autumn holiday; CO2 1300 ppm all morning in both rooms.
    m, ids = _setup(db, date(2026, 10, 11), date(2026, 10, 16))
    replace_calendar(
        db,
        m,
        SchoolCalendar(
            {d: (time(8), time(15)) for d in range(1, 6)},
            ((date(2026, 10, 12), date(2026, 10, 16), "Efterårsferie"),),
        ),
    )
    start, now = _local(2026, 10, 14, 6, 0), _local(2026, 10, 14, 11, 0)
    rows = []
    for room in ("room-a", "room-b"):
        rows += _series(ids[room], "co2_ppm", start, now, lambda t: 1300.0)
    # Room b hosts a holiday course: its sensor reports occupancy from 08:00.
    rows += _series(ids["room-b"], "occupancy", start, now, lambda t: 1.0 if t.hour >= 8 else 0.0)
    _write(db, rows)
    evaluate_municipality(db, m, now=now)
    assert _open(db) >= {("climate.co2_limit", f"sensor:{ids['room-b']}")}
    assert ("climate.co2_limit", f"sensor:{ids['room-a']}") not in _open(db)
    # Without the holiday, room a would be judged too: it is a normal Wednesday.
    replace_calendar(db, m, SchoolCalendar({d: (time(8), time(15)) for d in range(1, 6)}))
    evaluate_municipality(db, m, now=now)
    assert ("climate.co2_limit", f"sensor:{ids['room-a']}") in _open(db)


def test_summer_temperatures_are_judged_by_the_cooling_season_band(db) -> None:
    # 25 °C through a school morning: fine in June (cooling band 23–26 °C), too warm in
    # March (heating band 20–24 °C).
    m, ids = _setup(db, date(2026, 3, 8), date(2026, 6, 12))
    rows = []
    for room, day in (("room-a", (2026, 6, 10)), ("room-b", (2026, 3, 11))):
        rows += _series(
            ids[room], "temperature_c", _local(*day, 7, 0), _local(*day, 11, 0), lambda t: 25.0
        )
    _write(db, rows)
    evaluate_municipality(db, m, now=_local(2026, 6, 10, 11, 0))
    assert ("climate.temperature", f"sensor:{ids['room-a']}") not in _open(db)
    evaluate_municipality(db, m, now=_local(2026, 3, 11, 11, 0))
    assert ("climate.temperature", f"sensor:{ids['room-b']}") in _open(db)


def test_the_binary_array_loader_gives_exactly_what_was_stored(db) -> None:
    _, ids = _setup(db, date(2026, 3, 28), date(2026, 3, 31))
    start = _local(2026, 3, 29, 0, 0)
    rng = np.random.default_rng(5)
    rows = [
        (start + i * timedelta(seconds=37.5), ids["room-b"], "co2_ppm", float(v))
        for i, v in enumerate(rng.normal(800, 200, 3000))
    ]
    rows.append((start + timedelta(microseconds=1), ids["room-a"], "co2_ppm", -0.0))
    _write(db, rows)
    metric = db.execute("SELECT id FROM metrics WHERE name = 'co2_ppm'").fetchone()[0]
    sensors = np.array(sorted(ids.values()))
    row, time_s, value = load_metric(
        db, sensors, metric, start - timedelta(hours=1), start + timedelta(days=2)
    )
    expected = sorted((sensor, t.timestamp(), v) for t, sensor, _, v in rows)
    assert sensors[row].tolist() == [e[0] for e in expected]
    np.testing.assert_array_equal(time_s, [e[1] for e in expected])
    np.testing.assert_array_equal(value, [e[2] for e in expected])
    # A two-dimensional array is refused, not misread.
    two_dimensional = (2).to_bytes(4, "big") + bytes(8) + (1).to_bytes(4, "big") * 4
    with pytest.raises(ValueError, match="one-dimensional"):
        _binary_array(two_dimensional, ">f8")


# --- pure parts ------------------------------------------------------------------------------


def test_calendar_mask_follows_local_hours_holidays_and_dst() -> None:
    calendar = SchoolCalendar(
        {1: (time(8), time(15)), 5: (time(8), time(12))},
        ((date(2026, 10, 26), date(2026, 10, 26), "fridag"),),
    )
    times = np.array(
        [
            _local(2026, 10, 19, 7, 59).timestamp(),  # Monday, before opening
            _local(2026, 10, 19, 8, 0).timestamp(),  # Monday, open (06:00 UTC, summer time)
            _local(2026, 10, 23, 12, 0).timestamp(),  # Friday, closed at 12:00
            _local(2026, 10, 20, 9, 0).timestamp(),  # Tuesday: no hours
            _local(2026, 10, 26, 9, 0).timestamp(),  # Monday, a holiday
            _local(2026, 11, 2, 8, 0).timestamp(),  # Monday, open (07:00 UTC, winter)
            np.nan,
        ]
    )
    assert calendar_mask(times, calendar).tolist() == [
        False,
        True,
        False,
        False,
        False,
        True,
        False,
    ]


def test_sensor_state_holds_until_the_next_reading_within_its_age() -> None:
    time_s = np.array([[100.0, 200.0, 5000.0], [100.0, 200.0, np.nan]])
    state_t = np.array([[150.0, 190.0], [np.nan, np.nan]])
    state_v = np.array([[1.0, 0.0], [np.nan, np.nan]])
    found = sensor_state_at(time_s, state_t, state_v, max_age_s=1800.0)
    assert np.array_equal(
        found, np.array([[np.nan, 0.0, np.nan], [np.nan, np.nan, np.nan]]), equal_nan=True
    )


def test_calendar_csv_round_trip_and_every_problem_named(db) -> None:
    text = (
        "type;weekday;opens;closes;first_day;last_day;name\n"
        "hours;mandag;08:00;15:30;;;\n"
        "hours;fri;08.00;12:00;;;\n"
        "holiday;;;;2026-12-21;2027-01-01;Juleferie\n"
    )
    calendar = parse_calendar_csv(text)
    assert calendar.hours == {1: (time(8), time(15, 30)), 5: (time(8), time(12))}
    assert calendar.holidays == ((date(2026, 12, 21), date(2027, 1, 1), "Juleferie"),)
    m, _ = _setup(db, date(2026, 3, 1), date(2026, 3, 2))
    assert load_calendar(db, m).is_default
    replace_calendar(db, m, calendar)
    stored = load_calendar(db, m)
    assert (stored.hours, stored.holidays) == (calendar.hours, calendar.holidays)

    bad = (
        "type,weekday,opens,closes,first_day,last_day,name\n"
        "hours,funday,08:00,15:00,,,\n"
        "hours,2,15:00,08:00,,,\n"
        "holiday,,,,2026-13-01,2026-12-24,x\n"
        "vacation,,,,,,\n"
    )
    with pytest.raises(CalendarCsvError) as caught:
        parse_calendar_csv(bad)
    problems = caught.value.problems
    assert [p.split(":")[0] for p in problems] == ["line 2", "line 3", "line 4", "line 5"]
    assert "funday" in problems[0] and "2026-13-01" in problems[2]


def test_an_incremental_cycle_judges_only_sensors_with_new_data(db) -> None:
    from unittest import mock

    from analytics import evaluation

    m, ids = _setup(db, date(2026, 3, 9), date(2026, 3, 11))
    t0 = _local(2026, 3, 10, 11, 0)  # a Tuesday lesson
    rows = []
    for room in ("room-a", "room-b"):
        rows += _series(ids[room], "co2_ppm", t0 - timedelta(hours=2), t0, lambda t: 1250.0)
    _write(db, rows)
    evaluate_municipality(db, m, now=t0)
    both = {("climate.co2_limit", f"sensor:{ids[r]}") for r in ("room-a", "room-b")}
    assert _open(db) >= both

    # Room a airs out; room b sends nothing new (not stale yet: 3 × 600 s).
    _write(db, _series(ids["room-a"], "co2_ppm", t0 + STEP, t0 + 2 * STEP, lambda t: 700.0))
    loaded: list[list[int]] = []
    real = evaluation.load_metric

    def spy(conn, sensor_ids, *args):
        loaded.append(sensor_ids.tolist())
        return real(conn, sensor_ids, *args)

    with mock.patch.object(evaluation, "load_metric", spy):
        evaluate_municipality(db, m, now=t0 + 2 * STEP, changed_since=t0)
    assert loaded and all(batch == [ids["room-a"]] for batch in loaded if batch)
    still_open = _open(db)
    assert ("climate.co2_limit", f"sensor:{ids['room-a']}") not in still_open
    assert ("climate.co2_limit", f"sensor:{ids['room-b']}") in still_open
    # A full evaluation at the same instant agrees.
    evaluate_municipality(db, m, now=t0 + 2 * STEP)
    assert _open(db) == still_open


def test_a_csv_the_reader_cannot_parse_is_a_calendar_error_not_a_crash() -> None:
    for text in ("type\rhours,1\r\n\r", "type,weekday\nhours,\x00mon\n", ""):
        with pytest.raises(CalendarCsvError):
            parse_calendar_csv(text)
