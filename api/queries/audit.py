"""The audit trail of one municipality, as its admins and data protection officer read it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row

COLUMNS = (
    "id",
    "occurred_at",
    "actor_kind",
    "actor_id",
    "actor_name",
    "client_address",
    "request_method",
    "request_path",
    "request_id",
    "action",
    "target_table",
    "target_id",
    "operation",
    "before",
    "after",
)


async def list_events(
    conn: AsyncConnection,
    municipality_id: int,
    after_id: int,
    limit: int,
    since: datetime | None = None,
    until: datetime | None = None,
    action: str | None = None,
    actor_id: str | None = None,
) -> list[dict[str, Any]]:
    """Events of `municipality_id` in id order (oldest first) after `after_id`."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        f"SELECT {', '.join(COLUMNS)} FROM audit_events "  # noqa: S608 (constant columns)
        "WHERE municipality_id = %(m)s AND id > %(after)s "
        "AND (%(since)s::timestamptz IS NULL OR occurred_at >= %(since)s) "
        "AND (%(until)s::timestamptz IS NULL OR occurred_at < %(until)s) "
        "AND (%(action)s::text IS NULL OR action = %(action)s) "
        "AND (%(actor)s::text IS NULL OR actor_id = %(actor)s) "
        "ORDER BY id LIMIT %(limit)s",
        {
            "m": municipality_id,
            "after": after_id,
            "since": since,
            "until": until,
            "action": action,
            "actor": actor_id,
            "limit": limit,
        },
    )
    return await cur.fetchall()
