"""Differential: an incremental cycle (only sensors with new data judged) leaves the
alerts exactly as a full evaluation at the same instant would, on random fleets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import psycopg
import pytest

from analytics.evaluation import evaluate_municipality

pytestmark = pytest.mark.storage

# A school day in the heating season (Tuesday 11:00 Copenhagen): rooms are occupied.
T0 = datetime(2026, 1, 13, 10, 0, tzinfo=UTC)
# The next cycle. Sample times are offset from T0 by half a step so that no sample sits
# on a window edge that moves between T0 and T1 (a sample leaving the 12-hour window, or
# the last hour of spikes, changes a full evaluation of a sensor without new data too;
# that is what the scheduler's periodic full cycle is for, not what is compared here).
T1 = T0 + timedelta(minutes=2)


def _fleet(db: psycopg.Connection, rng: np.random.Generator) -> dict[str, np.ndarray]:
    db.execute("INSERT INTO municipalities (slug, name) VALUES ('aarhus', 'Aarhus')")
    ids: dict[str, list[int]] = {"climate": [], "bin": [], "parking": []}
    for kind, count, interval in (("climate", 30, 300), ("bin", 12, 3600), ("parking", 12, 600)):
        for i in range(count):
            ids[kind].append(
                db.execute(
                    "INSERT INTO sensors (municipality_id, external_id, kind, "
                    "expected_interval_s, bin_depth_mm) VALUES (1, %s, %s, %s, %s) RETURNING id",
                    (f"{kind}-{i}", kind, interval, 1200.0 if kind == "bin" else None),
                ).fetchone()[0]
            )
    db.execute(
        "SELECT iot_ensure_partitions(%s, %s)",
        ((T0 - timedelta(days=3)).date(), (T0 + timedelta(days=1)).date()),
    )
    return {kind: np.array(v) for kind, v in ids.items()}


def _room_series(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """CO2 with random stuffy stretches, stuck stretches and spikes; temperature and
    humidity drifting in and out of their bands."""
    co2 = 450 + np.cumsum(rng.normal(0, 40, n)).clip(-300, 900)
    for _ in range(rng.integers(0, 3)):
        start = rng.integers(0, n)
        co2[start : start + rng.integers(3, 40)] += rng.uniform(300, 1200)
    if rng.random() < 0.2:  # frozen at the end
        co2[-rng.integers(20, 40) :] = 777.0
    if rng.random() < 0.3:
        co2[rng.integers(n - 15, n)] += 2500
    temperature = 21.5 + np.cumsum(rng.normal(0, 0.3, n)).clip(-4, 4)
    humidity = 40 + np.cumsum(rng.normal(0, 3, n)).clip(-25, 40)
    return {"co2_ppm": co2, "temperature_c": temperature, "humidity_pct": humidity}


def _readings(
    rng: np.random.Generator, ids: dict[str, np.ndarray], metric: dict[str, int]
) -> list[tuple[datetime, int, int, float]]:
    rows = []
    steps = np.arange(132)[::-1]  # 11 hours of 5-minute samples up to T0
    for sensor in ids["climate"]:
        times = [T0 - timedelta(minutes=2.5 + 5 * int(k)) for k in steps]
        for name, values in _room_series(rng, steps.size).items():
            rows += [
                (t, int(sensor), metric[name], float(v)) for t, v in zip(times, values, strict=True)
            ]
    for sensor in ids["bin"]:  # 40 hours, filling, emptied, now and then a jump
        fill = np.mod(rng.uniform(0, 80) + np.cumsum(rng.uniform(0, 4, 40)), 100.0)
        fill[rng.integers(0, 40)] += rng.choice([0.0, 35.0])
        times = [T0 - timedelta(minutes=30 + 60 * k) for k in range(40)][::-1]
        rows += [
            (t, int(sensor), metric["fill_pct"], float(v)) for t, v in zip(times, fill, strict=True)
        ]
    for sensor in ids["parking"]:  # 11 hours every 10 minutes, long stays likely
        state = np.cumsum(rng.random(66) < 0.04) % 2
        times = [T0 - timedelta(minutes=5 + 10 * k) for k in range(66)][::-1]
        rows += [
            (t, int(sensor), metric["occupied"], float(v))
            for t, v in zip(times, state, strict=True)
        ]
    return rows


def _store(db: psycopg.Connection, rows: list[tuple[datetime, int, int, float]]) -> None:
    with (
        db.cursor() as cur,
        cur.copy("COPY readings (time, sensor_id, metric_id, value) FROM STDIN") as copy,
    ):
        for row in rows:
            copy.write_row(row)
    # What ingest's writer keeps: each sensor's latest reading per metric.
    db.execute(
        "INSERT INTO latest_readings (sensor_id, metric_id, time, value) "
        "SELECT DISTINCT ON (sensor_id, metric_id) sensor_id, metric_id, time, value "
        "FROM readings ORDER BY sensor_id, metric_id, time DESC "
        "ON CONFLICT (sensor_id, metric_id) DO UPDATE SET time = EXCLUDED.time, "
        "value = EXCLUDED.value"
    )


def _alerts(db: psycopg.Connection) -> list[tuple]:
    return db.execute(
        "SELECT rule, subject, status, started_at, last_value FROM alerts "
        "WHERE status <> 'resolved' ORDER BY rule, subject"
    ).fetchall()


@pytest.mark.parametrize("seed", range(3))
def test_incremental_cycle_leaves_the_alerts_a_full_evaluation_would(
    db: psycopg.Connection, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    ids = _fleet(db, rng)
    metric = dict(db.execute("SELECT name, id FROM metrics").fetchall())
    _store(db, _readings(rng, ids, metric))
    evaluate_municipality(db, 1, now=T0)
    # Between the cycles some sensors report: rooms airing out or getting stuffier, bins
    # emptied or jumping, bays changing; the others send nothing.
    new = []
    for sensor in ids["climate"][rng.random(ids["climate"].size) < 0.5]:
        t = T0 + timedelta(minutes=1)
        new += [
            (t, int(sensor), metric["co2_ppm"], float(rng.choice([500.0, 1500.0, 2600.0]))),
            (t, int(sensor), metric["temperature_c"], float(rng.uniform(17, 27))),
            (t, int(sensor), metric["humidity_pct"], float(rng.uniform(15, 80))),
        ]
    for sensor in ids["bin"][rng.random(ids["bin"].size) < 0.5]:
        new.append(
            (T0 + timedelta(minutes=1), int(sensor), metric["fill_pct"], rng.uniform(0, 100))
        )
    for sensor in ids["parking"][rng.random(ids["parking"].size) < 0.5]:
        new.append(
            (T0 + timedelta(minutes=1), int(sensor), metric["occupied"], 1.0 - rng.integers(0, 2))
        )
    _store(db, new)

    evaluate_municipality(db, 1, now=T1, changed_since=T0)
    incremental = _alerts(db)
    result = evaluate_municipality(db, 1, now=T1)
    assert result.resolved == 0
    assert _alerts(db) == incremental
    # The comparison is not vacuous: the fleet raised alerts of several rules.
    assert len({a[0] for a in incremental}) >= 4, incremental
