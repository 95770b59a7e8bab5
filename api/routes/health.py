"""Liveness/readiness (/health) and Prometheus metrics (/metrics)."""

from __future__ import annotations

import asyncio

import psycopg
from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from psycopg_pool import PoolTimeout

from api.http_cache import json_body
from api.observability import EMAILS_UNCONFIRMED, JOB_FAILING, JOB_FAILURES, JOBS_FAILING
from api.queries.health import database_status, failing_jobs
from api.queries.outbound import unconfirmed_counts
from models.schemas import Health

router = APIRouter(tags=["operations"])

HEALTH_TIMEOUT_S = 3.0


@router.get(
    "/health",
    response_model=Health,
    responses={503: {"model": Health, "description": "The database is unreachable."}},
)
async def health(request: Request) -> Response:
    """Whether the API can reach its database, the storage backend and the newest reading."""
    pool = request.app.state.pool
    try:
        async with asyncio.timeout(HEALTH_TIMEOUT_S):
            async with pool.connection(timeout=HEALTH_TIMEOUT_S) as conn:
                status = await database_status(conn)
    except (psycopg.Error, PoolTimeout, TimeoutError) as exc:
        body = {"status": "unavailable", "database": f"unreachable: {type(exc).__name__}"}
        return Response(
            json_body(body),
            status_code=503,
            media_type="application/json",
            headers={"Cache-Control": "no-store"},
        )
    body = {"status": "ok", "database": "ok", **status}
    return Response(
        json_body(body), media_type="application/json", headers={"Cache-Control": "no-store"}
    )


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    """Prometheus exposition of this process's metrics, with the failing background jobs
    and the unconfirmed e-mails read from the database at each scrape."""
    await _update_job_gauges(request.app.state.pool)
    await _update_delivery_gauges(request.app.state.staff_pool)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


async def _update_job_gauges(pool) -> None:
    # An unreachable database leaves the previous values: /health reports that outage.
    try:
        async with asyncio.timeout(HEALTH_TIMEOUT_S):
            async with pool.connection(timeout=HEALTH_TIMEOUT_S) as conn:
                cur = await conn.execute("SELECT value FROM system_info WHERE key = 'backend'")
                backend = await cur.fetchone()
                jobs = await failing_jobs(conn) if backend == ("timescaledb",) else []
    except (psycopg.Error, PoolTimeout, TimeoutError):
        return
    JOB_FAILING.clear()
    JOB_FAILURES.clear()
    for job in jobs:
        labels = (str(job["job_id"]), job["proc_name"], job["relation"])
        JOB_FAILING.labels(*labels).set(1)
        JOB_FAILURES.labels(*labels).set(job["total_failures"])
    JOBS_FAILING.set(len(jobs))


async def _update_delivery_gauges(staff_pool) -> None:
    # The deliveries are the staff role's to read; the public role has no grant on them.
    try:
        async with asyncio.timeout(HEALTH_TIMEOUT_S):
            async with staff_pool.connection(timeout=HEALTH_TIMEOUT_S) as conn:
                counts = await unconfirmed_counts(conn)
    except (psycopg.Error, PoolTimeout, TimeoutError):
        return
    EMAILS_UNCONFIRMED.clear()
    for municipality, n in counts:
        EMAILS_UNCONFIRMED.labels(municipality).set(n)
