"""The device directory's cache: what it answers without the database, and when it asks."""

from __future__ import annotations

import psycopg

from ingest.devices import DeviceDirectory
from tests.ingest.conftest import ELSYS_EUI, Fleet

UNKNOWN_EUI = "a81758fffe03ffff"


def test_cached_answers_only_from_a_load_that_is_not_due(db: psycopg.Connection, fleet: Fleet):
    directory = DeviceDirectory(reload_every_s=60.0)
    assert directory.cached(ELSYS_EUI, None, None) is None  # nothing loaded: ask the database

    directory.reload_if_due(db)
    climate = directory.cached(ELSYS_EUI, None, None)
    assert climate is not None and climate.sensor_id == fleet.climate_sensor
    native = directory.cached(None, "aarhus", "gw-co2-1")
    assert native is not None and native.sensor_id == fleet.native_sensor
    # Not in the load: the caller asks the database (which keeps a negative cache).
    assert directory.cached(UNKNOWN_EUI, None, None) is None
    assert directory.cached(None, "odense", "gw-co2-1") is None

    directory.invalidate()
    assert directory.cached(ELSYS_EUI, None, None) is None


def test_cached_stops_answering_once_a_reload_is_due(db: psycopg.Connection, fleet: Fleet):
    directory = DeviceDirectory(reload_every_s=0.0)
    directory.reload_if_due(db)
    # A registry change (here: retiring the sensor) reaches ingest through the reload.
    assert directory.cached(ELSYS_EUI, None, None) is None
    db.execute("UPDATE sensors SET status = 'retired' WHERE id = %s", (fleet.climate_sensor,))
    assert directory.by_dev_eui(db, ELSYS_EUI).status == "active"  # the old load
    directory.reload_if_due(db)
    assert directory.by_dev_eui(db, ELSYS_EUI).status == "retired"
