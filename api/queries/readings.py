"""Readings of public sensors over a time range: raw, or in 5-minute/hour/day buckets.

Raw and 5-minute buckets come from ``readings`` (5 minutes via ``date_bin`` on the fly);
hour and day buckets come from the rollups ``readings_hourly``/``readings_daily``, which
are tables refreshed by the maintenance job on plain PostgreSQL and continuous aggregates
on TimescaleDB. Results are ordered by (sensor_id, time) for keyset pagination.

All of them are read through the functions of migration 0019, which return rows of
published sensors only (the public API's role may not read the tables); callers check the
ids first anyway, to answer 404 for a sensor that is not public.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timedelta
from operator import itemgetter
from typing import Any, Literal

from psycopg import AsyncConnection, sql

Bucket = Literal["raw", "5min", "hour", "day"]

BUCKET_WIDTH: dict[str, timedelta] = {
    "5min": timedelta(minutes=5),
    "hour": timedelta(hours=1),
    "day": timedelta(days=1),
}

# Keyset paging over several sensors, one branch per kind of sensor on the page: the rest
# of the cursor's sensor (from just after the cursor's time), then the sensors after it
# (from the start of the range). A single row comparison ``(sensor_id, time) >
# (after_sensor, after_time)`` is no index condition on (sensor_id, metric_id, time): it
# filtered, so every page re-read all rows of the sensors before the cursor (29 buffers on
# a first page, 214,893 on a late one). Each branch is an index range scan that starts
# where the page starts.
#
# The public API's role cannot read readings or the rollups directly: the functions of
# migration 0019 let out published sensors' rows only, with the same range scan inside.
_RAW = (
    "SELECT r.sensor_id, r.time, r.value "
    "FROM iot_published_readings(%(sensors)s::bigint[], %(metric_id)s::smallint, {start}, "
    "%(end)s::timestamptz, %(limit)s::integer) r"
)
_BUCKETS = (
    "SELECT b.sensor_id, b.time, b.avg, b.min, b.max, b.count "
    "FROM iot_published_buckets(%(bucket)s::text, %(sensors)s::bigint[], "
    "%(metric_id)s::smallint, {start}, %(end)s::timestamptz, %(limit)s::integer) b"
)
# Where the rest of the cursor's sensor starts: after its raw row or rollup bucket (times
# have microsecond resolution), or at the end of its 5-minute bucket, so that a bucket is
# never split between pages.
_AFTER_CURSOR_STEP: dict[str, str] = {
    "raw": "1 microsecond",
    "5min": "5 minutes",
    "hour": "1 microsecond",
    "day": "1 microsecond",
}
_AFTER_CURSOR = "greatest(%(start)s::timestamptz, %(after_time)s::timestamptz + interval '{step}')"
_FROM_START = "%(start)s::timestamptz"

# Local days (bucket=day with a time zone other than UTC), grouped by the local day a row
# starts in. From the hourly rollup when the zone is a whole number of hours from UTC over
# the range: every hour of a local day lies inside it, so a 23- or 25-hour day sums 23 or
# 25 hours, the average weighted by each hour's count. A local day holds at most 25 hourly
# rows, so the function's first (limit + 1) * 25 rows hold `limit` whole days. Zones with a
# fractional offset (Asia/Kolkata) group the raw readings of the security-barrier view.
_LOCAL_DAY_FROM_HOURLY = (
    "SELECT h.sensor_id, date_trunc('day', h.time, %(tz)s) AS time, "
    "sum(h.avg * h.count) / sum(h.count) AS avg, min(h.min) AS min, max(h.max) AS max, "
    "sum(h.count)::bigint AS count "
    "FROM iot_published_buckets('hour', %(sensors)s::bigint[], %(metric_id)s::smallint, "
    "{start}, %(end)s::timestamptz, %(hours_limit)s::integer) h "
    "GROUP BY 1, 2"
)
_LOCAL_DAY_FROM_RAW = (
    "SELECT r.sensor_id, date_trunc('day', r.time, %(tz)s) AS time, avg(r.value) AS avg, "
    "min(r.value) AS min, max(r.value) AS max, count(*) AS count "
    "FROM published_readings r "
    "WHERE r.sensor_id = ANY(%(sensors)s::bigint[]) AND r.metric_id = %(metric_id)s "
    "AND r.time >= {start} AND r.time < %(end)s::timestamptz "
    "GROUP BY 1, 2"
)
# The cursor holds the local midnight of the last day sent: go on from the next one.
_LOCAL_DAY_AFTER_CURSOR = (
    "greatest(%(start)s::timestamptz, "
    "((%(after_time)s::timestamptz AT TIME ZONE %(tz)s) + interval '1 day') AT TIME ZONE %(tz)s)"
)

# Columns every row keeps whichever aggregates are asked for.
_KEYS = ("sensor_id", "time", "value")

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
    later_sensors = sorted(s for s in sensor_ids if s > after_sensor)
    if bucket == "day" and tz is not None and tz != "UTC":
        template = _LOCAL_DAY_FROM_HOURLY if whole_hour_offsets else _LOCAL_DAY_FROM_RAW
        after_cursor = _LOCAL_DAY_AFTER_CURSOR
    else:
        template = _RAW if bucket == "raw" else _BUCKETS
        after_cursor = _AFTER_CURSOR.format(step=_AFTER_CURSOR_STEP[bucket])
    branches: list[tuple[str, list[int]]] = []
    if after is not None and after_sensor in sensor_ids:
        branches.append((after_cursor, [after_sensor]))
    if later_sensors or not branches:
        branches.append((_FROM_START, later_sensors))
    params: dict[str, Any] = {
        "metric_id": metric_id,
        "start": start,
        "end": end,
        "after_time": after_time,
        "bucket": bucket,
        "limit": limit,
        "hours_limit": (limit + 1) * 25,
        "tz": tz,
    }
    parts: list[sql.Composable] = []
    for i, (branch_start, sensors) in enumerate(branches):
        name = f"sensors_{i}"
        params[name] = sensors
        parts.append(
            sql.SQL(template.replace("%(sensors)s", f"%({name})s")).format(
                start=sql.SQL(branch_start)
            )
        )
    # Each function returns its rows in (sensor_id, time) order, and the first branch's
    # sensor precedes every sensor of the second.
    query = sql.SQL(" UNION ALL ").join(parts) + sql.SQL(" ORDER BY 1, 2 LIMIT %(limit)s")
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
    aggregates: Collection[str] | None = None,
) -> list[dict[str, Any]]:
    """Rows of `metric_id` for `sensor_ids` with time in [start, end), after `after`.

    Raw rows have ``value``; bucketed rows have ``avg``, ``min``, ``max`` and ``count``
    (or only those of them in `aggregates`), with ``time`` the bucket's start (UTC; for
    local days the local midnight, as UTC). Buckets belong to the range by their start.
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
    # Binary results: PostgreSQL's text output of floats and timestamps (and psycopg's
    # parsing of it) cost more than the binary forms. Tuples made into dicts of the wanted
    # columns in one comprehension: a row factory's call per row, and deleting unwanted
    # keys afterwards, were most of the API's CPU for the 5,000 hourly rows of a sensor's
    # year (BENCHMARKS.md "Open data API").
    async with conn.cursor(binary=True) as cur:
        await cur.execute(query, params)
        names = [column.name for column in cur.description or ()]
        rows = await cur.fetchall()
    keep = [
        i
        for i, name in enumerate(names)
        if aggregates is None or name in _KEYS or name in aggregates
    ]
    if len(keep) == len(names):
        return [dict(zip(names, row, strict=True)) for row in rows]
    pick = itemgetter(*keep)
    keys = [names[i] for i in keep]
    return [dict(zip(keys, pick(row), strict=True)) for row in rows]
