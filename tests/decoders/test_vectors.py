"""Every vendor-published test vector decodes to the vendor's expected values.

The vectors (shared/vectors/lorawan-dev.json, from TTN's Device Repository) carry the
repository codecs' own field names and units. A per-vendor mapping layer below turns each
vector's `expected` object into our canonical metrics, naming every vendor field it
ignores and why, so a new field in the vectors cannot slip through unnoticed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from domain.decoders import DecodeError, get_decoder

REPO_ROOT = Path(__file__).resolve().parents[2]
VECTORS_FILE = REPO_ROOT / ".." / "shared" / "vectors" / "lorawan-dev.json"
REL_TOLERANCE = 1e-9  # as the vectors' README suggests
EXPECTED_VECTOR_COUNT = 23


@dataclass(frozen=True)
class FieldMap:
    """One vendor field → our metric, converting the vendor's value into our unit."""

    metric: str
    convert: Callable[[Any], float | bool] = float
    # The repository codec rounds this field for display; compare ours rounded alike.
    round_ours_to: int | None = None


@dataclass(frozen=True)
class VendorMap:
    decoder: str
    fields: dict[str, FieldMap]
    # Vendor fields that have no canonical metric, each with the reason it is not ours.
    ignored: dict[str, str] = field(default_factory=dict)
    # Decentlab-style {displayName, unit, value} wrappers: vendor unit → factor to ours.
    wrapped_units: dict[str, dict[str, float]] | None = None
    # Drops fields that the vendor marks as invalid in the same example.
    invalid: Callable[[dict[str, Any]], set[str]] = lambda _expected: set()


def _identity(value: Any) -> float:
    return float(value)


def _times(factor: float) -> Callable[[Any], float]:
    return lambda value: float(value) * factor


DECENTLAB_IGNORED = {
    "protocol_version": "frame header, not a measurement",
    "device_id": "the DevEUI identifies the device",
    "ambient_light_infrared": "raw channel count behind light_lux",
    "ambient_light_visible_infrared": "raw channel count behind light_lux",
    "co2_sensor_status": "CO2 sensor diagnostics",
    "raw_ir_reading": "CO2 sensor raw signal",
    "number_of_valid_samples": "quality of distance_mm: 0 means no distance is reported",
}

DECENTLAB_FIELDS = {
    "air_temperature": FieldMap("temperature_c"),
    "air_humidity": FieldMap("humidity_pct"),
    "barometric_pressure": FieldMap("pressure_pa"),
    "battery_voltage": FieldMap("battery_v"),
    "co2_concentration": FieldMap("co2_ppm"),
    "illuminance": FieldMap("light_lux"),
    "total_voc": FieldMap("tvoc_ppb"),
    "activity_counter": FieldMap("motion_count"),
    "distance": FieldMap("distance_mm"),
}
# Decentlab's unit per field → the factor that takes it to our unit (all SI already).
DECENTLAB_UNITS = {
    "air_temperature": {"°C": 1.0},
    "air_humidity": {"%": 1.0},
    "barometric_pressure": {"Pa": 1.0},
    "battery_voltage": {"V": 1.0},
    "co2_concentration": {"ppm": 1.0},
    "illuminance": {"lx": 1.0},
    "total_voc": {"ppb": 1.0},
    "activity_counter": {"": 1.0},
    "distance": {"mm": 1.0},
}


def _decentlab_invalid(expected: dict[str, Any]) -> set[str]:
    samples = expected.get("number_of_valid_samples")
    if isinstance(samples, dict) and samples.get("value") == 0:
        return {"distance"}
    return set()


def _teneo_invalid(expected: dict[str, Any]) -> set[str]:
    return set() if expected.get("valid", True) else {"distance"}


VENDOR_MAPS: dict[tuple[str, str], VendorMap] = {
    ("Elsys", "ERS CO2"): VendorMap(
        "elsys",
        {
            "temperature": FieldMap("temperature_c"),
            "humidity": FieldMap("humidity_pct"),
            "light": FieldMap("light_lux"),
            "motion": FieldMap("motion_count"),
            "co2": FieldMap("co2_ppm"),
        },
    ),
    ("Decentlab", "DL-IAM"): VendorMap(
        "decentlab_dl_iam",
        DECENTLAB_FIELDS,
        DECENTLAB_IGNORED,
        DECENTLAB_UNITS,
        _decentlab_invalid,
    ),
    ("Decentlab", "DL-MBX"): VendorMap(
        "decentlab_dl_mbx",
        DECENTLAB_FIELDS,
        DECENTLAB_IGNORED,
        DECENTLAB_UNITS,
        _decentlab_invalid,
    ),
    ("Milesight", "AM107"): VendorMap(
        "milesight_am100",
        {
            "battery": FieldMap("battery_pct"),
            "temperature": FieldMap("temperature_c"),
            "humidity": FieldMap("humidity_pct"),
            "activity": FieldMap("motion_count"),
            "illumination": FieldMap("light_lux"),
            "co2": FieldMap("co2_ppm"),
            "tvoc": FieldMap("tvoc_ppb"),
            "pressure": FieldMap("pressure_pa", _times(100.0)),  # hPa → Pa
        },
        {
            "infrared": "raw channel count behind light_lux",
            "infrared_and_visible": "raw channel count behind light_lux",
        },
    ),
    ("Pepperl+Fuchs", "WILSEN.sonic.level"): VendorMap(
        "pepperl_fuchs_wilsen",
        {
            "proxx": FieldMap("distance_mm", _times(10.0)),  # cm → mm
            "fillinglvl": FieldMap("fill_pct"),
            # The repository codec rounds the sensor's float32 to 0.1 °C; we keep the
            # full value, so compare ours rounded the same way.
            "temp": FieldMap("temperature_c", round_ours_to=1),
            "battery_vol": FieldMap("battery_v"),
        },
        {
            "payload": "hex echo of the input",
            "latitude": "device position belongs in the registry",
            "longitude": "device position belongs in the registry",
            "serial_nr": "identifies the device",
            "lora_count": "transmission counter (diagnostics)",
            "gps_count": "GPS fix counter (diagnostics)",
            "us_sensor_count": "measurement counter (diagnostics)",
        },
    ),
    ("Teneo IoT", "Filling Degree Sensor"): VendorMap(
        "teneo_filling_degree",
        {
            "battery": FieldMap("battery_v"),
            "distance": FieldMap("distance_mm", _times(10.0)),  # cm → mm
            "temperature": FieldMap("temperature_c"),
            "relativeHumidity": FieldMap("humidity_pct"),
        },
        {
            "charging": "device flag, not a measurement",
            "sensorType": "constant 'fillrate'",
            "settingsAllowed": "device flag, not a measurement",
            "valid": "decides whether distance is reported",
            "errorcode": "reason the distance is invalid",
        },
        invalid=_teneo_invalid,
    ),
    ("Bosch", "TPS110"): VendorMap(
        "bosch_tps110",
        {
            "occupied": FieldMap("occupied", bool),
            "temperature": FieldMap("temperature_c"),
        },
        {
            "type": "message type, given by the FPort",
            "debugCodes": "maintenance information",
            "firmwareVersion": "maintenance information",
            "resetCause": "maintenance information",
        },
    ),
    ("Nwave", "NPS-3.10-SM"): VendorMap(
        "nwave_parking",
        {"occupied": FieldMap("occupied", bool)},
        {
            "type": "message type, given by the FPort",
            "firmware_version": "maintenance information",
            "reset_cause": "maintenance information",
        },
    ),
}
VENDOR_MAPS[("Elsys", "ERS")] = VENDOR_MAPS[("Elsys", "ERS CO2")]


def _load_vectors() -> list[Any]:
    if not VECTORS_FILE.is_file():
        # A parameter that fails: a missing vector file must fail the run, not skip it.
        return [pytest.param(None, id="vector-file-missing")]
    vectors = json.loads(VECTORS_FILE.read_text(encoding="utf-8"))
    params, seen = [], {}
    for vector in vectors:
        name = f"{vector['vendor']}-{vector['model']}"
        index = seen.get(name, 0)
        seen[name] = index + 1
        params.append(pytest.param(vector, id=f"{name}-{index}"))
    return params


def expected_measurements(vector: dict[str, Any], mapping: VendorMap) -> dict[str, Any]:
    """The vector's expected output in our metric names and units."""
    expected: dict[str, Any] = vector["expected"] or {}
    invalid = mapping.invalid(expected)
    ours: dict[str, Any] = {}
    for name, raw in expected.items():
        if name in mapping.ignored:
            continue
        assert name in mapping.fields, f"vendor field {name!r} is neither mapped nor ignored"
        if name in invalid:
            continue
        field_map = mapping.fields[name]
        value = raw
        if mapping.wrapped_units is not None and isinstance(raw, dict):
            unit = raw.get("unit", "")
            factors = mapping.wrapped_units[name]
            assert unit in factors, f"{name}: vendor unit {unit!r} has no conversion to ours"
            value = float(raw["value"]) * factors[unit]
        ours[field_map.metric] = (field_map.convert(value), field_map.round_ours_to)
    return ours


@pytest.mark.parametrize("vector", _load_vectors())
def test_vendor_vector_decodes_to_expected_values(vector: dict[str, Any] | None) -> None:
    if vector is None:
        pytest.fail(
            f"test vectors not found at {VECTORS_FILE.resolve()}: clone the shared/ "
            "directory beside the repository (<repo>/../shared/vectors/lorawan-dev.json)"
        )
    key = (vector["vendor"], vector["model"])
    assert key in VENDOR_MAPS, f"no mapping layer for {key}: add one to this test"
    mapping = VENDOR_MAPS[key]
    decode = get_decoder(mapping.decoder)
    payload = bytes.fromhex(vector["payload_hex"])

    if vector.get("expected_errors"):
        with pytest.raises(DecodeError):
            decode(payload, vector["fPort"])
        return

    decoded = decode(payload, vector["fPort"])
    expected = expected_measurements(vector, mapping)
    assert set(decoded) == set(expected), f"decoded {decoded}, expected {expected}"
    for metric, (want, round_to) in expected.items():
        got = decoded[metric]
        if isinstance(want, bool):
            assert got is want, metric
            continue
        if round_to is not None:
            got = round(got, round_to)
        assert math.isclose(got, want, rel_tol=REL_TOLERANCE, abs_tol=1e-12), (
            f"{metric}: decoded {got}, vendor expects {want}"
        )


def test_vector_file_holds_all_published_vectors() -> None:
    assert VECTORS_FILE.is_file(), f"test vectors not found at {VECTORS_FILE.resolve()}"
    vectors = json.loads(VECTORS_FILE.read_text(encoding="utf-8"))
    assert len(vectors) == EXPECTED_VECTOR_COUNT
    assert {(v["vendor"], v["model"]) for v in vectors} <= set(VENDOR_MAPS)
