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
