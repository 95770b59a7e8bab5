"""What the DCAT catalogue describes: one dataset per municipality and sensor kind.

Only public, active sensors count, so a kind with only private sensors has no dataset and
private locations never widen a bounding box.
"""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from api.queries.public import PUBLIC_SENSOR

# Start of coverage: the first daily bucket of each (sensor, metric), one index probe
# each on the daily rollup's primary key, inside iot_published_first_days (migration 0019:
# the public API role cannot read the rollups); end of coverage: the newest latest value.
_DATASETS = f"""
WITH public_sensors AS (
    SELECT s.id, s.municipality_id, s.kind, s.lat, s.lon FROM sensors s WHERE {PUBLIC_SENSOR}
), coverage AS (
    SELECT l.sensor_id, l.time AS last_time, f.first_day
    FROM latest_readings l JOIN public_sensors p ON p.id = l.sensor_id
    LEFT JOIN iot_published_first_days() f
        ON f.sensor_id = l.sensor_id AND f.metric_id = l.metric_id
)
SELECT m.slug, m.name, m.kommune_code, m.settings, p.kind,
       count(DISTINCT p.id) AS sensors,
       min(p.lat) AS min_lat, max(p.lat) AS max_lat,
       min(p.lon) AS min_lon, max(p.lon) AS max_lon,
       least(min(c.first_day), min(c.last_time)) AS start, max(c.last_time) AS end,
       array_agg(DISTINCT mt.name) FILTER (WHERE mt.name IS NOT NULL) AS metrics
FROM public_sensors p
JOIN municipalities m ON m.id = p.municipality_id
LEFT JOIN coverage c ON c.sensor_id = p.id
LEFT JOIN latest_readings l2 ON l2.sensor_id = p.id
LEFT JOIN metrics mt ON mt.id = l2.metric_id
GROUP BY m.id, p.kind
ORDER BY m.slug, p.kind
"""  # noqa: S608 (composed from module constants, never from input)


async def catalog_datasets(conn: AsyncConnection) -> list[dict[str, Any]]:
    """One row per (municipality, kind) with public sensors: counts, bbox, time coverage."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_DATASETS)
        return await cur.fetchall()
