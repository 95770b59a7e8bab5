"""The COPY statements behind the streamed exports: one row per reading, built in SQL.

Everything is formatted by PostgreSQL and sent with ``COPY (SELECT ...) TO STDOUT``, the
fastest way out of the server. JSON rows go through COPY's CSV mode with a delimiter and
quote byte that JSON text never contains (PostgreSQL escapes control characters in JSON
strings), so each JSON document arrives unchanged, one per line.

Rows come in storage order (day partition by day partition, so roughly by time) and are
not sorted: sorting a month of a municipality would cost more than the export itself, and
leaving the join free lets PostgreSQL pick a hash join over the range's partitions for a
large municipality or index probes for a small one.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from psycopg import AsyncConnection, sql

ExportFormat = Literal["csv", "jsonl", "geojson"]

CSV_HEADER = ("time", "sensor_id", "sensor_name", "kind", "metric", "unit", "value", "lat", "lon")

# time as ISO 8601 (the session runs in UTC): "2026-03-01T00:00:00+00:00"
_ISO_TIME = "(to_json(r.time) #>> '{}')"
_METRIC_NAME = "(%(metric_names)s::text[])[r.metric_id]"
# Sensor names are typed by staff. A spreadsheet opening the CSV would run a cell that
# starts with = + - @ (or a tab or carriage return before one) as a formula: such a name
# gets a leading apostrophe, which spreadsheets show as text (OWASP "CSV injection").
_CSV_SAFE_NAME = (
    r"CASE WHEN r.sensor_name ~ '^[=+@\t\r-]' THEN '''' || r.sensor_name ELSE r.sensor_name END"
)
_METRIC_UNIT = "(%(metric_units)s::text[])[r.metric_id]"

_SELECT_LIST: dict[str, str] = {
    "csv": f"{_ISO_TIME}, r.sensor_id, {_CSV_SAFE_NAME}, r.kind, {_METRIC_NAME}, {_METRIC_UNIT}, "
    "r.value, r.lat, r.lon",
    "jsonl": "json_build_object('time', r.time, 'sensor_id', r.sensor_id, 'kind', r.kind, "
    f"'metric', {_METRIC_NAME}, 'unit', {_METRIC_UNIT}, 'value', r.value)::text",
    "geojson": "json_build_object('type', 'Feature', 'geometry', "
    "CASE WHEN r.lat IS NULL OR r.lon IS NULL THEN NULL ELSE json_build_object("
    "'type', 'Point', 'coordinates', json_build_array(r.lon, r.lat)) END, "
    "'properties', json_build_object('time', r.time, 'sensor_id', r.sensor_id, 'kind', r.kind, "
    f"'metric', {_METRIC_NAME}, 'unit', {_METRIC_UNIT}, 'value', r.value))::text",
}

_COPY_OPTIONS: dict[str, str] = {
    "csv": "FORMAT csv, HEADER false",
    # \x02 and \x01 never occur in JSON text: one JSON document per line, unquoted.
    "jsonl": "FORMAT csv, DELIMITER E'\\x02', QUOTE E'\\x01'",
    "geojson": "FORMAT csv, DELIMITER E'\\x02', QUOTE E'\\x01'",
}

_COPY = """
COPY (
    SELECT {select_list}
    FROM published_readings r
    WHERE r.municipality_id = %(municipality_id)s
      AND (%(kind)s::text IS NULL OR r.kind = %(kind)s)
      AND r.time >= %(start)s AND r.time < %(end)s
      AND (%(metric_id)s::smallint IS NULL OR r.metric_id = %(metric_id)s)
) TO STDOUT WITH ({options})
"""


def copy_statement(fmt: ExportFormat) -> sql.Composed:
    """The COPY statement for `fmt`; parameters as in `copy_params`."""
    return sql.SQL(_COPY).format(
        select_list=sql.SQL(_SELECT_LIST[fmt]),
        options=sql.SQL(_COPY_OPTIONS[fmt]),
    )


async def metric_vocabulary(conn: AsyncConnection) -> tuple[list[str | None], list[str | None]]:
    """Metric names and units as arrays indexed by metric id (1-based, like SQL arrays)."""
    cur = await conn.execute("SELECT id, name, unit FROM metrics ORDER BY id")
    rows = await cur.fetchall()
    size = max((row[0] for row in rows), default=0)
    names: list[str | None] = [None] * size
    units: list[str | None] = [None] * size
    for metric_id, name, unit in rows:
        names[metric_id - 1] = name
        units[metric_id - 1] = unit
    return names, units


def copy_params(
    *,
    municipality_id: int,
    kind: str | None,
    metric_id: int | None,
    start: datetime,
    end: datetime,
    metric_names: list[str | None],
    metric_units: list[str | None],
) -> dict[str, object]:
    """Parameters of `copy_statement` (bound client-side: COPY takes no server parameters)."""
    return {
        "municipality_id": municipality_id,
        "kind": kind,
        "metric_id": metric_id,
        "start": start,
        "end": end,
        "metric_names": metric_names,
        "metric_units": metric_units,
    }
