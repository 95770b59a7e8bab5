"""Sites and zones of one municipality (staff side)."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row


async def list_sites(conn: AsyncConnection, municipality_id: int) -> list[dict[str, Any]]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        "SELECT id, name, kind, address, lat, lon FROM sites WHERE municipality_id = %s "
        "ORDER BY name, id",
        (municipality_id,),
    )
    return await cur.fetchall()


async def create_site(
    conn: AsyncConnection, municipality_id: int, site: dict[str, Any]
) -> dict[str, Any]:
    """Insert a site; raises psycopg.errors.UniqueViolation when the name is taken."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        "INSERT INTO sites (municipality_id, name, kind, address, lat, lon) "
        "VALUES (%s, %s, %s, %s, %s, %s) RETURNING id, name, kind, address, lat, lon",
        (
            municipality_id,
            site["name"],
            site.get("kind") or "other",
            site.get("address"),
            site.get("lat"),
            site.get("lon"),
        ),
    )
    row = await cur.fetchone()
    assert row is not None
    return row


async def update_site(
    conn: AsyncConnection, municipality_id: int, site_id: int, changes: dict[str, Any]
) -> dict[str, Any] | None:
    """Apply `changes` (a subset of name, kind, address, lat, lon); None when not ours."""
    allowed = {"name", "kind", "address", "lat", "lon"}
    fields = {k: v for k, v in changes.items() if k in allowed}
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        "UPDATE sites SET "
        "name = CASE WHEN %(set_name)s THEN %(name)s ELSE name END, "
        "kind = CASE WHEN %(set_kind)s THEN %(kind)s ELSE kind END, "
        "address = CASE WHEN %(set_address)s THEN %(address)s ELSE address END, "
        "lat = CASE WHEN %(set_lat)s THEN %(lat)s ELSE lat END, "
        "lon = CASE WHEN %(set_lon)s THEN %(lon)s ELSE lon END "
        "WHERE id = %(id)s AND municipality_id = %(m)s RETURNING id, name, kind, address, lat, lon",
        {
            "id": site_id,
            "m": municipality_id,
            **{f"set_{k}": k in fields for k in allowed},
            **{k: fields.get(k) for k in allowed},
        },
    )
    return await cur.fetchone()


async def list_zones(
    conn: AsyncConnection, municipality_id: int, site_id: int | None = None
) -> list[dict[str, Any]]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        "SELECT id, site_id, name, kind, floor, capacity FROM zones WHERE municipality_id = %s "
        "AND (%s::int IS NULL OR site_id = %s) ORDER BY site_id, name, id",
        (municipality_id, site_id, site_id),
    )
    return await cur.fetchall()


async def create_zone(
    conn: AsyncConnection, municipality_id: int, zone: dict[str, Any]
) -> dict[str, Any] | None:
    """Insert a zone in one of the municipality's sites; None when the site is not ours."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        "INSERT INTO zones (municipality_id, site_id, name, kind, floor, capacity) "
        "SELECT %s, s.id, %s, %s, %s, %s FROM sites s WHERE s.id = %s AND s.municipality_id = %s "
        "RETURNING id, site_id, name, kind, floor, capacity",
        (
            municipality_id,
            zone["name"],
            zone.get("kind") or "room",
            zone.get("floor"),
            zone.get("capacity"),
            zone["site_id"],
            municipality_id,
        ),
    )
    return await cur.fetchone()
