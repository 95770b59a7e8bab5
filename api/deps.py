"""FastAPI dependencies, wired once: settings and pooled database connections.

Routes ask for what they need (``conn: Conn``, ``settings: AppSettings``) instead of
reaching for module globals, so tests can build an app around any Settings.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Annotated

from fastapi import Depends, Request
from psycopg import AsyncConnection, Connection
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from api import audit
from models.settings import Settings


def get_settings(request: Request) -> Settings:
    """The Settings the app was created with (``create_app(settings)``)."""
    return request.app.state.settings


STAFF_PREFIX = "/api/v1/staff"
# Staff sign-in and sign-out (api/routes/auth.py): the staff role's connections too.
AUTH_PREFIX = "/auth/"


def get_pool(request: Request) -> AsyncConnectionPool:
    """The request's connection pool, opened by the lifespan in api/app.py: staff routes
    get the staff role's, everything else the public API role's (models/db_roles.py)."""
    if request.url.path.startswith((STAFF_PREFIX, AUTH_PREFIX)):
        return request.app.state.staff_pool
    return request.app.state.pool


async def get_conn(
    request: Request,
    pool: Annotated[AsyncConnectionPool, Depends(get_pool)],
) -> AsyncIterator[AsyncConnection]:
    """A pooled autocommit connection for the duration of one route call.

    Connections are autocommit, so a plain read never leaves a transaction open; code that
    needs one (server-side cursors in exports) opens it with ``conn.transaction()``. On an
    audited route the connection carries the request's audit context (api/audit.py).
    """
    async with pool.connection() as conn:
        if not await audit.attach_async(request, conn):
            yield conn
            return
        try:
            yield conn
        finally:
            await audit.detach_async(request, conn)


AppSettings = Annotated[Settings, Depends(get_settings)]
# scope="function": the connection goes back to the pool when the route function returns,
# not after the response body is sent, so a slow reader of a streamed or large response
# never holds a request connection (exports stream from a pool of their own).
Conn = Annotated[AsyncConnection, Depends(get_conn, scope="function")]


# Staff authentication (require_scope) lives in api/security.py.


@contextmanager
def staff_write_connection(request: Request) -> Iterator[Connection]:
    """A blocking connection from the staff-write pool (api/pools.py), for code that runs in
    a worker thread (``with staff_write_connection(request) as conn: ...``); on an audited
    route it carries the request's audit context (api/audit.py)."""
    pool: ConnectionPool = request.app.state.staff_write_pool
    with pool.connection() as conn:
        if not audit.attach_sync(request, conn):
            yield conn
            return
        try:
            yield conn
        finally:
            audit.detach_sync(request, conn)


def get_sync_conn(request: Request) -> Iterator[Connection]:
    """A blocking autocommit connection for staff writes that reuse the sync service
    functions shared with the CLI and ingest (registry, alerts, keys).

    Pooled like every other connection of the API, with the same session settings; routes
    using it are `def` routes that FastAPI runs in its threadpool, off the event loop."""
    with staff_write_connection(request) as conn:
        yield conn


SyncConn = Annotated[Connection, Depends(get_sync_conn, scope="function")]


def get_report_conn(request: Request) -> Iterator[Connection]:
    """A blocking autocommit connection from the staff-report pool (api/pools.py), for the
    reports' reads (analytics/reports.py): a month of readings per report, so they queue
    among themselves instead of taking the staff writes' connections."""
    pool: ConnectionPool = request.app.state.staff_report_pool
    with pool.connection() as conn:
        yield conn


ReportConn = Annotated[Connection, Depends(get_report_conn, scope="function")]
