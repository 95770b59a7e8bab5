"""How the evaluation job's reads reach storage (migration 0023): a sensor's series comes
from the primary key alone, on both backends."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import psycopg
import pytest

from analytics.evaluation import _READINGS_PER_SENSOR, load_metric

pytestmark = pytest.mark.storage

END = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def _scans(plan: dict) -> list[dict]:
    """Every node of an EXPLAIN (FORMAT JSON) plan that reads a relation."""
    found = [plan] if "Relation Name" in plan else []
    for child in plan.get("Plans", []):
        found += _scans(child)
    return found


def test_a_series_written_time_major_is_read_from_the_key_alone(db: psycopg.Connection) -> None:
    """Readings arrive time-major (every sensor's uplink at each step), so without the
    value in the key the job would fetch one heap page per reading."""
    db.execute("INSERT INTO municipalities (slug, name) VALUES ('aarhus', 'Aarhus')")
    sensors = [
        db.execute(
            "INSERT INTO sensors (municipality_id, external_id, kind) "
            "VALUES (1, %s, 'climate') RETURNING id",
            (f"room-{i}",),
        ).fetchone()[0]
        for i in range(20)
    ]
    db.execute(
        "SELECT iot_ensure_partitions(%s, %s)",
        ((END - timedelta(days=2)).date(), (END + timedelta(days=1)).date()),
    )
    metric = db.execute("SELECT id FROM metrics WHERE name = 'co2_ppm'").fetchone()[0]
    steps = [END - timedelta(minutes=5 * k) for k in range(144)][::-1]
    with (
        db.cursor() as cur,
        cur.copy("COPY readings (time, sensor_id, metric_id, value) FROM STDIN") as copy,
    ):
        for t in steps:
            for sensor in sensors:
                copy.write_row((t, sensor, metric, 400.0 + sensor + t.minute))
    # What autovacuum does to a partition that has stopped growing: the pages become
    # all-visible, so an index-only scan need not look at them.
    db.execute("VACUUM ANALYZE readings")
    ids = np.array(sorted(sensors))
    since = END - timedelta(hours=12)
    # A handful of rows would be a sequential scan; the job's plan at fleet size is the
    # key's, which is what this pins.
    db.execute("SET enable_seqscan = off")
    db.execute("SET enable_bitmapscan = off")
    try:
        plan = db.execute(
            "EXPLAIN (ANALYZE, FORMAT JSON) " + _READINGS_PER_SENSOR,
            (ids.tolist(), metric, since, END),
        ).fetchone()[0]
        row, _, value = load_metric(db, ids, metric, since, END)
    finally:
        db.execute("RESET enable_seqscan")
        db.execute("RESET enable_bitmapscan")
    plan = plan if isinstance(plan, list) else json.loads(plan)
    scans = [s for s in _scans(plan[0]["Plan"]) if s["Actual Rows"] > 0]
    assert scans, plan
    assert {s["Node Type"] for s in scans} == {"Index Only Scan"}, plan
    assert sum(s["Heap Fetches"] for s in scans) == 0, plan
    expected = [400.0 + sensor + t.minute for sensor in ids for t in steps]
    assert value.tolist() == expected
    assert row.tolist() == np.repeat(np.arange(ids.size), len(steps)).tolist()
