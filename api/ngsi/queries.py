"""The NGSI-LD read API's queries: public sensors of a kind, their newest values, and
their readings over a time range. Every query filters on ``PUBLIC_SENSOR``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from api.queries.public import PUBLIC_SENSOR
from models.ngsi_ld import SensorFacts

_SENSORS = f"""
SELECT s.id, s.kind, coalesce(s.name, 'Sensor ' || s.id) AS name, m.slug, m.name AS mname,
       s.lat, s.lon, s.site_id, s.install_meta ->> 'parking_category' AS parking_category
FROM sensors s JOIN municipalities m ON m.id = s.municipality_id
WHERE {PUBLIC_SENSOR} AND s.lat IS NOT NULL AND s.lon IS NOT NULL
  AND s.kind = ANY(%(kinds)s::text[])
  AND (%(ids)s::bigint[] IS NULL OR s.id = ANY(%(ids)s::bigint[]))
  AND s.id > %(after)s::bigint
  AND {{conditions}}
ORDER BY s.id
LIMIT %(limit)s::int
"""  # noqa: S608 (module constants and compiled fragments; values are bound)

_COUNT = f"""
SELECT count(*) FROM sensors s JOIN municipalities m ON m.id = s.municipality_id
WHERE {PUBLIC_SENSOR} AND s.lat IS NOT NULL AND s.lon IS NOT NULL
  AND s.kind = ANY(%(kinds)s::text[])
  AND (%(ids)s::bigint[] IS NULL OR s.id = ANY(%(ids)s::bigint[]))
  AND {{conditions}}
"""  # noqa: S608

_LATEST = """
SELECT l.sensor_id, mt.name, l.value, l.time
FROM latest_readings l JOIN metrics mt ON mt.id = l.metric_id
WHERE l.sensor_id = ANY(%(ids)s::bigint[])
"""

# Per (sensor, metric): the first or last `n` readings in [start, end), each an index range
# scan of the readings primary key. Sensor ids come from _SENSORS (public already); the
# public API role reads readings through iot_published_observations (migration 0025),
# which lets out published sensors' rows only (its bounds are exclusive).
_HISTORY = """
SELECT p.sensor_id, mt.name, r.time, r.result AS value
FROM unnest(%(ids)s::bigint[]) AS p(sensor_id)
CROSS JOIN metrics mt
CROSS JOIN LATERAL iot_published_observations(
    p.sensor_id, mt.id::smallint, 0::smallint, %(start)s::timestamptz - interval '1 microsecond',
    %(end)s::timestamptz, %(newest_first)s::boolean, %(n)s::int) r
WHERE mt.name = ANY(%(metrics)s::text[])
ORDER BY p.sensor_id, mt.name, r.time
"""


async def public_sensors(
    conn: AsyncConnection,
    *,
    kinds: list[str],
    ids: list[int] | None,
    after: int,
    limit: int,
    conditions: str,
    params: dict[str, Any],
) -> list[dict[str, Any]]:
    """Placed public sensors of `kinds` by id after `after`, where `conditions` hold."""
    query = _SENSORS.format(conditions=conditions)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            query, {**params, "kinds": kinds, "ids": ids, "after": after, "limit": limit}
        )
        return await cur.fetchall()


async def count_public_sensors(
    conn: AsyncConnection,
    *,
    kinds: list[str],
    ids: list[int] | None,
    conditions: str,
    params: dict[str, Any],
) -> int:
    cur = await conn.execute(
        _COUNT.format(conditions=conditions), {**params, "kinds": kinds, "ids": ids}
    )
    return (await cur.fetchone())[0]


async def sensor_facts(conn: AsyncConnection, rows: list[dict[str, Any]]) -> list[SensorFacts]:
    """The rows of `public_sensors` with their newest values."""
    latest: dict[int, dict[str, tuple[float, datetime]]] = {r["id"]: {} for r in rows}
    if rows:
        cur = await conn.execute(_LATEST, {"ids": list(latest)})
        for sensor_id, metric, value, time in await cur.fetchall():
            latest[sensor_id][metric] = (value, time)
    return [
        SensorFacts(
            sensor_id=r["id"],
            kind=r["kind"],
            name=r["name"],
            municipality=r["slug"],
            municipality_name=r["mname"],
            lat=r["lat"],
            lon=r["lon"],
            site_id=r["site_id"],
            parking_category=r["parking_category"],
            latest=latest[r["id"]],
        )
        for r in rows
    ]


async def history(
    conn: AsyncConnection,
    *,
    sensor_ids: list[int],
    metrics: list[str],
    start: datetime,
    end: datetime,
    per_attribute: int,
    newest_first: bool,
) -> dict[tuple[int, str], list[tuple[float, datetime]]]:
    """(sensor, metric) → [(value, time)] in time order, at most `per_attribute` each."""
    cur = await conn.execute(
        _HISTORY,
        {
            "ids": sensor_ids,
            "metrics": metrics,
            "start": start,
            "end": end,
            "n": per_attribute,
            "newest_first": newest_first,
        },
    )
    out: dict[tuple[int, str], list[tuple[float, datetime]]] = {}
    for sensor_id, metric, time, value in await cur.fetchall():
        out.setdefault((sensor_id, metric), []).append((value, time))
    return out
