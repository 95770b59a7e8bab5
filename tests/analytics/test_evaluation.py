"""End to end over the real database: readings in, alerts out, reruns idempotent."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import orjson
import psycopg
import pytest
from psycopg.types.json import Jsonb

from analytics.evaluation import evaluate_municipality
from analytics.thresholds import ThresholdsError
from domain.metrics import sync_metrics
from ingest.pipeline import Pipeline
from ingest.writer import BatchWriter
from models.settings import Settings

# Runs on plain PostgreSQL and on TimescaleDB (tests/conftest.py).
pytestmark = pytest.mark.storage

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
STEP = timedelta(minutes=5)


def _setup(db: psycopg.Connection, settings: dict | None = None) -> dict[str, int]:
    db.execute(
        "INSERT INTO municipalities (slug, name, settings) VALUES ('aarhus', 'Aarhus', %s)",
        (Jsonb(settings or {}),),
    )
    ids = {}
    for external_id, kind, interval, depth in (
        ("room-stuffy", "climate", 300, None),
        ("room-fresh", "climate", 300, None),
        ("bin-full", "bin", 3600, 1000.0),
        ("bin-silent", "bin", 3600, 1000.0),
        ("bay-1", "parking", 600, None),
    ):
        ids[external_id] = db.execute(
            "INSERT INTO sensors (municipality_id, external_id, kind, expected_interval_s,"
            " bin_depth_mm) VALUES (1, %s, %s, %s, %s) RETURNING id",
            (external_id, kind, interval, depth),
        ).fetchone()[0]
    db.execute(
        "SELECT iot_ensure_partitions(%s, %s)",
        ((NOW - timedelta(days=4)).date(), (NOW + timedelta(days=2)).date()),
    )
    return ids


def _write(db: psycopg.Connection, rows: list[tuple[datetime, int, str, float]]) -> None:
    """Store readings the way they reach the database in production: each (sensor, time)
    becomes a native-format message that the real ingest `Pipeline` judges (deriving fill
    from distance, checking ranges) and the real `BatchWriter` commits."""
    topics = dict(
        db.execute(
            "SELECT s.id, 'municipality/' || m.slug || '/sensors/' || s.external_id || '/readings'"
            " FROM sensors s JOIN municipalities m ON m.id = s.municipality_id"
        ).fetchall()
    )
    messages: dict[tuple[int, datetime], dict[str, float]] = {}
    for t, sensor_id, name, value in rows:
        messages.setdefault((sensor_id, t), {})[name] = value
    # The scenarios sit at fixed dates in the past: the sender's age cap must admit them.
    pipeline = Pipeline(Settings(_env_file=None, max_past_age_days=36500), sync_metrics(db))
    writer = BatchWriter()
    for (sensor_id, t), readings in messages.items():
        topic = topics[sensor_id]
        payload = orjson.dumps({"time": t.isoformat(), "readings": readings})
        outcome = pipeline.handle(lambda op: op(db), topic, payload, t)
        assert outcome.rejection is None, outcome.rejection
        writer.write(db, outcome.rows, [])


def _climate(ids, start: datetime, end: datetime, stuffy_co2: float):
    rows = []
    t = start
    k = 0
    while t <= end:
        rows.append((t, ids["room-stuffy"], "co2_ppm", stuffy_co2 + (k % 3)))
        rows.append((t, ids["room-fresh"], "co2_ppm", 600.0 + (k % 5) * 10))
        rows.append((t, ids["room-fresh"], "temperature_c", 21.5))
        rows.append((t, ids["room-fresh"], "battery_v", 3.6))
        t += STEP
        k += 1
    return rows


def _alerts(db: psycopg.Connection) -> list[tuple]:
    return db.execute(
        "SELECT id, rule, subject, status FROM alerts ORDER BY rule, subject, id"
    ).fetchall()


def test_evaluation_opens_alerts_once_and_resolves_them_when_data_clears(db):
    ids = _setup(db)
    rows = _climate(ids, NOW - timedelta(hours=2), NOW, stuffy_co2=1250.0)
    # A bin filling 5 %/h to 95 % (full), reporting hourly; a bin that never reported.
    for h in range(10):
        rows.append(
            (NOW - timedelta(hours=9 - h), ids["bin-full"], "distance_mm", 1000 - (50 + 5 * h) * 10)
        )
    # A bay occupied for six hours.
    for m in range(0, 361, 10):
        rows.append((NOW - timedelta(minutes=360 - m), ids["bay-1"], "occupied", 1.0))
    rows.append((NOW - timedelta(minutes=5), ids["bay-1"], "battery_pct", 9.0))
    _write(db, rows)

    first = evaluate_municipality(db, 1, now=NOW)
    alerts = _alerts(db)
    found = {(rule, subject) for _, rule, subject, _ in alerts}
    assert found == {
        ("climate.co2_limit", f"sensor:{ids['room-stuffy']}"),
        ("bin.full", f"sensor:{ids['bin-full']}"),
        ("bin.fault", f"sensor:{ids['bin-silent']}"),
        ("health.stale", f"sensor:{ids['bin-silent']}"),
        ("parking.long_stay", f"sensor:{ids['bay-1']}"),
        ("health.low_battery", f"sensor:{ids['bay-1']}"),
    }
    assert all(status == "open" for *_, status in alerts)
    assert first.active == len(alerts)

    # Rerunning over the same data changes nothing: same rows, same ids.
    evaluate_municipality(db, 1, now=NOW)
    assert _alerts(db) == alerts

    # The room is aired: CO2 drops for half an hour; the CO2 alert is resolved.
    later = NOW + timedelta(minutes=30)
    _write(db, _climate(ids, NOW + STEP, later, stuffy_co2=600.0))
    result = evaluate_municipality(db, 1, now=later)
    co2 = db.execute(
        "SELECT status, resolved_at, ended_at FROM alerts WHERE rule = 'climate.co2_limit'"
    ).fetchall()
    assert co2 == [("resolved", later, later)]
    assert result.resolved >= 1

    # It gets stuffy again: a new alert row opens next to the resolved one.
    again = later + timedelta(minutes=30)
    _write(db, _climate(ids, later + STEP, again, stuffy_co2=1300.0))
    evaluate_municipality(db, 1, now=again)
    statuses = db.execute(
        "SELECT status FROM alerts WHERE rule = 'climate.co2_limit' ORDER BY id"
    ).fetchall()
    assert statuses == [("resolved",), ("open",)]


def test_acknowledged_alert_stays_acknowledged_while_active(db):
    from analytics.alerts import acknowledge

    ids = _setup(db)
    _write(db, _climate(ids, NOW - timedelta(hours=1), NOW, stuffy_co2=1250.0))
    evaluate_municipality(db, 1, now=NOW)
    alert_id = db.execute("SELECT id FROM alerts WHERE rule = 'climate.co2_limit'").fetchone()[0]
    assert acknowledge(db, alert_id, 1, "jens@aarhus.dk")["status"] == "acknowledged"
    evaluate_municipality(db, 1, now=NOW)
    row = db.execute(
        "SELECT status, acknowledged_by FROM alerts WHERE rule = 'climate.co2_limit'"
    ).fetchall()
    assert row == [("acknowledged", "jens@aarhus.dk")]


def test_municipality_thresholds_change_what_fires(db):
    ids = _setup(db, {"climate": {"co2_limit_ppm": 1300, "co2_critical_ppm": 1500}})
    _write(db, _climate(ids, NOW - timedelta(hours=1), NOW, stuffy_co2=1250.0))
    evaluate_municipality(db, 1, now=NOW)
    assert db.execute("SELECT count(*) FROM alerts WHERE rule LIKE 'climate.%'").fetchone() == (0,)


def test_bad_municipality_thresholds_are_refused_with_the_key_named(db):
    _setup(db, {"bins": {"full_pct": 150}})
    with pytest.raises(
        ThresholdsError, match=r"municipalities\[aarhus\]\.settings\.bins\.full_pct"
    ):
        evaluate_municipality(db, 1, now=NOW)


def test_cli_evaluates_one_municipality_by_slug(db, database_url):
    _setup(db)
    db.execute("INSERT INTO municipalities (slug, name) VALUES ('odense', 'Odense')")
    env = {"IOT_DATABASE_URL": database_url}
    done = subprocess.run(
        [sys.executable, "-m", "cli", "evaluate", "--municipality", "aarhus"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    # bin-silent never reported: its fault and stale alerts are there after the CLI run.
    rules = {r for (r,) in db.execute("SELECT rule FROM alerts").fetchall()}
    assert {"bin.fault", "health.stale"} <= rules
    unknown = subprocess.run(
        [sys.executable, "-m", "cli", "evaluate", "--municipality", "nowhere"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert unknown.returncode == 1


def test_an_impossible_distance_fed_through_ingest_raises_bin_fault(db):
    ids = _setup(db)
    # 3000 mm in a bin 1000 mm deep: ingest stores fill_pct 0 (clipped), the distance
    # itself says the sensor is broken or the bin gone.
    rows = [
        (NOW - timedelta(hours=2 - h), ids["bin-full"], "distance_mm", 3000.0) for h in range(3)
    ]
    _write(db, rows)
    stored = dict(
        db.execute(
            "SELECT m.name, r.value FROM readings r JOIN metrics m ON m.id = r.metric_id "
            "WHERE r.sensor_id = %s AND r.time = %s",
            (ids["bin-full"], NOW),
        ).fetchall()
    )
    assert stored == {"distance_mm": 3000.0, "fill_pct": 0.0}, "rows as ingest makes them"
    evaluate_municipality(db, 1, now=NOW)
    faults = {s for (s,) in db.execute("SELECT subject FROM alerts WHERE rule = 'bin.fault'")}
    assert f"sensor:{ids['bin-full']}" in faults


def test_a_plausible_distance_fed_through_ingest_raises_no_bin_fault(db):
    ids = _setup(db)
    _write(db, [(NOW - timedelta(hours=1), ids["bin-full"], "distance_mm", 1050.0)])
    evaluate_municipality(db, 1, now=NOW)
    faults = {s for (s,) in db.execute("SELECT subject FROM alerts WHERE rule = 'bin.fault'")}
    # 50 mm beyond the bottom is within the fault margin: an empty bin, not a fault.
    assert f"sensor:{ids['bin-full']}" not in faults
