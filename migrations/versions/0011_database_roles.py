"""Database roles: every service connects as its own role with only the grants it needs.

Creates the roles of models/db_roles.py (cluster-wide, idempotently), makes ``iot_owner``
the owner of every object, lets the partition and rollup functions run with the owner's
rights (creating and dropping partitions needs the table's owner) for the roles allowed to
call them, and turns on the grants: from now on migrations/env.py applies
``models.db_roles.GRANTS`` (and the ownership) after every upgrade. New sensors are
private unless registered public (the registry applies each municipality's default).

Revision ID: 0011
Revises: 0009
Create Date: 2026-12-03
"""

from __future__ import annotations

from alembic import op

from models.db_roles import MARKER, create_roles, revoke_grants

revision = "0011"
down_revision = "0009"
branch_labels = None
depends_on = None

# Functions that act on tables their callers do not own; absent ones are skipped
# (TimescaleDB has no iot_drop_partitions_before).
DEFINER_FUNCTIONS = (
    "iot_ensure_partitions(date, date)",
    "iot_create_partitions(date[])",
    "iot_drop_partitions_before(date)",
    "iot_refresh_rollups(integer)",
)


def _connection():  # the psycopg connection under Alembic's
    return op.get_bind().connection.driver_connection


def _existing(conn, signature: str) -> bool:
    return conn.execute("SELECT to_regprocedure(%s) IS NOT NULL", (signature,)).fetchone()[0]


def upgrade() -> None:
    conn = _connection()
    create_roles(conn)
    for signature in DEFINER_FUNCTIONS:
        if _existing(conn, signature):
            conn.execute(
                f"ALTER FUNCTION {signature} SECURITY DEFINER SET search_path = public, pg_temp"
            )
    conn.execute("ALTER TABLE sensors ALTER COLUMN is_public SET DEFAULT false")
    # The grants themselves follow right after the migrations commit (migrations/env.py).
    conn.execute("INSERT INTO system_info (key, value) VALUES (%s, %s)", MARKER)


def downgrade() -> None:
    conn = _connection()
    conn.execute("DELETE FROM system_info WHERE key = %s", (MARKER[0],))
    revoke_grants(conn)
    conn.execute("ALTER TABLE sensors ALTER COLUMN is_public SET DEFAULT true")
    for signature in DEFINER_FUNCTIONS:
        if _existing(conn, signature):
            conn.execute(f"ALTER FUNCTION {signature} SECURITY INVOKER RESET search_path")
            conn.execute(f"GRANT EXECUTE ON FUNCTION {signature} TO PUBLIC")
