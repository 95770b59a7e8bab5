"""Alembic environment: the URL comes from settings (IOT_DATABASE_URL) unless a caller
passes a connection in ``config.attributes["connection"]`` (tests do)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from models.audit import apply_audit_triggers
from models.db_roles import apply_grants_retrying
from models.settings import get_settings
from models.tables import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_offline() -> None:
    context.configure(
        url=get_settings().sqlalchemy_url,
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def _migrate(connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()
    # Whatever the migrations created, the roles get exactly what models/db_roles.py
    # grants (a no-op before migration 0011 turned the roles on), in a transaction of its
    # own that is retried: on TimescaleDB a continuous-aggregate refresh job may deadlock
    # with the change of an aggregate's owner.
    driver_connection = connection.connection.driver_connection
    apply_grants_retrying(driver_connection)
    # Every audited table records staff writes (models/audit.py), whichever migration made it.
    with driver_connection.transaction():
        apply_audit_triggers(driver_connection)


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _migrate(connection)
        return
    url = config.attributes.get("url") or get_settings().sqlalchemy_url
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as conn:
        _migrate(conn)


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
