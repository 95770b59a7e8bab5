"""Export a whole municipality to one portable archive (tenancy/archive.py).

The archive holds the municipality's metadata as JSON (one file per table of
`inventory.EXPORTED`), its readings and dead letters as Parquet, and a manifest with the
format and schema versions, counts and SHA-256 checksums. Everything is read in one
REPEATABLE READ snapshot, so the parts agree with each other.

Database ids never leave: each table's rows are renumbered 1, 2, ... in id order and
every reference follows, so the archive means the same in any database and an import
followed by an export gives the same bytes (apart from ``exported_at``). API keys,
sign-in secrets and the columns of `inventory.Exported.omit` (webhook secrets) are never
exported.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from tenancy import inventory
from tenancy.archive import FORMAT, FORMAT_VERSION, ArchiveWriter
from tenancy.parquet_tables import export_dead_letters, export_readings
from tenancy.reading_spill import SliceError


class ExportError(ValueError):
    """The municipality cannot be exported; the message says why."""


@dataclass(frozen=True)
class ExportResult:
    path: Path
    counts: dict[str, int]
    manifest: dict[str, Any]


# Alert subjects name database ids ("sensor:42"); they are renumbered like the ids.
_SUBJECT = re.compile(r"^(sensor|zone|site):(\d+)$")
SUBJECT_TABLES = {"sensor": "sensors", "zone": "zones", "site": "sites"}


def rewrite_subject(subject: str, id_maps: dict[str, dict[int, int]]) -> str:
    """`subject` with the id it names mapped through `id_maps` (unchanged otherwise)."""
    match = _SUBJECT.match(subject)
    if not match:
        return subject
    mapped = id_maps.get(SUBJECT_TABLES[match[1]], {}).get(int(match[2]))
    return f"{match[1]}:{mapped}" if mapped is not None else subject


def schema_revision(conn: psycopg.Connection) -> str | None:
    row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    return row[0] if row else None


def export_municipality(conn: psycopg.Connection, slug: str, out: Path) -> ExportResult:
    """Write municipality `slug`'s archive to `out` (replaced if it exists).

    Raises ExportError when the municipality does not exist or the database has tenant
    tables the archive format does not account for."""
    unaccounted = inventory.unaccounted_tables(conn)
    if unaccounted:
        raise ExportError(
            f"table(s) {', '.join(unaccounted)} hold municipality data that the tenant "
            "archive does not cover; add them to tenancy/inventory.py (exported or excluded)"
        )
    out = Path(out)
    tmp = out.with_name(out.name + ".partial")
    writer = ArchiveWriter(tmp)
    try:
        with conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            conn.execute("SET LOCAL TimeZone = 'UTC'")
            row = conn.execute("SELECT id FROM municipalities WHERE slug = %s", (slug,)).fetchone()
            if row is None:
                raise ExportError(f"no municipality with slug {slug!r}")
            manifest = _write(conn, writer, row[0], slug, out.parent)
    except BaseException:
        writer.abort()
        tmp.unlink(missing_ok=True)
        raise
    manifest = writer.close(manifest)
    tmp.replace(out)
    return ExportResult(out, manifest["counts"], manifest)


def _write(
    conn: psycopg.Connection,
    writer: ArchiveWriter,
    municipality_id: int,
    slug: str,
    spill_directory: Path,
) -> dict[str, Any]:
    id_maps: dict[str, dict[int, int]] = {}
    counts: dict[str, int] = {}
    for table, spec in inventory.EXPORTED.items():
        rows = _rows(conn, table, spec, municipality_id)
        if spec.has_id and table != inventory.MUNICIPALITY:
            id_maps[table] = {row["id"]: i for i, row in enumerate(rows, start=1)}
        renumbered = [_renumber(table, spec, row, id_maps) for row in rows]
        value: Any = renumbered[0] if table == inventory.MUNICIPALITY else renumbered
        writer.write_json(spec.entry, value, len(renumbered))
        counts[table] = len(renumbered)

    metric_names = dict(conn.execute("SELECT id, name FROM metrics").fetchall())
    sensors = sorted(id_maps["sensors"].items(), key=lambda item: item[1])
    raw, sink = writer.open_entry(inventory.PARQUET["readings"], stored=True)
    # The readings' spill goes beside the archive, where there is room for the archive.
    try:
        counts["readings"], metrics_used = export_readings(
            conn, sink, sensors, metric_names, spill_directory
        )
    except SliceError as exc:
        raise ExportError(str(exc)) from None
    writer.finish_entry(inventory.PARQUET["readings"], raw, sink, counts["readings"])

    raw, sink = writer.open_entry(inventory.PARQUET["dead_letters"], stored=True)
    counts["dead_letters"] = export_dead_letters(conn, sink, municipality_id)
    writer.finish_entry(inventory.PARQUET["dead_letters"], raw, sink, counts["dead_letters"])

    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "schema_revision": schema_revision(conn),
        "exported_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "municipality": slug,
        "counts": counts,
        "metrics": sorted(metrics_used),
        "excluded": dict(sorted(inventory.EXCLUDED.items())),
    }


def _rows(
    conn: psycopg.Connection, table: str, spec: inventory.Exported, municipality_id: int
) -> list[dict[str, Any]]:
    query = sql.SQL("SELECT to_jsonb(t) - %(omit)s::text[] FROM {} t WHERE {} ORDER BY {}").format(
        sql.Identifier(table), sql.SQL(spec.filter), sql.SQL(spec.order)
    )
    return [r[0] for r in conn.execute(query, {"m": municipality_id, "omit": list(spec.omit)})]


def renumber_id_array(table: str, row: dict[str, Any], id_maps: dict[str, dict[int, int]]) -> None:
    """Map the ids of `table`'s id-array column (`inventory.SENSOR_ID_ARRAYS`) in place;
    an id that is not the municipality's own sensor is left out (it could not name one on
    another instance)."""
    column = inventory.SENSOR_ID_ARRAYS.get(table)
    if column is None or row.get(column) is None:
        return
    sensors = id_maps["sensors"]
    row[column] = [sensors[i] for i in row[column] if i in sensors]


def _renumber(
    table: str,
    spec: inventory.Exported,
    row: dict[str, Any],
    id_maps: dict[str, dict[int, int]],
) -> dict[str, Any]:
    own = row.get("municipality_id") is not None
    row = {k: v for k, v in row.items() if k != "municipality_id"}
    if table == inventory.MUNICIPALITY:
        row.pop("id", None)
        return row
    if spec.shared_key:
        row[inventory.OWN] = own
    if spec.has_id:
        row["id"] = id_maps[table][row["id"]]
    for column, target in spec.refs.items():
        if row.get(column) is not None:
            row[column] = id_maps[target][row[column]]
    if table == "alerts":
        row["subject"] = rewrite_subject(row["subject"], id_maps)
    renumber_id_array(table, row, id_maps)
    return row
