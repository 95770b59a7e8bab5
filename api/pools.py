"""The API's database connections: bounded pools with the same session settings.

- ``request``: every public route's ``Conn`` (api/deps.py), held only while the route runs,
  as the public API's database role (IOT_DATABASE_URL);
- ``staff_request``: the same for staff routes, as the staff role (IOT_STAFF_DATABASE_URL;
  the ``request`` pool itself when that is unset);
- ``export``: one connection per streamed export for as long as its client reads, with a
  statement timeout, so slow readers cannot take connections from the other routes;
- ``staff_write``: blocking connections for the staff writes that reuse the sync service
  code shared with the CLI (registry, alerts, keys, replay), as the staff role;
- ``staff_report``: blocking connections for the staff reports (analytics/reports.py reads
  with the sync code the CLI shares), as the staff role, apart from the writes so that a
  few large reports make other reports wait, never a staff write.

No route opens a connection of its own: the process holds at most
``IOT_DB_POOL_MAX + IOT_EXPORT_MAX_CONCURRENT + IOT_DB_STAFF_WRITE_POOL_MAX +
IOT_DB_STAFF_REPORT_POOL_MAX`` connections,
and ``IOT_DB_POOL_MAX`` more when staff routes have a role of their own.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from psycopg_pool import AsyncConnectionPool, ConnectionPool

from models.settings import Settings

# How long a route waits for a connection before answering 503 (api/app.py).
POOL_TIMEOUT_S = 5.0


def connection_kwargs(statement_timeout_s: float | None = None) -> dict[str, Any]:
    """Session settings of every API connection: autocommit, UTC (so that JSON built by
    PostgreSQL has the same offsets as ours), and an optional statement timeout."""
    options = "-c TimeZone=UTC"
    if statement_timeout_s is not None:
        options += f" -c statement_timeout={round(statement_timeout_s * 1000)}"
    return {"autocommit": True, "options": options, "application_name": "kommune-iot-api"}


@dataclass(frozen=True)
class Pools:
    request: AsyncConnectionPool
    staff_request: AsyncConnectionPool
    export: AsyncConnectionPool
    staff_write: ConnectionPool
    staff_report: ConnectionPool

    def _async_pools(self) -> list[AsyncConnectionPool]:
        pools = [self.request, self.export]
        if self.staff_request is not self.request:
            pools.append(self.staff_request)
        return pools

    async def open(self) -> None:
        """Open without waiting for the database: the API starts (and /health says 503)
        without it."""
        for pool in self._async_pools():
            await pool.open(wait=False)
        self.staff_write.open(wait=False)
        self.staff_report.open(wait=False)

    async def close(self) -> None:
        for pool in self._async_pools():
            await pool.close()
        await asyncio.to_thread(self.staff_write.close)
        await asyncio.to_thread(self.staff_report.close)


def _request_pool(url: str, settings: Settings, name: str) -> AsyncConnectionPool:
    return AsyncConnectionPool(
        url,
        min_size=1,
        max_size=settings.db_pool_max,
        kwargs=connection_kwargs(),
        timeout=POOL_TIMEOUT_S,
        open=False,
        name=name,
    )


def create_pools(settings: Settings) -> Pools:
    """The pools, not yet open."""
    request = _request_pool(settings.psycopg_url, settings, "api")
    staff_request = request
    if settings.staff_psycopg_url != settings.psycopg_url:
        staff_request = _request_pool(settings.staff_psycopg_url, settings, "api-staff")
    return Pools(
        request=request,
        staff_request=staff_request,
        export=AsyncConnectionPool(
            settings.psycopg_url,
            min_size=0,
            max_size=settings.export_max_concurrent,
            kwargs=connection_kwargs(settings.export_max_duration_s),
            timeout=POOL_TIMEOUT_S,
            open=False,
            name="api-export",
        ),
        staff_write=ConnectionPool(
            settings.staff_psycopg_url,
            min_size=0,
            max_size=settings.db_staff_write_pool_max,
            kwargs=connection_kwargs(),
            timeout=POOL_TIMEOUT_S,
            open=False,
            name="api-staff-write",
        ),
        staff_report=ConnectionPool(
            settings.staff_psycopg_url,
            min_size=0,
            max_size=settings.db_staff_report_pool_max,
            kwargs=connection_kwargs(),
            timeout=POOL_TIMEOUT_S,
            open=False,
            name="api-staff-report",
        ),
    )
