"""Streamed exports: every public row once, nothing hidden, valid formats, bounded chunks."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from datetime import datetime

import pytest
from fastapi.testclient import TestClient
from psycopg_pool import AsyncConnectionPool

from api.export import stream_export
from api.queries.export import copy_params, metric_vocabulary
from models.settings import Settings
from tests.api.conftest import Fleet

# Runs on plain PostgreSQL and on TimescaleDB (tests/conftest.py).
pytestmark = pytest.mark.storage

RANGE = {"from": "2026-03-01T00:00:00Z", "to": "2026-03-04T00:00:00Z"}


def test_csv_export_has_every_public_reading_of_the_municipality_and_no_hidden_one(
    client: TestClient, fleet: Fleet
) -> None:
    response = client.get("/api/v1/export/aarhus/readings.csv", params=RANGE)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.headers["content-disposition"] == (
        'attachment; filename="aarhus-readings-20260301T0000Z-20260304T0000Z.csv"'
    )
    rows = list(csv.DictReader(io.StringIO(response.text)))
    n = fleet.readings_per_sensor
    # sensor 1: co2 + temperature; sensor 3: fill level; sensors 2 and 6 are hidden
    assert len(rows) == 3 * n
    assert {r["sensor_id"] for r in rows} == {"1", "3"}
    co2 = sorted(
        (r["time"], float(r["value"]))
        for r in rows
        if r["sensor_id"] == "1" and r["metric"] == "co2_ppm"
    )
    assert [v for _, v in co2] == fleet.co2_by_sensor[1].tolist()
    assert co2[0][0] == "2026-03-01T00:00:00+00:00"
    units = {r["metric"]: r["unit"] for r in rows}
    assert units == {"co2_ppm": "ppm", "temperature_c": "°C", "fill_pct": "%"}
    assert {(r["sensor_id"], r["lat"]) for r in rows} == {("1", "56.1572"), ("3", "")}
    keys = [(r["sensor_id"], r["metric"], r["time"]) for r in rows]
    assert len(set(keys)) == len(keys)


def test_jsonl_export_filters_by_kind_and_metric(client: TestClient, fleet: Fleet) -> None:
    response = client.get(
        "/api/v1/export/odense/readings.jsonl",
        params={**RANGE, "kind": "climate", "metric": "co2_ppm"},
    )
    assert response.status_code == 200
    lines = response.text.splitlines()
    objects = [json.loads(line) for line in lines]
    assert len(objects) == fleet.readings_per_sensor
    assert {o["sensor_id"] for o in objects} == {5}
    by_time = sorted((datetime.fromisoformat(o["time"]), o["value"]) for o in objects)
    assert [v for _, v in by_time] == fleet.co2_by_sensor[5].tolist()
    assert by_time[0][0] == fleet.start
    none = client.get("/api/v1/export/odense/readings.jsonl", params={**RANGE, "kind": "bin"})
    assert none.status_code == 200 and none.text == ""


def test_geojson_export_is_one_valid_feature_collection(client: TestClient, fleet: Fleet) -> None:
    response = client.get("/api/v1/export/aarhus/readings.geojson", params=RANGE)
    collection = json.loads(response.text)
    assert collection["type"] == "FeatureCollection"
    features = collection["features"]
    assert len(features) == 3 * fleet.readings_per_sensor
    placed = next(f for f in features if f["properties"]["sensor_id"] == 1)
    assert placed["geometry"] == {"type": "Point", "coordinates": [10.2107, 56.1572]}
    unplaced = next(f for f in features if f["properties"]["sensor_id"] == 3)
    assert unplaced["geometry"] is None
    empty = client.get("/api/v1/export/aarhus/readings.geojson", params={**RANGE, "kind": "other"})
    assert json.loads(empty.text) == {"type": "FeatureCollection", "features": []}


def test_export_streams_in_bounded_chunks_larger_exports_more_chunks(
    settings: Settings, fleet: Fleet
) -> None:
    async def chunks(fmt: str, chunk_bytes: int) -> list[bytes]:
        async with AsyncConnectionPool(
            settings.psycopg_url,
            min_size=1,
            max_size=2,
            kwargs={"autocommit": True, "options": "-c TimeZone=UTC"},
        ) as pool:
            async with pool.connection() as conn:
                names, units = await metric_vocabulary(conn)
            params = copy_params(
                municipality_id=1,
                kind=None,
                metric_id=None,
                start=fleet.start,
                end=fleet.end,
                metric_names=names,
                metric_units=units,
            )
            async with pool.connection() as conn:
                return [c async for c in stream_export(conn, fmt, params, chunk_bytes=4096)]

    for fmt in ("csv", "jsonl", "geojson"):
        parts = asyncio.run(chunks(fmt, 4096))
        body = b"".join(parts)
        assert len(parts) > 10, fmt
        # one row at most past the threshold: memory is bounded by the chunk size
        assert max(len(p) for p in parts) < 4096 + 1024, fmt
        if fmt == "geojson":
            assert len(json.loads(body)["features"]) == 3 * fleet.readings_per_sensor
        else:
            assert body.count(b"\n") == 3 * fleet.readings_per_sensor + (fmt == "csv")


def test_export_errors_name_the_problem(client: TestClient, fleet: Fleet) -> None:
    missing = client.get("/api/v1/export/nowhere/readings.csv", params=RANGE)
    assert missing.status_code == 404
    too_long = client.get(
        "/api/v1/export/aarhus/readings.csv",
        params={"from": "2024-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"},
    )
    assert too_long.status_code == 400
    assert "366 days, the limit for exports" in too_long.json()["detail"]
    naive = client.get("/api/v1/export/aarhus/readings.csv", params={"from": "2026-03-01T00:00"})
    assert naive.status_code == 400
    unknown = client.get("/api/v1/export/aarhus/readings.csv", params={"metric": "x"})
    assert unknown.status_code == 400 and "unknown metric 'x'" in unknown.json()["detail"]
