"""Bosch Parking Lot Sensor (TPS110, "PLS"), firmware 0.29.x.

Source: Bosch Connected Devices and Solutions, "Parking Lot Sensor — Communication
Interface, Technical Description" rev. 1 V0.29.4, section "Uplink messages". The message
type is the FPort:

* FPort 1, parking status (1 byte): bit 0 occupied; sent on every change.
* FPort 2, heartbeat (1 or 2 bytes): bit 0 occupied; the optional second byte is the
  device temperature in °C as a signed integer.
* FPort 3, start-up (17 bytes): three 32-bit little-endian debug codes, firmware version
  (3 bytes), reset cause (1 byte), parking status (1 byte, bit 0 occupied).
* FPorts 4 (device information), 5 (device usage) and 6 (debug) are maintenance
  messages: valid frames without measurements, so they decode to an empty result
  instead of filling the dead-letter table every day.
"""

from __future__ import annotations

from domain.decoders import DecodeError, DeviceModelSpec, Measurements
from domain.decoders._reader import ByteReader, check_fport

VENDOR = "Bosch TPS110"
SOURCE = "Bosch Parking Lot Sensor Communication Interface, Technical Description V0.29.4"
PARKING_STATUS_FPORT = 1
HEARTBEAT_FPORT = 2
STARTUP_FPORT = 3
MAINTENANCE_FPORTS = (4, 5, 6)
_STARTUP_LENGTH = 17


def _check_length(payload: bytes, allowed: tuple[int, ...], message: str) -> None:
    if len(payload) not in allowed:
        expected = " or ".join(str(n) for n in allowed)
        raise DecodeError(
            f"{VENDOR}: {message} must be {expected} byte(s) long, got {len(payload)}"
        )


def decode(payload: bytes, fport: int) -> Measurements:
    """Occupancy (and heartbeat temperature) from one TPS110 uplink on FPort 1 … 6."""
    check_fport(
        VENDOR, fport, (PARKING_STATUS_FPORT, HEARTBEAT_FPORT, STARTUP_FPORT, *MAINTENANCE_FPORTS)
    )
    if fport in MAINTENANCE_FPORTS:
        return {}
    reader = ByteReader(payload, VENDOR)
    out: Measurements = {}
    if fport == PARKING_STATUS_FPORT:
        _check_length(payload, (1,), "a parking status message")
        out["occupied"] = bool(reader.u8("parking status") & 0x01)
    elif fport == HEARTBEAT_FPORT:
        _check_length(payload, (1, 2), "a heartbeat message")
        out["occupied"] = bool(reader.u8("parking status") & 0x01)
        if not reader.at_end():
            out["temperature_c"] = float(reader.i8("temperature"))
    else:
        _check_length(payload, (_STARTUP_LENGTH,), "a start-up message")
        # Debug codes, firmware version and reset cause are maintenance information.
        reader.take(12 + 3 + 1, "start-up header")
        out["occupied"] = bool(reader.u8("parking status") & 0x01)
    return out


DECODERS = {"bosch_tps110": decode}

DEVICE_MODELS = [
    DeviceModelSpec(
        "Bosch",
        "TPS110",
        "bosch_tps110",
        "parking",
        {"metrics": ["occupied", "temperature_c"], "source": SOURCE},
    ),
]
