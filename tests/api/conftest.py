"""An app over the session database, and a small seeded fleet with one of every visibility.

Sensor ids (RESTART IDENTITY makes them stable):
1 aarhus climate public active (placed)     2 aarhus climate PRIVATE active (placed)
3 aarhus bin public active (unplaced)       4 odense parking public RETIRED
5 odense climate public active (placed)     6 aarhus climate public PENDING
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from models.settings import Settings

PUBLIC_IDS = (1, 3, 5)
HIDDEN_IDS = (2, 4, 6)
START = datetime(2026, 3, 1, tzinfo=UTC)
DAYS = 3
STEP = timedelta(minutes=10)


@dataclass(frozen=True)
class Fleet:
    """What was seeded: CO2 every 10 minutes for 3 days on every climate sensor."""

    start: datetime
    end: datetime
    readings_per_sensor: int
    co2_by_sensor: dict[int, np.ndarray]


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    """A client of the real app (lifespan runs: the pool opens and closes)."""
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture
def fleet(db: psycopg.Connection) -> Fleet:
    """Seed municipalities, sensors (public and hidden), readings, latest values, rollups."""
    db.execute(
        "INSERT INTO municipalities (slug, name, kommune_code, settings) VALUES "
        "('aarhus', 'Aarhus Kommune', '0751', '{}'),"
        "('odense', 'Odense Kommune', '0461', "
        '\'{"open_data_license": "https://creativecommons.org/publicdomain/zero/1.0/"}\')'
    )
    db.execute(
        "INSERT INTO device_models (vendor, model, decoder, kind) VALUES "
        "('Elsys', 'ERS CO2', 'elsys', 'climate')"
    )
    sensors = [
        # municipality, external_id, kind, lat, lon, is_public, status, bin depth
        (1, "a-climate-1", "climate", 56.1572, 10.2107, True, "active", None),
        (1, "a-climate-private", "climate", 56.1500, 10.2000, False, "active", None),
        (1, "a-bin-1", "bin", None, None, True, "active", 1200.0),
        (2, "o-parking-retired", "parking", 55.4038, 10.4024, True, "retired", None),
        (2, "o-climate-1", "climate", 55.3959, 10.3883, True, "active", None),
        (1, "a-climate-pending", "climate", 56.1600, 10.2200, True, "pending", None),
    ]
    with db.cursor() as cur:
        cur.executemany(
            "INSERT INTO sensors (municipality_id, external_id, name, kind, device_model_id,"
            " lat, lon, is_public, status, bin_depth_mm) "
            "VALUES (%s, %s, %s, %s, CASE WHEN %s = 'climate' THEN 1 END, %s, %s, %s, %s, %s)",
            [
                (m, e, e.replace("-", " "), k, k, la, lo, p, s, b)
                for m, e, k, la, lo, p, s, b in sensors
            ],
        )
    metric_id = dict(db.execute("SELECT name, id FROM metrics").fetchall())
    end = START + timedelta(days=DAYS)
    db.execute("SELECT iot_ensure_partitions(%s, %s)", (START.date(), end.date()))
    times = [START + i * STEP for i in range(int((end - START) / STEP))]
    co2_by_sensor: dict[int, np.ndarray] = {}
    rng = np.random.default_rng(8)
    with db.cursor() as cur:
        with cur.copy("COPY readings (time, sensor_id, metric_id, value) FROM STDIN") as copy:
            for sensor_id in (1, 2, 4, 5, 6):
                values = np.round(rng.uniform(400, 1800, len(times)), 1)
                co2_by_sensor[sensor_id] = values
                for t, v in zip(times, values, strict=True):
                    copy.write_row((t, sensor_id, metric_id["co2_ppm"], float(v)))
                    if sensor_id in (1, 5):
                        copy.write_row((t, sensor_id, metric_id["temperature_c"], 21.5))
            for t in times:
                copy.write_row((t, 3, metric_id["fill_pct"], 40.0))
        cur.execute(
            "INSERT INTO latest_readings (sensor_id, metric_id, time, value) "
            "SELECT DISTINCT ON (sensor_id, metric_id) sensor_id, metric_id, time, value "
            "FROM readings ORDER BY sensor_id, metric_id, time DESC"
        )
    db.execute("SELECT iot_refresh_rollups()")
    return Fleet(START, end, len(times), co2_by_sensor)
