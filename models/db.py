"""Database plumbing shared by every process: connections, migrations, the storage backend.

The reference data of the domain (the metric vocabulary, device models) is written by
domain/ (`domain.metrics.sync_metrics`, `domain.registry.sync_device_models`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
from psycopg import sql

if TYPE_CHECKING:
    from alembic.config import Config

REPO_ROOT = Path(__file__).resolve().parent.parent


def alembic_config(sqlalchemy_url: str, timescaledb: str | None = None) -> Config:
    """An Alembic config for `sqlalchemy_url`, independent of the working directory."""
    # Alembic (and SQLAlchemy under it) is imported when a migration runs, not by every
    # process that only connects: it costs most of a second at start-up.
    from alembic.config import Config

    config = Config(str(REPO_ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(REPO_ROOT / "migrations"))
    config.attributes["url"] = sqlalchemy_url
    if timescaledb:
        config.attributes["timescaledb"] = timescaledb
    return config


def to_sqlalchemy_url(libpq_url: str) -> str:
    """``postgresql://...`` → ``postgresql+psycopg://...``."""
    for prefix in ("postgresql://", "postgres://"):
        if libpq_url.startswith(prefix):
            return "postgresql+psycopg://" + libpq_url[len(prefix) :]
    return libpq_url


def migrate(libpq_url: str, revision: str = "head", timescaledb: str | None = None) -> None:
    """Bring the database at `libpq_url` to `revision`."""
    from alembic import command

    command.upgrade(alembic_config(to_sqlalchemy_url(libpq_url), timescaledb), revision)


def downgrade(libpq_url: str, revision: str = "base") -> None:
    """Take the database at `libpq_url` back to `revision`."""
    from alembic import command

    command.downgrade(alembic_config(to_sqlalchemy_url(libpq_url)), revision)


def create_database(libpq_url: str) -> bool:
    """Create the database named in `libpq_url` if missing; True when it was created."""
    info = psycopg.conninfo.conninfo_to_dict(libpq_url)
    name = info.get("dbname") or "postgres"
    info["dbname"] = "postgres"
    with psycopg.connect(**info, autocommit=True) as admin:
        exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if exists:
            return False
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return True


def drop_database(libpq_url: str) -> None:
    """Drop the database named in `libpq_url`, disconnecting its sessions."""
    info = psycopg.conninfo.conninfo_to_dict(libpq_url)
    name = info["dbname"]
    info["dbname"] = "postgres"
    with psycopg.connect(**info, autocommit=True) as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def storage_backend(conn: psycopg.Connection) -> str:
    """'timescaledb' or 'postgresql', as recorded by the migrations."""
    row = conn.execute("SELECT value FROM system_info WHERE key = 'backend'").fetchone()
    return row[0] if row else "unknown"
