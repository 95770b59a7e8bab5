"""Readings of public sensors over a time range: raw, or in 5-minute/hour/day buckets.

Raw and 5-minute buckets come from ``readings`` (5 minutes via ``date_bin`` on the fly);
hour and day buckets come from the rollups ``readings_hourly``/``readings_daily``, which
are tables refreshed by the maintenance job on plain PostgreSQL and continuous aggregates
on TimescaleDB. Results are ordered by (sensor_id, time) for keyset pagination.

Callers pass only sensor ids already checked to be public (see api/queries/public.py).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Literal

from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row

Bucket = Literal["raw", "5min", "hour", "day"]

BUCKET_WIDTH: dict[str, timedelta] = {
    "5min": timedelta(minutes=5),
    "hour": timedelta(hours=1),
    "day": timedelta(days=1),
}

_ROLLUP_TABLE = {"hour": "readings_hourly", "day": "readings_daily"}

# Keyset: rows strictly after (after_sensor, after_time); the first page starts at (0, -inf).
_RAW = """
SELECT r.sensor_id, r.time, r.value
FROM readings r
WHERE r.sensor_id = ANY(%(sensor_ids)s) AND r.metric_id = %(metric_id)s
  AND r.time >= %(start)s AND r.time < %(end)s
  AND (r.sensor_id, r.time) > (%(after_sensor)s, %(after_time)s)
ORDER BY r.sensor_id, r.time
LIMIT %(limit)s
"""

# Raw rows are filtered from the end of the cursor's bucket, so a bucket is never split.
_FIVE_MINUTES = """
SELECT r.sensor_id,
       date_bin('5 minutes', r.time, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS time,
       avg(r.value) AS avg, min(r.value) AS min, max(r.value) AS max, count(*) AS count
FROM readings r
WHERE r.sensor_id = ANY(%(sensor_ids)s) AND r.metric_id = %(metric_id)s
  AND r.time >= %(start)s AND r.time < %(end)s
  AND (r.sensor_id, r.time) >= (%(after_sensor)s, %(after_time)s + interval '5 minutes')
GROUP BY 1, 2
ORDER BY 1, 2
LIMIT %(limit)s
"""

_ROLLUP = """
SELECT b.sensor_id, b.bucket AS time, b.avg, b.min, b.max, b.count
FROM {table} b
WHERE b.sensor_id = ANY(%(sensor_ids)s) AND b.metric_id = %(metric_id)s
  AND b.bucket >= %(start)s AND b.bucket < %(end)s
  AND (b.sensor_id, b.bucket) > (%(after_sensor)s, %(after_time)s)
ORDER BY b.sensor_id, b.bucket
LIMIT %(limit)s
"""

_BEGINNING = datetime.fromisoformat("0001-01-01T00:00:00+00:00")


async def fetch_readings(
    conn: AsyncConnection,
    *,
    sensor_ids: list[int],
    metric_id: int,
    start: datetime,
    end: datetime,
    bucket: Bucket,
    limit: int,
    after: tuple[int, datetime] | None = None,
) -> list[dict[str, Any]]:
    """Rows of `metric_id` for `sensor_ids` with time in [start, end), after `after`.

    Raw rows have ``value``; bucketed rows have ``avg``, ``min``, ``max`` and ``count``,
    with ``time`` the bucket's start (UTC). Buckets belong to the range by their start.
    """
    after_sensor, after_time = after or (0, _BEGINNING)
    params = {
        "sensor_ids": sensor_ids,
        "metric_id": metric_id,
        "start": start,
        "end": end,
        "after_sensor": after_sensor,
        "after_time": after_time,
        "limit": limit,
    }
    if bucket == "raw":
        query: sql.Composable = sql.SQL(_RAW)
    elif bucket == "5min":
        query = sql.SQL(_FIVE_MINUTES)
    else:
        query = sql.SQL(_ROLLUP).format(table=sql.Identifier(_ROLLUP_TABLE[bucket]))
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        return await cur.fetchall()
