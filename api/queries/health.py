"""What /health reports about the database."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from psycopg import AsyncConnection


async def database_status(conn: AsyncConnection) -> dict[str, Any]:
    """Storage backend ('postgresql' or 'timescaledb') and the newest reading's time."""
    cur = await conn.execute(
        "SELECT (SELECT value FROM system_info WHERE key = 'backend'),"
        " (SELECT max(time) FROM latest_readings)"
    )
    backend, last_reading = await cur.fetchone() or (None, None)
    last: datetime | None = last_reading
    return {"storage_backend": backend or "unknown", "last_reading_at": last}
