"""Nwave LoRaWAN parking sensors (NPS-3.10-SM and the 4.x smart parking sensor).

Source: Nwave, "Nwave LoRaWAN Parking Sensor — Getting Started", section 4.2 "Uplink
messages". The message type is the FPort:

* FPort 1, parking status: byte 0 bit 0 occupied (bits 7..1 compress the duration of
  the previous state, which we do not need: the uplink time marks the change).
* FPort 2, heartbeat: byte 0 bit 0 occupied.
* FPort 3, start-up (5 bytes): firmware version (3 bytes), reset cause (1 byte),
  parking status (1 byte, bit 0 occupied).

The start-up byte positions are checked against the vendor's published example frame
(`010d000200`: firmware 1.13.0, reset cause, free). Other ports (SDI tag registration,
debug, configuration feedback) carry no measurements and raise DecodeError.
"""

from __future__ import annotations

from domain.decoders import DecodeError, DeviceModelSpec, Measurements
from domain.decoders._reader import ByteReader, check_fport

VENDOR = "Nwave"
SOURCE = "Nwave LoRaWAN Parking Sensor - Getting Started, section 4.2 Uplink messages"
PARKING_STATUS_FPORT = 1
HEARTBEAT_FPORT = 2
STARTUP_FPORT = 3
_STARTUP_LENGTH = 5


def decode(payload: bytes, fport: int) -> Measurements:
    """Occupancy from one Nwave parking sensor uplink on FPort 1, 2 or 3."""
    check_fport(VENDOR, fport, (PARKING_STATUS_FPORT, HEARTBEAT_FPORT, STARTUP_FPORT))
    reader = ByteReader(payload, VENDOR)
    if fport == STARTUP_FPORT:
        if len(payload) != _STARTUP_LENGTH:
            raise DecodeError(
                f"{VENDOR}: a start-up message must be {_STARTUP_LENGTH} bytes long, "
                f"got {len(payload)}"
            )
        reader.take(4, "firmware version and reset cause")
    return {"occupied": bool(reader.u8("parking status") & 0x01)}


DECODERS = {"nwave_parking": decode}

DEVICE_MODELS = [
    DeviceModelSpec(
        "Nwave",
        "NPS-3.10-SM",
        "nwave_parking",
        "parking",
        {"metrics": ["occupied"], "source": SOURCE},
    ),
    DeviceModelSpec(
        "Nwave",
        "Smart Parking Sensor 4.5",
        "nwave_parking",
        "parking",
        {"metrics": ["occupied"], "source": SOURCE},
    ),
]
