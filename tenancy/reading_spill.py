"""A municipality's readings read time slice by time slice, handed back series by series.

Ingest stores readings time-major (each minute's uplinks of every sensor together), so one
sensor's rows lie on nearly every page of every day: reading sensor by sensor visits each
page once per sensor. The archive wants them sensor-major. So the export reads each time
slice (a daily partition, or a TimescaleDB chunk) once, with every sensor's rows of the
slice grouped into one array per series by the server, sorts them in NumPy and appends
them to a temporary spill file as one block per slice; then it reads the spill back
series by series, each series' blocks in time order.

Memory holds one slice of at most `SENSORS_PER_SLICE` sensors (a day of 2,000 sensors
with four metrics every 5 minutes: 2.3M readings, 37 MB) and a few hundred index entries
per slice; the spill file takes 16 bytes per reading on disk until the export ends.
"""

from __future__ import annotations

import itertools
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import psycopg

# A slice reads at most this many sensors' rows of one time range at once (memory bound).
# A municipality with more is read in groups, each reading the range's pages again.
SENSORS_PER_SLICE = 2000
# Index entries of one block read from the spill at once while reading it back.
_CURSOR_ENTRIES = 512
_INDEX_ENTRY = np.dtype([("key", "<i8"), ("count", "<i8")])
_PG_EPOCH_US = 946_684_800_000_000
_COPY_HEADER_SIZE = 19  # signature (11), flags (4), header extension length (4)
_COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
_TIMES = np.dtype([("length", ">i4"), ("value", ">i8")])
_VALUES = np.dtype([("length", ">i4"), ("value", ">f8")])


class SliceError(ValueError):
    """The readings table is not laid out in time ranges the export can read in order."""


# The server groups each slice's rows by series: one COPY row per series and slice
# (libpq hands COPY data over a row at a time, and a row per reading cost Python more
# than the server's read). Both aggregates see the group's rows in the same order. The
# cast matters: psycopg sends small ids as smallint[], and bigint = ANY(smallint[]) is
# searched element by element for every row, bigint = ANY(bigint[]) through a hash.
_SLICE = """
COPY (
    SELECT sensor_id, metric_id, array_agg(time), array_agg(value)
    FROM readings WHERE time >= %s AND time < %s AND sensor_id = ANY(%s::bigint[])
    GROUP BY sensor_id, metric_id
) TO STDOUT (FORMAT BINARY)
"""

_PARTITION_RANGES = r"""
SELECT c.relname, m[1]::timestamptz, m[2]::timestamptz
FROM pg_inherits i
JOIN pg_class c ON c.oid = i.inhrelid
LEFT JOIN LATERAL regexp_match(pg_get_expr(c.relpartbound, c.oid),
                               '^FOR VALUES FROM \(''([^'']+)''\) TO \(''([^'']+)''\)$') m ON true
WHERE i.inhparent = 'readings'::regclass
"""

_CHUNK_RANGES = """
SELECT DISTINCT range_start, range_end FROM timescaledb_information.chunks
WHERE hypertable_schema = current_schema() AND hypertable_name = 'readings'
"""


def time_slices(conn: psycopg.Connection) -> list[tuple[datetime, datetime]]:
    """The time ranges that hold every reading, in time order and disjoint: the daily
    partitions on plain PostgreSQL, the chunks on TimescaleDB."""
    backend = conn.execute("SELECT value FROM system_info WHERE key = 'backend'").fetchone()
    if backend is not None and backend[0] == "timescaledb":
        ranges = [(low, high) for low, high in conn.execute(_CHUNK_RANGES)]
    else:
        ranges = []
        for name, low, high in conn.execute(_PARTITION_RANGES):
            if low is None:
                raise SliceError(f"partition {name} of readings is not a time range")
            ranges.append((low, high))
    ranges.sort()
    for (_, high), (low, _) in itertools.pairwise(ranges):
        if low < high:
            raise SliceError(f"time ranges of readings overlap at {low.isoformat()}")
    return ranges


@dataclass
class _Block:
    """One slice's part of the spill: its series' index entries (sorted by key) in the
    index file; in the data file, the times of all its series in that order, then their
    values."""

    index_offset: int
    entries: int
    data_offset: int
    rows: int


class _BlockCursor:
    """Walks one block's series in key order, reading its index a few entries at a time."""

    def __init__(self, index_fd: int, block: _Block) -> None:
        self._fd = index_fd
        self._next_entry_offset = block.index_offset
        self._left = block.entries
        self._entries = np.empty(0, dtype=_INDEX_ENTRY)
        self._position = 0
        self._data_offset = block.data_offset
        self._rows = block.rows
        self._done = 0

    def take(self, key: int) -> tuple[int, int, int] | None:
        """(offset of the times, offset of the values, count) of series `key` in this
        block if it comes next, else None."""
        if self._position == len(self._entries):
            if not self._left:
                return None
            take = min(self._left, _CURSOR_ENTRIES)
            raw = os.pread(self._fd, take * _INDEX_ENTRY.itemsize, self._next_entry_offset)
            self._entries = np.frombuffer(raw, dtype=_INDEX_ENTRY)
            self._next_entry_offset += len(raw)
            self._left -= take
            self._position = 0
        entry = self._entries[self._position]
        if entry["key"] != key:
            return None
        self._position += 1
        count = int(entry["count"])
        times = self._data_offset + 8 * self._done
        self._done += count
        return times, times + 8 * self._rows, count


class ReadingSpill:
    """Reads the readings of `sensors` (database ids, in archive order) into a temporary
    spill, then yields them by series: `series()` gives (sensor position, metric id,
    times in µs since the Unix epoch, values) with each series' chunks in time order,
    sensors in the given order and each sensor's metrics in `metric_order`."""

    def __init__(
        self,
        sensors: list[int],
        metric_order: list[int],
        directory: Path | None = None,
        sensors_per_slice: int | None = None,
    ) -> None:
        per_slice = sensors_per_slice or SENSORS_PER_SLICE
        self._sensors = sensors
        self._position = {sensor: i for i, sensor in enumerate(sensors)}
        self._rank = {metric: i for i, metric in enumerate(metric_order)}
        self._metric_order = metric_order
        self._groups = [
            sensors[start : start + per_slice] for start in range(0, len(sensors), per_slice)
        ]
        # Per sensor group: its blocks in time order and the series keys seen.
        self._blocks: list[list[_Block]] = [[] for _ in self._groups]
        self._keys: list[set[int]] = [set() for _ in self._groups]
        # Closed by `close` (the spill lives as long as the export that uses it).
        self._data = tempfile.TemporaryFile(dir=directory, prefix="kommune-iot-export-")  # noqa: SIM115
        self._index = tempfile.TemporaryFile(dir=directory, prefix="kommune-iot-export-")  # noqa: SIM115
        self._data_size = 0
        self._index_size = 0

    def close(self) -> None:
        self._data.close()
        self._index.close()

    def __enter__(self) -> ReadingSpill:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _key(self, sensor_id: int, metric_id: int) -> int:
        return self._position[sensor_id] * len(self._rank) + self._rank[metric_id]

    def read(self, conn: psycopg.Connection, slices: list[tuple[datetime, datetime]]) -> None:
        """Read every slice of every sensor group from `conn` into the spill."""
        with conn.cursor() as cur:
            for low, high in slices:
                for group, sensors in enumerate(self._groups):
                    series = []
                    with cur.copy(_SLICE, (low, high, sensors)) as copy:
                        for sensor, metric, times, values in _binary_rows(iter(copy)):
                            key = self._key(
                                int.from_bytes(sensor, "big", signed=True),
                                int.from_bytes(metric, "big", signed=True),
                            )
                            series.append((key, _array(times, _TIMES), _array(values, _VALUES)))
                    if series:
                        self._append_block(group, series)

    def _append_block(self, group: int, series: list[tuple[int, np.ndarray, np.ndarray]]) -> None:
        series.sort(key=lambda item: item[0])
        counts = np.fromiter((len(times) for _, times, _ in series), np.int64, len(series))
        times = np.concatenate([times for _, times, _ in series]).astype(np.int64)
        values = np.concatenate([values for _, _, values in series]).astype(np.float64)
        ends = np.cumsum(counts)
        starts = ends - counts
        # A series stored out of time order (late data; TimescaleDB's compressed chunks
        # hand rows back newest first) is sorted; a fall where a series starts is none.
        falls = np.flatnonzero(np.diff(times) < 0) + 1
        falls = falls[~np.isin(falls, starts)]
        for i in np.unique(np.searchsorted(ends, falls, side="right")):
            part = slice(starts[i], ends[i])
            order = np.argsort(times[part], kind="stable")
            times[part], values[part] = times[part][order], values[part][order]
        times += _PG_EPOCH_US
        index = np.empty(len(series), dtype=_INDEX_ENTRY)
        index["key"] = [key for key, _, _ in series]
        index["count"] = counts
        # The block's times, then its values.
        block = _Block(self._index_size, len(series), self._data_size, len(times))
        self._data.write(times.tobytes())
        self._data.write(values.tobytes())
        self._data_size += 16 * len(times)
        self._index.write(index.tobytes())
        self._index_size += index.nbytes
        self._blocks[group].append(block)
        self._keys[group].update(index["key"].tolist())

    def series(self) -> Iterator[tuple[int, int, np.ndarray, np.ndarray]]:
        self._data.flush()
        self._index.flush()
        data_fd, index_fd = self._data.fileno(), self._index.fileno()
        metrics = len(self._rank)
        for blocks, keys in zip(self._blocks, self._keys, strict=True):
            cursors = [_BlockCursor(index_fd, block) for block in blocks]
            for key in sorted(keys):
                position, rank = divmod(key, metrics)
                metric = self._metric_order[rank]
                for cursor in cursors:
                    found = cursor.take(key)
                    if found is None:
                        continue
                    times, values, count = found
                    yield (
                        position,
                        metric,
                        np.frombuffer(os.pread(data_fd, 8 * count, times), dtype=np.int64),
                        np.frombuffer(os.pread(data_fd, 8 * count, values), dtype=np.float64),
                    )


def _skip_header(data: bytes) -> bytes:
    if data[:11] != _COPY_SIGNATURE:
        raise ValueError("not a binary COPY stream")
    extension = int.from_bytes(data[15:19], "big")
    return data[_COPY_HEADER_SIZE + extension :]


def _binary_rows(chunks: Iterator[bytes]) -> Iterator[list[bytes]]:
    """The rows (lists of field bytes) of a binary COPY stream whose fields are never
    NULL, however the stream is cut into chunks."""
    buffer = b""
    header_done = ended = False
    for chunk in chunks:
        if ended:
            continue  # drain the stream: the connection is busy until COPY ends
        buffer += bytes(chunk)
        if not header_done:
            if len(buffer) < _COPY_HEADER_SIZE:
                continue
            buffer = _skip_header(buffer)
            header_done = True
        position = 0
        while True:
            row, end = _one_row(buffer, position)
            if row is None:
                break
            if row == []:
                ended = True
                break
            yield row
            position = end
        buffer = buffer[position:]


def _one_row(buffer: bytes, position: int) -> tuple[list[bytes] | None, int]:
    """The row at `position` and the position after it; (None, position) when the buffer
    holds only part of it; ([], ...) at the trailer."""
    if len(buffer) < position + 2:
        return None, position
    fields = int.from_bytes(buffer[position : position + 2], "big", signed=True)
    if fields == -1:
        return [], position + 2
    cursor = position + 2
    row = []
    for _ in range(fields):
        if len(buffer) < cursor + 4:
            return None, position
        length = int.from_bytes(buffer[cursor : cursor + 4], "big", signed=True)
        cursor += 4
        if len(buffer) < cursor + length:
            return None, position
        row.append(buffer[cursor : cursor + length])
        cursor += length
    return row, cursor


def _array(data: bytes, element: np.dtype) -> np.ndarray:
    """The elements of a one-dimensional binary array without NULLs."""
    dimensions = int.from_bytes(data[0:4], "big")
    if dimensions == 0:
        return np.empty(0, dtype=element["value"])
    size = int.from_bytes(data[12:16], "big")
    return np.frombuffer(data, dtype=element, count=size, offset=20)["value"]
