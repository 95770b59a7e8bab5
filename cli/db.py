"""Database commands: ``migrate`` and ``maintenance`` (partitions, rollups, retention of
readings and dead letters, latest values left behind by a stopped ingest process)."""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime, timedelta

import psycopg

from domain.metrics import sync_metrics
from ingest.identity import forget_before as forget_identities_before
from ingest.latest import repair_stale as repair_stale_latest
from models.db import create_database, migrate, storage_backend
from models.db_roles import as_owner, enable_logins
from models.logging import configure_logging, log
from models.partitions import DEFAULT_LOCK_TIMEOUT_MS, create_partitions, drop_partitions_before
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


def prepare_database(url: str, role_passwords: dict[str, str] | None = None) -> None:
    """Create, migrate and load reference data: what every fresh install needs. Then let
    the services' database roles log in (with the passwords given, models/db_roles.py)."""
    created = create_database(url)
    migrate(url)
    with psycopg.connect(url, autocommit=True) as conn:
        metrics = sync_metrics(conn)
        backend = storage_backend(conn)
        enable_logins(conn, role_passwords or {})
    log.info("database_ready", created=created, backend=backend, metrics=len(metrics))


def run_migrate(args: argparse.Namespace) -> int:
    settings = get_settings()
    configure_logging(settings)
    prepare_database(settings.psycopg_url, settings.db_role_passwords)
    return 0


def maintain_once(
    conn: psycopg.Connection,
    days_ahead: int,
    retention_days: int,
    lock_timeout_ms: int = DEFAULT_LOCK_TIMEOUT_MS,
    dead_letter_retention_days: int = 30,
    session_expiry_s: int = 7 * 24 * 3600,
    audit_retention_days: int = 0,
) -> dict:
    """One maintenance pass; returns what it did (partitions created, hours refreshed...).
    Needs an autocommit connection (TimescaleDB refreshes refuse a transaction block)."""
    today = datetime.now(UTC).date()
    backend = storage_backend(conn)
    try:
        created = create_partitions(
            conn, [today + timedelta(days=n) for n in range(days_ahead + 1)], lock_timeout_ms
        )
    except psycopg.errors.LockNotAvailable:
        # Days ahead leave slack: the next run creates them (logged by create_partitions).
        created = 0
    if backend == "timescaledb":
        # Refreshing an aggregate and running its policies are its owner's (db_roles.py).
        with as_owner(conn):
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
        with as_owner(conn):
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
        dropped = drop_partitions_before(
            conn, today - timedelta(days=retention_days), lock_timeout_ms
        )
    now = datetime.now(UTC)
    letters = conn.execute(
        "DELETE FROM dead_letters WHERE received_at < %s",
        (now - timedelta(days=dead_letter_retention_days),),
    ).rowcount
    conn.execute(
        "DELETE FROM dead_letter_repeats WHERE hour < %s",
        (now - timedelta(days=dead_letter_retention_days),),
    )
    # An uplink can be redelivered while the broker keeps the session; a day more covers
    # a replay of what the last ingest process left unacknowledged.
    identities = forget_identities_before(conn, now - timedelta(seconds=session_expiry_s, days=1))
    audit_events = 0
    if audit_retention_days:
        audit_events = conn.execute(
            "DELETE FROM audit_events WHERE occurred_at < %s",
            (now - timedelta(days=audit_retention_days),),
        ).rowcount
    # Ended sessions and abandoned sign-ins: nothing to keep them for (sign-in and sign-out
    # are in the audit trail).
    conn.execute(
        "DELETE FROM staff_sessions WHERE expires_at < now() - interval '1 day' "
        "OR revoked_at < now() - interval '1 day'"
    )
    conn.execute("DELETE FROM login_states WHERE created_at < now() - interval '1 hour'")
    return {
        "audit_events_deleted": audit_events,
        "dead_letters_deleted": letters,
        "uplink_identities_deleted": identities,
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
            done = maintain_once(
                conn,
                settings.partition_days_ahead,
                settings.retention_days,
                settings.partition_lock_timeout_ms,
                settings.dead_letter_retention_days,
                settings.mqtt_session_expiry_s,
                settings.audit_retention_days,
            )
        log.info("maintenance_done", **done)
        if not args.every:
            return 0
        time.sleep(args.every)
