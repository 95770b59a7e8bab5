"""Historic readings from a vendor's or an old platform's CSV/XLSX export.

A `HistoricMapping` says which columns hold what: the time (and the time zone of times
written without an offset), the sensor (its external id or DevEUI, from one or more
columns), and the values: either one column per metric ("wide", as spreadsheets often
are) or a metric column with a value column ("long"), with the units they are written in.

Every row is checked before anything is stored; `import_history` reports what would be
stored, what is stored already (a re-run stores nothing twice: readings are keyed by
sensor, metric and time) and what is refused and why, with line numbers. A dry run
reports the same and writes nothing. Values go through the metric vocabulary's plausible
ranges like live data (domain/metrics.py).
"""

from __future__ import annotations

import csv
import io
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import psycopg
from pydantic import BaseModel, Field, field_validator, model_validator

from domain.metrics import METRICS
from models.partitions import create_partitions

SENSOR_KINDS = ("climate", "bin", "parking", "other")
MAX_EXAMPLE_LINES = 10
# (unit written in the file, the metric's unit) → (factor, offset): value * factor + offset
UNIT_ALIASES = {
    "c": "°C", "degc": "°C", "°c": "°C", "celsius": "°C", "k": "K", "°f": "°F", "f": "°F",
    "%": "%", "pct": "%", "percent": "%", "0-1": "fraction", "fraction": "fraction",
    "ratio": "fraction", "ppm": "ppm", "1": "1", "count": "1", "bool": "1", "lux": "lx",
    "lx": "lx", "pa": "Pa", "hpa": "hPa", "mm": "mm", "cm": "cm", "m": "m", "v": "V",
    "mv": "mV", "db": "dB", "dbm": "dBm",
}  # fmt: skip
CONVERSIONS: dict[tuple[str, str], tuple[float, float]] = {
    ("fraction", "%"): (100.0, 0.0),
    ("K", "°C"): (1.0, -273.15),
    ("°F", "°C"): (5 / 9, -160 / 9),
    ("hPa", "Pa"): (100.0, 0.0),
    ("cm", "mm"): (10.0, 0.0),
    ("m", "mm"): (1000.0, 0.0),
    ("mV", "V"): (0.001, 0.0),
}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class MappingError(ValueError):
    """The mapping does not fit the file, or the file cannot be read; the message says how
    and `part` which ("mapping" or "file")."""

    def __init__(self, message: str, part: str = "mapping") -> None:
        super().__init__(message)
        self.part = part


def conversion(unit: str | None, metric: str) -> tuple[float, float] | None:
    """(factor, offset) from `unit` to the metric's unit; None when there is no way."""
    target = METRICS[metric].unit
    if unit is None or unit.strip() == "":
        return (1.0, 0.0)
    written = UNIT_ALIASES.get(unit.strip().lower(), unit.strip())
    if written == target or (written == "1" and target == "1"):
        return (1.0, 0.0)
    return CONVERSIONS.get((written, target))


class HistoricMapping(BaseModel):
    """Which columns of the file hold what (column names as in the header row)."""

    time: str = Field(description="column with the time of each reading")
    timezone: str = Field(
        "Europe/Copenhagen", description="IANA zone of times written without an offset"
    )
    time_format: str | None = Field(
        None, description="strptime format of the time column; ISO 8601 when not given"
    )
    sensor: list[str] = Field(
        description="column(s) naming the sensor; several are joined with '-'", min_length=1
    )
    sensor_key: Literal["external_id", "dev_eui"] = "external_id"
    metric: str | None = Field(None, description="long format: column with the metric name")
    value: str | None = Field(None, description="long format: column with the value")
    unit: str | None = Field(None, description="long format: column with the value's unit")
    metrics: dict[str, str] = Field(
        default_factory=dict,
        description="wide: value column → metric; long: name in the metric column → metric",
    )
    units: dict[str, str] = Field(
        default_factory=dict,
        description="unit of a value column (wide) or of a source metric name (long)",
    )
    filters: dict[str, list[str]] = Field(
        default_factory=dict, description="keep only rows whose column holds one of the values"
    )
    create_sensors: Literal["climate", "bin", "parking", "other"] | None = Field(
        None, description="register unknown sensors (private) with this kind instead of refusing"
    )
    sheet: str | None = Field(None, description="XLSX: the worksheet (default the first)")

    @field_validator("sensor", mode="before")
    @classmethod
    def _one_or_more(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (use an IANA name)") from None
        return value

    @model_validator(mode="after")
    def _shape(self) -> HistoricMapping:
        if (self.metric is None) != (self.value is None):
            raise ValueError("long format needs both 'metric' and 'value' columns")
        if self.metric is None and not self.metrics:
            raise ValueError("give 'metrics' (value column → metric) or 'metric' and 'value'")
        unknown = sorted(set(self.metrics.values()) - set(METRICS))
        if unknown:
            raise ValueError(f"unknown metric(s) {unknown}; known: {sorted(METRICS)}")
        if self.metric is None:
            for column, metric in self.metrics.items():
                if conversion(self.units.get(column), metric) is None:
                    raise ValueError(
                        f"column {column}: cannot convert {self.units[column]!r} to "
                        f"{metric}'s unit {METRICS[metric].unit!r}"
                    )
        return self


@dataclass
class Refusals:
    count: int = 0
    lines: list[int] = field(default_factory=list)

    def add(self, line: int) -> None:
        self.count += 1
        if len(self.lines) < MAX_EXAMPLE_LINES:
            self.lines.append(line)


@dataclass
class HistoricReport:
    """What an import did, or (dry run) would do."""

    dry_run: bool
    rows_read: int = 0
    readings: int = 0  # valid readings in the file
    stored: int = 0  # new readings (stored, or would be on a dry run)
    already_stored: int = 0
    refused: dict[str, Refusals] = field(default_factory=dict)
    unknown_sensors: dict[str, int] = field(default_factory=dict)
    created_sensors: list[str] = field(default_factory=list)
    by_metric: dict[str, int] = field(default_factory=dict)
    first_time: datetime | None = None
    last_time: datetime | None = None

    def refuse(self, reason: str, line: int) -> None:
        self.refused.setdefault(reason, Refusals()).add(line)

    def as_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "rows_read": self.rows_read,
            "readings": self.readings,
            "stored": self.stored,
            "already_stored": self.already_stored,
            "refused": {
                reason: {"count": r.count, "lines": r.lines}
                for reason, r in sorted(self.refused.items())
            },
            "unknown_sensors": dict(sorted(self.unknown_sensors.items())),
            "created_sensors": self.created_sensors,
            "by_metric": dict(sorted(self.by_metric.items())),
            "first_time": self.first_time,
            "last_time": self.last_time,
        }


def read_table(data: bytes, filename: str, sheet: str | None = None) -> tuple[list[str], Any]:
    """The header and an iterator of (line, row dict) of a CSV or XLSX file."""
    if filename.lower().endswith((".xlsx", ".xlsm")):
        return _read_xlsx(data, sheet)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("latin-1")  # older Windows exports; every byte decodes
    first = text.split("\n", 1)[0]
    delimiter = max((";", ",", "\t"), key=first.count)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = [h.strip() for h in next(reader, [])]
    except csv.Error as exc:
        raise MappingError(f"not a readable CSV file ({exc})", "file") from None

    def rows() -> Any:
        for values in reader:
            if not any(v.strip() for v in values):
                continue
            yield reader.line_num, dict(zip(header, values, strict=False))

    return header, rows()


def _read_xlsx(data: bytes, sheet: str | None) -> tuple[list[str], Any]:
    from openpyxl import load_workbook

    try:
        workbook = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
        worksheet = workbook[sheet] if sheet else workbook.worksheets[0]
    except KeyError:
        raise MappingError(f"the workbook has no sheet {sheet!r}") from None
    except Exception as exc:  # openpyxl raises many kinds for a file that is no workbook
        raise MappingError(f"not a readable XLSX workbook ({type(exc).__name__})", "file") from None
    cells = worksheet.iter_rows(values_only=True)
    header = [str(h).strip() if h is not None else "" for h in next(cells, ())]

    def rows() -> Any:
        for line, values in enumerate(cells, start=2):
            if all(v is None or str(v).strip() == "" for v in values):
                continue
            yield line, dict(zip(header, values, strict=False))

    return header, rows()


@dataclass
class _Parsed:
    lines: list[int] = field(default_factory=list)
    sensors: list[str] = field(default_factory=list)
    metrics: list[str] = field(default_factory=list)
    micros: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)


def _time(raw: Any, mapping: HistoricMapping, zone: ZoneInfo) -> datetime | None:
    if isinstance(raw, datetime):
        moment = raw
    else:
        text = str(raw or "").strip()
        if not text:
            return None
        try:
            if mapping.time_format:
                moment = datetime.strptime(text, mapping.time_format)
            else:
                moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return None
    if moment.tzinfo is None:
        # fold=0: an ambiguous local time (the autumn DST change) is the first of the two
        moment = moment.replace(tzinfo=zone)
    return moment.astimezone(UTC)


def _number(raw: Any) -> float | None:
    if isinstance(raw, bool):
        return float(raw)
    if isinstance(raw, int | float):
        return float(raw)
    text = str(raw).strip().replace(",", ".") if raw is not None else ""
    lowered = text.lower()
    if lowered in ("true", "false"):
        return 1.0 if lowered == "true" else 0.0
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _parse(
    header: list[str], rows: Any, mapping: HistoricMapping, report: HistoricReport
) -> _Parsed:
    needed = [mapping.time, *mapping.sensor, *mapping.filters]
    if mapping.metric:
        needed += [mapping.metric, mapping.value or ""] + ([mapping.unit] if mapping.unit else [])
    else:
        needed += list(mapping.metrics)
    missing = [c for c in needed if c not in header]
    if missing:
        raise MappingError(f"column(s) {missing} are not in the file; its columns: {header}")
    zone = ZoneInfo(mapping.timezone)
    parsed = _Parsed()
    try:
        _parse_rows(rows, mapping, zone, report, parsed)
    except csv.Error as exc:
        raise MappingError(
            f"not a readable CSV after row {report.rows_read} ({exc})", "file"
        ) from None
    return parsed


def _parse_rows(
    rows: Any, mapping: HistoricMapping, zone: ZoneInfo, report: HistoricReport, parsed: _Parsed
) -> None:
    for line, row in rows:
        report.rows_read += 1
        if any(str(row.get(c) or "").strip() not in keep for c, keep in mapping.filters.items()):
            report.rows_read -= 1
            continue
        moment = _time(row.get(mapping.time), mapping, zone)
        if moment is None:
            report.refuse("time missing or not readable", line)
            continue
        sensor = "-".join(str(row.get(c) or "").strip() for c in mapping.sensor)
        if not sensor.strip("-"):
            report.refuse("sensor missing", line)
            continue
        if mapping.sensor_key == "dev_eui":
            sensor = sensor.lower()
        micros = (moment - _EPOCH) // timedelta(microseconds=1)
        for metric, raw, unit in _values(row, mapping):
            if metric is None:
                report.refuse(f"metric {raw!r} not in the mapping or the vocabulary", line)
                continue
            if raw is None or str(raw).strip() == "":
                continue  # an empty cell is no reading
            value = _number(raw)
            if value is None:
                report.refuse("value is not a number", line)
                continue
            convert = conversion(unit, metric)
            if convert is None:
                report.refuse(f"unit {unit!r} cannot be converted to {metric}", line)
                continue
            value = value * convert[0] + convert[1]
            if not METRICS[metric].accepts(value):
                report.refuse(f"{metric} outside its plausible range", line)
                continue
            parsed.lines.append(line)
            parsed.sensors.append(sensor)
            parsed.metrics.append(metric)
            parsed.micros.append(micros)
            parsed.values.append(value)


def _values(row: dict[str, Any], mapping: HistoricMapping) -> Any:
    """(metric or None, raw value, unit) of each value in the row."""
    if mapping.metric is None:
        for column, metric in mapping.metrics.items():
            yield metric, row.get(column), mapping.units.get(column)
        return
    source = str(row.get(mapping.metric) or "").strip()
    metric = mapping.metrics.get(source) or (source if source in METRICS else None)
    unit = row.get(mapping.unit) if mapping.unit else mapping.units.get(source)
    yield metric, (row.get(mapping.value) if metric else source), unit


def import_history(
    conn: psycopg.Connection,
    municipality_id: int,
    data: bytes,
    filename: str,
    mapping: HistoricMapping,
    dry_run: bool,
    on_stored: Callable[[psycopg.Connection, HistoricReport], None] | None = None,
) -> HistoricReport:
    """Import (or, `dry_run`, check) the readings of a CSV/XLSX file for the
    municipality's sensors through the autocommit connection `conn`. `on_stored` runs
    in the import's transaction once readings were stored (the staff route records the
    import in the audit trail there, so the record and the readings commit together)."""
    report = HistoricReport(dry_run=dry_run)
    header, rows = read_table(data, filename, mapping.sheet)
    parsed = _parse(header, rows, mapping, report)

    with conn.transaction(force_rollback=dry_run):
        sensor_ids = _sensor_ids(conn, municipality_id, mapping, set(parsed.sensors), report)
        keep = _deduplicate(parsed, sensor_ids, report)
        if not keep:
            return report
        metric_ids = dict(conn.execute("SELECT name, id FROM metrics").fetchall())
        micros = np.array([parsed.micros[i] for i in keep], dtype=np.int64)
        ids = np.array([sensor_ids[parsed.sensors[i]] for i in keep], dtype=np.int64)
        metric_column = np.array([metric_ids[parsed.metrics[i]] for i in keep], dtype=np.int16)
        values = np.array([parsed.values[i] for i in keep], dtype=np.float64)
        report.readings = len(keep)
        report.by_metric = dict(Counter(parsed.metrics[i] for i in keep))
        report.first_time = _EPOCH + timedelta(microseconds=int(micros.min()))
        report.last_time = _EPOCH + timedelta(microseconds=int(micros.max()))
        if not dry_run:
            _create_partitions(conn, micros)
        report.stored, report.already_stored = _store(
            conn, micros, ids, metric_column, values, dry_run
        )
        if on_stored is not None and not dry_run:
            on_stored(conn, report)
    return report


def _sensor_ids(
    conn: psycopg.Connection,
    municipality_id: int,
    mapping: HistoricMapping,
    keys: set[str],
    report: HistoricReport,
) -> dict[str, int]:
    column = "dev_eui" if mapping.sensor_key == "dev_eui" else "external_id"
    found = dict(
        conn.execute(
            f"SELECT {column}, id FROM sensors WHERE municipality_id = %s AND {column} = ANY(%s)",  # noqa: S608 (one of two column names)
            (municipality_id, sorted(keys)),
        ).fetchall()
    )
    missing = sorted(keys - set(found))
    if missing and mapping.create_sensors and mapping.sensor_key == "external_id":
        for key in missing:
            found[key] = conn.execute(
                "INSERT INTO sensors (municipality_id, external_id, kind, is_public, install_meta) "
                'VALUES (%s, %s, %s, false, \'{"source": "historic import"}\') RETURNING id',
                (municipality_id, key, mapping.create_sensors),
            ).fetchone()[0]
        report.created_sensors = missing
    return found


def _deduplicate(parsed: _Parsed, sensor_ids: dict[str, int], report: HistoricReport) -> list[int]:
    """Indexes of the readings to store: known sensors, first of each (sensor, metric,
    time) in the file."""
    unknown: Counter[str] = Counter()
    seen: set[tuple[str, str, int]] = set()
    keep = []
    for i, sensor in enumerate(parsed.sensors):
        if sensor not in sensor_ids:
            unknown[sensor] += 1
            report.refuse("sensor not registered in the municipality", parsed.lines[i])
            continue
        key = (sensor, parsed.metrics[i], parsed.micros[i])
        if key in seen:
            report.refuse("same sensor, metric and time earlier in the file", parsed.lines[i])
            continue
        seen.add(key)
        keep.append(i)
    report.unknown_sensors = dict(unknown.most_common(50))
    return keep


def _create_partitions(conn: psycopg.Connection, micros: np.ndarray) -> None:
    days = np.unique(micros // 86_400_000_000)
    create_partitions(conn, [date(1970, 1, 1) + timedelta(days=int(d)) for d in days])


_COPY_ROW = np.dtype(
    [("fields", ">i2"), ("time_len", ">i4"), ("time", ">i8"), ("sensor_len", ">i4"),
     ("sensor", ">i8"), ("metric_len", ">i4"), ("metric", ">i2"), ("value_len", ">i4"),
     ("value", ">f8")]
)  # fmt: skip
_PG_EPOCH_US = 946_684_800_000_000


def _store(
    conn: psycopg.Connection,
    micros: np.ndarray,
    sensor_ids: np.ndarray,
    metric_ids: np.ndarray,
    values: np.ndarray,
    dry_run: bool,
) -> tuple[int, int]:
    """(new, already stored) readings; new ones are inserted unless `dry_run`."""
    conn.execute(
        "CREATE TEMP TABLE historic_staging (time timestamptz NOT NULL, sensor_id bigint "
        "NOT NULL, metric_id smallint NOT NULL, value double precision NOT NULL) "
        "ON COMMIT DROP"
    )
    rows = np.empty(len(micros), dtype=_COPY_ROW)
    rows["fields"] = 4
    rows["time_len"], rows["sensor_len"], rows["metric_len"], rows["value_len"] = 8, 8, 2, 8
    rows["time"] = micros - _PG_EPOCH_US
    rows["sensor"], rows["metric"], rows["value"] = sensor_ids, metric_ids, values
    with (
        conn.cursor() as cur,
        cur.copy(
            "COPY historic_staging (time, sensor_id, metric_id, value) FROM STDIN (FORMAT BINARY)"
        ) as copy,
    ):
        copy.write(b"PGCOPY\n\xff\r\n\x00" + b"\x00" * 8)
        copy.write(rows.tobytes())
        copy.write(b"\xff\xff")
    (already,) = conn.execute(
        "SELECT count(*) FROM historic_staging s JOIN readings r ON r.sensor_id = s.sensor_id "
        "AND r.metric_id = s.metric_id AND r.time = s.time"
    ).fetchone()
    new = len(micros) - already
    if dry_run or not new:
        return new, already
    inserted = conn.execute(
        "INSERT INTO readings (time, sensor_id, metric_id, value) "
        "SELECT time, sensor_id, metric_id, value FROM historic_staging ON CONFLICT DO NOTHING"
    ).rowcount
    # Newest values, where the file is newer than what ingest has seen.
    conn.execute(
        "INSERT INTO latest_readings (sensor_id, metric_id, time, value) "
        "SELECT DISTINCT ON (sensor_id, metric_id) sensor_id, metric_id, time, value "
        "FROM historic_staging ORDER BY sensor_id, metric_id, time DESC "
        "ON CONFLICT (sensor_id, metric_id) DO UPDATE SET time = EXCLUDED.time, "
        "value = EXCLUDED.value WHERE latest_readings.time < EXCLUDED.time"
    )
    backend = conn.execute("SELECT value FROM system_info WHERE key = 'backend'").fetchone()
    if backend and backend[0] == "timescaledb":
        # No trigger marks the hours on a hypertable: the rollup refresh needs them.
        conn.execute(
            "INSERT INTO rollup_dirty_hours (bucket) SELECT DISTINCT "
            "date_trunc('hour', time, 'UTC') FROM historic_staging"
        )
    return inserted, already
