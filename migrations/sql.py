"""Helpers for migrations written as SQL scripts."""

from __future__ import annotations

from alembic import op


def run_script(sql: str) -> None:
    """Run a multi-statement SQL script verbatim on the migration's connection.

    Goes to psycopg directly, with no parameters, so that PL/pgSQL's ``%I``/``%L`` and
    ``:`` casts are not mistaken for placeholders.
    """
    op.get_bind().connection.driver_connection.execute(sql)
