"""What /health reports about the database."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from psycopg import AsyncConnection

from models.timescale import FAILING_JOBS

_FAILING_JOB_FIELDS = (
    "job_id",
    "proc_name",
    "relation",
    "total_failures",
    "last_run_started_at",
    "last_error_at",
    "last_error",
)


async def database_status(conn: AsyncConnection) -> dict[str, Any]:
    """Storage backend ('postgresql' or 'timescaledb') and the newest reading's time."""
    cur = await conn.execute(
        "SELECT (SELECT value FROM system_info WHERE key = 'backend'),"
        " (SELECT max(time) FROM latest_readings)"
    )
    backend, last_reading = await cur.fetchone() or (None, None)
    last: datetime | None = last_reading
    jobs = await failing_jobs(conn) if backend == "timescaledb" else []
    return {"storage_backend": backend or "unknown", "last_reading_at": last, "failing_jobs": jobs}


async def failing_jobs(conn: AsyncConnection) -> list[dict[str, Any]]:
    """TimescaleDB jobs whose last scheduled run failed, with the newest error."""
    cur = await conn.execute(FAILING_JOBS)
    return [dict(zip(_FAILING_JOB_FIELDS, row, strict=True)) for row in await cur.fetchall()]
