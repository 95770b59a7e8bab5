"""Writes a batch of readings and dead letters in one transaction.

Readings go through a binary COPY into a temporary staging table and then into
``readings`` with ``ON CONFLICT DO NOTHING``: a sample stored before (a duplicate uplink
heard by a second gateway, a QoS 1 redelivery after a reconnect) is absorbed and counted,
never stored twice. ``latest_readings`` keeps the newest value per sensor and metric.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

import psycopg

from ingest.normalise import Row

_STAGING_DDL = """
CREATE TEMP TABLE IF NOT EXISTS ingest_staging (
    time timestamptz NOT NULL,
    sensor_id bigint NOT NULL,
    metric_id smallint NOT NULL,
    value double precision NOT NULL
) ON COMMIT DELETE ROWS
"""

_INSERT_READINGS = """
INSERT INTO readings (time, sensor_id, metric_id, value)
SELECT time, sensor_id, metric_id, value FROM ingest_staging
ON CONFLICT DO NOTHING
"""

_UPSERT_LATEST = """
INSERT INTO latest_readings (sensor_id, metric_id, time, value)
SELECT DISTINCT ON (sensor_id, metric_id) sensor_id, metric_id, time, value
FROM ingest_staging ORDER BY sensor_id, metric_id, time DESC
ON CONFLICT (sensor_id, metric_id) DO UPDATE
SET time = EXCLUDED.time, value = EXCLUDED.value
WHERE latest_readings.time < EXCLUDED.time
"""


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


class BatchWriter:
    """Owns the per-connection staging table and the partitions known to exist.

    Expects an autocommit connection: each write is one explicit transaction.
    """

    def __init__(self) -> None:
        self._known_days: set[date] = set()
        self._prepared_conn: int | None = None

    def forget_connection(self) -> None:
        """Call after reconnecting: the staging table lived in the old session."""
        self._prepared_conn = None

    def _prepare(self, conn: psycopg.Connection) -> None:
        if self._prepared_conn != id(conn):
            conn.execute(_STAGING_DDL)
            self._prepared_conn = id(conn)

    def _ensure_partitions(self, conn: psycopg.Connection, rows: Sequence[Row]) -> None:
        days = {row[0].date() for row in rows} - self._known_days
        if not days:
            return
        # Outside the batch's transaction, so a new partition never waits for the batch.
        conn.execute("SELECT iot_ensure_partitions(%s, %s)", (min(days), max(days)))
        self._known_days |= days

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
                    with cur.copy(
                        "COPY ingest_staging (time, sensor_id, metric_id, value) "
                        "FROM STDIN (FORMAT BINARY)"
                    ) as copy:
                        copy.set_types(["timestamptz", "int8", "int2", "float8"])
                        for row in rows:
                            copy.write_row(row)
                    cur.execute(_INSERT_READINGS)
                    inserted = cur.rowcount
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
