"""SQL for the staff side: one municipality's sensors, alerts and dead letters."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row

_SENSOR = """
SELECT s.id, s.dev_eui, s.external_id, s.name, s.kind, s.status, s.is_public, s.lat, s.lon,
       s.bin_depth_mm, s.mount_offset_mm, s.expected_interval_s, s.installed_at,
       dm.vendor, dm.model, st.name AS site, z.name AS zone
FROM sensors s
LEFT JOIN device_models dm ON dm.id = s.device_model_id
LEFT JOIN sites st ON st.id = s.site_id
LEFT JOIN zones z ON z.id = s.zone_id
WHERE s.municipality_id = %(m)s
"""


async def list_sensors(
    conn: AsyncConnection, municipality_id: int, after_id: int, limit: int
) -> list[dict[str, Any]]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        _SENSOR + " AND s.id > %(after)s ORDER BY s.id LIMIT %(limit)s",
        {"m": municipality_id, "after": after_id, "limit": limit},
    )
    return await cur.fetchall()


async def get_sensor(
    conn: AsyncConnection, municipality_id: int, sensor_id: int
) -> dict[str, Any] | None:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(_SENSOR + " AND s.id = %(id)s", {"m": municipality_id, "id": sensor_id})
    return await cur.fetchone()


async def update_sensor(
    conn: AsyncConnection, municipality_id: int, sensor_id: int, changes: dict[str, Any]
) -> bool:
    """Apply `changes` (name, is_public, status, lat, lon, bin depth, interval); False
    when the sensor is not the municipality's."""
    allowed = (
        "name",
        "is_public",
        "status",
        "lat",
        "lon",
        "bin_depth_mm",
        "mount_offset_mm",
        "expected_interval_s",
    )
    params: dict[str, Any] = {"m": municipality_id, "id": sensor_id}
    for key in allowed:
        params[f"set_{key}"] = key in changes
        params[key] = changes.get(key)
    assignments = ", ".join(
        f"{key} = CASE WHEN %(set_{key})s THEN %({key})s ELSE {key} END" for key in allowed
    )
    cur = await conn.execute(
        f"UPDATE sensors SET {assignments} WHERE id = %(id)s AND municipality_id = %(m)s",  # noqa: S608 (column names are constants above)
        params,
    )
    return cur.rowcount == 1


async def list_alerts(
    conn: AsyncConnection, municipality_id: int, status: str | None, limit: int
) -> list[dict[str, Any]]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        "SELECT a.id, a.rule, a.severity, a.status, a.subject, a.sensor_id, a.zone_id, "
        "a.started_at, a.ended_at, a.last_value, a.message, a.details, a.acknowledged_at, "
        "a.acknowledged_by, a.resolved_at, a.updated_at "
        "FROM alerts a WHERE a.municipality_id = %s AND (%s::text IS NULL OR a.status = %s) "
        "ORDER BY a.started_at DESC, a.id DESC LIMIT %s",
        (municipality_id, status, status, limit),
    )
    return await cur.fetchall()


# A dead letter is a municipality's when it was attributed to it, or when it names a
# device the municipality has registered since (so staff can replay after registering).
_DEAD_LETTER_OWNED = """
(d.municipality_id = %(m)s OR EXISTS (
    SELECT 1 FROM sensors s JOIN municipalities mm ON mm.id = s.municipality_id
    WHERE s.municipality_id = %(m)s
      AND (d.device_id = s.dev_eui OR d.device_id = mm.slug || '/' || s.external_id)))
"""


# A municipality's letters, newest first, in two index-served parts: those attributed to
# it when written (ix_dead_letters_municipality_id_id, read backwards and stopped at the
# limit), and unattributed ones naming a device it has registered since
# (ix_dead_letters_unattributed_device_id, one probe per device name). Built once; no
# input is ever part of the SQL text.
_LETTER_COLUMNS = (
    "d.id, d.received_at, d.topic, d.reason, d.detail, d.device_id, d.replayed_at, "
    "length(d.payload) AS payload_bytes"
)
_LIST_DEAD_LETTERS = (
    "SELECT * FROM ("  # noqa: S608
    "(SELECT " + _LETTER_COLUMNS + " FROM dead_letters d WHERE d.municipality_id = %(m)s"
    " AND (%(reason)s::text IS NULL OR d.reason = %(reason)s)"
    " ORDER BY d.id DESC LIMIT %(limit)s)"
    " UNION ALL "
    "(SELECT " + _LETTER_COLUMNS + " FROM dead_letters d WHERE d.municipality_id IS NULL"
    " AND d.device_id IN ("
    "SELECT s.dev_eui FROM sensors s WHERE s.municipality_id = %(m)s AND s.dev_eui IS NOT NULL"
    " UNION ALL SELECT mm.slug || '/' || s.external_id FROM sensors s"
    " JOIN municipalities mm ON mm.id = s.municipality_id WHERE s.municipality_id = %(m)s)"
    " AND (%(reason)s::text IS NULL OR d.reason = %(reason)s)"
    " ORDER BY d.id DESC LIMIT %(limit)s)"
    ") letters ORDER BY id DESC LIMIT %(limit)s"
)
_GET_DEAD_LETTER = (
    "SELECT d.id, d.received_at, d.topic, d.reason, d.detail, d.device_id, d.replayed_at, "  # noqa: S608
    "d.payload FROM dead_letters d WHERE d.id = %(id)s AND " + _DEAD_LETTER_OWNED
)


async def list_dead_letters(
    conn: AsyncConnection, municipality_id: int, reason: str | None, limit: int
) -> list[dict[str, Any]]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        _LIST_DEAD_LETTERS,
        {"m": municipality_id, "reason": reason, "limit": limit},
    )
    return await cur.fetchall()


async def get_dead_letter(
    conn: AsyncConnection, municipality_id: int, dead_letter_id: int
) -> dict[str, Any] | None:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        _GET_DEAD_LETTER,
        {"m": municipality_id, "id": dead_letter_id},
    )
    return await cur.fetchone()


async def municipality_name(conn: AsyncConnection, municipality_id: int) -> str:
    cur = await conn.execute("SELECT name FROM municipalities WHERE id = %s", (municipality_id,))
    row = await cur.fetchone()
    return row[0] if row else ""
