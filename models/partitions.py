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
from psycopg import errors

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
