"""Evaluation over sensors whose configuration is incomplete: the alert names the cause."""

from __future__ import annotations

from datetime import timedelta

import pytest

from analytics.evaluation import evaluate_municipality
from tests.analytics.test_evaluation import NOW, _write

# Runs on plain PostgreSQL and on TimescaleDB (tests/conftest.py).
pytestmark = pytest.mark.storage


def _bins(db, depths: dict[str, float | None]) -> dict[str, int]:
    db.execute("INSERT INTO municipalities (slug, name) VALUES ('vejle', 'Vejle')")
    db.execute(
        "SELECT iot_ensure_partitions(%s, %s)",
        ((NOW - timedelta(days=4)).date(), (NOW + timedelta(days=2)).date()),
    )
    return {
        name: db.execute(
            "INSERT INTO sensors (municipality_id, external_id, kind, bin_depth_mm)"
            " VALUES (1, %s, 'bin', %s) RETURNING id",
            (name, depth),
        ).fetchone()[0]
        for name, depth in depths.items()
    }


def test_bin_without_depth_gets_a_fault_naming_the_missing_bin_depth(db):
    ids = _bins(db, {"no-depth": None, "configured": 1000.0, "silent": 1000.0})
    _write(
        db,
        [
            (NOW - timedelta(minutes=5), ids["no-depth"], "distance_mm", 300.0),
            (NOW - timedelta(minutes=5), ids["configured"], "distance_mm", 950.0),
        ],
    )
    evaluate_municipality(db, 1, now=NOW)
    faults = dict(
        db.execute(
            "SELECT sensor_id, message FROM alerts WHERE rule = 'bin.fault' AND status = 'open'"
        ).fetchall()
    )
    assert set(faults) == {ids["no-depth"], ids["silent"]}
    assert "bin_depth_mm not set" in faults[ids["no-depth"]]
    assert "bin_depth_mm" not in faults[ids["silent"]]


def test_bin_without_depth_but_with_its_own_fill_reading_is_no_fault(db):
    ids = _bins(db, {"self-reporting": None})
    _write(
        db,
        [
            (NOW - timedelta(minutes=5), ids["self-reporting"], "distance_mm", 300.0),
            (NOW - timedelta(minutes=5), ids["self-reporting"], "fill_pct", 40.0),
        ],
    )
    evaluate_municipality(db, 1, now=NOW)
    rules = {r for (r,) in db.execute("SELECT rule FROM alerts WHERE status = 'open'")}
    assert "bin.fault" not in rules
