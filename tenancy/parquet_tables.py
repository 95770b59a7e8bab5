"""Readings and dead letters as Parquet: streamed out of and into PostgreSQL in batches.

Readings leave the database a time slice at a time (tenancy/reading_spill.py: binary COPY
of one array per series and slice, parsed with NumPy, transposed to sensor-major through
a temporary file) and are copied into fixed NumPy buffers of `ROW_GROUP_ROWS` rows, one
Parquet row group each, without a Python object per reading. They come back by binary
COPY too, encoded with NumPy: every row of ``(time, sensor_id, metric_id, value)`` is 44
bytes of fixed layout (all columns NOT NULL). Memory stays bounded by a row group and one
slice, however many days the municipality has.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq

from tenancy.reading_spill import ReadingSpill, time_slices

# Rows per Parquet row group, and so the most rows held in memory at once.
ROW_GROUP_ROWS = 262_144
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


class _ReadingRowGroups:
    """Copies series into fixed NumPy buffers and writes each full buffer as one row group
    of `ROW_GROUP_ROWS` rows (the last one shorter): no Python object per reading, and
    the file's layout does not depend on how the series were cut."""

    def __init__(self, writer: pq.ParquetWriter, metric_names: list[str]) -> None:
        self._writer = writer
        self._names = pa.array(metric_names, pa.string())
        self._times = np.empty(ROW_GROUP_ROWS, np.int64)
        self._sensors = np.empty(ROW_GROUP_ROWS, np.int64)
        self._metrics = np.empty(ROW_GROUP_ROWS, np.int32)
        self._values = np.empty(ROW_GROUP_ROWS, np.float64)
        self._fill = 0
        self.rows = 0

    def add(self, times: np.ndarray, sensor: int, metric: int, values: np.ndarray) -> None:
        """Append one series chunk: `times` (µs since the Unix epoch) and `values` of
        archive sensor `sensor` and metric `metric` (an index into the metric names)."""
        start = 0
        while start < len(times):
            take = min(len(times) - start, ROW_GROUP_ROWS - self._fill)
            into = slice(self._fill, self._fill + take)
            self._times[into] = times[start : start + take]
            self._sensors[into] = sensor
            self._metrics[into] = metric
            self._values[into] = values[start : start + take]
            self._fill += take
            start += take
            if self._fill == ROW_GROUP_ROWS:
                self._flush()

    def finish(self) -> None:
        if self._fill:
            self._flush()

    def _flush(self) -> None:
        rows = self._fill
        table = pa.table(
            [
                pa.array(self._times[:rows], pa.timestamp("us", tz="UTC")),
                pa.array(self._sensors[:rows]),
                self._names.take(pa.array(self._metrics[:rows])),
                pa.array(self._values[:rows]),
            ],
            schema=READINGS_SCHEMA,
        )
        # write_table is done with the buffers when it returns; they are reused.
        self._writer.write_table(table, row_group_size=ROW_GROUP_ROWS)
        self.rows += rows
        self._fill = 0


def export_readings(
    conn: psycopg.Connection,
    sink: object,
    sensors: list[tuple[int, int]],
    metric_names: dict[int, str],
    spill_directory: Path | None = None,
) -> tuple[int, set[str]]:
    """Write the readings of `sensors` ((database id, archive id), in archive order) to
    `sink` as Parquet, by sensor, metric name and time; returns the row count and the metric
    names met. Reads each time slice once and transposes through a temporary file in
    `spill_directory` (tenancy/reading_spill.py)."""
    metric_order = sorted(metric_names, key=lambda metric: metric_names[metric])
    code = {metric: i for i, metric in enumerate(metric_order)}
    archive_ids = [archive_id for _, archive_id in sensors]
    used: set[int] = set()
    slices = time_slices(conn)  # before the writer: a refusal leaves no half-open writer
    writer = parquet_writer(sink, READINGS_SCHEMA)
    groups = _ReadingRowGroups(writer, [metric_names[m] for m in metric_order])
    with ReadingSpill([db_id for db_id, _ in sensors], metric_order, spill_directory) as spill:
        spill.read(conn, slices)
        for position, metric, times, values in spill.series():
            used.add(metric)
            groups.add(times, archive_ids[position], code[metric], values)
    groups.finish()
    writer.close()
    return groups.rows, {metric_names[m] for m in used}


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
