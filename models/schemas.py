"""Pydantic shapes that cross a boundary: API requests/responses and import rows.

Grouped by area with a comment header per area; each area appends its own section.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# --- sensors / registry ---

SensorKind = Literal["climate", "bin", "parking", "other"]
_DEV_EUI_SEPARATORS = re.compile(r"[\s:-]")
_DEV_EUI = re.compile(r"^[0-9a-f]{16}$")


class SensorCreate(BaseModel):
    """A sensor to register, or the fields to change of one registered already (keyed by the
    municipality's `external_id`).

    Only the fields given are written: a field left out keeps the stored value on an update
    (an explicit null clears it), and on a new sensor takes its default; `is_public` left
    out on a new sensor takes the municipality's default (``new_sensors_public``).
    `kind` may be left out when `vendor`/`model` name a known device model: the model's
    kind is used. Bin sensors need `bin_depth_mm` (full line to bottom) so fill level can
    be derived from distance; `mount_offset_mm` is the sensor's height above the full line.
    Checks that need the stored sensor (a kind or model, bin geometry, a zone's site) are
    made on the merged record by domain.registry.
    """

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    external_id: str = Field(min_length=1, max_length=200)
    dev_eui: str | None = Field(
        default=None, description="LoRaWAN DevEUI: 16 hex digits; ':' '-' and spaces allowed"
    )
    name: str | None = Field(default=None, max_length=200)
    kind: SensorKind | None = None
    vendor: str | None = Field(default=None, max_length=100)
    model: str | None = Field(default=None, max_length=100)
    lat: float | None = Field(default=None, ge=-90.0, le=90.0, description="WGS84 degrees")
    lon: float | None = Field(default=None, ge=-180.0, le=180.0, description="WGS84 degrees")
    bin_depth_mm: float | None = Field(default=None, gt=0.0, le=10000.0)
    mount_offset_mm: float | None = Field(default=None, ge=0.0, le=10000.0)
    expected_interval_s: int | None = Field(default=None, gt=0, le=7 * 86400)
    is_public: bool | None = Field(
        default=None,
        description="Publish as open data. Left out: unchanged on an update, the "
        "municipality's default for a new sensor.",
    )
    site: str | None = Field(default=None, max_length=200, description="site name")
    zone: str | None = Field(default=None, max_length=200, description="zone name in site")

    @field_validator("dev_eui")
    @classmethod
    def _dev_eui_is_16_hex_digits(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        normalised = _DEV_EUI_SEPARATORS.sub("", value).lower()
        if not _DEV_EUI.match(normalised):
            raise ValueError(f"dev_eui must be 16 hexadecimal digits, got {value!r}")
        return normalised

    @field_validator("name", "vendor", "model", "site", "zone")
    @classmethod
    def _blank_is_none(cls, value: str | None) -> str | None:
        return value or None

    @field_validator("external_id", "name", "vendor", "model", "site", "zone")
    @classmethod
    def _no_nul_character(cls, value: str | None) -> str | None:
        if value is not None and "\x00" in value:
            raise ValueError("contains a NUL character, which cannot be stored")
        return value

    @model_validator(mode="after")
    def _given_fields_agree(self) -> SensorCreate:
        given = self.model_fields_set
        if ("lat" in given) != ("lon" in given) or (self.lat is None) != (self.lon is None):
            raise ValueError("give both lat and lon, or neither")
        if ("vendor" in given) != ("model" in given) or (self.vendor is None) != (
            self.model is None
        ):
            raise ValueError("give both vendor and model, or neither")
        if (
            self.kind is not None
            and self.kind != "bin"
            and (self.bin_depth_mm is not None or self.mount_offset_mm is not None)
        ):
            check_bin_geometry(self.kind, self.bin_depth_mm, self.mount_offset_mm)
        return self

    def given(self) -> dict[str, object]:
        """The fields the caller gave (a CSV's columns, a JSON body's keys)."""
        return self.model_dump(include=self.model_fields_set)


def check_bin_geometry(
    kind: str, bin_depth_mm: float | None, mount_offset_mm: float | None
) -> None:
    """Raise ValueError unless bin depth/offset are given exactly when the sensor is a bin."""
    if kind == "bin" and bin_depth_mm is None:
        raise ValueError("bin sensors need bin_depth_mm (depth from full line to bottom, mm)")
    if kind != "bin" and (bin_depth_mm is not None or mount_offset_mm is not None):
        raise ValueError(f"bin_depth_mm and mount_offset_mm only apply to bin sensors, not {kind}")


class SensorImportRow(BaseModel):
    """What happened to one CSV row of a successful import."""

    line: int
    external_id: str
    sensor_id: int
    action: Literal["created", "updated"]
    is_public: bool
    was_public: bool | None = Field(
        None, description="Visibility before the import; null for a sensor it created."
    )


class SensorImportError(BaseModel):
    """Why one CSV row was refused; `line` is the line number in the file (header = 1)."""

    line: int
    message: str
    external_id: str | None = None


class SensorImportResult(BaseModel):
    """Outcome of a CSV import: all rows are stored, or none are and `errors` says why."""

    committed: bool
    created: int = 0
    updated: int = 0
    rows: list[SensorImportRow] = Field(default_factory=list)
    visibility_changes: list[SensorImportRow] = Field(
        default_factory=list,
        description="The rows whose sensor this import published, hid, or created (with the "
        "visibility it got): what to check before open data changes.",
    )
    errors: list[SensorImportError] = Field(default_factory=list)


# --- open data API ---
# Response shapes of the public /api/v1 endpoints. Routes serialise with orjson directly;
# these models are the documented contract (OpenAPI) and the tests check against them.

from datetime import datetime  # noqa: E402

Bucket = Literal["raw", "5min", "hour", "day"]


class ErrorOut(BaseModel):
    """Every error of the API: what was wrong and how to fix it."""

    detail: str


class FailingJob(BaseModel):
    """A TimescaleDB background job whose last scheduled run failed (docs/operations.md)."""

    job_id: int
    proc_name: str
    relation: str = Field(description="Hypertable or continuous aggregate; empty if none.")
    total_failures: int
    last_run_started_at: datetime | None
    last_error_at: datetime | None
    last_error: str


class Health(BaseModel):
    """Whether the API is ready: database reachable, which storage, newest reading, and
    TimescaleDB background jobs whose last run failed (always empty on plain PostgreSQL)."""

    status: Literal["ok", "unavailable"]
    database: str
    storage_backend: str | None = None
    last_reading_at: datetime | None = None
    failing_jobs: list[FailingJob] = []


class MunicipalityOut(BaseModel):
    """A municipality and how many public, active sensors it has, by kind."""

    slug: str
    name: str
    kommune_code: str | None
    public_sensors: int
    sensors_by_kind: dict[str, int]


class MetricOut(BaseModel):
    """One metric of the canonical vocabulary, with its unit and plausible range."""

    name: str
    unit: str
    description: str
    min_value: float
    max_value: float


class SensorOut(BaseModel):
    """A public sensor: where it is (WGS84 degrees), what it is, and when it last spoke."""

    id: int
    name: str | None
    kind: str
    vendor: str | None
    model: str | None
    municipality: str
    lat: float | None
    lon: float | None
    last_seen: datetime | None
    metrics: list[str]


class SensorPage(BaseModel):
    """A page of sensors; pass `next_cursor` as `cursor` for the next page (null: done)."""

    items: list[SensorOut]
    next_cursor: str | None


class LatestValue(BaseModel):
    value: float
    time: datetime


class SensorLatest(BaseModel):
    """The newest value of each metric of one public sensor."""

    sensor_id: int
    municipality: str
    kind: str
    values: dict[str, LatestValue]


class LatestPage(BaseModel):
    items: list[SensorLatest]
    next_cursor: str | None


class ReadingOut(BaseModel):
    """A raw sample (`value`) or a bucket (`avg`/`min`/`max`/`count`, those asked for).

    Bucket times are the bucket's start, UTC.
    """

    sensor_id: int
    time: datetime
    value: float | None = None
    avg: float | None = None
    min: float | None = None
    max: float | None = None
    count: int | None = None


class ReadingPage(BaseModel):
    """Readings of one metric, ordered by sensor then time."""

    metric: str
    unit: str
    bucket: Bucket
    tz: str = Field(
        "UTC", description="time zone of day buckets (local midnights); UTC for the others"
    )
    items: list[ReadingOut]
    next_cursor: str | None
