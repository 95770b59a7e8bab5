"""Decentlab devices (DL-IAM indoor ambiance monitor, DL-MBX ultrasonic distance sensor).

Source: Decentlab's protocol description shared by all its LoRaWAN devices (data sheets,
section "Payload"), protocol version 2, all integers big-endian:

    byte 0      protocol version (2)
    bytes 1-2   device id
    bytes 3-4   flags: bit i set means sensor i of the model's sensor table is present
    then        for each present sensor, in bit order, its fixed number of 16-bit words

The per-model sensor tables and conversion formulas are in each product's data sheet.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from domain.decoders import DecodeError, DeviceModelSpec, Measurements
from domain.decoders._reader import ByteReader, check_fport

VENDOR = "Decentlab"
SOURCE = "Decentlab protocol v2 description and the DL-IAM / DL-MBX data sheets"
PROTOCOL_VERSION = 2
# Decentlab devices send measurements on FPort 1; other ports carry configuration replies.
DATA_FPORTS = (1,)


@dataclass(frozen=True)
class _Sensor:
    words: int
    convert: Callable[[Sequence[int], Measurements], None]


# Field names for truncation errors, by a sensor's index in its model's table (flags has
# 16 bits).
_SENSOR_FIELDS = tuple(f"sensor {index}" for index in range(16))


def _battery(x: Sequence[int], out: Measurements) -> None:
    out["battery_v"] = x[0] / 1000.0


def _sht_climate(x: Sequence[int], out: Measurements) -> None:
    # Sensirion SHT3x transfer functions, as the DL-IAM data sheet gives them.
    out["temperature_c"] = 175.0 * x[0] / 65535.0 - 45.0
    out["humidity_pct"] = 100.0 * x[1] / 65535.0


def _pressure(x: Sequence[int], out: Measurements) -> None:
    out["pressure_pa"] = float(x[0] * 2)


def _ambient_light(x: Sequence[int], out: Measurements) -> None:
    # x[0] is the visible + infrared channel, x[1] the infrared channel; the raw channel
    # counts are dropped: only the illuminance computed from them means anything to users.
    visible_ir, ir = float(x[0]), float(x[1])
    lux = max(visible_ir - 1.64 * ir, 0.59 * visible_ir - 0.86 * ir, 0.0) * 1.5504
    out["light_lux"] = lux


def _co2(x: Sequence[int], out: Measurements) -> None:
    # x[1] is the CO2 sensor's status word and x[2] its raw IR reading: diagnostics only.
    out["co2_ppm"] = float(x[0] - 32768)


def _activity(x: Sequence[int], out: Measurements) -> None:
    # The PIR activity counter counts motion events within the measurement interval.
    out["motion_count"] = float(x[0])


def _tvoc(x: Sequence[int], out: Measurements) -> None:
    out["tvoc_ppb"] = float(x[0])


def _distance(x: Sequence[int], out: Measurements) -> None:
    # x[1] is the number of valid ultrasonic samples behind the median distance; with no
    # valid sample the distance word is meaningless, so it is not reported.
    if x[1] > 0:
        out["distance_mm"] = float(x[0])


_DL_IAM = (
    _Sensor(1, _battery),
    _Sensor(2, _sht_climate),
    _Sensor(1, _pressure),
    _Sensor(2, _ambient_light),
    _Sensor(3, _co2),
    _Sensor(1, _activity),
    _Sensor(1, _tvoc),
)
_DL_MBX = (
    _Sensor(2, _distance),
    _Sensor(1, _battery),
)


def _decode(payload: bytes, fport: int, model: str, sensors: tuple[_Sensor, ...]) -> Measurements:
    vendor = f"{VENDOR} {model}"
    check_fport(vendor, fport, DATA_FPORTS)
    reader = ByteReader(payload, vendor)
    version = reader.u8("protocol version")
    if version != PROTOCOL_VERSION:
        raise DecodeError(
            f"{vendor}: protocol version {version} at byte 0, only {PROTOCOL_VERSION} is known"
        )
    reader.u16("device id")  # the DevEUI identifies the device; the id is redundant
    flags_offset = reader.offset
    flags = reader.u16("flags")
    if flags >> len(sensors):
        raise DecodeError(
            f"{vendor}: flags 0x{flags:04x} at byte {flags_offset} name sensor(s) beyond the "
            f"{len(sensors)} this model has"
        )
    out: Measurements = {}
    for index, sensor in enumerate(sensors):
        if flags & (1 << index):
            sensor.convert(reader.u16s(sensor.words, _SENSOR_FIELDS[index]), out)
    reader.expect_end()
    return out


def decode_dl_iam(payload: bytes, fport: int) -> Measurements:
    """Canonical measurements from a DL-IAM indoor ambiance monitor uplink (FPort 1)."""
    return _decode(payload, fport, "DL-IAM", _DL_IAM)


def decode_dl_mbx(payload: bytes, fport: int) -> Measurements:
    """Canonical measurements from a DL-MBX ultrasonic distance sensor uplink (FPort 1)."""
    return _decode(payload, fport, "DL-MBX", _DL_MBX)


DECODERS = {"decentlab_dl_iam": decode_dl_iam, "decentlab_dl_mbx": decode_dl_mbx}

DEVICE_MODELS = [
    DeviceModelSpec(
        VENDOR,
        "DL-IAM",
        "decentlab_dl_iam",
        "climate",
        {
            "metrics": [
                "battery_v",
                "temperature_c",
                "humidity_pct",
                "pressure_pa",
                "light_lux",
                "co2_ppm",
                "motion_count",
                "tvoc_ppb",
            ],
            "source": SOURCE,
        },
    ),
    DeviceModelSpec(
        VENDOR,
        "DL-MBX",
        "decentlab_dl_mbx",
        "bin",
        {"metrics": ["distance_mm", "battery_v"], "source": SOURCE},
    ),
]
