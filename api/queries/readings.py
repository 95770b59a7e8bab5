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

# Keyset paging over several sensors, one branch per kind of sensor on the page:
#   {sensors} is ``= %(after_sensor)s`` for the rest of the cursor's sensor (with {after},
#   the cursor's time, as the lower bound), or ``= ANY(%(later_sensors)s)`` for the sensors
#   after it, from the start of the range.
# A single row comparison ``(sensor_id, time) > (after_sensor, after_time)`` is no index
# condition on (sensor_id, metric_id, time): it filtered, so every page re-read all rows of
# the sensors before the cursor (29 buffers on a first page, 214,893 on a late one). Each
# branch here is an index range scan that starts where the page starts.
_RAW = """
SELECT r.sensor_id, r.time, r.value
FROM readings r
WHERE r.sensor_id {sensors} AND r.metric_id = %(metric_id)s
  AND r.time >= %(start)s AND r.time < %(end)s{after}
ORDER BY r.sensor_id, r.time
LIMIT %(limit)s
"""
_RAW_AFTER = " AND r.time > %(after_time)s"

# Raw rows are filtered from the end of the cursor's bucket, so a bucket is never split.
_FIVE_MINUTES = """
SELECT r.sensor_id,
       date_bin('5 minutes', r.time, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS time,
       avg(r.value) AS avg, min(r.value) AS min, max(r.value) AS max, count(*) AS count
FROM readings r
WHERE r.sensor_id {sensors} AND r.metric_id = %(metric_id)s
  AND r.time >= %(start)s AND r.time < %(end)s{after}
GROUP BY 1, 2
ORDER BY 1, 2
LIMIT %(limit)s
"""
_FIVE_MINUTES_AFTER = " AND r.time >= %(after_time)s + interval '5 minutes'"

_ROLLUP = """
SELECT b.sensor_id, b.bucket AS time, b.avg, b.min, b.max, b.count
FROM {table} b
WHERE b.sensor_id {sensors} AND b.metric_id = %(metric_id)s
  AND b.bucket >= %(start)s AND b.bucket < %(end)s{after}
ORDER BY b.sensor_id, b.bucket
LIMIT %(limit)s
"""
_ROLLUP_AFTER = " AND b.bucket > %(after_time)s"

# Local days (bucket=day with a time zone other than UTC): the hourly rollup grouped by
# the local day its hour starts in. Every hour of a local day whose zone is a whole number
# of hours from UTC lies inside that day, so a 23- or 25-hour day sums 23 or 25 hours;
# the average is weighted by each hour's count. Zones with a fractional offset (Asia/Kolkata)
# group the raw readings instead ({source} and {time}).
_LOCAL_DAY = """
SELECT b.sensor_id, date_trunc('day', b.{time}, %(tz)s) AS time,
       {avg} AS avg, min(b.{min}) AS min, max(b.{max}) AS max, {count} AS count
FROM {source} b
WHERE b.sensor_id {sensors} AND b.metric_id = %(metric_id)s
  AND b.{time} >= %(start)s AND b.{time} < %(end)s{after}
GROUP BY 1, 2
ORDER BY 1, 2
LIMIT %(limit)s
"""
# The cursor holds the local midnight of the last day sent: go on from the next one.
_LOCAL_DAY_AFTER = (
    " AND b.{time} >= (((%(after_time)s AT TIME ZONE %(tz)s) + interval '1 day')"
    " AT TIME ZONE %(tz)s)"
)
_LOCAL_DAY_FROM_HOURLY = {
    "source": "readings_hourly",
    "time": "bucket",
    "avg": "sum(b.sum) / sum(b.count)",
    "min": "min",
    "max": "max",
    "count": "sum(b.count)::bigint",
}
_LOCAL_DAY_FROM_RAW = {
    "source": "readings",
    "time": "time",
    "avg": "avg(b.value)",
    "min": "value",
    "max": "value",
    "count": "count(*)",
}

_CURRENT_SENSOR = "= %(after_sensor)s"
_LATER_SENSORS = "= ANY(%(later_sensors)s)"

_BEGINNING = datetime.fromisoformat("0001-01-01T00:00:00+00:00")


def readings_query(
    *,
    sensor_ids: list[int],
    metric_id: int,
    start: datetime,
    end: datetime,
    bucket: Bucket,
    limit: int,
    after: tuple[int, datetime] | None = None,
    tz: str | None = None,
    whole_hour_offsets: bool = True,
) -> tuple[sql.Composable, dict[str, Any]]:
    """The statement `fetch_readings` runs, with its parameters (also for EXPLAIN).

    `tz` (an IANA name) makes day buckets local days of that zone; None or "UTC" keeps
    the UTC days of readings_daily. `whole_hour_offsets` says the zone is a whole number
    of hours from UTC over the range (then local days come from the hourly rollup)."""
    after_sensor, after_time = after or (0, _BEGINNING)
    params = {
        "metric_id": metric_id,
        "start": start,
        "end": end,
        "after_sensor": after_sensor,
        "after_time": after_time,
        "later_sensors": sorted(s for s in sensor_ids if s > after_sensor),
        "limit": limit,
        "tz": tz,
    }
    local_day = bucket == "day" and tz is not None and tz != "UTC"
    if local_day:
        parts = _LOCAL_DAY_FROM_HOURLY if whole_hour_offsets else _LOCAL_DAY_FROM_RAW
        template = _LOCAL_DAY.replace("{time}", parts["time"]).format(
            avg=parts["avg"],
            min=parts["min"],
            max=parts["max"],
            count=parts["count"],
            source="{table}",
            sensors="{sensors}",
            after="{after}",
        )
        after_bound = _LOCAL_DAY_AFTER.replace("{time}", parts["time"])
        table = sql.Identifier(parts["source"])
    elif bucket == "raw":
        template, after_bound = _RAW, _RAW_AFTER
    elif bucket == "5min":
        template, after_bound = _FIVE_MINUTES, _FIVE_MINUTES_AFTER
    else:
        template, after_bound = _ROLLUP, _ROLLUP_AFTER
    if not local_day:
        table = sql.Identifier(_ROLLUP_TABLE.get(bucket, "readings"))
    branches: list[sql.Composable] = []
    if after is not None and after_sensor in sensor_ids:
        branches.append(
            sql.SQL(template).format(
                sensors=sql.SQL(_CURRENT_SENSOR), after=sql.SQL(after_bound), table=table
            )
        )
    if params["later_sensors"] or not branches:
        branches.append(
            sql.SQL(template).format(
                sensors=sql.SQL(_LATER_SENSORS), after=sql.SQL(""), table=table
            )
        )
    if len(branches) == 1:
        query: sql.Composable = branches[0]
    else:
        # The first branch's sensor precedes every sensor of the second.
        query = sql.SQL("({}) UNION ALL ({}) ORDER BY 1, 2 LIMIT %(limit)s").format(*branches)
    return query, params


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
    tz: str | None = None,
    whole_hour_offsets: bool = True,
) -> list[dict[str, Any]]:
    """Rows of `metric_id` for `sensor_ids` with time in [start, end), after `after`.

    Raw rows have ``value``; bucketed rows have ``avg``, ``min``, ``max`` and ``count``,
    with ``time`` the bucket's start (UTC; for local days the local midnight, as UTC).
    Buckets belong to the range by their start.
    """
    query, params = readings_query(
        sensor_ids=sensor_ids,
        metric_id=metric_id,
        start=start,
        end=end,
        bucket=bucket,
        limit=limit,
        after=after,
        tz=tz,
        whole_hour_offsets=whole_hour_offsets,
    )
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        return await cur.fetchall()
