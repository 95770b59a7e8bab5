"""Creating daily partitions of ``readings`` without stalling anyone (plain PostgreSQL).

``iot_create_partitions`` attaches new tables, which needs SHARE UPDATE EXCLUSIVE on
``readings``: readers and writers never conflict with it, but a manual ``ANALYZE``, an
index build or another partition change does. Each attempt therefore waits at most
``lock_timeout`` for its locks (so it never sits in the lock queue indefinitely) and is
retried after a short pause. On TimescaleDB the function is a no-op.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from datetime import date

import psycopg
from psycopg import errors, sql

from models.db_roles import as_owner
from models.logging import log

DEFAULT_LOCK_TIMEOUT_MS = 1000
DEFAULT_ATTEMPTS = 3


def create_partitions(
    conn: psycopg.Connection,
    days: Collection[date],
    lock_timeout_ms: int = DEFAULT_LOCK_TIMEOUT_MS,
    attempts: int = DEFAULT_ATTEMPTS,
) -> int:
    """Create the missing partitions of exactly `days`, in a transaction of their own on
    the autocommit connection `conn`; returns how many were created. Raises
    ``psycopg.errors.LockNotAvailable`` when every attempt timed out."""
    if not days:
        return 0
    wanted = sorted(set(days))
    pause = 0.1
    for attempt in range(1, attempts + 1):
        try:
            with conn.transaction():
                conn.execute(
                    "SELECT set_config('lock_timeout', %s, true)", (f"{lock_timeout_ms}ms",)
                )
                return conn.execute(
                    "SELECT iot_create_partitions(%s::date[])", (wanted,)
                ).fetchone()[0]
        except errors.LockNotAvailable:
            log.warning(
                "partition_lock_timeout",
                days=len(wanted),
                first=wanted[0].isoformat(),
                attempt=attempt,
                lock_timeout_ms=lock_timeout_ms,
            )
            if attempt == attempts:
                raise
            time.sleep(pause)
            pause *= 2
    raise AssertionError("unreachable")


def drop_partitions_before(
    conn: psycopg.Connection, cutoff: date, lock_timeout_ms: int = DEFAULT_LOCK_TIMEOUT_MS
) -> int:
    """Retention: detach and drop the daily partitions of days before `cutoff`; returns
    how many were dropped. Needs an autocommit connection.

    ``DETACH PARTITION ... CONCURRENTLY`` takes only SHARE UPDATE EXCLUSIVE on
    ``readings`` and then waits for the transactions that may still read the partition
    (an export), blocking no reader or writer; a plain ``DROP TABLE`` of a partition would
    take ACCESS EXCLUSIVE on ``readings`` and queue all ingest behind that export. A
    partition whose detach timed out stays "detach pending" and is finished
    (``FINALIZE``) by the next run; nothing is lost: its days are older than any sender
    may write (IOT_MAX_PAST_AGE_DAYS is capped by retention)."""
    doomed = conn.execute(
        "SELECT c.relname, i.inhdetachpending FROM pg_inherits i "
        "JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'readings'::regclass AND c.relname ~ '^readings_p[0-9]{8}$' "
        "AND to_date(substr(c.relname, 11), 'YYYYMMDD') < %s ORDER BY c.relname",
        (cutoff,),
    ).fetchall()
    dropped = 0
    previous = conn.execute("SHOW lock_timeout").fetchone()[0]
    conn.execute(sql.SQL("SET lock_timeout = {}").format(sql.Literal(f"{lock_timeout_ms}ms")))
    try:
        # Only a table's owner may detach and drop its partitions (models/db_roles.py).
        with as_owner(conn):
            for name, pending in doomed:
                how = sql.SQL("FINALIZE" if pending else "CONCURRENTLY")
                try:
                    conn.execute(
                        sql.SQL("ALTER TABLE readings DETACH PARTITION {} {}").format(
                            sql.Identifier(name), how
                        )
                    )
                    conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(name)))
                except errors.LockNotAvailable:
                    log.warning(
                        "retention_lock_timeout", partition=name, lock_timeout_ms=lock_timeout_ms
                    )
                    continue
                dropped += 1
    finally:
        conn.execute(sql.SQL("SET lock_timeout = {}").format(sql.Literal(previous)))
    return dropped
