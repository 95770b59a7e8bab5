"""Queries behind the public open-data endpoints.

Every query here filters on ``PUBLIC_SENSOR`` (public and active); nothing about a private
or retired sensor can come out of this module.
"""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row

# The one definition of "public": used verbatim by every query in api/queries/.
PUBLIC_SENSOR = "s.is_public AND s.status = 'active'"

_MUNICIPALITIES = f"""
SELECT m.slug, m.name, m.kommune_code,
       coalesce(sum(k.n), 0)::int AS public_sensors,
       coalesce(jsonb_object_agg(k.kind, k.n) FILTER (WHERE k.kind IS NOT NULL), '{{}}')
           AS sensors_by_kind
FROM municipalities m
LEFT JOIN LATERAL (
    SELECT s.kind, count(*)::int AS n FROM sensors s
    WHERE s.municipality_id = m.id AND {PUBLIC_SENSOR} GROUP BY s.kind
) k ON true
WHERE (%(slug)s::text IS NULL OR m.slug = %(slug)s)
GROUP BY m.id
ORDER BY m.slug
"""  # noqa: S608 (composed from module constants, never from input)

_METRICS = "SELECT name, unit, description, min_value, max_value FROM metrics ORDER BY name"

_SENSORS = f"""
SELECT s.id, s.name, s.kind, dm.vendor, dm.model, m.slug AS municipality, s.lat, s.lon,
       lr.last_seen, coalesce(lr.metrics, '{{}}') AS metrics
FROM sensors s
JOIN municipalities m ON m.id = s.municipality_id
LEFT JOIN device_models dm ON dm.id = s.device_model_id
LEFT JOIN LATERAL (
    SELECT max(l.time) AS last_seen, array_agg(mt.name ORDER BY mt.name) AS metrics
    FROM latest_readings l JOIN metrics mt ON mt.id = l.metric_id
    WHERE l.sensor_id = s.id
) lr ON true
WHERE {PUBLIC_SENSOR}
  AND (%(municipality)s::text IS NULL OR m.slug = %(municipality)s)
  AND (%(kind)s::text IS NULL OR s.kind = %(kind)s)
  AND (%(sensor_id)s::bigint IS NULL OR s.id = %(sensor_id)s)
  AND s.id > %(after_id)s
ORDER BY s.id
LIMIT %(limit)s
"""  # noqa: S608 (composed from module constants, never from input)

# Plain rows, one per (sensor, metric), grouped in Python: PostgreSQL's JSON functions
# cost ~4 µs per sensor, several times more than a binary fetch and orjson. The function
# (migration 0026) pages through published sensors with the owner's rights: the public
# role's row-level security would check every latest value against the published sensors
# again, although the page holds published sensors only. Its statement is planned on
# every call with the filters as constants (EXECUTE), so this one may be prepared.
_LATEST = """
SELECT l.sensor_id, l.municipality, l.kind, l.metric, l.value, l.time
FROM iot_published_latest(%(municipality)s::text, %(kind)s::text, %(metric)s::text,
                          %(sensor_ids)s::bigint[], %(after_id)s::bigint, %(limit)s::integer) l
ORDER BY l.sensor_id
"""

_PUBLIC_SENSOR_IDS = f"""
SELECT s.id FROM sensors s WHERE s.id = ANY(%(ids)s) AND {PUBLIC_SENSOR}
"""  # noqa: S608 (composed from module constants, never from input)

_METRIC = "SELECT id, name, unit FROM metrics WHERE name = %s"


async def list_municipalities(
    conn: AsyncConnection, slug: str | None = None
) -> list[dict[str, Any]]:
    """Municipalities by slug, with counts of their public sensors by kind."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_MUNICIPALITIES, {"slug": slug})
        return await cur.fetchall()


async def list_metrics(conn: AsyncConnection) -> list[dict[str, Any]]:
    """The metric vocabulary, by name."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_METRICS)
        return await cur.fetchall()


async def find_metric(conn: AsyncConnection, name: str) -> dict[str, Any] | None:
    """The metric called `name` (id, name, unit), or None."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_METRIC, (name,))
        return await cur.fetchone()


async def list_sensors(
    conn: AsyncConnection,
    *,
    municipality: str | None = None,
    kind: str | None = None,
    sensor_id: int | None = None,
    after_id: int = 0,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Public sensors with id > `after_id`, by id, with their last-seen time and metrics."""
    params = {
        "municipality": municipality,
        "kind": kind,
        "sensor_id": sensor_id,
        "after_id": after_id,
        "limit": limit,
    }
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_SENSORS, params)
        return await cur.fetchall()


async def latest_values(
    conn: AsyncConnection,
    *,
    municipality: str | None = None,
    kind: str | None = None,
    metric: str | None = None,
    sensor_ids: list[int] | None = None,
    after_id: int = 0,
    limit: int = 1000,
) -> list[dict[str, Any]]:
    """Public sensors after `after_id` by id, each with ``values``: metric → value, time."""
    params = {
        "municipality": municipality,
        "kind": kind,
        "metric": metric,
        "sensor_ids": sensor_ids,
        "after_id": after_id,
        "limit": limit,
    }
    async with conn.cursor(binary=True) as cur:
        await cur.execute(_LATEST, params)
        rows = await cur.fetchall()
    items: list[dict[str, Any]] = []
    current = None
    values: dict[str, Any] = {}
    for sensor_id, slug, sensor_kind, metric_name, value, time in rows:
        if sensor_id != current:
            current, values = sensor_id, {}
            items.append(
                {
                    "sensor_id": sensor_id,
                    "municipality": slug,
                    "kind": sensor_kind,
                    "values": values,
                }
            )
        if metric_name is not None:
            values[metric_name] = {"value": value, "time": time}
    return items


async def public_sensor_ids(conn: AsyncConnection, ids: list[int]) -> set[int]:
    """The subset of `ids` that are public, active sensors."""
    cur = await conn.execute(_PUBLIC_SENSOR_IDS, {"ids": ids})
    return {row[0] for row in await cur.fetchall()}
