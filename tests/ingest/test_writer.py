"""BatchWriter against the real database: both paths into readings, duplicates absorbed,
latest values kept newest-first."""

from __future__ import annotations

import struct
import threading
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.metrics import sync_metrics
from ingest.writer import (
    STAGING_AFTER_CONFLICT_BATCHES,
    BatchEncoder,
    BatchWriter,
    DeadLetterRow,
)
from tests.ingest.conftest import Fleet, count, wait_for

# Runs on plain PostgreSQL and on TimescaleDB (tests/conftest.py).
pytestmark = pytest.mark.storage

NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def metric(db: psycopg.Connection, fleet: Fleet) -> int:
    return sync_metrics(db)["co2_ppm"]


def rows_for(sensor: int, metric: int, minutes: range, start: datetime = NOW) -> list:
    return [(start - timedelta(minutes=m), sensor, metric, float(m)) for m in minutes]


def stored(db: psycopg.Connection) -> int:
    return count(db, "SELECT count(*) FROM readings")


def test_fresh_rows_go_direct_and_in_batch_repeats_are_absorbed(db, fleet, metric):
    writer = BatchWriter()
    rows = rows_for(fleet.climate_sensor, metric, range(10))
    result = writer.write(db, [*rows, rows[3], rows[7]], [])
    assert (result.inserted, result.duplicates) == (10, 2)
    assert (writer.direct_writes, writer.staging_writes) == (1, 0)
    assert stored(db) == 10


def test_a_row_stored_before_sends_the_batch_through_staging(db, fleet, metric):
    writer = BatchWriter()
    first = rows_for(fleet.climate_sensor, metric, range(0, 10))
    writer.write(db, first, [])
    # Half old, half new: the direct COPY fails on the old half and rolls back alone.
    result = writer.write(db, rows_for(fleet.climate_sensor, metric, range(5, 15)), [])
    assert (result.inserted, result.duplicates) == (5, 5)
    assert (writer.direct_writes, writer.staging_writes) == (1, 1)
    assert stored(db) == 15
    # Duplicates come in bursts: the next batches go through staging without trying.
    writer.write(db, rows_for(fleet.climate_sensor, metric, range(20, 22)), [])
    assert (writer.direct_writes, writer.staging_writes) == (1, 2)
    for minute in range(30, 30 + STAGING_AFTER_CONFLICT_BATCHES):
        writer.write(db, rows_for(fleet.climate_sensor, metric, range(minute, minute + 1)), [])
    assert writer.direct_writes == 2
    assert stored(db) == 17 + STAGING_AFTER_CONFLICT_BATCHES


def test_old_rows_take_the_staging_path(db, fleet, metric):
    writer = BatchWriter()
    old = rows_for(fleet.climate_sensor, metric, range(3), start=NOW - timedelta(days=2))
    assert writer.write(db, old, []).inserted == 3
    assert (writer.direct_writes, writer.staging_writes) == (0, 1)
    assert writer.write(db, old, []).duplicates == 3
    assert stored(db) == 3


def test_latest_readings_hold_the_newest_value_whatever_the_order(db, fleet, metric):
    writer = BatchWriter()
    sensor = fleet.climate_sensor
    writer.write(db, rows_for(sensor, metric, range(5, 10)), [])  # newest: 5 min ago
    writer.write(db, rows_for(sensor, metric, range(20, 30)), [])  # older: ignored
    assert db.execute(
        "SELECT time, value FROM latest_readings WHERE sensor_id = %s AND metric_id = %s",
        (sensor, metric),
    ).fetchone() == (NOW - timedelta(minutes=5), 5.0)
    writer.write(db, rows_for(sensor, metric, range(1, 3)), [])  # newer: replaces
    assert db.execute(
        "SELECT value FROM latest_readings WHERE sensor_id = %s", (sensor,)
    ).fetchone() == (1.0,)


def test_rows_and_dead_letters_commit_together_or_not_at_all(db, fleet, metric):
    writer = BatchWriter()
    letter = DeadLetterRow("t/x", b"\x00", "unknown_device", "", None, None, NOW)
    unknown_sensor = (NOW, 10**9, metric, 1.0)  # violates the sensor foreign key
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        writer.write(
            db, [*rows_for(fleet.climate_sensor, metric, range(3)), unknown_sensor], [letter]
        )
    assert stored(db) == 0
    assert count(db, "SELECT count(*) FROM dead_letters") == 0
    result = writer.write(db, rows_for(fleet.climate_sensor, metric, range(3)), [letter])
    assert (result.inserted, result.dead_letters) == (3, 1)


def test_rows_come_back_exactly_as_written(db, fleet, metric):
    """The writer's own binary COPY encoding, checked by the database: microseconds, rows
    on both sides of midnight and through both paths, extreme doubles."""
    sensor = fleet.climate_sensor
    midnight = NOW.replace(hour=0, minute=0, second=0)
    times = [
        NOW.replace(microsecond=123456),
        midnight,
        midnight - timedelta(microseconds=1),
        NOW - timedelta(days=3, microseconds=999999),  # staging path
    ]
    values = [-12.5, 1e300, -0.0, 5e-324]
    for rows in (
        [(t, sensor, metric, v) for t, v in zip(times[:3], values, strict=False)],
        [(times[3], sensor, metric, values[3])],
    ):
        BatchWriter().write(db, rows, [])
    stored_rows = db.execute(
        "SELECT time, sensor_id, metric_id, value FROM readings ORDER BY time DESC"
    ).fetchall()
    assert stored_rows == sorted(
        [(t, sensor, metric, v) for t, v in zip(times, values, strict=True)], reverse=True
    )


def test_of_equal_times_the_first_row_is_the_latest_value(db, fleet, metric):
    sensor = fleet.climate_sensor
    BatchWriter().write(db, [(NOW, sensor, metric, 1.0), (NOW, sensor, metric, 2.0)], [])
    assert db.execute("SELECT value FROM latest_readings").fetchall() == [(1.0,)]
    assert db.execute("SELECT value FROM readings").fetchall() == [(1.0,)]


def test_latest_values_are_locked_in_key_order(db, fleet, metric, database_url):
    """Two replicas upserting overlapping keys must lock them in one order or they can
    deadlock. With the lower key held elsewhere, a batch listing the higher key first
    waits on the lower one before it has locked the higher one."""
    low, high = sorted([fleet.climate_sensor, fleet.native_sensor])
    BatchWriter().write(db, [(NOW, low, metric, 1.0), (NOW, high, metric, 1.0)], [])
    later = NOW + timedelta(seconds=1)
    with (
        psycopg.connect(database_url) as blocker,
        psycopg.connect(database_url, autocommit=True) as writer_conn,
        psycopg.connect(database_url) as probe,
    ):
        blocker.execute("SELECT 1 FROM latest_readings WHERE sensor_id = %s FOR UPDATE", (low,))
        writer_pid = writer_conn.info.backend_pid
        batch = [(later, high, metric, 2.0), (later, low, metric, 2.0)]
        worker = threading.Thread(target=BatchWriter().write, args=(writer_conn, batch, []))
        worker.start()
        try:
            wait_for(
                lambda: (
                    db.execute(
                        "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s",
                        (writer_pid,),
                    ).fetchone()[0]
                    == "Lock"
                ),
                10,
                "the writer waiting for the lower key",
            )
            # The higher key is free: the writer has not taken it out of order.
            probe.execute(
                "SELECT 1 FROM latest_readings WHERE sensor_id = %s FOR UPDATE NOWAIT", (high,)
            )
        finally:
            probe.rollback()
            blocker.rollback()
            worker.join(10)
    values = db.execute("SELECT value FROM latest_readings ORDER BY sensor_id").fetchall()
    assert values == [(2.0,), (2.0,)]


_ROW = struct.Struct(">hiqiqihid")


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 5), st.integers(1, 3), st.integers(1, 2), st.floats(-9, 9)),
        max_size=40,
    ),
    st.integers(1, 5),
)
def test_encoder_keeps_the_first_row_per_key_and_the_newest_per_sensor_and_metric(
    picks, split
) -> None:
    """BatchEncoder against a plain reference, rows added in several calls as messages
    come: repeats of a key dropped (first wins), newest per (sensor, metric) with the
    first of equal times."""
    times = [NOW - timedelta(seconds=s) for s in range(6)]
    rows = [(times[t], sensor, metric, value) for t, sensor, metric, value in picks]
    encoder = BatchEncoder()
    for i in range(0, len(rows), split):
        encoder.add(rows[i : i + split])
    batch = encoder.finish()
    if not rows:
        assert batch is None
        return

    def micros(t: datetime) -> int:
        return (t - datetime(2000, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)

    first: dict[tuple, tuple] = {}
    newest: dict[tuple, tuple] = {}
    for t, sensor, metric, value in rows:
        first.setdefault((micros(t), sensor, metric), (micros(t), sensor, metric, value))
        held = newest.get((sensor, metric))
        if held is None or micros(t) > held[0]:
            newest[(sensor, metric)] = (micros(t), sensor, metric, value)
    body = batch.readings[19:-2]  # header, trailer
    decoded = [_ROW.unpack_from(body, i) for i in range(0, len(body), _ROW.size)]
    assert [(r[2], r[4], r[6], r[8]) for r in decoded] == list(first.values())
    assert {pair: _ROW.unpack(row)[2::2] for pair, (_, row) in batch.newest.items()} == newest
    assert batch.sensors == {sensor for _, sensor, _, _ in rows}
    assert encoder.added == len(rows)
    assert (batch.oldest, batch.latest_time) == (min(r[0] for r in rows), max(r[0] for r in rows))
    assert (batch.oldest_micros, batch.newest_micros) == (
        micros(batch.oldest),
        micros(batch.latest_time),
    )
