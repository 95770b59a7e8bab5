"""Paging /api/v1/readings: cursors for the default range, and pages of equal cost.

A cursor must carry what its first page resolved (the default range ends at "now", which
moves between requests), and a late page must not re-read the rows of the pages before
it: keyset paging over several sensors once re-read every earlier sensor's rows.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.queries.readings import readings_query
from models.settings import Settings
from tests.api.conftest import Fleet
from tests.conftest import migrated_database

URL = "/api/v1/readings"


def _page_through(client: TestClient, params: dict[str, Any]) -> list[tuple[int, str]]:
    got: list[tuple[int, str]] = []
    for _ in range(1000):
        response = client.get(URL, params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        got += [(item["sensor_id"], item["time"]) for item in body["items"]]
        if body["next_cursor"] is None:
            return got
        params = {**params, "cursor": body["next_cursor"]}
    raise AssertionError("paging did not end")


def test_paging_through_the_default_range_returns_every_row_once(
    client: TestClient, fleet: Fleet, db: psycopg.Connection
) -> None:
    now = datetime.now(UTC)
    db.execute(
        "SELECT iot_ensure_partitions(%s, %s)", ((now - timedelta(days=2)).date(), now.date())
    )
    metric_id = db.execute("SELECT id FROM metrics WHERE name = 'co2_ppm'").fetchone()[0]
    # 47 readings per sensor inside the last day (every 29 minutes, from 23 h ago).
    times = [now - timedelta(hours=23) + i * timedelta(minutes=29) for i in range(47)]
    with db.cursor() as cur:
        cur.executemany(
            "INSERT INTO readings (time, sensor_id, metric_id, value) VALUES (%s, %s, %s, 500)",
            [(t, s, metric_id) for s in (1, 5) for t in times],
        )
    first = client.get(URL, params={"sensor_id": [1, 5], "metric": "co2_ppm", "limit": 5})
    assert first.status_code == 200 and first.json()["next_cursor"]
    # Written after the first page, newer than its range: not part of this paging.
    db.execute(
        "INSERT INTO readings (time, sensor_id, metric_id, value) VALUES (now(), 1, %s, 9)",
        (metric_id,),
    )

    got = [(item["sensor_id"], item["time"]) for item in first.json()["items"]]
    got += _page_through(
        client,
        {
            "sensor_id": [1, 5],
            "metric": "co2_ppm",
            "limit": 5,
            "cursor": first.json()["next_cursor"],
        },
    )

    expected = [(s, t.isoformat().replace("+00:00", "Z")) for s in (1, 5) for t in times]
    assert [s for s, _ in got] == [s for s, _ in expected]
    assert len(got) == len(set(got)) == 94
    assert [datetime.fromisoformat(t) for _, t in got] == [
        datetime.fromisoformat(t) for _, t in expected
    ]


def test_a_cursor_is_refused_for_other_filters_and_cannot_widen_the_range(
    client: TestClient, fleet: Fleet
) -> None:
    params = {
        "sensor_id": 1,
        "metric": "co2_ppm",
        "limit": 3,
        "from": "2026-03-01T00:00:00Z",
        "to": "2026-03-02T00:00:00Z",
    }
    cursor = client.get(URL, params=params).json()["next_cursor"]
    other = client.get(URL, params={**params, "to": "2026-03-03T00:00:00Z", "cursor": cursor})
    assert other.status_code == 400 and "other filters" in other.json()["detail"]
    defaulted = {"sensor_id": 1, "metric": "co2_ppm", "limit": 3}
    assert client.get(URL, params={**defaulted, "cursor": cursor}).status_code == 400


def _buffers(db: psycopg.Connection, query: Any, params: dict[str, Any]) -> int:
    """Shared buffers hit and read by `query`, as EXPLAIN (ANALYZE, BUFFERS) counts them."""
    plan = db.execute(
        psycopg.sql.SQL("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) ") + query, params
    ).fetchone()[0][0]
    top = plan["Plan"]
    return int(top.get("Shared Hit Blocks", 0) + top.get("Shared Read Blocks", 0))


@pytest.mark.parametrize("bucket", ["raw", "5min", "hour"])
def test_a_late_page_reads_about_as_many_buffers_as_the_first(
    client: TestClient, fleet: Fleet, db: psycopg.Connection, bucket: str
) -> None:
    # 40 more public sensors with three days of CO2 every 10 minutes (432 rows each).
    db.execute(
        "INSERT INTO sensors (municipality_id, external_id, name, kind, is_public, status) "
        "SELECT 1, 'extra-' || g, 'extra ' || g, 'climate', true, 'active' "
        "FROM generate_series(1, 40) g"
    )
    db.execute(
        "INSERT INTO readings (time, sensor_id, metric_id, value) "
        "SELECT t, s.id, m.id, 400 + s.id FROM sensors s, metrics m, "
        "generate_series(%s::timestamptz, %s::timestamptz - interval '10 minutes', "
        "                interval '10 minutes') t "
        "WHERE s.external_id LIKE 'extra-%%' AND m.name = 'co2_ppm'",
        (fleet.start, fleet.end),
    )
    db.execute("SELECT iot_refresh_rollups()")
    db.execute("ANALYZE readings, readings_hourly")
    ids = [
        row[0]
        for row in db.execute(
            "SELECT id FROM sensors WHERE is_public AND status = 'active' ORDER BY id"
        )
    ]
    metric_id = db.execute("SELECT id FROM metrics WHERE name = 'co2_ppm'").fetchone()[0]
    params: dict[str, Any] = {
        "sensor_id": ids,
        "metric": "co2_ppm",
        "bucket": bucket,
        "limit": 50,
        "from": fleet.start.isoformat(),
        "to": fleet.end.isoformat(),
    }
    # Walk to a page among the last sensors, as a client would.
    cursor = None
    for _ in range(1000):
        body = client.get(URL, params={**params, "cursor": cursor} if cursor else params).json()
        if body["items"][0]["sensor_id"] >= ids[-3] or body["next_cursor"] is None:
            break
        cursor = body["next_cursor"]
    assert cursor is not None and body["items"][0]["sensor_id"] >= ids[-3]
    position = _cursor_key(cursor)

    def cost(after: tuple[int, datetime] | None) -> int:
        query, query_params = readings_query(
            sensor_ids=ids,
            metric_id=metric_id,
            start=fleet.start,
            end=fleet.end,
            bucket=bucket,
            limit=50,
            after=after,
        )
        return _buffers(db, query, query_params)

    first, late = cost(None), cost(position)
    assert late <= 2 * first + 20, f"first page {first} buffers, late page {late}"


def _cursor_key(cursor: str) -> tuple[int, datetime]:
    import base64

    import orjson

    data = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    sensor, time = data["k"][:2]
    assert re.match(r"\d{4}-", time)
    return sensor, datetime.fromisoformat(time)


_EXPECTED = {
    "raw": "SELECT sensor_id, time, 1 FROM readings WHERE sensor_id = ANY(%(ids)s) "
    "AND metric_id = %(metric)s AND time >= %(start)s AND time < %(end)s ORDER BY 1, 2",
    "5min": "SELECT sensor_id, date_bin('5 minutes', time, TIMESTAMPTZ '2000-01-01 00:00Z'), "
    "count(*) FROM readings WHERE sensor_id = ANY(%(ids)s) AND metric_id = %(metric)s "
    "AND time >= %(start)s AND time < %(end)s GROUP BY 1, 2 ORDER BY 1, 2",
    "hour": "SELECT sensor_id, bucket, count FROM readings_hourly WHERE sensor_id = ANY(%(ids)s) "
    "AND metric_id = %(metric)s AND bucket >= %(start)s AND bucket < %(end)s ORDER BY 1, 2",
}


def _seed_irregular(conn: psycopg.Connection, start: datetime) -> list[int]:
    """Five public sensors with readings at uneven steps over two days (7 min for the
    first, more for the next), so pages end anywhere inside buckets and sensors."""
    conn.execute("INSERT INTO municipalities (slug, name) VALUES ('paging', 'Paging Kommune')")
    ids = [
        row[0]
        for row in conn.execute(
            "INSERT INTO sensors (municipality_id, external_id, kind, is_public, status) "
            "SELECT 1, 'p' || g, 'climate', true, 'active' FROM generate_series(1, 5) g "
            "RETURNING id"
        )
    ]
    conn.execute(
        "SELECT iot_ensure_partitions(%s, %s)", (start.date(), (start + timedelta(2)).date())
    )
    conn.execute(
        "INSERT INTO readings (time, sensor_id, metric_id, value) "
        "SELECT %(start)s + n * make_interval(mins => (7 + 3 * (s.id %% 5))::int), s.id, m.id, n "
        "FROM sensors s, metrics m, generate_series(0, 400) n "
        "WHERE m.name = 'co2_ppm' "
        "AND n * (7 + 3 * (s.id %% 5)) < 2 * 24 * 60",
        {"start": start},
    )
    return sorted(ids)


def _assert_pages_match_sql(client: TestClient, conn: psycopg.Connection, ids: list[int]) -> None:
    start = datetime(2026, 3, 1, tzinfo=UTC)
    end = start + timedelta(days=2)
    metric = conn.execute("SELECT id FROM metrics WHERE name = 'co2_ppm'").fetchone()[0]
    for bucket in ("raw", "5min", "hour"):
        expected = [
            (sensor, time.isoformat().replace("+00:00", "Z"), count)
            for sensor, time, count in conn.execute(
                _EXPECTED[bucket], {"ids": ids, "metric": metric, "start": start, "end": end}
            )
        ]
        params: dict[str, Any] = {
            "sensor_id": ids,
            "metric": "co2_ppm",
            "bucket": bucket,
            "limit": 37,
            "from": start.isoformat(),
            "to": end.isoformat(),
        }
        got = []
        while True:
            response = client.get(URL, params=params)
            assert response.status_code == 200, response.text
            body = response.json()
            got += [(i["sensor_id"], i["time"], i.get("count", 1)) for i in body["items"]]
            if body["next_cursor"] is None:
                break
            params["cursor"] = body["next_cursor"]
        assert len(expected) > 37 * 5, bucket
        assert got == expected, bucket


def test_pages_over_several_sensors_are_exactly_the_rows_of_one_query(
    client: TestClient, db: psycopg.Connection
) -> None:
    ids = _seed_irregular(db, datetime(2026, 3, 1, tzinfo=UTC))
    db.execute("SELECT iot_refresh_rollups()")
    _assert_pages_match_sql(client, db, ids)


@pytest.mark.timescaledb
def test_pages_are_exactly_the_rows_of_one_query_on_timescaledb(
    timescale_admin_url: str,
) -> None:
    with (
        migrated_database("on", "iot_tsdb_paging", timescale_admin_url) as url,
        psycopg.connect(url, autocommit=True) as conn,
    ):
        ids = _seed_irregular(conn, datetime(2026, 3, 1, tzinfo=UTC))
        for view in ("readings_hourly", "readings_daily"):
            conn.execute(f"CALL refresh_continuous_aggregate('{view}', NULL, NULL)")
        with TestClient(create_app(Settings(database_url=url))) as client:
            _assert_pages_match_sql(client, conn, ids)
