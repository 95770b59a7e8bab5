"""The device registry: device models and the municipality's sensors.

* `sync_device_models` upserts the device models the decoders read (domain.decoders).
* `register_sensor` registers or updates one sensor (API).
* `import_sensors_csv` registers or updates many from a CSV file, all or nothing.

Sensors are keyed by (municipality, external_id): registering the same external id
again updates the sensor, so re-uploading a corrected spreadsheet is safe. An update
changes only what it names (a CSV's columns, a JSON body's keys); everything else keeps
its stored value, so a file without `is_public` or `lat`/`lon` neither publishes a
private sensor nor erases its position. A new sensor's visibility, when not given, is the
municipality's default (``municipalities.settings.new_sensors_public``, private when
unset). A DevEUI is globally unique: it cannot be registered to two sensors.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import Any, Literal

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from pydantic import ValidationError

from domain.decoders import device_models
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
class Registered:
    """What one registration did: the sensor, and its visibility before and after."""

    sensor_id: int
    action: Literal["created", "updated"]
    is_public: bool
    was_public: bool | None  # None: the sensor is new

    @property
    def visibility_changed(self) -> bool:
        return self.was_public != self.is_public


@dataclass(frozen=True)
class _ModelRow:
    id: int
    vendor: str
    model: str
    kind: str


def sync_device_models(conn: psycopg.Connection) -> dict[tuple[str, str], int]:
    """Upsert every device model the decoders read; returns (vendor, model) → id.

    The returned mapping covers all shared rows of device_models, including models
    registered earlier whose decoder module has since gone (they keep their sensors).
    """
    specs = device_models()
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(
            """
            INSERT INTO device_models (vendor, model, decoder, kind, meta)
            VALUES (%s, %s, %s, %s, %s)
            ON CONFLICT (vendor, model) WHERE municipality_id IS NULL
            DO UPDATE SET decoder = EXCLUDED.decoder, kind = EXCLUDED.kind, meta = EXCLUDED.meta
            """,
            [(s.vendor, s.model, s.decoder, s.kind, Jsonb(s.meta)) for s in specs],
        )
        # Shared models only: municipalities' own (ingest/codecs) may repeat one another's
        # names and are looked up per municipality.
        rows = cur.execute(
            "SELECT vendor, model, id FROM device_models WHERE municipality_id IS NULL"
        ).fetchall()
    return {(vendor, model): model_id for vendor, model, model_id in rows}


def register_sensor(conn: psycopg.Connection, municipality_id: int, sensor: SensorCreate) -> int:
    """Register `sensor` for the municipality, or update it if its external_id exists;
    returns the sensor id. See `upsert_sensor`."""
    return upsert_sensor(conn, municipality_id, sensor).sensor_id


def upsert_sensor(
    conn: psycopg.Connection, municipality_id: int, sensor: SensorCreate
) -> Registered:
    """Register `sensor`, or update the fields it gives if its external_id exists.

    Creates the named site and zone when missing. Raises RegistryError (unknown model,
    DevEUI taken by another sensor, unknown municipality, missing bin depth, no kind)
    without changing anything.
    """
    try:
        with conn.transaction():
            default_public = _municipality_default_public(conn, municipality_id)
            stored = _stored_sensors(conn, municipality_id, [sensor.external_id])
            merged = _merge(sensor, stored.get(sensor.external_id), default_public)
            models = _model_index(conn, municipality_id, [merged])
            return _upsert(conn, municipality_id, merged, models, stored.get(sensor.external_id))
    except psycopg.errors.UniqueViolation:
        # Another registration took the DevEUI between our check and the insert.
        raise RegistryError(f"dev_eui {sensor.dev_eui} is already registered") from None


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
            default_public = _municipality_default_public(conn, municipality_id)
            stored = _stored_sensors(conn, municipality_id, [s.external_id for _l, s in parsed])
            merged: list[tuple[int, SensorCreate]] = []
            for line, sensor in parsed:
                try:
                    merged.append(
                        (line, _merge(sensor, stored.get(sensor.external_id), default_public))
                    )
                except RegistryError as error:
                    errors.append(
                        SensorImportError(
                            line=line, message=str(error), external_id=sensor.external_id
                        )
                    )
            models = _model_index(conn, municipality_id, [sensor for _line, sensor in merged])
            errors = sorted(
                errors + _check_rows(conn, municipality_id, merged, models), key=lambda e: e.line
            )
            if errors:
                raise _RejectedError(errors)
            rows: list[SensorImportRow] = []
            for line, sensor in merged:
                done = _upsert(
                    conn, municipality_id, sensor, models, stored.get(sensor.external_id)
                )
                rows.append(
                    SensorImportRow(
                        line=line,
                        external_id=sensor.external_id,
                        sensor_id=done.sensor_id,
                        action=done.action,
                        is_public=done.is_public,
                        was_public=done.was_public,
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
        committed=True,
        created=created,
        updated=len(rows) - created,
        rows=rows,
        visibility_changes=[r for r in rows if r.was_public != r.is_public],
    )


class _RejectedError(Exception):
    def __init__(self, errors: list[SensorImportError]) -> None:
        super().__init__(f"{len(errors)} row(s) refused")
        self.errors = errors


def _municipality_default_public(conn: psycopg.Connection, municipality_id: int) -> bool:
    """The municipality's visibility for new sensors; RegistryError when it does not exist."""
    row = conn.execute(
        "SELECT coalesce((settings->>'new_sensors_public')::boolean, false) "
        "FROM municipalities WHERE id = %s",
        (municipality_id,),
    ).fetchone()
    if row is None:
        raise RegistryError(f"municipality {municipality_id} does not exist")
    return bool(row[0])


# What `_stored_sensors` returns per sensor: SensorCreate's fields, plus its id.
_STORED = """
SELECT s.external_id, s.id, s.dev_eui, s.name, s.kind, dm.vendor, dm.model, s.lat, s.lon,
       s.bin_depth_mm, s.mount_offset_mm, s.expected_interval_s, s.is_public,
       st.name AS site, z.name AS zone
FROM sensors s
LEFT JOIN device_models dm ON dm.id = s.device_model_id
LEFT JOIN sites st ON st.id = s.site_id
LEFT JOIN zones z ON z.id = s.zone_id
WHERE s.municipality_id = %s AND s.external_id = ANY(%s)
FOR UPDATE OF s
"""


def _stored_sensors(
    conn: psycopg.Connection, municipality_id: int, external_ids: list[str]
) -> dict[str, dict[str, Any]]:
    """The registered sensors among `external_ids`, locked until the transaction ends so
    that what is merged into them is what gets written."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(_STORED, (municipality_id, external_ids)).fetchall()
    return {row["external_id"]: row for row in rows}


def _merge(
    sensor: SensorCreate, stored: dict[str, Any] | None, default_public: bool
) -> SensorCreate:
    """The complete sensor: the fields `sensor` gives over the stored ones (or defaults).

    RegistryError when the result is incomplete (no kind, a zone without a site)."""
    given = sensor.given()
    if stored is None:
        record: dict[str, Any] = {"is_public": default_public}
    else:
        record = {k: v for k, v in stored.items() if k in SensorCreate.model_fields}
        if "kind" not in given and given.keys() & {"vendor", "model"}:
            record.pop("kind")  # a new device model brings its own kind
        if "zone" not in given and "site" in given and given["site"] != stored["site"]:
            record["zone"] = None  # the stored zone belongs to the old site
    record.update(given)
    if record.get("is_public") is None:
        record["is_public"] = default_public if stored is None else stored["is_public"]
    if record.get("kind") is None and record.get("model") is None:
        raise RegistryError("give a kind (climate, bin, parking, other) or a vendor and model")
    if record.get("zone") is not None and record.get("site") is None:
        raise RegistryError("a zone needs the site it belongs to")
    try:
        return SensorCreate(**record)
    except ValidationError as error:
        raise RegistryError(_explain(error)) from None


def _model_key(vendor: str, model: str) -> tuple[str, str]:
    return (" ".join(vendor.split()).casefold(), " ".join(model.split()).casefold())


def _load_models(
    conn: psycopg.Connection, municipality_id: int
) -> dict[tuple[str, str], _ModelRow]:
    """The shared models and the municipality's own (another's are not to be named)."""
    rows = conn.execute(
        "SELECT id, vendor, model, kind FROM device_models "
        "WHERE municipality_id IS NULL OR municipality_id = %s",
        (municipality_id,),
    ).fetchall()
    return {_model_key(v, m): _ModelRow(i, v, m, k) for i, v, m, k in rows}


def _model_index(
    conn: psycopg.Connection, municipality_id: int, sensors: list[SensorCreate]
) -> dict[tuple[str, str], _ModelRow]:
    """Device models by case-insensitive (vendor, model), synced from code on a miss."""
    models = _load_models(conn, municipality_id)
    wanted = {_model_key(s.vendor, s.model) for s in sensors if s.vendor and s.model}
    if wanted - set(models):
        sync_device_models(conn)
        models = _load_models(conn, municipality_id)
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
    if kind is None:  # _merge guarantees a kind or a model; keep the type checker honest
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
    stored: dict[str, Any] | None,
) -> Registered:
    """Write one merged sensor (see `_merge`) inside the caller's transaction."""
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
    created = bool(row[1])
    return Registered(
        sensor_id=int(row[0]),
        action="created" if created else "updated",
        is_public=bool(sensor.is_public),
        was_public=None if created or stored is None else bool(stored["is_public"]),
    )


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


# Columns whose empty cell means "not given" rather than "no value": a sensor always has
# a kind and a visibility, so an empty cell keeps the stored one (or the default).
_EMPTY_IS_NOT_GIVEN = ("external_id", "kind", "is_public")


def _row_fields(values: dict[str, str], decimal_comma: bool) -> dict[str, Any]:
    """SensorCreate's fields from one row: every column of the file, an empty cell as
    null (it clears the stored value), except the columns of `_EMPTY_IS_NOT_GIVEN`."""
    fields: dict[str, Any] = {
        k: (v if v != "" else None)
        for k, v in values.items()
        if v != "" or k not in _EMPTY_IS_NOT_GIVEN
    }
    for column in _NUMERIC_COLUMNS:
        if fields.get(column) is not None:
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
