"""Deferred latest values against the real database: held until the flush, markers in
latest_pending with every batch, repaired from readings when a process never flushed,
and a deleted sensor refused as with the per-batch upsert."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.metrics import sync_metrics
from ingest.latest import _merge_into, repair_stale
from ingest.subscriber import IngestService
from ingest.writer import BatchWriter
from tests.ingest.conftest import ELSYS_ERS_CO2_HEX, ELSYS_EUI, Fleet, count, wait_for
from tests.ingest.test_end_to_end import chirpstack_up

# Runs on plain PostgreSQL and on TimescaleDB (tests/conftest.py).
pytestmark = pytest.mark.storage

NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def metric(db: psycopg.Connection, fleet: Fleet) -> int:
    return sync_metrics(db)["co2_ppm"]


def latest(db: psycopg.Connection) -> dict[int, tuple[datetime, float]]:
    rows = db.execute("SELECT sensor_id, time, value FROM latest_readings").fetchall()
    return {sensor: (time, value) for sensor, time, value in rows}


def new_sensor(db: psycopg.Connection, fleet: Fleet, external_id: str) -> int:
    return db.execute(
        "INSERT INTO sensors (municipality_id, external_id, kind) "
        "VALUES (%s, %s, 'climate') RETURNING id",
        (fleet.municipality_id, external_id),
    ).fetchone()[0]


def markers(db: psycopg.Connection) -> int:
    return count(db, "SELECT count(*) FROM latest_pending")


def test_deferred_values_wait_for_the_flush_and_the_newest_wins(db, fleet, metric):
    writer = BatchWriter(latest_flush_interval_s=3600)
    sensor = fleet.climate_sensor
    writer.write(db, [(NOW - timedelta(minutes=5), sensor, metric, 5.0)], [])
    writer.write(db, [(NOW - timedelta(minutes=1), sensor, metric, 1.0)], [])
    writer.write(db, [(NOW - timedelta(minutes=9), sensor, metric, 9.0)], [])  # late, older
    assert count(db, "SELECT count(*) FROM readings") == 3
    assert latest(db) == {}
    assert markers(db) == 3
    assert not writer.latest.due()

    assert writer.flush_latest(db) == 1
    assert latest(db) == {sensor: (NOW - timedelta(minutes=1), 1.0)}
    assert markers(db) == 0
    assert writer.flush_latest(db) == 0  # nothing held


def test_without_an_interval_every_batch_upserts_and_leaves_no_marker(db, fleet, metric):
    writer = BatchWriter()
    writer.write(db, [(NOW, fleet.climate_sensor, metric, 4.0)], [])
    assert latest(db) == {fleet.climate_sensor: (NOW, 4.0)}
    assert markers(db) == 0
    assert writer.latest.due()


def test_values_a_stopped_process_held_are_repaired_from_readings(db, fleet, metric):
    crashed = BatchWriter(latest_flush_interval_s=3600)
    climate, bin_sensor = fleet.climate_sensor, fleet.bin_sensor
    crashed.write(
        db,
        [
            (NOW - timedelta(minutes=2), climate, metric, 2.0),
            (NOW - timedelta(minutes=1), climate, metric, 1.0),
            (NOW - timedelta(minutes=3), bin_sensor, metric, 3.0),
        ],
        [],
    )
    # An older value stored before must not win, nor a newer one already upserted lose.
    db.execute("INSERT INTO latest_readings VALUES (%s, %s, %s, 0.5)", (bin_sensor, metric, NOW))
    assert repair_stale(db) == 0  # the marker is fresh: its process may still flush it
    db.execute("UPDATE latest_pending SET created_at = now() - interval '2 minutes'")
    assert repair_stale(db) == 1
    assert latest(db) == {
        climate: (NOW - timedelta(minutes=1), 1.0),
        bin_sensor: (NOW, 0.5),
    }
    assert markers(db) == 0


def test_a_deferred_batch_of_a_deleted_sensor_is_refused(db, fleet, metric):
    writer = BatchWriter(latest_flush_interval_s=3600)
    gone = new_sensor(db, fleet, "room-gone")
    db.execute("DELETE FROM sensors WHERE id = %s", (gone,))
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        writer.write(db, [(NOW, gone, metric, 1.0), (NOW, fleet.climate_sensor, metric, 2.0)], [])
    assert count(db, "SELECT count(*) FROM readings") == 0
    assert markers(db) == 0
    assert len(writer.latest) == 0


def test_a_sensor_deleted_before_the_flush_is_skipped_and_the_rest_upserted(db, fleet, metric):
    writer = BatchWriter(latest_flush_interval_s=3600)
    doomed = new_sensor(db, fleet, "room-doomed")
    writer.write(db, [(NOW, doomed, metric, 1.0), (NOW, fleet.climate_sensor, metric, 2.0)], [])
    db.execute("DELETE FROM readings WHERE sensor_id = %s", (doomed,))
    db.execute("DELETE FROM sensors WHERE id = %s", (doomed,))
    assert writer.flush_latest(db) == 1
    assert latest(db) == {fleet.climate_sensor: (NOW, 2.0)}


def test_ingest_flushes_held_values_when_it_stops(db, fleet, settings, publisher):
    service = IngestService(settings.model_copy(update={"latest_flush_interval_s": 3600}))
    service.start()
    assert service.wait_connected(10)
    time.sleep(0.3)  # subscriptions granted
    publisher.publish(
        fleet.chirpstack_topic(ELSYS_EUI), chirpstack_up(ELSYS_EUI, ELSYS_ERS_CO2_HEX)
    )
    wait_for(lambda: service.totals.committed_messages == 1, what="the message committed")
    assert latest(db) == {} and markers(db) == 1
    service.stop()
    assert count(db, "SELECT count(*) FROM latest_readings") == 7
    assert markers(db) == 0


@settings(max_examples=300, deadline=None)
@given(
    held=st.dictionaries(st.tuples(st.integers(1, 4), st.integers(1, 3)), st.integers(0, 5)),
    newer=st.dictionaries(st.tuples(st.integers(1, 4), st.integers(1, 3)), st.integers(0, 5)),
    later_by=st.integers(0, 6),
)
def test_merging_a_batch_keeps_the_newer_row_per_key_and_the_held_one_on_a_tie(
    held, newer, later_by
):
    # Shifted batches often lie wholly after the held rows (the path for data in order),
    # and overlap them otherwise.
    newer = {pair: micros + later_by for pair, micros in newer.items()}
    rows = {pair: (micros, b"held") for pair, micros in held.items()}
    batch = {pair: (micros, b"newer") for pair, micros in newer.items()}
    _merge_into(rows, batch, min(newer.values(), default=0), max(held.values(), default=-1))
    assert rows.keys() == held.keys() | newer.keys()
    for pair, (micros, source) in rows.items():
        if pair not in newer:
            assert (micros, source) == (held[pair], b"held")
        elif pair not in held or newer[pair] > held[pair]:
            assert (micros, source) == (newer[pair], b"newer")
        else:
            assert (micros, source) == (held[pair], b"held")
