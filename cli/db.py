"""Database commands: ``migrate`` and ``maintenance`` (partitions, rollups, retention,
latest values left behind by a stopped ingest process)."""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime, timedelta

import psycopg

from ingest.latest import repair_stale as repair_stale_latest
from models.db import create_database, migrate, storage_backend, sync_metrics
from models.db_roles import enable_logins
from models.logging import configure_logging, log
from models.settings import get_settings


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


def maintain_once(conn: psycopg.Connection, days_ahead: int, retention_days: int) -> dict:
    """One maintenance pass; returns what it did (partitions created, hours refreshed...)."""
    today = datetime.now(UTC).date()
    created = conn.execute(
        "SELECT iot_ensure_partitions(%s, %s)", (today, today + timedelta(days=days_ahead))
    ).fetchone()[0]
    refreshed = conn.execute("SELECT iot_refresh_rollups()").fetchone()[0]
    # Latest values that a stopped ingest process held without upserting (ingest/latest.py).
    repaired = repair_stale_latest(conn)
    dropped = 0
    if retention_days and storage_backend(conn) == "postgresql":
        dropped = conn.execute(
            "SELECT iot_drop_partitions_before(%s)", (today - timedelta(days=retention_days),)
        ).fetchone()[0]
    return {
        "partitions_created": created,
        "hours_refreshed": refreshed,
        "partitions_dropped": dropped,
        "latest_markers_repaired": repaired,
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
