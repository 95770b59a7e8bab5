"""Writes a batch of readings and dead letters in one transaction.

Two ways into ``readings``, both absorbing duplicates (a second gateway hearing the same
uplink, a QoS 1 redelivery after a reconnect), so a sample is never stored twice:

* **direct**: the batch's rows, with in-batch duplicates removed, go by binary COPY
  straight into ``readings`` inside a savepoint. This is the cheap path (no staging
  table, no ``ON CONFLICT`` probe per row) and live data almost never repeats a row
  stored by an earlier batch.
* **staging**: binary COPY into a temporary table, then ``INSERT … SELECT … ON CONFLICT
  DO NOTHING``. Taken when the direct COPY hits a unique violation (the savepoint rolls
  back and the same batch goes this way), for the next few batches after such a hit
  (duplicates come in bursts, e.g. a redelivery), and for rows older than a day: on
  TimescaleDB those may sit in compressed chunks, where only the ``ON CONFLICT`` path is
  known to absorb duplicates correctly (docs/storage.md).

``latest_readings`` keeps the newest value per sensor and metric. The newest row per key
is picked here and goes by binary COPY into a second temporary table to be upserted from
there (passing it as arrays costs psycopg more than the database's whole write).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import psycopg
from psycopg import errors

from ingest.normalise import Row

_STAGING_DDL = """
CREATE TEMP TABLE IF NOT EXISTS {name} (
    time timestamptz NOT NULL,
    sensor_id bigint NOT NULL,
    metric_id smallint NOT NULL,
    value double precision NOT NULL
) ON COMMIT DELETE ROWS
"""

_COPY_COLUMNS = "(time, sensor_id, metric_id, value) FROM STDIN (FORMAT BINARY)"
_COPY_TYPES = ["timestamptz", "int8", "int2", "float8"]

_INSERT_FROM_STAGING = """
INSERT INTO readings (time, sensor_id, metric_id, value)
SELECT time, sensor_id, metric_id, value FROM ingest_staging
ON CONFLICT DO NOTHING
"""

_UPSERT_LATEST = """
INSERT INTO latest_readings (sensor_id, metric_id, time, value)
SELECT sensor_id, metric_id, time, value FROM ingest_latest
ON CONFLICT (sensor_id, metric_id) DO UPDATE
SET time = EXCLUDED.time, value = EXCLUDED.value
WHERE latest_readings.time < EXCLUDED.time
"""

# Rows older than this always take the staging path (see the module docstring).
DIRECT_MAX_AGE = timedelta(days=1)
# After a unique violation on the direct path, this many batches take the staging path.
STAGING_AFTER_CONFLICT_BATCHES = 20


@dataclass(frozen=True, slots=True)
class DeadLetterRow:
    topic: str
    payload: bytes
    reason: str
    detail: str
    municipality_id: int | None
    device_id: str | None
    received_at: datetime


@dataclass(frozen=True, slots=True)
class WriteResult:
    inserted: int
    duplicates: int
    dead_letters: int


def split_batch(rows: Sequence[Row]) -> tuple[list[Row], list[Row]]:
    """(`rows` without repeats of a (time, sensor, metric) key, the newest row per (sensor,
    metric)). Of repeated keys and of equal times the first row wins, as with ``ON
    CONFLICT DO NOTHING`` in row order."""
    seen: set[tuple[datetime, int, int]] = set()
    unique: list[Row] = []
    newest: dict[tuple[int, int], Row] = {}
    for row in rows:
        time_, sensor_id, metric_id, _ = row
        key = (time_, sensor_id, metric_id)
        if key in seen:
            continue
        seen.add(key)
        unique.append(row)
        held = newest.get((sensor_id, metric_id))
        if held is None or time_ > held[0]:
            newest[(sensor_id, metric_id)] = row
    return unique, list(newest.values())


def _copy_rows(cur: psycopg.Cursor, table: str, rows: Sequence[Row]) -> None:
    with cur.copy(f"COPY {table} {_COPY_COLUMNS}") as copy:
        copy.set_types(_COPY_TYPES)
        for row in rows:
            copy.write_row(row)


class BatchWriter:
    """Owns the per-connection staging table, the partitions known to exist and the
    choice of path. Expects an autocommit connection: each write is one transaction."""

    def __init__(self) -> None:
        self._known_days: set[date] = set()
        self._prepared_conn: int | None = None
        self._staging_batches_left = 0
        self.direct_writes = 0
        self.staging_writes = 0

    def forget_connection(self) -> None:
        """Call after reconnecting: the staging table lived in the old session."""
        self._prepared_conn = None

    def _prepare(self, conn: psycopg.Connection) -> None:
        if self._prepared_conn != id(conn):
            conn.execute(_STAGING_DDL.format(name="ingest_staging"))
            conn.execute(_STAGING_DDL.format(name="ingest_latest"))
            self._prepared_conn = id(conn)

    def _ensure_partitions(self, conn: psycopg.Connection, rows: Sequence[Row]) -> None:
        days = {row[0].date() for row in rows} - self._known_days
        if not days:
            return
        # Outside the batch's transaction, so a new partition never waits for the batch.
        conn.execute("SELECT iot_ensure_partitions(%s, %s)", (min(days), max(days)))
        self._known_days |= days

    def _try_direct(self, cur: psycopg.Cursor, rows: list[Row]) -> bool:
        """COPY `rows` into readings in a savepoint; False (and nothing written) when one
        of them is stored already."""
        try:
            with cur.connection.transaction():
                _copy_rows(cur, "readings", rows)
        except errors.UniqueViolation:
            self._staging_batches_left = STAGING_AFTER_CONFLICT_BATCHES
            return False
        self.direct_writes += 1
        return True

    def _via_staging(self, cur: psycopg.Cursor, rows: Sequence[Row]) -> int:
        _copy_rows(cur, "ingest_staging", rows)
        cur.execute(_INSERT_FROM_STAGING)
        self.staging_writes += 1
        return cur.rowcount

    def _use_direct(self, rows: Sequence[Row]) -> bool:
        if self._staging_batches_left > 0:
            self._staging_batches_left -= 1
            return False
        oldest = min(row[0] for row in rows)
        return oldest > datetime.now(UTC) - DIRECT_MAX_AGE

    def write(
        self,
        conn: psycopg.Connection,
        rows: Sequence[Row],
        dead_letters: Sequence[DeadLetterRow],
    ) -> WriteResult:
        """Commit `rows` and `dead_letters` together; raises psycopg errors on failure."""
        self._prepare(conn)
        if rows:
            self._ensure_partitions(conn, rows)
        inserted = 0
        with conn.transaction():
            if rows:
                with conn.cursor() as cur:
                    unique, newest = split_batch(rows)
                    if self._use_direct(unique) and self._try_direct(cur, unique):
                        inserted = len(unique)
                    else:
                        inserted = self._via_staging(cur, unique)
                    _copy_rows(cur, "ingest_latest", newest)
                    cur.execute(_UPSERT_LATEST)
            if dead_letters:
                with (
                    conn.cursor() as cur,
                    cur.copy(
                        "COPY dead_letters (topic, payload, reason, detail, municipality_id, "
                        "device_id, received_at) FROM STDIN"
                    ) as copy,
                ):
                    for d in dead_letters:
                        copy.write_row(
                            (
                                d.topic,
                                d.payload,
                                d.reason,
                                d.detail,
                                d.municipality_id,
                                d.device_id,
                                d.received_at,
                            )
                        )
        return WriteResult(
            inserted=inserted, duplicates=len(rows) - inserted, dead_letters=len(dead_letters)
        )
