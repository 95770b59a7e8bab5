"""The export reads readings a time slice at a time in whatever order they are stored
(tenancy/reading_spill.py) and must still write them by sensor, metric name and time."""

from __future__ import annotations

import io
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pyarrow.parquet as pq
import pytest

from models.partitions import create_partitions
from tenancy import reading_spill
from tenancy.export import export_municipality
from tests.tenancy.conftest import compress_all

pytestmark = pytest.mark.storage

START = datetime(2026, 3, 30, 22, tzinfo=UTC)
DAYS = 3
# Metric ids in the opposite order of their names: the archive orders by name.
METRICS = ("temperature_c", "humidity_pct", "co2_ppm")


def _seed(db: psycopg.Connection) -> list[int]:
    """Two municipalities whose sensors report together, stored as ingest stores them
    (time-major, both municipalities interleaved), newest first within each batch (late
    data), plus a reading for the first hour written last. Returns ours' sensor ids."""
    create_partitions(db, [START.date() + timedelta(days=d) for d in range(DAYS + 1)])
    ours, theirs = (
        db.execute(
            "INSERT INTO municipalities (slug, name) VALUES (%s, %s) RETURNING id", (slug, slug)
        ).fetchone()[0]
        for slug in ("ours", "theirs")
    )
    sensors = {}
    for n in range(5):
        for municipality in (theirs, ours):  # interleaved ids
            sensors[municipality, n] = db.execute(
                "INSERT INTO sensors (municipality_id, external_id, kind) "
                "VALUES (%s, %s, 'climate') RETURNING id",
                (municipality, f"{municipality}-{n}"),
            ).fetchone()[0]
    metric_ids = [
        db.execute("SELECT id FROM metrics WHERE name = %s", (name,)).fetchone()[0]
        for name in METRICS
    ]
    db.execute(
        "INSERT INTO readings (time, sensor_id, metric_id, value) "
        "SELECT t, s, m, s * 1000 + extract(epoch FROM t) / 60 + m / 100.0 "
        "FROM unnest(%s::bigint[]) s, unnest(%s::smallint[]) m, "
        "generate_series(%s::timestamptz + interval '1 hour', %s::timestamptz, "
        "interval '17 minutes') t ORDER BY t DESC, s, m",
        (list(sensors.values()), metric_ids, START, START + timedelta(days=DAYS)),
    )
    db.execute(
        "INSERT INTO readings (time, sensor_id, metric_id, value) "
        "SELECT %s, s, %s, -1 FROM unnest(%s::bigint[]) s",
        (START, metric_ids[0], list(sensors.values())),
    )
    return sorted(sensors[ours, n] for n in range(5))


def _exported(path: Path) -> list[tuple]:
    with zipfile.ZipFile(path) as archive:
        table = pq.read_table(io.BytesIO(archive.read("data/readings.parquet")))
    return list(
        zip(
            *(table.column(name).to_pylist() for name in ("sensor", "metric", "time", "value")),
            strict=True,
        )
    )


def test_readings_come_out_by_sensor_metric_and_time_however_stored(
    db: psycopg.Connection, backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ours = _seed(db)
    compress_all(db, backend)  # TimescaleDB hands compressed rows back newest first
    archive_id = {sensor: i for i, sensor in enumerate(ours, start=1)}
    expected = sorted(
        (archive_id[sensor], metric, time, value)
        for sensor, metric, time, value in db.execute(
            "SELECT r.sensor_id, m.name, r.time, r.value FROM readings r "
            "JOIN metrics m ON m.id = r.metric_id WHERE r.sensor_id = ANY(%s)",
            (ours,),
        )
    )
    assert len(expected) > 5 * 3 * 3 * 24 * 3

    whole = export_municipality(db, "ours", tmp_path / "whole.zip")
    assert _exported(whole.path) == expected
    assert whole.counts["readings"] == len(expected)
    assert whole.manifest["metrics"] == sorted(METRICS)

    # A municipality too large for one slice is read in sensor groups: the same archive.
    monkeypatch.setattr(reading_spill, "SENSORS_PER_SLICE", 2)
    grouped = export_municipality(db, "ours", tmp_path / "grouped.zip")
    assert (
        grouped.manifest["entries"]["data/readings.parquet"]
        == whole.manifest["entries"]["data/readings.parquet"]
    )


def test_an_empty_municipality_exports_no_readings(db: psycopg.Connection, tmp_path: Path) -> None:
    db.execute("INSERT INTO municipalities (slug, name) VALUES ('empty', 'Empty')")
    result = export_municipality(db, "empty", tmp_path / "empty.zip")
    assert result.counts["readings"] == 0 and _exported(result.path) == []
