"""Devices whose network server already decodes the payload.

ChirpStack (`object`) and The Things Stack (`uplink_message.decoded_payload`) can run a
device codec themselves and hand us JSON. `normalise_object` maps such an object onto
our canonical metrics: it knows our own names, the common field names vendors' codecs use
(temperature, humidity, co2, battery, distance, occupied, ...), unit-suffixed variants
(`distance_cm`, `pressure_hpa`, `battery_mv`, ...) and Decentlab-style wrappers
`{"value": 21.5, "unit": "°C"}`. Fields it does not know are ignored; if nothing usable is
left, it raises DecodeError so the message becomes a dead letter instead of vanishing.

Bare names whose unit is ambiguous are resolved as documented in docs/decoders.md:
`distance` is millimetres; `pressure` is hPa below 2000 and Pa above (the two physical
ranges do not overlap); `battery` is volts up to 5 and percent above.

The "generic" decoder key registers devices of this kind: its bytes decoder always
raises DecodeError, because raw bytes of such a device cannot be read by us.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any

from domain.decoders import DecodeError, DeviceModelSpec, Measurements
from domain.metrics import METRICS

Convert = Callable[[float], float]


def _same(x: float) -> float:
    return x


def _scale(factor: float) -> Convert:
    return lambda x: x * factor


def _fahrenheit(x: float) -> float:
    return (x - 32.0) * 5.0 / 9.0


def _pressure_guess(x: float) -> float:
    return x * 100.0 if x < 2000.0 else x  # hPa and Pa ranges do not overlap


def _battery_guess_v(x: float) -> float:
    return x


# Normalised field name → (canonical metric, conversion to its unit).
_ALIASES: dict[str, tuple[str, Convert]] = {
    **{
        name: ("temperature_c", _same)
        for name in (
            "temperature",
            "temp",
            "air_temperature",
            "ambient_temperature",
            "temperature_celsius",
            "temp_c",
            "temp_celsius",
            "temp_celcius",
        )
    },
    "temperature_f": ("temperature_c", _fahrenheit),
    **{
        name: ("humidity_pct", _same)
        for name in (
            "humidity",
            "relative_humidity",
            "relativehumidity",
            "rh",
            "air_humidity",
            "hum",
            "humidity_percent",
        )
    },
    **{name: ("co2_ppm", _same) for name in ("co2", "co2_concentration", "carbon_dioxide")},
    **{
        name: ("light_lux", _same)
        for name in (
            "light",
            "lux",
            "illuminance",
            "illumination",
            "luminosity",
            "light_level_lux",
        )
    },
    **{name: ("motion_count", _same) for name in ("motion", "pir", "activity", "pir_count")},
    **{name: ("tvoc_ppb", _same) for name in ("tvoc", "total_voc", "voc")},
    "pressure": ("pressure_pa", _pressure_guess),
    "barometric_pressure": ("pressure_pa", _pressure_guess),
    "pressure_hpa": ("pressure_pa", _scale(100.0)),
    "pressure_kpa": ("pressure_pa", _scale(1000.0)),
    "distance": ("distance_mm", _same),
    "distance_cm": ("distance_mm", _scale(10.0)),
    "distance_m": ("distance_mm", _scale(1000.0)),
    "proximity_cm": ("distance_mm", _scale(10.0)),
    **{
        name: ("fill_pct", _same)
        for name in (
            "fill",
            "fill_level",
            "filling_level",
            "fillinglvl",
            "fill_percent",
            "fill_rate",
        )
    },
    **{
        name: ("battery_v", _same)
        for name in (
            "battery_voltage",
            "battery_volt",
            "battery_vol",
            "vdd",
            "voltage",
        )
    },
    "battery_mv": ("battery_v", _scale(0.001)),
    "vdd_mv": ("battery_v", _scale(0.001)),
    **{
        name: ("battery_pct", _same)
        for name in (
            "battery_level",
            "battery_percent",
            "battery_percentage",
        )
    },
    "sound_avg": ("sound_avg_dba", _same),
    "laeq": ("sound_avg_dba", _same),
    "sound_peak": ("sound_peak_dba", _same),
    "lamax": ("sound_peak_dba", _same),
    **{name: ("pm2_5_ug_m3", _same) for name in ("pm2_5", "pm25", "pm2_5_ugm3")},
    "pm10": ("pm10_ug_m3", _same),
    "tilt": ("tilt_deg", _same),
    "angle": ("tilt_deg", _same),
}

# Boolean metrics and the field names that carry them.
_BOOLEAN_ALIASES = {
    "occupied": "occupied",
    "parking_status": "occupied",
    "car_present": "occupied",
    "occupancy": "occupancy",
    "room_occupied": "occupancy",
    "presence": "occupancy",
}
_TRUE_WORDS = {"true", "1", "yes", "on", "occupied", "busy", "present"}
_FALSE_WORDS = {"false", "0", "no", "off", "free", "vacant", "empty", "absent"}

# Explicit units (from a {"value", "unit"} wrapper) → canonical metric and conversion.
_UNITS: dict[str, tuple[str, Convert]] = {
    "°c": ("temperature_c", _same),
    "c": ("temperature_c", _same),
    "degc": ("temperature_c", _same),
    "celsius": ("temperature_c", _same),
    "°f": ("temperature_c", _fahrenheit),
    "ppm": ("co2_ppm", _same),
    "ppb": ("tvoc_ppb", _same),
    "lx": ("light_lux", _same),
    "lux": ("light_lux", _same),
    "pa": ("pressure_pa", _same),
    "hpa": ("pressure_pa", _scale(100.0)),
    "mbar": ("pressure_pa", _scale(100.0)),
    "kpa": ("pressure_pa", _scale(1000.0)),
    "mm": ("distance_mm", _same),
    "cm": ("distance_mm", _scale(10.0)),
    "m": ("distance_mm", _scale(1000.0)),
    "v": ("battery_v", _same),
    "mv": ("battery_v", _scale(0.001)),
    "µg/m³": ("", _same),  # PM2.5 vs PM10 is decided by the field name
    "ug/m3": ("", _same),
}


def _field_key(name: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", name.strip().lower()).strip("_")


def _number(value: Any) -> float | None:
    """`value` as a finite float, or None when it is not a number."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


def _boolean(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE_WORDS:
            return True
        if word in _FALSE_WORDS:
            return False
        return None
    number = _number(value)
    if number in (0.0, 1.0):
        return number == 1.0
    return None


def _metric_for_unit(key: str, unit: str) -> tuple[str, Convert] | None:
    """The metric named by an explicit unit, checked against the field name."""
    unit_key = unit.strip().lower().replace(" ", "")
    if unit_key == "%":
        if "hum" in key or key == "rh":
            return "humidity_pct", _same
        if "fill" in key:
            return "fill_pct", _same
        if "batt" in key:
            return "battery_pct", _same
        return None
    if unit_key.startswith("db"):
        if "peak" in key or "max" in key:
            return "sound_peak_dba", _same
        if "sound" in key or "noise" in key or "avg" in key:
            return "sound_avg_dba", _same
        return None
    found = _UNITS.get(unit_key)
    if found is None:
        return None
    metric, convert = found
    if not metric:
        if "10" in key and "2" not in key:
            return "pm10_ug_m3", convert
        if "2" in key:
            return "pm2_5_ug_m3", convert
        return None
    alias = _ALIASES.get(key)
    # A unit must agree with the name when the name is known: "co2" in "ppb" is not CO2.
    if alias is not None and alias[0] != metric and key not in METRICS:
        return None
    return metric, convert


def normalise_object(obj: Mapping[str, Any]) -> dict[str, float | bool]:
    """Canonical measurements from a network server's decoded JSON object.

    Raises DecodeError when `obj` is not a mapping or holds no field we can use.
    """
    if not isinstance(obj, Mapping):
        raise DecodeError(f"decoded object must be a JSON object, got {type(obj).__name__}")
    out: dict[str, float | bool] = {}
    for name, raw in obj.items():
        if not isinstance(name, str):
            continue
        key = _field_key(name)
        value, unit = raw, None
        if isinstance(raw, Mapping) and "value" in raw:
            value = raw["value"]
            unit = raw.get("unit") if isinstance(raw.get("unit"), str) else None
        boolean_metric = _BOOLEAN_ALIASES.get(key)
        if boolean_metric is not None:
            flag = _boolean(value)
            if flag is not None:
                out[boolean_metric] = flag
            continue
        number = _number(value)
        if number is None or isinstance(value, bool):
            continue
        target: tuple[str, Convert] | None
        if key in METRICS:
            target = (key, _same)
        elif unit is not None:
            target = _metric_for_unit(key, unit)
        elif key == "battery":
            # Bare "battery": volts when at most 5, otherwise percent (documented).
            target = ("battery_v", _battery_guess_v) if number <= 5.0 else ("battery_pct", _same)
        else:
            target = _ALIASES.get(key)
        if target is None:
            continue
        metric, convert = target
        converted = convert(number)
        if math.isfinite(converted):
            out[metric] = converted
    if not out:
        keys = ", ".join(sorted(str(k) for k in obj)[:20]) or "none"
        raise DecodeError(f"decoded object has no field we can map to a metric (fields: {keys})")
    return out


def decode(payload: bytes, fport: int) -> Measurements:
    """Always raises: these devices are decoded by the network server, not by us."""
    raise DecodeError(
        "device decodes in the network server; no raw decoder (send the decoded object, "
        "ChirpStack 'object' or TTS 'decoded_payload')"
    )


DECODERS = {"generic": decode}

DEVICE_MODELS = [
    DeviceModelSpec(
        "Generic",
        "Network-server decoded",
        "generic",
        "other",
        {"source": "network server codec; fields mapped by domain.decoders.generic"},
    ),
]
