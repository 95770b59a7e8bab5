"""The collection list and routes of a day, from bins, readings and depots in PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, date, datetime, timedelta

import numpy as np
import psycopg
import pytest

from analytics.collection_service import (
    CollectionSetupError,
    collection_list,
    collection_route,
    fill_since_last_emptied,
    next_collection_day,
    route_document,
)

# Runs on plain PostgreSQL and on TimescaleDB (tests/conftest.py).
pytestmark = pytest.mark.storage

THURSDAY = date(2026, 3, 5)
FRIDAY = date(2026, 3, 6)
# 07:00 Copenhagen in March is 06:00 UTC.
ROUND_UTC = datetime(2026, 3, 5, 6, 0, tzinfo=UTC)


def _municipality(db: psycopg.Connection, settings: dict | None = None) -> int:
    return db.execute(
        "INSERT INTO municipalities (slug, name, settings) VALUES ('silkeborg', 'Silkeborg', %s)"
        " RETURNING id",
        (json.dumps({"collection": settings or {}}),),
    ).fetchone()[0]


def _depot(db: psycopg.Connection, mid: int) -> None:
    db.execute(
        "INSERT INTO sites (municipality_id, name, kind, lat, lon)"
        " VALUES (%s, 'Genbrug Nord', 'depot', 56.18, 9.55)",
        (mid,),
    )


def _bin(db: psycopg.Connection, mid: int, name: str, lat: float, lon: float, **kw) -> int:
    return db.execute(
        "INSERT INTO sensors (municipality_id, external_id, name, kind, lat, lon, bin_depth_mm,"
        " install_meta) VALUES (%s, %s, %s, 'bin', %s, %s, %s, %s) RETURNING id",
        (mid, name, name, lat, lon, kw.get("depth_mm", 1000.0), json.dumps(kw.get("meta", {}))),
    ).fetchone()[0]


def _readings(db, sensor_id: int, metric: str, times: list[datetime], values) -> None:
    metric_id = db.execute("SELECT id FROM metrics WHERE name = %s", (metric,)).fetchone()[0]
    db.execute("SELECT iot_ensure_partitions(%s, %s)", (min(times).date(), max(times).date()))
    with db.cursor() as cur:
        cur.executemany(
            "INSERT INTO readings (time, sensor_id, metric_id, value) VALUES (%s, %s, %s, %s)",
            [(t, sensor_id, metric_id, float(v)) for t, v in zip(times, values, strict=True)],
        )


def _hours_before(end: datetime, hours: list[float]) -> list[datetime]:
    return [end - timedelta(hours=h) for h in hours]


def _run(database_url: str, fn, *args):
    async def go():
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            return await fn(conn, *args)

    return asyncio.run(go())


@pytest.fixture
def town(db):
    """Silkeborg with a depot and five bins whose fill histories are known."""
    mid = _municipality(db)
    _depot(db, mid)
    hours = [25, 19, 13, 7, 1]
    t = _hours_before(ROUND_UTC, hours)
    ids = {}
    # Fast: 2 %/h, 60 % an hour before the round -> 62 % at round, full in 19 h.
    ids["fast"] = _bin(db, mid, "fast", 56.17, 9.54)
    _readings(db, ids["fast"], "fill_pct", t, [60 - 2 * (h - 1) for h in hours])
    # Emptied 12 h ago: before that 5 %/h, since then 1 %/h from 0 %.
    ids["emptied"] = _bin(db, mid, "emptied", 56.16, 9.56)
    _readings(db, ids["emptied"], "fill_pct", t, [70, 100, 0, 6, 11])
    # Distance only: 1,000 mm deep, 300 -> 140 mm away = 70 -> 86 %, 4 % per 6 h.
    ids["distance"] = _bin(db, mid, "distance", 56.19, 9.57, meta={"volume_l": 240})
    _readings(db, ids["distance"], "distance_mm", t, [300, 260, 220, 180, 140])
    ids["slow"] = _bin(db, mid, "slow", 56.15, 9.52)
    _readings(db, ids["slow"], "fill_pct", t, [10, 10.5, 11, 11.5, 12])
    ids["silent"] = _bin(db, mid, "silent", 56.16, 9.50)
    return mid, ids


def test_fill_rate_is_the_least_squares_slope_since_the_last_emptying():
    sensor = np.array([0, 0, 0, 0, 1, 1, 1, 2])
    t_s = np.array([0, 3600, 7200, 10800, 0, 3600, 7200, 0], dtype=float)
    fill = np.array([50, 90, 5, 8, 10, 12, 14, 40], dtype=float)
    latest, rate, last_t = fill_since_last_emptied(sensor, t_s, fill, 4, drop_pct=20)
    assert latest[:3].tolist() == [8, 14, 40] and np.isnan(latest[3])
    assert rate[:2] == pytest.approx([3.0, 2.0])
    assert np.isnan(rate[2]) and np.isnan(rate[3])  # one reading / none
    assert last_t[:3].tolist() == [10800, 7200, 0]


def test_next_collection_day_skips_the_weekend():
    assert next_collection_day(THURSDAY, (0, 1, 2, 3, 4)) == FRIDAY
    assert next_collection_day(FRIDAY, (0, 1, 2, 3, 4)) == date(2026, 3, 9)
    with pytest.raises(CollectionSetupError):
        next_collection_day(FRIDAY, ())


def test_collection_list_selects_bins_by_predicted_fill_with_reasons(town, database_url):
    mid, ids = town
    listing = _run(database_url, collection_list, mid, THURSDAY)
    by_id = {b["bin_id"]: b for b in listing["bins"]}
    assert listing["round_starts_at"] == "2026-03-05T07:00:00+01:00"
    assert listing["bins_total"] == 5
    # Fast: 62 % at the round, 2 %/h for 24 h -> 110 % by Friday's round.
    fast = by_id[ids["fast"]]
    assert fast["fill_rate_pct_per_h"] == pytest.approx(2.0)
    assert fast["predicted_fill_pct"] == pytest.approx(62.0)
    assert fast["reason"] == "full_before_next_opportunity" and fast["priority"] == 2
    assert fast["hours_to_full"] == pytest.approx(19.0)
    # Distance: 86 % an hour ago, 0.67 %/h -> 103 % by Friday; 240 l bin from meta.
    dist = by_id[ids["distance"]]
    assert dist["fill_pct"] == pytest.approx(86.0)
    assert dist["fill_rate_pct_per_h"] == pytest.approx(4 / 6, abs=1e-3)
    assert dist["volume_l"] == 240.0
    # Emptied 12 h ago: the rate since then is ~0.92 %/h, not the 5 %/h before.
    assert ids["emptied"] not in by_id
    assert ids["slow"] not in by_id
    assert [b["bin_id"] for b in listing["no_data"]] == [ids["silent"]]
    # Soonest full first: fast in 19 h, distance in 20 h (from the round).
    assert dist["hours_to_full"] == pytest.approx(20.0, abs=0.1)
    assert [b["bin_id"] for b in listing["bins"]] == [ids["fast"], ids["distance"]]


def test_friday_list_looks_ahead_to_monday(town, database_url, db):
    mid, ids = town
    # On Friday the next round is Monday (72 h): the emptied bin (~1 %/h from 11 %) passes 90 %.
    emptied_rate_start = ROUND_UTC + timedelta(days=1)
    _readings(db, ids["emptied"], "fill_pct", [emptied_rate_start - timedelta(hours=1)], [34])
    listing = _run(database_url, collection_list, mid, FRIDAY)
    reasons = {b["bin_id"]: b["reason"] for b in listing["bins"]}
    assert reasons[ids["emptied"]] == "full_before_next_opportunity"
    assert listing["next_opportunity_at"].startswith("2026-03-09T07:00")


def test_collection_route_visits_every_listed_bin_from_the_depot(town, database_url):
    mid, _ = town
    listing, plan, problem = _run(database_url, collection_route, mid, THURSDAY)
    assert sorted(s.job_id for r in plan.routes for s in r.stops) == sorted(
        b["bin_id"] for b in listing["bins"]
    )
    assert problem["vehicles"][0]["start"] == [9.55, 56.18]
    assert problem["vehicles"][0]["time_window"] == [7 * 3600, 15 * 3600]
    doc = route_document(listing, plan, "json")
    first = doc["routes"][0]["stops"][0]
    assert first["arrival_at"].startswith("2026-03-05T07:")
    assert doc["distance_m"] > 0
    geo = route_document(listing, plan, "geojson")
    assert {f["geometry"]["type"] for f in geo["features"]} == {"LineString", "Point"}
    with pytest.raises(ValueError, match="geojson"):
        route_document(listing, plan, "kml")


def test_route_without_a_depot_says_what_to_add(db, database_url):
    mid = _municipality(db)
    with pytest.raises(CollectionSetupError, match="depot"):
        _run(database_url, collection_route, mid, THURSDAY)


def test_municipality_settings_change_the_threshold_and_unknown_keys_are_refused(db, database_url):
    mid = _municipality(db, {"threshold_pct": 50})
    sid = _bin(db, mid, "half", 56.17, 9.54)
    _readings(db, sid, "fill_pct", _hours_before(ROUND_UTC, [3, 1]), [40, 40])
    listing = _run(database_url, collection_list, mid, THURSDAY)
    assert [b["reason"] for b in listing["bins"]] == []
    db.execute(
        "UPDATE municipalities SET settings = %s WHERE id = %s",
        (json.dumps({"collection": {"threshold_pct": 40}}), mid),
    )
    listing = _run(database_url, collection_list, mid, THURSDAY)
    assert [b["reason"] for b in listing["bins"]] == ["above_threshold_before_next_opportunity"]
    db.execute(
        "UPDATE municipalities SET settings = %s WHERE id = %s",
        (json.dumps({"collection": {"treshold": 40}}), mid),
    )
    with pytest.raises(CollectionSetupError, match="treshold"):
        _run(database_url, collection_list, mid, THURSDAY)


def test_fill_pct_wins_over_distance_at_the_same_instant(db, database_url):
    mid = _municipality(db)
    sid = _bin(db, mid, "both", 56.17, 9.54)
    times = _hours_before(ROUND_UTC, [3, 2, 1])
    _readings(db, sid, "fill_pct", times, [50, 60, 70])
    _readings(db, sid, "distance_mm", times, [900, 900, 900])  # would say 10 %
    listing = _run(database_url, collection_list, mid, THURSDAY)
    assert [(b["fill_pct"], b["fill_rate_pct_per_h"]) for b in listing["bins"]] == [(70, 10)]


def test_bins_whose_readings_give_no_fill_are_listed_as_no_data(db, database_url):
    mid = _municipality(db)
    sid = db.execute(
        "INSERT INTO sensors (municipality_id, external_id, kind, lat, lon)"
        " VALUES (%s, 'no-depth', 'bin', 56.17, 9.54) RETURNING id",
        (mid,),
    ).fetchone()[0]
    _readings(db, sid, "distance_mm", _hours_before(ROUND_UTC, [2, 1]), [500, 400])
    listing = _run(database_url, collection_list, mid, THURSDAY)
    assert listing["bins"] == [] and [b["bin_id"] for b in listing["no_data"]] == [sid]
