"""Readings and dead letters as Parquet: streamed out of and into PostgreSQL in batches.

Readings leave the database by binary COPY, one sensor at a time, as arrays of a month
of one metric, parsed with NumPy without a Python object per reading. They come back by
binary COPY too, encoded with NumPy: every row of ``(time, sensor_id, metric_id, value)``
is 44 bytes of fixed layout (all columns NOT NULL). Memory stays bounded by
`ROW_GROUP_ROWS` and a month of one series, whatever the size of the municipality.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq

# Rows per Parquet row group, and so the most rows held in memory at once.
ROW_GROUP_ROWS = 262_144
_COPY_HEADER_SIZE = 19  # signature (11), flags (4), header extension length (4)
_COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
_COPY_TRAILER = b"\xff\xff"
# Microseconds from the Unix epoch to PostgreSQL's (2000-01-01 UTC).
_PG_EPOCH_US = 946_684_800_000_000

READING_ROW = np.dtype(
    [
        ("fields", ">i2"),
        ("time_len", ">i4"),
        ("time", ">i8"),
        ("sensor_len", ">i4"),
        ("sensor", ">i8"),
        ("metric_len", ">i4"),
        ("metric", ">i2"),
        ("value_len", ">i4"),
        ("value", ">f8"),
    ]
)

READINGS_SCHEMA = pa.schema(
    [
        pa.field("time", pa.timestamp("us", tz="UTC"), nullable=False),
        # The sensor's id inside the archive (metadata/sensors.json), not a database id.
        pa.field("sensor", pa.int64(), nullable=False),
        pa.field("metric", pa.string(), nullable=False),
        pa.field("value", pa.float64(), nullable=False),
    ]
)
# Columns of the readings table this format carries (tests check no column is missed).
READINGS_COLUMNS = ("time", "sensor_id", "metric_id", "value")

DEAD_LETTERS_SCHEMA = pa.schema(
    [
        pa.field("received_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("topic", pa.string(), nullable=False),
        pa.field("payload", pa.binary(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("detail", pa.string(), nullable=False),
        pa.field("device_id", pa.string()),
        pa.field("replayed_at", pa.timestamp("us", tz="UTC")),
        pa.field("payload_truncated_from", pa.int32()),
        pa.field("fingerprint", pa.binary()),
    ]
)
# Columns of dead_letters not carried: its id (renumbered) and the municipality (implied).
DEAD_LETTERS_NOT_CARRIED = ("id", "municipality_id")


def parquet_writer(sink: object, schema: pa.Schema) -> pq.ParquetWriter:
    return pq.ParquetWriter(
        sink,
        schema,
        compression="zstd",
        use_dictionary=[n for n in ("metric", "topic", "reason") if n in schema.names],
        write_statistics=True,
    )


class _RowGroups:
    """Collects tables and writes them in row groups of exactly `ROW_GROUP_ROWS` rows
    (the last one shorter), so the file's layout does not depend on how the data came."""

    def __init__(self, writer: pq.ParquetWriter) -> None:
        self._writer = writer
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self.rows = 0

    def add(self, table: pa.Table) -> None:
        self._pending.append(table)
        self._pending_rows += table.num_rows
        while self._pending_rows >= ROW_GROUP_ROWS:
            whole = pa.concat_tables(self._pending)
            self._writer.write_table(whole.slice(0, ROW_GROUP_ROWS), row_group_size=ROW_GROUP_ROWS)
            rest = whole.slice(ROW_GROUP_ROWS)
            self._pending = [rest] if rest.num_rows else []
            self._pending_rows = rest.num_rows
            self.rows += ROW_GROUP_ROWS

    def finish(self) -> None:
        if self._pending_rows:
            self._writer.write_table(pa.concat_tables(self._pending), row_group_size=ROW_GROUP_ROWS)
            self.rows += self._pending_rows
        self._pending, self._pending_rows = [], 0


def _skip_header(data: bytes) -> bytes:
    if data[:11] != _COPY_SIGNATURE:
        raise ValueError("not a binary COPY stream")
    extension = int.from_bytes(data[15:19], "big")
    return data[_COPY_HEADER_SIZE + extension :]


# One row per (metric, UTC month) of a sensor: its times and values as two arrays, in
# time order; metrics by name, which (unlike their ids) every instance shares. libpq hands
# COPY data over a row at a time: a row per reading cost Python more than everything else
# of the export, a row per month costs nothing, and a month bounds the memory one row
# takes (a reading a minute: 45,000 readings, 0.5 MB).
_SERIES = """
COPY (
    SELECT metric_id, array_agg(time ORDER BY time), array_agg(value ORDER BY time)
    FROM readings WHERE sensor_id = %s
    GROUP BY metric_id, date_trunc('month', time, 'UTC')
    ORDER BY (SELECT name FROM metrics m WHERE m.id = metric_id), min(time)
) TO STDOUT (FORMAT BINARY)
"""
_TIMES = np.dtype([("length", ">i4"), ("value", ">i8")])
_VALUES = np.dtype([("length", ">i4"), ("value", ">f8")])


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


def export_readings(
    conn: psycopg.Connection,
    sink: object,
    sensors: list[tuple[int, int]],
    metric_names: dict[int, str],
) -> tuple[int, set[str]]:
    """Write the readings of `sensors` ((database id, archive id), in archive order) to
    `sink` as Parquet, by sensor, metric name and time; returns the row count and the metric
    names met."""
    used: set[str] = set()
    writer = parquet_writer(sink, READINGS_SCHEMA)
    groups = _RowGroups(writer)
    with conn.cursor() as cur:
        for database_id, archive_id in sensors:
            with cur.copy(_SERIES, (database_id,)) as copy:
                for metric, times, values in _binary_rows(iter(copy)):
                    name = metric_names[int.from_bytes(metric, "big", signed=True)]
                    used.add(name)
                    micros = _array(times, _TIMES).astype(np.int64) + _PG_EPOCH_US
                    count = len(micros)
                    groups.add(
                        pa.table(
                            [
                                pa.array(micros, pa.timestamp("us", tz="UTC")),
                                pa.array(np.full(count, archive_id, dtype=np.int64)),
                                pa.array([name], pa.string()).take(np.zeros(count, np.int32)),
                                pa.array(_array(values, _VALUES).astype(np.float64)),
                            ],
                            schema=READINGS_SCHEMA,
                        )
                    )
    groups.finish()
    writer.close()
    return groups.rows, used


def export_dead_letters(conn: psycopg.Connection, sink: object, municipality_id: int) -> int:
    """Write the municipality's dead letters, in id order, to `sink` as Parquet."""
    writer = parquet_writer(sink, DEAD_LETTERS_SCHEMA)
    groups = _RowGroups(writer)
    columns = ", ".join(DEAD_LETTERS_SCHEMA.names)
    with conn.cursor(name="tenant_dead_letters") as cur:
        cur.itersize = 5000
        cur.execute(
            f"SELECT {columns} FROM dead_letters WHERE municipality_id = %s ORDER BY id",  # noqa: S608 (a module constant)
            (municipality_id,),
        )
        while batch := cur.fetchmany(5000):
            groups.add(
                pa.Table.from_pylist(
                    [dict(zip(DEAD_LETTERS_SCHEMA.names, row, strict=True)) for row in batch],
                    schema=DEAD_LETTERS_SCHEMA,
                )
            )
    groups.finish()
    writer.close()
    return groups.rows


def reading_days(path: Path) -> tuple[np.datetime64, np.datetime64] | None:
    """The first and last time in a readings file, from its row-group statistics."""
    meta = pq.ParquetFile(path).metadata
    lows, highs = [], []
    for i in range(meta.num_row_groups):
        stats = meta.row_group(i).column(0).statistics
        if stats is None or not stats.has_min_max:
            return None
        lows.append(stats.min)
        highs.append(stats.max)
    return (min(lows), max(highs)) if lows else None


def import_readings(
    conn: psycopg.Connection,
    path: Path,
    sensor_ids: np.ndarray,
    metric_ids: dict[str, int],
    before_batch: Callable[[np.ndarray], None] | None = None,
) -> int:
    """Copy the readings of the Parquet file at `path` into ``readings``, mapping each
    archive sensor id `i` to `sensor_ids[i]` and metric names by `metric_ids`; returns
    the rows written. `before_batch` gets each batch's times (µs since the Unix epoch)
    first, to create partitions."""
    written = 0
    with conn.cursor() as cur:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=ROW_GROUP_ROWS):
            times = batch.column("time").cast(pa.int64()).to_numpy()
            archive_sensors = batch.column("sensor").to_numpy()
            if archive_sensors.min() < 1 or archive_sensors.max() >= len(sensor_ids):
                raise ValueError("a reading names a sensor missing from metadata/sensors.json")
            encoded = batch.column("metric").dictionary_encode()
            lookup = np.array(
                [metric_ids.get(name, -1) for name in encoded.dictionary.to_pylist()],
                dtype=np.int32,
            )
            if (lookup < 0).any():
                unknown = [n for n in encoded.dictionary.to_pylist() if n not in metric_ids]
                raise ValueError(f"metrics unknown to this instance: {unknown}")
            rows = np.empty(len(times), dtype=READING_ROW)
            rows["fields"] = 4
            rows["time_len"], rows["sensor_len"] = 8, 8
            rows["metric_len"], rows["value_len"] = 2, 8
            rows["time"] = times - _PG_EPOCH_US
            rows["sensor"] = sensor_ids[archive_sensors]
            rows["metric"] = lookup[encoded.indices.to_numpy()]
            rows["value"] = batch.column("value").to_numpy()
            if before_batch is not None:
                before_batch(times)
            with cur.copy(
                "COPY readings (time, sensor_id, metric_id, value) FROM STDIN (FORMAT BINARY)"
            ) as copy:
                copy.write(_COPY_SIGNATURE + b"\x00" * 8)
                copy.write(rows.tobytes())
                copy.write(_COPY_TRAILER)
            written += len(times)
    return written


def read_dead_letters(path: Path) -> Iterator[list[dict[str, object]]]:
    """The dead letters of a Parquet file, in batches of dicts."""
    for batch in pq.ParquetFile(path).iter_batches(batch_size=5000):
        yield batch.to_pylist()
