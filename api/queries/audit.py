"""The audit trail of one municipality, as its admins and data protection officer read it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from psycopg import AsyncConnection, Connection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

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


# One event for a bulk write whose rows are not recorded one by one (readings are not an
# audited table), from the request's audit context on the connection (api/audit.py). An
# empty context fails the insert (municipality_id is NOT NULL): no unrecorded bulk write.
_RECORD_BULK_WRITE = """
INSERT INTO audit_events (municipality_id, actor_kind, actor_id, actor_name,
    client_address, request_method, request_path, request_id, action, target_table,
    operation, after)
SELECT (c ->> 'municipality_id')::int, c ->> 'actor_kind', c ->> 'actor_id',
       c ->> 'actor_name', c ->> 'client', c ->> 'method', c ->> 'path', c ->> 'request_id',
       c ->> 'action', %(table)s, 'insert', %(summary)s
FROM (SELECT nullif(current_setting('iot.audit', true), '')::jsonb AS c) AS context
"""


def record_bulk_write(conn: Connection, table: str, summary: dict[str, Any]) -> None:
    """Record a bulk write of `table`'s rows (e.g. a historic import's readings) as one
    audit event with `summary` as its ``after``, in the transaction of `conn`."""
    conn.execute(_RECORD_BULK_WRITE, {"table": table, "summary": Jsonb(summary)})
