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

Rows are encoded to PostgreSQL's binary COPY format here, once each, with one
precompiled ``struct`` per row: the same bytes feed ``readings`` (or staging) and, for
the newest rows, ``latest_readings``. That is a third of the cost of psycopg's
``write_row`` per row, and this thread's CPU is the ingest's limit (BENCHMARKS.md).
"""

from __future__ import annotations

import struct
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
# Binary COPY: signature, flags, header extension length; each row: field count, then
# (length, value) per field: timestamptz as int8 microseconds since 2000-01-01 UTC, int8,
# int2, float8; the end: field count -1.
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
_COPY_TRAILER = struct.pack(">h", -1)
_COPY_ROW = struct.Struct(">hiqiqihid")
_PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

_INSERT_FROM_STAGING = """
INSERT INTO readings (time, sensor_id, metric_id, value)
SELECT time, sensor_id, metric_id, value FROM ingest_staging
ON CONFLICT DO NOTHING
"""

# In key order: ingest replicas upsert overlapping keys at the same time (a share group
# deals messages, not sensors), and rows locked in one global order cannot deadlock.
_UPSERT_LATEST = """
INSERT INTO latest_readings (sensor_id, metric_id, time, value)
SELECT sensor_id, metric_id, time, value FROM ingest_latest ORDER BY sensor_id, metric_id
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


@dataclass(frozen=True, slots=True)
class EncodedBatch:
    """A batch's rows in binary COPY format, repeats of a key removed."""

    rows: int  # distinct (time, sensor, metric) keys
    readings: bytes  # COPY data of those rows, in batch order
    latest: bytes  # COPY data of the newest row per (sensor, metric)
    oldest: datetime
    newest: datetime


def encode_batch(rows: Sequence[Row]) -> EncodedBatch:
    """Encode `rows` (timezone-aware times) for COPY. Of repeated keys, and of rows of a
    (sensor, metric) with equal times, the first wins, as with ``ON CONFLICT DO NOTHING``
    in row order."""
    seen: set[tuple[int, int, int]] = set()
    encoded: list[bytes] = []
    newest: dict[tuple[int, int], tuple[int, bytes]] = {}
    pack = _COPY_ROW.pack
    # Keys and comparisons on integer microseconds: hashing and comparing aware datetimes
    # costs several times more. A message's rows share one datetime object, so it is
    # converted once per message.
    last_time = None
    micros = 0
    oldest = latest = None
    for time_, sensor_id, metric_id, value in rows:
        if time_ is not last_time:
            last_time = time_
            micros = (time_ - _PG_EPOCH) // _MICROSECOND
            if oldest is None or micros < oldest:
                oldest = micros
            if latest is None or micros > latest:
                latest = micros
        key = (micros, sensor_id, metric_id)
        if key in seen:
            continue
        seen.add(key)
        data = pack(4, 8, micros, 8, sensor_id, 2, metric_id, 8, value)
        encoded.append(data)
        pair = (sensor_id, metric_id)
        held = newest.get(pair)
        if held is None or micros > held[0]:
            newest[pair] = (micros, data)
    return EncodedBatch(
        rows=len(encoded),
        readings=_COPY_HEADER + b"".join(encoded) + _COPY_TRAILER,
        latest=_COPY_HEADER + b"".join([data for _, data in newest.values()]) + _COPY_TRAILER,
        oldest=_PG_EPOCH + oldest * _MICROSECOND,
        newest=_PG_EPOCH + latest * _MICROSECOND,
    )


def _copy(cur: psycopg.Cursor, table: str, data: bytes) -> None:
    with cur.copy(f"COPY {table} {_COPY_COLUMNS}") as copy:
        copy.write(data)


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

    def _ensure_partitions(self, conn: psycopg.Connection, batch: EncodedBatch) -> None:
        first, last = batch.oldest.date(), batch.newest.date()
        span = {first + timedelta(days=i) for i in range((last - first).days + 1)}
        days = span - self._known_days
        if not days:
            return
        # Outside the batch's transaction, so a new partition never waits for the batch.
        conn.execute("SELECT iot_ensure_partitions(%s, %s)", (min(days), max(days)))
        self._known_days |= days

    def _try_direct(self, cur: psycopg.Cursor, batch: EncodedBatch) -> bool:
        """COPY the batch into readings in a savepoint; False (and nothing written) when
        one of its rows is stored already."""
        try:
            with cur.connection.transaction():
                _copy(cur, "readings", batch.readings)
        except errors.UniqueViolation:
            self._staging_batches_left = STAGING_AFTER_CONFLICT_BATCHES
            return False
        self.direct_writes += 1
        return True

    def _via_staging(self, cur: psycopg.Cursor, batch: EncodedBatch) -> int:
        _copy(cur, "ingest_staging", batch.readings)
        cur.execute(_INSERT_FROM_STAGING)
        self.staging_writes += 1
        return cur.rowcount

    def _use_direct(self, batch: EncodedBatch) -> bool:
        if self._staging_batches_left > 0:
            self._staging_batches_left -= 1
            return False
        return batch.oldest > datetime.now(UTC) - DIRECT_MAX_AGE

    def write(
        self,
        conn: psycopg.Connection,
        rows: Sequence[Row],
        dead_letters: Sequence[DeadLetterRow],
    ) -> WriteResult:
        """Commit `rows` and `dead_letters` together; raises psycopg errors on failure."""
        self._prepare(conn)
        batch = encode_batch(rows) if rows else None
        if batch is not None:
            self._ensure_partitions(conn, batch)
        inserted = 0
        with conn.transaction():
            if batch is not None:
                with conn.cursor() as cur:
                    if self._use_direct(batch) and self._try_direct(cur, batch):
                        inserted = batch.rows
                    else:
                        inserted = self._via_staging(cur, batch)
                    _copy(cur, "ingest_latest", batch.latest)
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
