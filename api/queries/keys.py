"""API keys of one municipality, as its admins see them (never the secrets)."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row


async def list_keys(conn: AsyncConnection, municipality_id: int) -> list[dict[str, Any]]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        "SELECT id, prefix, name, owner, scopes, created_at, expires_at, revoked_at, last_used_at "
        "FROM api_keys WHERE municipality_id = %s ORDER BY id",
        (municipality_id,),
    )
    return await cur.fetchall()
