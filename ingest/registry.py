"""The device registry: device models and the municipality's sensors.

* `sync_device_models` upserts the device models the decoders read (ingest.decoders).
* `register_sensor` registers or updates one sensor (API).
* `import_sensors_csv` registers or updates many from a CSV file, all or nothing.

Sensors are keyed by (municipality, external_id): registering the same external id
again updates the sensor, so re-uploading a corrected spreadsheet is safe. A DevEUI is
globally unique: it cannot be registered to two sensors.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from pydantic import ValidationError

from ingest.decoders import device_models
from models.schemas import (
    SensorCreate,
    SensorImportError,
    SensorImportResult,
    SensorImportRow,
    check_bin_geometry,
)

CSV_COLUMNS = (
    "dev_eui",
    "external_id",
    "name",
    "kind",
    "vendor",
    "model",
    "lat",
    "lon",
    "bin_depth_mm",
    "mount_offset_mm",
    "expected_interval_s",
    "is_public",
    "site",
    "zone",
)
MAX_CSV_ROWS = 20000
_NUMERIC_COLUMNS = ("lat", "lon", "bin_depth_mm", "mount_offset_mm", "expected_interval_s")
_TRUE = {"true", "yes", "ja", "1", "y", "j", "x"}
_FALSE = {"false", "no", "nej", "0", "n"}
# The kind a zone gets when a sensor's registration creates it.
_ZONE_KIND = {"climate": "room", "parking": "parking", "bin": "bins", "other": "other"}


class RegistryError(ValueError):
    """A sensor cannot be registered: the message says why and how to fix it."""


@dataclass(frozen=True)
class _ModelRow:
    id: int
    vendor: str
    model: str
    kind: str


def sync_device_models(conn: psycopg.Connection) -> dict[tuple[str, str], int]:
    """Upsert every device model the decoders read; returns (vendor, model) → id.

    The returned mapping covers all rows of device_models, including models registered
    earlier whose decoder module has since gone (they keep their sensors).
    """
    specs = device_models()
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(
            """
            INSERT INTO device_models (vendor, model, decoder, kind, meta)
            VALUES (%s, %s, %s, %s, %s)
            ON CONFLICT (vendor, model) DO UPDATE SET decoder = EXCLUDED.decoder,
                kind = EXCLUDED.kind, meta = EXCLUDED.meta
            """,
            [(s.vendor, s.model, s.decoder, s.kind, Jsonb(s.meta)) for s in specs],
        )
        rows = cur.execute("SELECT vendor, model, id FROM device_models").fetchall()
    return {(vendor, model): model_id for vendor, model, model_id in rows}


def register_sensor(conn: psycopg.Connection, municipality_id: int, sensor: SensorCreate) -> int:
    """Register `sensor` for the municipality, or update it if its external_id exists.

    Creates the named site and zone when missing. Returns the sensor id; raises
    RegistryError (unknown model, DevEUI taken by another sensor, unknown municipality,
    missing bin depth) without changing anything.
    """
    try:
        with conn.transaction():
            _check_municipality(conn, municipality_id)
            models = _model_index(conn, [sensor])
            sensor_id, _created = _upsert(conn, municipality_id, sensor, models)
    except psycopg.errors.UniqueViolation:
        # Another registration took the DevEUI between our check and the insert.
        raise RegistryError(f"dev_eui {sensor.dev_eui} is already registered") from None
    return sensor_id


def import_sensors_csv(
    conn: psycopg.Connection, municipality_id: int, csv_text: str
) -> SensorImportResult:
    """Register or update the sensors listed in `csv_text`, all rows or none.

    Columns (header row required, any order, only `external_id` mandatory): dev_eui,
    external_id, name, kind, vendor, model, lat, lon, bin_depth_mm, mount_offset_mm,
    expected_interval_s, is_public, site, zone. Comma- or semicolon-separated (as Excel
    writes in Danish locale, where a decimal comma is accepted too); a UTF-8 BOM is fine.

    Every row is checked before anything is written. If any row is wrong, nothing is
    stored and `errors` lists every problem with its line number, so staff can fix the
    file and upload it again; re-uploading is safe because rows update by external_id.
    """
    parsed, errors = _parse_csv(csv_text)
    if not parsed and not errors:
        return SensorImportResult(
            committed=False, errors=[SensorImportError(line=1, message="the file has no rows")]
        )
    try:
        with conn.transaction():
            _check_municipality(conn, municipality_id)
            models = _model_index(conn, [sensor for _line, sensor in parsed])
            errors = sorted(
                errors + _check_rows(conn, municipality_id, parsed, models), key=lambda e: e.line
            )
            if errors:
                raise _RejectedError(errors)
            rows: list[SensorImportRow] = []
            for line, sensor in parsed:
                sensor_id, created = _upsert(conn, municipality_id, sensor, models)
                rows.append(
                    SensorImportRow(
                        line=line,
                        external_id=sensor.external_id,
                        sensor_id=sensor_id,
                        action="created" if created else "updated",
                    )
                )
    except _RejectedError as rejected:
        return SensorImportResult(committed=False, errors=rejected.errors)
    except RegistryError as error:
        return SensorImportResult(
            committed=False, errors=[SensorImportError(line=1, message=str(error))]
        )
    except psycopg.errors.UniqueViolation:
        # A concurrent registration took one of the DevEUIs after our checks.
        message = "a dev_eui in the file was registered meanwhile; upload the file again"
        return SensorImportResult(
            committed=False, errors=[SensorImportError(line=1, message=message)]
        )
    created = sum(1 for r in rows if r.action == "created")
    return SensorImportResult(
        committed=True, created=created, updated=len(rows) - created, rows=rows
    )


class _RejectedError(Exception):
    def __init__(self, errors: list[SensorImportError]) -> None:
        super().__init__(f"{len(errors)} row(s) refused")
        self.errors = errors


def _check_municipality(conn: psycopg.Connection, municipality_id: int) -> None:
    row = conn.execute("SELECT 1 FROM municipalities WHERE id = %s", (municipality_id,)).fetchone()
    if row is None:
        raise RegistryError(f"municipality {municipality_id} does not exist")


def _model_key(vendor: str, model: str) -> tuple[str, str]:
    return (" ".join(vendor.split()).casefold(), " ".join(model.split()).casefold())


def _load_models(conn: psycopg.Connection) -> dict[tuple[str, str], _ModelRow]:
    rows = conn.execute("SELECT id, vendor, model, kind FROM device_models").fetchall()
    return {_model_key(v, m): _ModelRow(i, v, m, k) for i, v, m, k in rows}


def _model_index(
    conn: psycopg.Connection, sensors: list[SensorCreate]
) -> dict[tuple[str, str], _ModelRow]:
    """Device models by case-insensitive (vendor, model), synced from code on a miss."""
    models = _load_models(conn)
    wanted = {_model_key(s.vendor, s.model) for s in sensors if s.vendor and s.model}
    if wanted - set(models):
        sync_device_models(conn)
        models = _load_models(conn)
    return models


def _resolve(
    sensor: SensorCreate, models: dict[tuple[str, str], _ModelRow]
) -> tuple[_ModelRow | None, str]:
    """The sensor's device model and effective kind; RegistryError when they don't fit."""
    model = None
    if sensor.vendor and sensor.model:
        model = models.get(_model_key(sensor.vendor, sensor.model))
        if model is None:
            same_vendor = sorted(
                row.model for key, row in models.items() if key[0] == sensor.vendor.casefold()
            )
            hint = (
                f"known {sensor.vendor} models: {', '.join(same_vendor)}"
                if same_vendor
                else "known vendors: " + ", ".join(sorted({row.vendor for row in models.values()}))
            )
            raise RegistryError(f"unknown device model {sensor.vendor} {sensor.model} ({hint})")
    kind = sensor.kind or (model.kind if model else None)
    if kind is None:  # SensorCreate guarantees kind or model; keep the type checker honest
        raise RegistryError("give a kind or a vendor and model")
    try:
        check_bin_geometry(kind, sensor.bin_depth_mm, sensor.mount_offset_mm)
    except ValueError as error:
        raise RegistryError(str(error)) from None
    return model, kind


def _check_rows(
    conn: psycopg.Connection,
    municipality_id: int,
    parsed: list[tuple[int, SensorCreate]],
    models: dict[tuple[str, str], _ModelRow],
) -> list[SensorImportError]:
    """Problems that need the database: unknown models and DevEUIs owned elsewhere."""
    errors = []
    for line, sensor in parsed:
        try:
            _resolve(sensor, models)
        except RegistryError as error:
            errors.append(
                SensorImportError(line=line, message=str(error), external_id=sensor.external_id)
            )
    dev_euis = [s.dev_eui for _line, s in parsed if s.dev_eui]
    if dev_euis:
        owners = {
            dev_eui: (owner_municipality, external_id)
            for dev_eui, owner_municipality, external_id in conn.execute(
                "SELECT dev_eui, municipality_id, external_id FROM sensors WHERE dev_eui = ANY(%s)",
                (dev_euis,),
            ).fetchall()
        }
        for line, sensor in parsed:
            owner = owners.get(sensor.dev_eui) if sensor.dev_eui else None
            if owner is not None and owner != (municipality_id, sensor.external_id):
                errors.append(
                    SensorImportError(
                        line=line,
                        message=_dev_eui_taken(sensor.dev_eui or "", owner, municipality_id),
                        external_id=sensor.external_id,
                    )
                )
    return sorted(errors, key=lambda e: e.line)


def _dev_eui_taken(dev_eui: str, owner: tuple[int, str], municipality_id: int) -> str:
    owner_municipality, external_id = owner
    if owner_municipality == municipality_id:
        return f"dev_eui {dev_eui} is already registered to sensor {external_id}"
    # Don't reveal another municipality's sensor ids.
    return f"dev_eui {dev_eui} is already registered by another municipality"


def _site_and_zone(
    conn: psycopg.Connection, municipality_id: int, sensor: SensorCreate, kind: str
) -> tuple[int | None, int | None]:
    if sensor.site is None:
        return None, None
    conn.execute(
        "INSERT INTO sites (municipality_id, name) VALUES (%s, %s)"
        " ON CONFLICT (municipality_id, name) DO NOTHING",
        (municipality_id, sensor.site),
    )
    site_row = conn.execute(
        "SELECT id FROM sites WHERE municipality_id = %s AND name = %s",
        (municipality_id, sensor.site),
    ).fetchone()
    assert site_row is not None
    site_id = int(site_row[0])
    if sensor.zone is None:
        return site_id, None
    conn.execute(
        "INSERT INTO zones (municipality_id, site_id, name, kind) VALUES (%s, %s, %s, %s)"
        " ON CONFLICT (site_id, name) DO NOTHING",
        (municipality_id, site_id, sensor.zone, _ZONE_KIND[kind]),
    )
    zone_row = conn.execute(
        "SELECT id FROM zones WHERE site_id = %s AND name = %s", (site_id, sensor.zone)
    ).fetchone()
    assert zone_row is not None
    return site_id, int(zone_row[0])


def _upsert(
    conn: psycopg.Connection,
    municipality_id: int,
    sensor: SensorCreate,
    models: dict[tuple[str, str], _ModelRow],
) -> tuple[int, bool]:
    """Insert or update one sensor inside the caller's transaction; (id, created)."""
    model, kind = _resolve(sensor, models)
    if sensor.dev_eui:
        owner = conn.execute(
            "SELECT municipality_id, external_id FROM sensors WHERE dev_eui = %s",
            (sensor.dev_eui,),
        ).fetchone()
        if owner is not None and tuple(owner) != (municipality_id, sensor.external_id):
            raise RegistryError(_dev_eui_taken(sensor.dev_eui, tuple(owner), municipality_id))
    site_id, zone_id = _site_and_zone(conn, municipality_id, sensor, kind)
    row = conn.execute(
        """
        INSERT INTO sensors (municipality_id, dev_eui, external_id, name, kind,
            device_model_id, site_id, zone_id, lat, lon, bin_depth_mm, mount_offset_mm,
            expected_interval_s, is_public)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
        ON CONFLICT (municipality_id, external_id) DO UPDATE SET
            dev_eui = EXCLUDED.dev_eui, name = EXCLUDED.name, kind = EXCLUDED.kind,
            device_model_id = EXCLUDED.device_model_id, site_id = EXCLUDED.site_id,
            zone_id = EXCLUDED.zone_id, lat = EXCLUDED.lat, lon = EXCLUDED.lon,
            bin_depth_mm = EXCLUDED.bin_depth_mm, mount_offset_mm = EXCLUDED.mount_offset_mm,
            expected_interval_s = EXCLUDED.expected_interval_s, is_public = EXCLUDED.is_public
        RETURNING id, (xmax = 0) AS created
        """,
        (
            municipality_id,
            sensor.dev_eui,
            sensor.external_id,
            sensor.name,
            kind,
            model.id if model else None,
            site_id,
            zone_id,
            sensor.lat,
            sensor.lon,
            sensor.bin_depth_mm,
            sensor.mount_offset_mm,
            sensor.expected_interval_s,
            sensor.is_public,
        ),
    ).fetchone()
    assert row is not None
    return int(row[0]), bool(row[1])


def _parse_csv(csv_text: str) -> tuple[list[tuple[int, SensorCreate]], list[SensorImportError]]:
    """Rows validated without the database, with every problem found."""
    text = csv_text.lstrip("\ufeff")
    first_line = text.split("\n", 1)[0]
    delimiter = ";" if first_line.count(";") > first_line.count(",") else ","
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    header = [name.strip().lower() for name in (reader.fieldnames or [])]
    if not header:
        return [], [SensorImportError(line=1, message="the file is empty: a header row is needed")]
    unknown = [name for name in header if name not in CSV_COLUMNS]
    errors: list[SensorImportError] = []
    if unknown:
        errors.append(
            SensorImportError(
                line=1,
                message=f"unknown column(s) {', '.join(unknown)}; "
                f"known columns: {', '.join(CSV_COLUMNS)}",
            )
        )
    if "external_id" not in header:
        errors.append(SensorImportError(line=1, message="the header has no external_id column"))
    if errors:
        return [], errors
    reader.fieldnames = header
    parsed: list[tuple[int, SensorCreate]] = []
    seen_ids: dict[str, int] = {}
    seen_euis: dict[str, int] = {}
    for raw in reader:
        line = reader.line_num
        if None in raw:
            errors.append(SensorImportError(line=line, message="more fields than header columns"))
            continue
        values = {k: (v or "").strip() for k, v in raw.items()}
        if not any(values.values()):
            continue  # blank line
        if len(parsed) + len(errors) >= MAX_CSV_ROWS:
            errors.append(
                SensorImportError(
                    line=line, message=f"more than {MAX_CSV_ROWS} rows; split the file"
                )
            )
            break
        external_id = values.get("external_id") or None
        try:
            sensor = SensorCreate(**_row_fields(values, decimal_comma=delimiter == ";"))
        except ValidationError as error:
            errors.append(
                SensorImportError(line=line, message=_explain(error), external_id=external_id)
            )
            continue
        except ValueError as error:
            errors.append(SensorImportError(line=line, message=str(error), external_id=external_id))
            continue
        if sensor.external_id in seen_ids:
            errors.append(
                SensorImportError(
                    line=line,
                    message=f"external_id {sensor.external_id} also on line "
                    f"{seen_ids[sensor.external_id]}",
                    external_id=sensor.external_id,
                )
            )
            continue
        if sensor.dev_eui and sensor.dev_eui in seen_euis:
            errors.append(
                SensorImportError(
                    line=line,
                    message=f"dev_eui {sensor.dev_eui} also on line {seen_euis[sensor.dev_eui]}",
                    external_id=sensor.external_id,
                )
            )
            continue
        seen_ids[sensor.external_id] = line
        if sensor.dev_eui:
            seen_euis[sensor.dev_eui] = line
        parsed.append((line, sensor))
    return parsed, errors


def _row_fields(values: dict[str, str], decimal_comma: bool) -> dict[str, Any]:
    fields: dict[str, Any] = {k: v for k, v in values.items() if v != ""}
    for column in _NUMERIC_COLUMNS:
        if column in fields:
            text = fields[column]
            if decimal_comma and "," in text and "." not in text:
                text = text.replace(",", ".")
            fields[column] = text
    if "kind" in fields:
        fields["kind"] = fields["kind"].lower()
    if "is_public" in fields:
        word = fields["is_public"].lower()
        if word in _TRUE:
            fields["is_public"] = True
        elif word in _FALSE:
            fields["is_public"] = False
        else:
            raise ValueError(f"is_public must be yes/no (or true/false, ja/nej), got {word!r}")
    return fields


def _explain(error: ValidationError) -> str:
    """A one-line, staff-readable summary of a pydantic validation error."""
    parts = []
    for item in error.errors():
        location = ".".join(str(p) for p in item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        parts.append(f"{location}: {message}" if location else message)
    return "; ".join(parts)
