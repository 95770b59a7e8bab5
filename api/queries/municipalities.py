"""Looking up a municipality by slug (for exports and the catalogue)."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row


async def find_municipality(conn: AsyncConnection, slug: str) -> dict[str, Any] | None:
    """id, slug, name, kommune_code and settings of the municipality `slug`, or None."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT id, slug, name, kommune_code, settings FROM municipalities WHERE slug = %s",
            (slug,),
        )
        return await cur.fetchone()
