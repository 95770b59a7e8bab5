"""What the staff dashboard shows for one municipality, from the latest values.

Everything here reads `latest_readings` (one row per sensor and metric, kept by ingest),
so the dashboard costs a few index scans whatever the size of the readings table.
"""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row

# Latest values pivoted to one row per sensor; metrics the dashboard colours by.
_SENSORS_WITH_LATEST = """
SELECT s.id, s.name, s.kind, s.external_id, s.lat, s.lon, s.is_public, s.status,
       st.name AS site, z.name AS zone, z.id AS zone_id,
       max(l.time) AS last_seen,
       max(l.value) FILTER (WHERE m.name = 'co2_ppm') AS co2_ppm,
       max(l.value) FILTER (WHERE m.name = 'temperature_c') AS temperature_c,
       max(l.value) FILTER (WHERE m.name = 'humidity_pct') AS humidity_pct,
       max(l.value) FILTER (WHERE m.name = 'fill_pct') AS fill_pct,
       max(l.value) FILTER (WHERE m.name = 'occupied') AS occupied,
       max(l.value) FILTER (WHERE m.name = 'battery_v') AS battery_v
FROM sensors s
LEFT JOIN sites st ON st.id = s.site_id
LEFT JOIN zones z ON z.id = s.zone_id
LEFT JOIN latest_readings l ON l.sensor_id = s.id
LEFT JOIN metrics m ON m.id = l.metric_id
WHERE s.municipality_id = %s AND s.status <> 'retired'
GROUP BY s.id, st.name, z.name, z.id
ORDER BY s.kind, st.name NULLS LAST, z.name NULLS LAST, s.id
"""

_OPEN_ALERTS = """
SELECT a.id, a.rule, a.severity, a.status, a.subject, a.sensor_id, a.zone_id, a.started_at,
       a.last_value, a.message, s.name AS sensor_name
FROM alerts a LEFT JOIN sensors s ON s.id = a.sensor_id
WHERE a.municipality_id = %s AND a.status <> 'resolved'
ORDER BY CASE a.severity WHEN 'critical' THEN 0 WHEN 'warning' THEN 1 ELSE 2 END,
         a.started_at DESC
LIMIT 200
"""


async def dashboard_summary(conn: AsyncConnection, municipality_id: int) -> dict[str, Any]:
    """Sensors with their latest values, parking occupancy by zone, and open alerts."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(_SENSORS_WITH_LATEST, (municipality_id,))
    sensors = await cur.fetchall()
    await cur.execute(_OPEN_ALERTS, (municipality_id,))
    alerts = await cur.fetchall()

    parking: dict[str, dict[str, Any]] = {}
    for s in sensors:
        if s["kind"] != "parking" or s["occupied"] is None:
            continue
        zone = parking.setdefault(
            s["zone"] or s["site"] or "unzoned",
            {"zone": s["zone"] or s["site"] or "unzoned", "bays": 0, "occupied": 0},
        )
        zone["bays"] += 1
        zone["occupied"] += int(s["occupied"] >= 0.5)
    for zone in parking.values():
        zone["occupancy_pct"] = round(100.0 * zone["occupied"] / zone["bays"], 1)

    return {
        "sensors": sensors,
        "rooms": [s for s in sensors if s["kind"] == "climate"],
        "bins": sorted(
            (s for s in sensors if s["kind"] == "bin"),
            key=lambda s: -(s["fill_pct"] if s["fill_pct"] is not None else -1),
        ),
        "parking": sorted(parking.values(), key=lambda z: z["zone"]),
        "alerts": alerts,
    }


async def sensor_history(
    conn: AsyncConnection, municipality_id: int, sensor_id: int, metric: str, hours: int
) -> list[tuple[Any, float]] | None:
    """(time, value) of one of the municipality's sensors over the last `hours`; None if
    the sensor is not the municipality's."""
    owner = await conn.execute(
        "SELECT 1 FROM sensors WHERE id = %s AND municipality_id = %s",
        (sensor_id, municipality_id),
    )
    if await owner.fetchone() is None:
        return None
    cur = await conn.execute(
        "SELECT r.time, r.value FROM readings r JOIN metrics m ON m.id = r.metric_id "
        "WHERE r.sensor_id = %s AND m.name = %s AND r.time > now() - make_interval(hours => %s) "
        "ORDER BY r.time",
        (sensor_id, metric, hours),
    )
    return await cur.fetchall()
