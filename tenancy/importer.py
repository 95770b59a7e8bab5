"""Import a tenant archive (tenancy/export.py) into this instance, all or nothing.

Every id is allocated anew and every reference follows. Before anything is written the
archive's checksums are verified and every conflict with what this instance holds is
collected (the municipality's slug or kommune code, a DevEUI, a network-server
application, a dead letter already stored); if there is any, nothing is written and
`ImportConflictError` lists them all. The writes then run in one transaction.

Derived data is rebuilt: ``latest_readings`` from the imported readings, and the hours
they cover are marked for the rollups, which the maintenance job recomputes.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from psycopg import sql
from psycopg.types.json import Json

from models.partitions import create_partitions
from tenancy import inventory
from tenancy.archive import ArchiveError, ArchiveReader
from tenancy.export import renumber_id_array, rewrite_subject
from tenancy.parquet_tables import (
    DEAD_LETTERS_SCHEMA,
    import_readings,
    read_dead_letters,
    reading_days,
)


class ImportConflictError(ValueError):
    """The archive collides with this instance's data; `conflicts` says where."""

    def __init__(self, conflicts: list[str]) -> None:
        super().__init__(f"{len(conflicts)} conflict(s); nothing was imported")
        self.conflicts = conflicts


@dataclass
class ImportResult:
    municipality_id: int
    slug: str
    counts: dict[str, int] = field(default_factory=dict)


def import_archive(conn: psycopg.Connection, path: Path) -> ImportResult:
    """Import the archive at `path` through the autocommit connection `conn`.

    Raises ArchiveError (unreadable, altered, other format), ImportConflictError
    (collisions; nothing written)."""
    reader = ArchiveReader(Path(path))
    try:
        reader.verify()
        with tempfile.TemporaryDirectory(prefix="kommune-iot-import-") as scratch:
            return _import(conn, reader, Path(scratch))
    except psycopg.errors.UniqueViolation as exc:
        # Written meanwhile by someone else (checked a moment before): rolled back whole.
        detail = exc.diag.message_detail or str(exc)
        raise ImportConflictError([f"stored here while importing: {detail}"]) from None
    finally:
        reader.close()


def _import(conn: psycopg.Connection, reader: ArchiveReader, scratch: Path) -> ImportResult:
    tables = {t: _load(reader, spec) for t, spec in inventory.EXPORTED.items()}
    municipality = tables[inventory.MUNICIPALITY]
    if not isinstance(municipality, dict) or "slug" not in municipality:
        raise ArchiveError("metadata/municipality.json does not describe a municipality")
    for entry in inventory.PARQUET.values():
        if not reader.has(entry):
            raise ArchiveError(f"the archive has no {entry}")
    readings_file = reader.extract(inventory.PARQUET["readings"], scratch)
    letters_file = reader.extract(inventory.PARQUET["dead_letters"], scratch)
    metric_ids = dict(conn.execute("SELECT name, id FROM metrics").fetchall())

    conflicts = _conflicts(conn, tables, reader.manifest, metric_ids, letters_file)
    if conflicts:
        raise ImportConflictError(conflicts)
    _create_partitions(conn, readings_file)

    result = ImportResult(0, municipality["slug"])
    with conn.transaction():
        conn.execute("SET LOCAL TimeZone = 'UTC'")
        # Another import of the same archive racing this one meets the unique keys.
        id_maps: dict[str, dict[int, int]] = {}
        for table, spec in inventory.EXPORTED.items():
            rows = tables[table]
            if table == inventory.MUNICIPALITY:
                result.municipality_id = _insert_municipality(conn, rows)
                result.counts[table] = 1
                continue
            result.counts[table] = _insert(conn, table, spec, rows, result.municipality_id, id_maps)
        sensor_ids = np.zeros(len(id_maps["sensors"]) + 1, dtype=np.int64)
        for archive_id, new_id in id_maps["sensors"].items():
            sensor_ids[archive_id] = new_id
        result.counts["readings"] = import_readings(conn, readings_file, sensor_ids, metric_ids)
        result.counts["dead_letters"] = _insert_dead_letters(
            conn, letters_file, result.municipality_id
        )
        new_sensors = list(id_maps["sensors"].values())
        result.counts["latest_readings"] = _rebuild_latest(conn, new_sensors)
        _mark_rollup_hours(conn, new_sensors)
    return result


def _load(reader: ArchiveReader, spec: inventory.Exported) -> Any:
    if not reader.has(spec.entry):
        raise ArchiveError(f"the archive has no {spec.entry}")
    return reader.read_json(spec.entry)


def _conflicts(
    conn: psycopg.Connection,
    tables: dict[str, Any],
    manifest: dict[str, Any],
    metric_ids: dict[str, int],
    letters_file: Path,
) -> list[str]:
    found: list[str] = []
    municipality = tables[inventory.MUNICIPALITY]
    if conn.execute(
        "SELECT 1 FROM municipalities WHERE slug = %s", (municipality["slug"],)
    ).fetchone():
        found.append(f"municipality slug {municipality['slug']!r} already exists")
    code = municipality.get("kommune_code")
    if (
        code
        and conn.execute("SELECT 1 FROM municipalities WHERE kommune_code = %s", (code,)).fetchone()
    ):
        found.append(f"kommune code {code} already belongs to a municipality here")
    dev_euis = [s["dev_eui"] for s in tables["sensors"] if s.get("dev_eui")]
    for (dev_eui,) in conn.execute(
        "SELECT dev_eui FROM sensors WHERE dev_eui = ANY(%s) ORDER BY dev_eui", (dev_euis,)
    ):
        found.append(f"DevEUI {dev_eui} is already registered here")
    apps = tables["network_applications"]
    for network, application_id in conn.execute(
        "SELECT network, application_id FROM network_applications "
        "WHERE (network, application_id) IN (SELECT * FROM unnest(%s::text[], %s::text[])) "
        "ORDER BY 1, 2",
        ([a["network"] for a in apps], [a["application_id"] for a in apps]),
    ):
        found.append(f"{network} application {application_id} is already mapped here")
    repeats = tables["dead_letter_repeats"]
    for key, reason, hour in conn.execute(
        "SELECT key, reason, hour FROM dead_letter_repeats WHERE (key, reason, hour) IN "
        "(SELECT * FROM unnest(%s::text[], %s::text[], %s::timestamptz[])) ORDER BY 3, 1, 2",
        (
            [r["key"] for r in repeats],
            [r["reason"] for r in repeats],
            [r["hour"] for r in repeats],
        ),
    ):
        found.append(f"dead-letter repeat count {key} / {reason} / {hour} is already stored")
    fingerprints = [
        bytes(letter["fingerprint"])
        for batch in read_dead_letters(letters_file)
        for letter in batch
        if letter["fingerprint"] is not None
    ]
    (stored_letters,) = conn.execute(
        "SELECT count(*) FROM dead_letters WHERE fingerprint = ANY(%s)", (fingerprints,)
    ).fetchone()
    if stored_letters:
        found.append(f"{stored_letters} of the archive's dead letters are already stored here")
    unknown = sorted(set(manifest.get("metrics") or []) - set(metric_ids))
    if unknown:
        found.append(f"metric(s) {', '.join(unknown)} are unknown to this instance")
    found.extend(_shadowed_models(conn, tables["device_models"]))
    for table, spec in inventory.EXPORTED.items():
        rows = tables[table]
        columns = set(rows) if isinstance(rows, dict) else {k for r in rows for k in r}
        if spec.shared_key:
            columns.discard(inventory.OWN)
        missing = sorted(columns - _columns(conn, table))
        if missing:
            found.append(
                f"{spec.entry} has column(s) {', '.join(missing)} that table {table} here "
                "lacks: upgrade this instance (kommune-iot migrate) first"
            )
    return found


def _shadowed_models(conn: psycopg.Connection, models: list[dict[str, Any]]) -> list[str]:
    """The archive's own device models named like a shared (built-in) model here, which
    an own model may not shadow (ingest/codecs/store.py): compared case-insensitively."""

    def name(vendor: str, model: str) -> tuple[str, str]:
        return " ".join(vendor.split()).casefold(), " ".join(model.split()).casefold()

    shared = {
        name(vendor, model)
        for vendor, model in conn.execute(
            "SELECT vendor, model FROM device_models WHERE municipality_id IS NULL"
        )
    }
    return [
        f"device model {m['vendor']} {m['model']} of the archive is built in here; rename "
        "it where it was exported from, export again and import that"
        for m in models
        if m.get(inventory.OWN) and name(m["vendor"], m["model"]) in shared
    ]


def _columns(conn: psycopg.Connection, table: str) -> set[str]:
    return {
        r[0]
        for r in conn.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = 'public' AND table_name = %s",
            (table,),
        )
    }


def _create_partitions(conn: psycopg.Connection, readings_file: Path) -> None:
    """Daily partitions for the readings' days (plain PostgreSQL; a no-op on TimescaleDB).
    Empty partitions are harmless, so they are made before the import's transaction."""
    span = reading_days(readings_file)
    if span is None:
        return
    first = _as_date(span[0])
    last = _as_date(span[1])
    days: list[date] = []
    day = first
    while day <= last:
        days.append(day)
        day += timedelta(days=1)
    for start in range(0, len(days), 366):
        create_partitions(conn, days[start : start + 366])


def _as_date(value: Any) -> date:
    if isinstance(value, datetime):
        return value.astimezone(UTC).date()
    return datetime.fromtimestamp(int(value) / 1e6, UTC).date()


def _insert_municipality(conn: psycopg.Connection, row: dict[str, Any]) -> int:
    columns = sorted(row)
    query = sql.SQL(
        "INSERT INTO municipalities ({cols}) SELECT {cols} FROM "
        "json_populate_record(NULL::municipalities, %s) RETURNING id"
    ).format(cols=sql.SQL(", ").join(map(sql.Identifier, columns)))
    return conn.execute(query, (Json(row),)).fetchone()[0]


def _insert(
    conn: psycopg.Connection,
    table: str,
    spec: inventory.Exported,
    rows: list[dict[str, Any]],
    municipality_id: int,
    id_maps: dict[str, dict[int, int]],
) -> int:
    if not rows:
        id_maps[table] = {}
        return 0
    if spec.shared_key:
        id_maps[table] = _match_shared(conn, table, spec, rows, municipality_id)
        return len(rows)
    target_columns = _columns(conn, table)
    if spec.has_id:
        new_ids = [
            r[0]
            for r in conn.execute(
                "SELECT nextval(pg_get_serial_sequence(%s, 'id')) FROM generate_series(1, %s)",
                (table, len(rows)),
            )
        ]
        id_maps[table] = {row["id"]: new_id for row, new_id in zip(rows, new_ids, strict=True)}
    prepared = []
    for row in rows:
        row = dict(row)
        if spec.has_id:
            row["id"] = id_maps[table][row["id"]]
        for column, target in spec.refs.items():
            if row.get(column) is not None:
                row[column] = id_maps[target][row[column]]
        if table == "alerts":
            row["subject"] = rewrite_subject(row["subject"], id_maps)
        renumber_id_array(table, row, id_maps)
        if "municipality_id" in target_columns:
            row["municipality_id"] = municipality_id
        prepared.append(row)
    columns = sorted({k for row in prepared for k in row})
    query = sql.SQL(
        "INSERT INTO {table} ({cols}) SELECT {cols} FROM json_populate_recordset(NULL::{table}, %s)"
    ).format(table=sql.Identifier(table), cols=sql.SQL(", ").join(map(sql.Identifier, columns)))
    conn.execute(query, (Json(prepared),))
    return len(prepared)


def _match_shared(
    conn: psycopg.Connection,
    table: str,
    spec: inventory.Exported,
    rows: list[dict[str, Any]],
    municipality_id: int,
) -> dict[int, int]:
    """Rows of a table of shared reference data and the municipality's own rows: a shared
    row is the existing shared row with the same natural key, or a new shared one (never
    another municipality's own row of that name); an own row is inserted as the
    municipality's."""
    mapping: dict[int, int] = {}
    key = sql.SQL(" AND ").join(
        sql.SQL("{} = %s").format(sql.Identifier(c)) for c in spec.shared_key
    )
    for row in rows:
        row = dict(row)
        found = None
        if row.pop(inventory.OWN, False):
            row["municipality_id"] = municipality_id
        else:
            values = [row[c] for c in spec.shared_key]
            found = conn.execute(
                sql.SQL("SELECT id FROM {} WHERE {} AND municipality_id IS NULL").format(
                    sql.Identifier(table), key
                ),
                values,
            ).fetchone()
        if found is None:
            columns = sorted(k for k in row if k != "id")
            found = conn.execute(
                sql.SQL(
                    "INSERT INTO {table} ({cols}) SELECT {cols} FROM "
                    "json_populate_record(NULL::{table}, %s) RETURNING id"
                ).format(
                    table=sql.Identifier(table),
                    cols=sql.SQL(", ").join(map(sql.Identifier, columns)),
                ),
                (Json(row),),
            ).fetchone()
        mapping[row["id"]] = found[0]
    return mapping


def _insert_dead_letters(conn: psycopg.Connection, path: Path, municipality_id: int) -> int:
    names = DEAD_LETTERS_SCHEMA.names
    columns = sql.SQL(", ").join(map(sql.Identifier, [*names, "municipality_id"]))
    count = 0
    copy_letters = sql.SQL("COPY dead_letters ({}) FROM STDIN").format(columns)
    with conn.cursor() as cur, cur.copy(copy_letters) as copy:
        for batch in read_dead_letters(path):
            for letter in batch:
                copy.write_row([*(letter[n] for n in names), municipality_id])
                count += 1
    return count


def _rebuild_latest(conn: psycopg.Connection, sensor_ids: list[int]) -> int:
    return conn.execute(
        "INSERT INTO latest_readings (sensor_id, metric_id, time, value) "
        "SELECT DISTINCT ON (sensor_id, metric_id) sensor_id, metric_id, time, value "
        "FROM readings WHERE sensor_id = ANY(%s) ORDER BY sensor_id, metric_id, time DESC",
        (sensor_ids,),
    ).rowcount


def _mark_rollup_hours(conn: psycopg.Connection, sensor_ids: list[int]) -> None:
    """Mark the imported hours for the rollup refresh. Plain PostgreSQL's trigger has
    marked them already; on TimescaleDB nothing else does (models/timescale.py)."""
    backend = conn.execute("SELECT value FROM system_info WHERE key = 'backend'").fetchone()
    if backend and backend[0] == "timescaledb":
        conn.execute(
            "INSERT INTO rollup_dirty_hours (bucket) SELECT DISTINCT "
            "date_trunc('hour', time, 'UTC') FROM readings WHERE sensor_id = ANY(%s)",
            (sensor_ids,),
        )
