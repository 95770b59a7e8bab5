"""Delete a municipality and everything of it, reporting what was removed per table.

Readings carry no foreign key and dead letters keep theirs with ON DELETE SET NULL (a
letter outlives a deleted device), so both are deleted explicitly, as is every table of
`inventory.tenant_tables`, children first, before the municipality's own row. The
rollups go too: on plain PostgreSQL their rows are deleted; on TimescaleDB the continuous
aggregates are refreshed over the deleted readings' span after the commit. Shared device
models stay; the municipality's own models and every version of their codecs go. Refuses
to run while a tenant table is unaccounted for (tenancy/inventory.py), as the export does.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
from psycopg import sql

from tenancy import inventory

# Deleted by sensor id (no municipality_id column).
_BY_SENSOR = ("readings", "latest_readings")
# Children before parents; tables of later migrations with a municipality_id column are
# deleted after these, before the municipality itself.
_ORDER = (
    "alerts",
    "dead_letters",
    "dead_letter_repeats",
    "network_applications",
    "api_keys",
    "sensors",
    "device_codecs",
    "device_models",
    "zones",
    "sites",
)


class DeleteError(ValueError):
    """The municipality cannot be deleted; the message says why."""


def delete_municipality(conn: psycopg.Connection, slug: str) -> dict[str, int]:
    """Delete municipality `slug` through the autocommit connection `conn`; returns the
    rows deleted per table (rollup rows on plain PostgreSQL included)."""
    unaccounted = inventory.unaccounted_tables(conn)
    if unaccounted:
        raise DeleteError(
            f"table(s) {', '.join(unaccounted)} hold municipality data that "
            "tenancy/inventory.py does not account for; add them before deleting"
        )
    counts: dict[str, int] = {}
    with conn.transaction():
        row = conn.execute(
            "SELECT id FROM municipalities WHERE slug = %s FOR UPDATE", (slug,)
        ).fetchone()
        if row is None:
            raise DeleteError(f"no municipality with slug {slug!r}")
        municipality_id = row[0]
        sensor_ids = [
            r[0]
            for r in conn.execute(
                "SELECT id FROM sensors WHERE municipality_id = %s", (municipality_id,)
            )
        ]
        span = conn.execute(
            "SELECT min(time), max(time) FROM readings WHERE sensor_id = ANY(%s)", (sensor_ids,)
        ).fetchone()
        timescale = _backend(conn) == "timescaledb"
        if not timescale:
            for rollup in ("readings_hourly", "readings_daily"):
                counts[rollup] = _delete(conn, rollup, "sensor_id = ANY(%s)", sensor_ids)
        for table in _BY_SENSOR:
            counts[table] = _delete(conn, table, "sensor_id = ANY(%s)", sensor_ids)
        with_column = [
            t
            for t in inventory.tenant_tables(conn)
            if t != inventory.MUNICIPALITY and _has_municipality_id(conn, t)
        ]
        ordered = [t for t in _ORDER if t in with_column] + sorted(
            t for t in with_column if t not in _ORDER
        )
        for table in ordered:
            counts[table] = _delete(conn, table, "municipality_id = %s", municipality_id)
        counts[inventory.MUNICIPALITY] = _delete(
            conn, inventory.MUNICIPALITY, "id = %s", municipality_id
        )
    if timescale and span[0] is not None:
        _refresh_aggregates(conn, span[0], span[1])
    return counts


def _delete(conn: psycopg.Connection, table: str, where: str, value: object) -> int:
    query = sql.SQL("DELETE FROM {} WHERE {}").format(sql.Identifier(table), sql.SQL(where))
    return conn.execute(query, (value,)).rowcount


def _has_municipality_id(conn: psycopg.Connection, table: str) -> bool:
    return bool(
        conn.execute(
            "SELECT 1 FROM information_schema.columns WHERE table_schema = 'public' "
            "AND table_name = %s AND column_name = 'municipality_id'",
            (table,),
        ).fetchone()
    )


def _backend(conn: psycopg.Connection) -> str:
    row = conn.execute("SELECT value FROM system_info WHERE key = 'backend'").fetchone()
    return row[0] if row else "unknown"


def _refresh_aggregates(conn: psycopg.Connection, first: datetime, last: datetime) -> None:
    """Recompute the continuous aggregates over whole UTC days around [first, last]."""
    start = first.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    end = last.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    end += timedelta(days=1)
    for view in ("readings_hourly", "readings_daily"):
        conn.execute("CALL refresh_continuous_aggregate(%s, %s, %s)", (view, start, end))
