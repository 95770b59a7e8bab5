"""Replay a real dataset (simulator/datasets.py) through ingest, then through the analytics.

Messages go through ingest's own `Pipeline` (format, sensor lookup, metric ranges, time
bounds) and `BatchWriter` (readings and dead letters committed together), exactly as the
MQTT subscriber runs them, in-process so a replay is fast and deterministic. The sensors
are registered first under one municipality (site = dataset, zone = room/car park).
Timestamps are historic, so the age limit of live ingest (IOT_MAX_PAST_AGE_DAYS) is
lifted for the replay: this is an import.

`findings` runs the analytics over what was stored and returns what docs/analytics.md
shows: BR18 hours and EN 16798-1 shares per room (occupied time from the data's own
occupancy), parking profiles per car park, and the error of the bin forecast at the
next collection.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson
import psycopg

from analytics import bins
from analytics.occupancy import SchoolCalendar
from analytics.reports import parking_report, room_month_report, sample_durations_s
from analytics.timeseries import Padded, to_padded
from domain.metrics import sync_metrics
from ingest.dead_letters import DeadLetterRow
from ingest.pipeline import Pipeline
from ingest.writer import BatchWriter
from models.settings import Settings
from simulator.datasets import Message, SensorSpec


@dataclass
class ReplayResult:
    messages: int
    readings: int
    dead_letters: Counter

    def as_dict(self) -> dict[str, Any]:
        return {
            "messages": self.messages,
            "readings": self.readings,
            "dead_letters": dict(self.dead_letters),
        }


def register(conn: psycopg.Connection, municipality_id: int, sensors: list[SensorSpec]) -> None:
    """Sites, zones and sensors of the dataset (existing ones are kept)."""
    sites: dict[str, int] = {}
    zones: dict[tuple[str, str], int] = {}
    for spec in sensors:
        if spec.site not in sites:
            sites[spec.site] = conn.execute(
                "INSERT INTO sites (municipality_id, name) VALUES (%s, %s) "
                "ON CONFLICT (municipality_id, name) DO UPDATE SET name = EXCLUDED.name "
                "RETURNING id",
                (municipality_id, spec.site),
            ).fetchone()[0]
        key = (spec.site, spec.zone)
        if key not in zones:
            zones[key] = conn.execute(
                "INSERT INTO zones (municipality_id, site_id, name, kind) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (site_id, name) DO UPDATE SET name = EXCLUDED.name RETURNING id",
                (
                    municipality_id,
                    sites[spec.site],
                    spec.zone,
                    "parking" if spec.kind == "parking" else "room",
                ),
            ).fetchone()[0]
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO sensors (municipality_id, external_id, name, kind, site_id, zone_id, "
            "bin_depth_mm) VALUES (%s, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (municipality_id, external_id) DO NOTHING",
            [
                (
                    municipality_id,
                    s.external_id,
                    s.name,
                    s.kind,
                    sites[s.site],
                    zones[(s.site, s.zone)],
                    1000.0 if s.kind == "bin" else None,
                )
                for s in sensors
            ],
        )


def replay(
    conn: psycopg.Connection,
    slug: str,
    messages: Iterable[Message],
    batch_messages: int = 5000,
) -> ReplayResult:
    """Feed native messages through ingest's pipeline and writer; returns the counts."""
    settings = Settings(_env_file=None, max_past_age_days=36500)
    pipeline = Pipeline(settings, sync_metrics(conn))
    writer = BatchWriter()
    rows: list = []
    letters: list[DeadLetterRow] = []
    result = ReplayResult(0, 0, Counter())

    def with_db(operation):
        return operation(conn)

    def flush() -> None:
        if rows or letters:
            writer.write(conn, rows, letters)
        result.readings += len(rows)
        rows.clear()
        letters.clear()

    for message in messages:
        topic = f"municipality/{slug}/sensors/{message.external_id}/readings"
        payload = orjson.dumps({"time": message.time.isoformat(), "readings": message.readings})
        arrival = datetime.now(UTC)
        outcome = pipeline.handle(with_db, topic, payload, arrival)
        rows.extend(outcome.rows)
        if outcome.rejection is not None:
            rejected = outcome.rejection
            pipeline.attribute(with_db, topic, rejected)
            letters.append(
                DeadLetterRow(
                    topic=topic,
                    payload=payload,
                    reason=rejected.reason,
                    detail=rejected.detail,
                    municipality_id=rejected.municipality_id,
                    device_id=rejected.device_id,
                    received_at=arrival,
                )
            )
            result.dead_letters[rejected.reason] += 1
        result.messages += 1
        if result.messages % batch_messages == 0:
            flush()
    flush()
    return result


# --- findings --------------------------------------------------------------------------------


def _series(
    conn: psycopg.Connection, municipality_id: int, kind: str, metric: str
) -> tuple[list[tuple], Padded]:
    sensors = conn.execute(
        "SELECT s.id, s.external_id, z.name FROM sensors s LEFT JOIN zones z ON z.id = s.zone_id "
        "WHERE s.municipality_id = %s AND s.kind = %s ORDER BY s.id",
        (municipality_id, kind),
    ).fetchall()
    metric_id = conn.execute("SELECT id FROM metrics WHERE name = %s", (metric,)).fetchone()[0]
    ids = [s[0] for s in sensors]
    if not ids:
        return [], to_padded(np.empty(0, np.int64), np.empty(0), np.empty(0), 0)
    arrays = conn.execute(
        "SELECT sensor_id, array_agg(extract(epoch FROM time)::float8 ORDER BY time), "
        "array_agg(value ORDER BY time) FROM readings WHERE sensor_id = ANY(%s) "
        "AND metric_id = %s GROUP BY sensor_id",
        (ids, metric_id),
    ).fetchall()
    index = {sensor_id: i for i, sensor_id in enumerate(ids)}
    row = np.concatenate([np.full(len(t), index[s]) for s, t, _ in arrays] or [np.empty(0)])
    time_s = np.concatenate([np.array(t, dtype=float) for _, t, _ in arrays] or [np.empty(0)])
    value = np.concatenate([np.array(v, dtype=float) for _, _, v in arrays] or [np.empty(0)])
    return sensors, to_padded(row.astype(np.int64), time_s, value, len(ids))


def room_findings(conn: psycopg.Connection, municipality_id: int) -> list[dict[str, Any]]:
    """Per room over the whole replay: occupied hours (the data's own occupancy; a room
    without it is never occupied — no school calendar applies to an office dataset),
    BR18 hours above 1,000 ppm, EN 16798-1 CO2 and temperature shares."""
    from analytics.occupancy import occupied_mask, sensor_state_at

    sensors, co2 = _series(conn, municipality_id, "climate", "co2_ppm")
    if not sensors:
        return []
    _, temperature = _series(conn, municipality_id, "climate", "temperature_c")
    _, occupancy = _series(conn, municipality_id, "climate", "occupancy")
    closed = SchoolCalendar({})  # occupied only when the room's sensor says so

    def occupied(series: Padded) -> np.ndarray:
        state = sensor_state_at(series.time_s, occupancy.time_s, occupancy.value, 1800.0)
        return occupied_mask(series.time_s, closed, "UTC", state) & ~np.isnan(series.value)

    end_s = float(np.nanmax(co2.time_s)) + 600.0 if co2.time_s.size else 0.0
    rows = room_month_report(
        co2, temperature, occupied(co2), occupied(temperature), end_s, zone="Europe/Amsterdam"
    )
    observed_h = sample_durations_s(co2.time_s, end_s).sum(axis=1) / 3600.0
    return [
        {"room": s[2] or s[1], "observed_h": round(float(h), 1), **row}
        for s, h, row in zip(sensors, observed_h, rows, strict=True)
    ]


def parking_findings(
    conn: psycopg.Connection, municipality_id: int, zone: str = "Europe/London"
) -> list[dict[str, Any]]:
    """Weekday × hour occupancy profile and peak hour per car park (zone)."""
    sensors, occupied = _series(conn, municipality_id, "parking", "occupied")
    if not sensors:
        return []
    names = sorted({s[2] for s in sensors})
    zone_of_bay = np.array([names.index(s[2]) for s in sensors])
    start = float(np.nanmin(occupied.time_s))
    end = float(np.nanmax(occupied.time_s))
    start = np.floor(start / 1800.0) * 1800.0
    return parking_report(occupied, zone_of_bay, names, start, end, zone, bucket_s=1800.0)


def bin_forecast_findings(conn: psycopg.Connection, municipality_id: int) -> dict[str, Any]:
    """The fill forecast at each collection against the level the sensor then reported.

    Per bin, between collections k−1 and k the fill rises from the level after k−1 to the
    level before k: that rate (%/h) with `predicted_fill_pct` forecasts the level before
    collection k+1 from the level after k. Errors in percentage points; also how often the
    forecast and the sensor agree on "full" (≥ 80 % of the sensor's scale: the 100 % mark).
    """
    sensors, fill = _series(conn, municipality_id, "bin", "fill_pct")
    predicted, actual = [], []
    for r in range(len(sensors)):
        t = fill.time_s[r, : fill.count[r]]
        v = fill.value[r, : fill.count[r]]
        # readings come in pairs: before (1 s earlier) and after each collection
        before_idx = np.flatnonzero(np.diff(t) <= 1.5)
        if before_idx.size < 3:
            continue
        t_c = t[before_idx + 1]
        before, after = v[before_idx], v[before_idx + 1]
        hours = np.diff(t_c) / 3600.0
        rate = (before[1:] - after[:-1]) / hours  # rate over interval k-1 → k
        forecast = bins.predicted_fill_pct(after[1:-1], rate[:-1], hours[1:])
        predicted.append(forecast)
        actual.append(before[2:])
    if not predicted:
        return {"bins": 0}
    p, a = np.concatenate(predicted), np.concatenate(actual)
    error = p - a
    full_threshold = 80.0
    return {
        "bins": len(predicted),
        "forecasts": int(p.size),
        "mean_absolute_error_pct": round(float(np.mean(np.abs(error))), 1),
        "median_absolute_error_pct": round(float(np.median(np.abs(error))), 1),
        "bias_pct": round(float(np.mean(error)), 1),
        "full_agreement": round(float(np.mean((p >= full_threshold) == (a >= full_threshold))), 3),
        "full_at_collection_share": round(float(np.mean(a >= full_threshold)), 3),
    }
