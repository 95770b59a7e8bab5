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
there (passing it as arrays costs psycopg more than the database's whole write). With a
flush interval, a batch leaves a marker instead and `flush_latest` upserts what the
batches since the last flush held, in a transaction of its own (ingest/latest.py).

Rows are encoded to PostgreSQL's binary COPY format here, once each, with one
precompiled ``struct`` per row: the same bytes feed ``readings`` (or staging) and, for
the newest rows, ``latest_readings``. That is a third of the cost of psycopg's
``write_row`` per row, and this thread's CPU is the ingest's limit (BENCHMARKS.md).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import psycopg
from psycopg import errors

from ingest.dead_letters import DeadLetterPolicy, DeadLetterRow
from ingest.latest import UPSERT_DEFERRED, UPSERT_FROM_STAGING, Encoded, LatestValues
from ingest.normalise import Row
from models.logging import log
from models.outbox import ReadingsOutbox
from models.partitions import DEFAULT_LOCK_TIMEOUT_MS, create_partitions

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
_PG_EPOCH_DATE = _PG_EPOCH.date()
_MICROSECOND = timedelta(microseconds=1)
_DAY_MICROS = 86_400_000_000

_INSERT_FROM_STAGING = """
INSERT INTO readings (time, sensor_id, metric_id, value)
SELECT time, sensor_id, metric_id, value FROM ingest_staging
ON CONFLICT DO NOTHING
"""

# On TimescaleDB a hypertable's triggers cannot see the statement's new rows as a table,
# so the statement itself records the UTC hours it stored rows in, for the maintenance
# job to refresh the continuous aggregates there (models/timescale.py). Only this path
# needs it: the direct path takes rows of the last day, inside the policies' windows.
_INSERT_FROM_STAGING_MARKING_HOURS = """
WITH inserted AS (
    INSERT INTO readings (time, sensor_id, metric_id, value)
    SELECT time, sensor_id, metric_id, value FROM ingest_staging
    ON CONFLICT DO NOTHING
    RETURNING time
), marked AS (
    INSERT INTO rollup_dirty_hours (bucket)
    SELECT DISTINCT date_trunc('hour', time, 'UTC') FROM inserted
    ON CONFLICT DO NOTHING
)
SELECT count(*) FROM inserted
"""

# Rows older than this always take the staging path (see the module docstring).
DIRECT_MAX_AGE = timedelta(days=1)
# After a unique violation on the direct path, this many batches take the staging path.
STAGING_AFTER_CONFLICT_BATCHES = 20


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
    newest: dict[tuple[int, int], Encoded]  # the newest row per (sensor, metric)
    sensors: set[int]
    # The oldest and the newest time among the rows, microseconds since 2000-01-01.
    oldest_micros: int
    newest_micros: int
    # The UTC days that hold rows, as days since 2000-01-01: the partitions the batch needs
    # (only those: a message sampled now and a year ago needs two, not 366).
    day_numbers: frozenset[int]

    @property
    def days(self) -> set[date]:
        return {_PG_EPOCH_DATE + timedelta(days=n) for n in self.day_numbers}

    @property
    def oldest(self) -> datetime:
        return _PG_EPOCH + self.oldest_micros * _MICROSECOND

    @property
    def latest_time(self) -> datetime:
        return _PG_EPOCH + self.newest_micros * _MICROSECOND


class BatchEncoder:
    """Encodes rows for COPY as they are added, so that the thread building a batch does
    this work and the thread committing the previous batch only waits for the database.

    Of repeated keys, and of rows of a (sensor, metric) with equal times, the first wins,
    as with ``ON CONFLICT DO NOTHING`` in row order. Rows need timezone-aware times."""

    __slots__ = (
        "_days",
        "_encoded",
        "_last_time",
        "_micros",
        "_newest",
        "_newest_micros",
        "_oldest",
        "_repeated",
        "_sensors",
        "added",
    )

    def __init__(self) -> None:
        self._encoded: list[bytes] = []
        # The newest row per (sensor, metric): (its time in microseconds, its bytes).
        self._newest: dict[tuple[int, int], Encoded] = {}
        self._sensors: set[int] = set()
        # Keys of every row of a (sensor, metric) that came more than once; most pairs
        # come once per batch, and those never pay for a key of their own.
        self._repeated: set[tuple[int, int, int]] = set()
        self._oldest: int | None = None
        self._newest_micros = 0
        self._days: set[int] = set()
        self._micros = 0
        self._last_time: datetime | None = None
        self.added = 0  # rows added, repeats included

    def add(self, rows: Sequence[Row]) -> None:
        encoded, newest = self._encoded, self._newest
        pack = _COPY_ROW.pack
        # Keys and comparisons on integer microseconds: hashing and comparing aware
        # datetimes costs several times more. A message's rows share one datetime object,
        # so it is converted once per message.
        last_time, micros = self._last_time, self._micros
        last_sensor = None
        for time_, sensor_id, metric_id, value in rows:
            if sensor_id != last_sensor:
                last_sensor = sensor_id
                self._sensors.add(sensor_id)
            if time_ is not last_time:
                last_time = time_
                micros = (time_ - _PG_EPOCH) // _MICROSECOND
                self._days.add(micros // _DAY_MICROS)
                if self._oldest is None or micros < self._oldest:
                    self._oldest = micros
                if micros > self._newest_micros:
                    self._newest_micros = micros
            pair = (sensor_id, metric_id)
            held = newest.get(pair)
            if held is None:
                data = pack(4, 8, micros, 8, sensor_id, 2, metric_id, 8, value)
                encoded.append(data)
                newest[pair] = (micros, data)
            elif self._add_repeat(pair, held[0], micros):
                data = pack(4, 8, micros, 8, sensor_id, 2, metric_id, 8, value)
                encoded.append(data)
                if micros > held[0]:
                    newest[pair] = (micros, data)
        self._last_time, self._micros = last_time, micros
        self.added += len(rows)

    def _add_repeat(self, pair: tuple[int, int], held_micros: int, micros: int) -> bool:
        """Note another row of `pair`; False when its exact key is in the batch already."""
        repeated = self._repeated
        # The pair's first row has no key in the set yet: the row held as newest is the
        # only one of the pair before its first repeat.
        repeated.add((held_micros, *pair))
        key = (micros, *pair)
        if key in repeated:
            return False
        repeated.add(key)
        return True

    def finish(self) -> EncodedBatch | None:
        """The batch so far; None when no row was added."""
        if self._oldest is None:
            return None
        return EncodedBatch(
            rows=len(self._encoded),
            readings=_encoded(self._encoded),
            newest=self._newest,
            sensors=self._sensors,
            oldest_micros=self._oldest,
            newest_micros=self._newest_micros,
            day_numbers=frozenset(self._days),
        )


def _encoded(rows: Iterable[bytes]) -> bytes:
    """COPY data of rows encoded by BatchEncoder."""
    return _COPY_HEADER + b"".join(rows) + _COPY_TRAILER


def _copy(cur: psycopg.Cursor, table: str, data: bytes) -> None:
    with cur.copy(f"COPY {table} {_COPY_COLUMNS}") as copy:
        copy.write(data)


class BatchWriter:
    """Owns the per-connection staging table, the partitions known to exist and the
    choice of path. Expects an autocommit connection: each write is one transaction."""

    def __init__(
        self,
        latest_flush_interval_s: float = 0.0,
        dead_letters: DeadLetterPolicy | None = None,
        *,
        partition_lock_timeout_ms: int = DEFAULT_LOCK_TIMEOUT_MS,
    ) -> None:
        self._known_days: set[date] = set()
        self.partition_lock_timeout_ms = partition_lock_timeout_ms
        self.dead_letters = dead_letters or DeadLetterPolicy()
        self.latest = LatestValues(latest_flush_interval_s)
        # Data targets: a batch's deliveries commit with its rows (models/outbox.py).
        self.outbox = ReadingsOutbox()
        self._prepared_conn: int | None = None
        self._marks_hours = False
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
            conn.execute(_STAGING_DDL.format(name="ingest_outbound"))
            backend = conn.execute("SELECT value FROM system_info WHERE key = 'backend'").fetchone()
            self._marks_hours = backend == ("timescaledb",)
            self._prepared_conn = id(conn)

    def _ensure_partitions(self, conn: psycopg.Connection, batch: EncodedBatch) -> None:
        days = batch.days - self._known_days
        if not days:
            return
        # Outside the batch's transaction, so a new partition never waits for the batch,
        # and with a lock timeout, so it never queues behind a lock for long
        # (models/partitions.py); LockNotAvailable after the last attempt propagates as a
        # database error and the batch is retried.
        create_partitions(conn, days, self.partition_lock_timeout_ms)
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

    def flush_latest(self, conn: psycopg.Connection) -> int:
        """Upsert the deferred latest values and delete their markers, in one transaction;
        returns how many keys were upserted (not counting those that held a newer value
        already). Call when `latest.due()` and when stopping.

        A database refusal other than a lost connection (a sensor deleted in the same
        instant) drops the held values and leaves their markers for `repair_stale`, so
        one bad key never blocks the rest."""
        if not len(self.latest):
            return 0
        self._prepare(conn)
        rows = self.latest.rows()
        try:
            with conn.transaction(), conn.cursor() as cur:
                _copy(cur, "ingest_latest", _encoded(rows))
                cur.execute(UPSERT_DEFERRED)
                upserted = cur.rowcount
                self.latest.unmark(cur)
        except (psycopg.OperationalError, psycopg.InterfaceError):
            raise
        except psycopg.Error as exc:
            log.error("latest_flush_refused", keys=len(rows), error=str(exc).strip()[:300])
            self.latest.flushed()
            return 0
        self.latest.flushed()
        return upserted

    def _via_staging(self, cur: psycopg.Cursor, batch: EncodedBatch) -> int:
        _copy(cur, "ingest_staging", batch.readings)
        self.staging_writes += 1
        if self._marks_hours:
            return cur.execute(_INSERT_FROM_STAGING_MARKING_HOURS).fetchone()[0]
        cur.execute(_INSERT_FROM_STAGING)
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
        encoder = BatchEncoder()
        encoder.add(rows)
        return self.write_encoded(conn, encoder, dead_letters)

    def write_encoded(
        self,
        conn: psycopg.Connection,
        encoder: BatchEncoder,
        dead_letters: Sequence[DeadLetterRow],
    ) -> WriteResult:
        """Commit the rows added to `encoder` and `dead_letters` together."""
        self._prepare(conn)
        batch = encoder.finish()
        if batch is not None:
            self._ensure_partitions(conn, batch)
        inserted = 0
        marker = None
        letters = self.dead_letters.plan(dead_letters)
        forward = batch is not None and self.outbox.active(conn)
        with conn.transaction(), conn.cursor() as cur:
            if batch is not None:
                if self._use_direct(batch) and self._try_direct(cur, batch):
                    inserted = batch.rows
                else:
                    inserted = self._via_staging(cur, batch)
                if self.latest.flush_interval_s > 0:
                    marker = self.latest.mark(cur, batch.sensors, batch.oldest)
                else:
                    # The foreign key of latest_readings refuses rows of a sensor deleted
                    # since the device cache was loaded, and so the whole batch.
                    _copy(cur, "ingest_latest", _encoded(row for _, row in batch.newest.values()))
                    cur.execute(UPSERT_FROM_STAGING)
                if forward:
                    # Every row of the batch, stored now or before: a receiver may get a
                    # reading twice, never miss one (at least once, docs/notifications.md).
                    _copy(cur, "ingest_outbound", batch.readings)
                    self.outbox.enqueue(cur, "ingest_outbound")
            self.dead_letters.write(cur, letters)
        self.dead_letters.committed(letters)
        if marker is not None:
            self.latest.deferred(batch.newest, marker, batch.oldest_micros, batch.newest_micros)
        return WriteResult(
            inserted=inserted,
            duplicates=encoder.added - inserted,
            dead_letters=len(dead_letters),
        )
