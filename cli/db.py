"""Database commands: ``migrate`` and ``maintenance`` (partitions, rollups, retention,
latest values left behind by a stopped ingest process)."""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime, timedelta

import psycopg

from ingest.latest import repair_stale as repair_stale_latest
from models.db import create_database, migrate, storage_backend, sync_metrics
from models.logging import configure_logging, log
from models.settings import get_settings
from models.timescale import failing_jobs, refresh_dirty_rollups, run_policy_jobs


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("migrate", help="create the database if needed and migrate it")
    p.set_defaults(handler=run_migrate)
    p = subparsers.add_parser(
        "maintenance",
        help="create partitions ahead, refresh rollups, apply retention (cron or --every)",
    )
    p.add_argument("--every", type=float, default=0, help="repeat every N seconds")
    p.set_defaults(handler=run_maintenance)


def prepare_database(url: str) -> None:
    """Create, migrate and load reference data: what every fresh install needs."""
    created = create_database(url)
    migrate(url)
    with psycopg.connect(url, autocommit=True) as conn:
        metrics = sync_metrics(conn)
        backend = storage_backend(conn)
    log.info("database_ready", created=created, backend=backend, metrics=len(metrics))


def run_migrate(args: argparse.Namespace) -> int:
    settings = get_settings()
    configure_logging(settings)
    prepare_database(settings.psycopg_url)
    return 0


def maintain_once(conn: psycopg.Connection, days_ahead: int, retention_days: int) -> dict:
    """One maintenance pass; returns what it did (partitions created, hours refreshed...).
    Needs an autocommit connection (TimescaleDB refreshes refuse a transaction block)."""
    today = datetime.now(UTC).date()
    backend = storage_backend(conn)
    created = conn.execute(
        "SELECT iot_ensure_partitions(%s, %s)", (today, today + timedelta(days=days_ahead))
    ).fetchone()[0]
    if backend == "timescaledb":
        refreshed = refresh_dirty_rollups(conn, retention_days)
    else:
        refreshed = conn.execute("SELECT iot_refresh_rollups()").fetchone()[0]
    # Latest values that a stopped ingest process held without upserting (ingest/latest.py).
    repaired = repair_stale_latest(conn)
    dropped = 0
    jobs_run, jobs_failed = 0, 0
    if backend == "timescaledb":
        # Compression, retention and the refresh windows, whether or not TimescaleDB's
        # scheduler manages to run them (models/timescale.py).
        jobs = run_policy_jobs(conn)
        jobs_run, jobs_failed = jobs.ran, len(jobs.failed)
        for job in failing_jobs(conn):
            log.warning(
                "timescaledb_job_failing",
                job_id=job.job_id,
                proc=job.proc_name,
                relation=job.relation,
                failures=job.total_failures,
                error=job.last_error,
            )
    elif retention_days:
        dropped = conn.execute(
            "SELECT iot_drop_partitions_before(%s)", (today - timedelta(days=retention_days),)
        ).fetchone()[0]
    return {
        "partitions_created": created,
        "hours_refreshed": refreshed,
        "partitions_dropped": dropped,
        "latest_markers_repaired": repaired,
        "policy_jobs_run": jobs_run,
        "policy_jobs_failed": jobs_failed,
    }


def run_maintenance(args: argparse.Namespace) -> int:
    settings = get_settings()
    configure_logging(settings)
    while True:
        with psycopg.connect(settings.psycopg_url, autocommit=True) as conn:
            done = maintain_once(conn, settings.partition_days_ahead, settings.retention_days)
        log.info("maintenance_done", **done)
        if not args.every:
            return 0
        time.sleep(args.every)
