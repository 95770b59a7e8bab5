"""Latest values per sensor and metric, upserted at most once per flush interval.

``latest_readings`` holds the newest value of each (sensor, metric). Upserting it once per
batch cost PostgreSQL more than storing the batch's readings (BENCHMARKS.md), and when a
backlog drains (after an outage of the broker, the database or ingest itself) each sensor
has many uplinks in every second of it. So the writer keeps the newest row per key in
memory, `LatestValues`, and upserts them together once IOT_LATEST_FLUSH_INTERVAL_S has
passed since the first of them (0: with every batch, as before). The readings themselves
are committed, and their messages acknowledged, batch by batch as ever.

What a crash could lose is the deferred upserts. Each batch that defers them writes one
row to ``latest_pending`` in its own transaction (its sensors and the oldest time among
its rows); the flush deletes the rows it covers, in its transaction. Rows that outlive
their process are found by `repair_stale`, run by the maintenance job: for their sensors
it takes the newest readings since their oldest time, which is where any value they
deferred lies.
"""

from __future__ import annotations

import time
from datetime import datetime
from itertools import chain

import psycopg

# Every upsert of latest_readings replaces a value only with a newer one.
_IF_NEWER = """
ON CONFLICT (sensor_id, metric_id) DO UPDATE
SET time = EXCLUDED.time, value = EXCLUDED.value
WHERE latest_readings.time < EXCLUDED.time
"""

# Upsert in key order: ingest replicas upsert overlapping keys at the same time (a share
# group deals messages, not sensors), and rows locked in one global order cannot deadlock.
UPSERT_FROM_STAGING = (
    """
INSERT INTO latest_readings (sensor_id, metric_id, time, value)
SELECT sensor_id, metric_id, time, value FROM ingest_latest ORDER BY sensor_id, metric_id
"""
    + _IF_NEWER
)

# Deferred values are upserted a moment after their readings were stored; a sensor deleted
# meanwhile is skipped rather than failing the whole flush on the foreign key.
UPSERT_DEFERRED = (
    """
INSERT INTO latest_readings (sensor_id, metric_id, time, value)
SELECT t.sensor_id, t.metric_id, t.time, t.value
FROM ingest_latest t JOIN sensors s ON s.id = t.sensor_id
ORDER BY t.sensor_id, t.metric_id
"""
    + _IF_NEWER
)

# Written only when every sensor of the batch exists: as the foreign key of
# latest_readings does for an upsert with the batch, this refuses the batch of a sensor
# deleted since the device cache was loaded (its readings would have no sensor).
_MARK = """
INSERT INTO latest_pending (oldest, sensor_ids)
SELECT %s, ids FROM (SELECT %s::bigint[] AS ids) batch
WHERE (SELECT count(*) FROM sensors WHERE id = ANY(batch.ids)) = cardinality(batch.ids)
RETURNING id
"""
_UNMARK = "DELETE FROM latest_pending WHERE id = ANY(%s::bigint[])"

_TAKE_STALE = """
DELETE FROM latest_pending WHERE created_at < now() - make_interval(secs => %s)
RETURNING oldest, sensor_ids
"""
# The same conflict rule as _IF_NEWER, spelled out: concatenated to this parameterised
# SELECT it is flagged by the linter's SQL-injection check (S608).
_REPAIR = """
INSERT INTO latest_readings (sensor_id, metric_id, time, value)
SELECT DISTINCT ON (sensor_id, metric_id) sensor_id, metric_id, time, value
FROM readings
WHERE sensor_id = ANY(ARRAY(SELECT id FROM sensors WHERE id = ANY(%s::bigint[])))
  AND time >= %s
ORDER BY sensor_id, metric_id, time DESC
ON CONFLICT (sensor_id, metric_id) DO UPDATE
SET time = EXCLUDED.time, value = EXCLUDED.value
WHERE latest_readings.time < EXCLUDED.time
"""
# A live process flushes every IOT_LATEST_FLUSH_INTERVAL_S (seconds); a marker this old
# belongs to one that stopped without flushing.
STALE_AFTER_S = 60.0

# An encoded row (ingest/writer.py) with its time, microseconds since 2000-01-01.
Encoded = tuple[int, bytes]
Newest = dict[tuple[int, int], Encoded]  # (sensor, metric) → its newest row
# Below every time a row can have: what "the newest held" is while nothing is held.
_BEFORE_ALL = -(1 << 63)


class LatestValues:
    """The newest encoded row per (sensor, metric) not yet upserted, and the
    ``latest_pending`` markers that stand for them in the database."""

    def __init__(self, flush_interval_s: float = 0.0) -> None:
        self.flush_interval_s = flush_interval_s
        self._rows: Newest = {}
        self._markers: list[int] = []
        self._since: float | None = None  # monotonic time of the oldest deferred batch
        self._newest_micros = _BEFORE_ALL  # the newest time among the held rows

    def __len__(self) -> int:
        return len(self._rows)

    def due(self) -> bool:
        """True when the next write should upsert (what is held may wait no longer)."""
        return self.flush_interval_s <= 0 or (
            self._since is not None and self.seconds_until_due() <= 0
        )

    def seconds_until_due(self) -> float:
        """Seconds until what is held is due (the full interval when nothing is)."""
        if self._since is None:
            return self.flush_interval_s
        return self._since + self.flush_interval_s - time.monotonic()

    def rows(self) -> list[bytes]:
        """The held rows, one per key."""
        return [row for _, row in self._rows.values()]

    def mark(self, cur: psycopg.Cursor, sensors: set[int], oldest: datetime) -> int:
        """Write the marker of a batch of `sensors` that defers its newest rows (in the
        batch's transaction). Raises ForeignKeyViolation when one of them no longer
        exists."""
        sensor_ids = "{" + ",".join(map(str, sensors)) + "}"
        row = cur.execute(_MARK, (oldest, sensor_ids)).fetchone()
        if row is None:
            raise psycopg.errors.ForeignKeyViolation(
                "a sensor of this batch no longer exists (deleted since the device cache "
                "was loaded)"
            )
        return row[0]

    def unmark(self, cur: psycopg.Cursor) -> None:
        """Delete the markers of everything held (in the flush's transaction)."""
        if self._markers:
            cur.execute(_UNMARK, (self._markers,))

    # After the transaction commits:

    def deferred(self, newest: Newest, marker: int, oldest_micros: int, newest_micros: int) -> None:
        """Hold a committed batch's newest rows; their times lie between `oldest_micros`
        and `newest_micros` (microseconds since 2000-01-01)."""
        _merge_into(self._rows, newest, oldest_micros, self._newest_micros)
        self._newest_micros = max(self._newest_micros, newest_micros)
        self._markers.append(marker)
        if self._since is None:
            self._since = time.monotonic()

    def flushed(self) -> None:
        self._rows.clear()
        self._markers.clear()
        self._since = None
        self._newest_micros = _BEFORE_ALL


def _merge_into(rows: Newest, newer: Newest, newer_oldest: int, rows_newest: int) -> None:
    """Keep in `rows` the newer of each key's two rows (the held one on equal times).

    No row of `newer` is older than `newer_oldest`, and none of `rows` newer than
    `rows_newest` (microseconds)."""
    if newer_oldest > rows_newest:
        # Every row of the batch is newer than all that is held, as whenever uplinks come
        # in order (every batch of bench_ingest's flood): one update instead of a lookup
        # and a comparison per key, 0.17 instead of 0.39 ms for a batch of 5,000 keys.
        rows.update(newer)
        return
    for pair, row in newer.items():
        held = rows.get(pair)
        if held is None or row[0] > held[0]:
            rows[pair] = row


def repair_stale(conn: psycopg.Connection, older_than_s: float = STALE_AFTER_S) -> int:
    """Upsert the latest values that markers older than `older_than_s` stand for, from
    ``readings``, and delete those markers; returns how many markers were repaired."""
    with conn.transaction():
        markers = conn.execute(_TAKE_STALE, (older_than_s,)).fetchall()
        if not markers:
            return 0
        oldest = min(m[0] for m in markers)
        sensor_ids = sorted(set(chain.from_iterable(m[1] for m in markers)))
        # `oldest` as a value, not a join: the planner then reads only the partitions
        # from that day on.
        conn.execute(_REPAIR, (sensor_ids, oldest))
    return len(markers)
