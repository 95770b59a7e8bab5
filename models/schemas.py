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
    """A sensor to register (or update, keyed by the municipality's `external_id`).

    `kind` may be left out when `vendor`/`model` name a known device model: the model's
    kind is used. Bin sensors need `bin_depth_mm` (full line to bottom) so fill level can
    be derived from distance; `mount_offset_mm` is the sensor's height above the full line.
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
    is_public: bool = True
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

    @model_validator(mode="after")
    def _fields_agree(self) -> SensorCreate:
        if (self.lat is None) != (self.lon is None):
            raise ValueError("give both lat and lon, or neither")
        if (self.vendor is None) != (self.model is None):
            raise ValueError("give both vendor and model, or neither")
        if self.kind is None and self.model is None:
            raise ValueError("give a kind (climate, bin, parking, other) or a vendor and model")
        if self.zone is not None and self.site is None:
            raise ValueError("a zone needs the site it belongs to")
        if self.kind is not None:
            check_bin_geometry(self.kind, self.bin_depth_mm, self.mount_offset_mm)
        return self


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
    items: list[ReadingOut]
    next_cursor: str | None
