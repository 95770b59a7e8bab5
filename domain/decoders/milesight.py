"""Milesight (formerly Ursalink) AM100, AM300, EM310-UDL and EM500 families.

Source: the payload sections of Milesight's user guides ("AM100/AM102 Payload Structure"
V1.0, AM300 series user guide, EM310-UDL and EM500 series user guides). Every uplink on
FPort 85 is a sequence of records: channel byte, type byte, then a value whose length is
fixed by (channel, type); multi-byte integers are little-endian. Channel 0xFF carries
device information (protocol/hardware/firmware version, power-on event, serial number),
which has no measurement value and is skipped.

The same channel number means different things in different families (channel 0x05 is
PIR activity on the AM100, PIR status on the AM300 and CO2 on the EM500-CO2), so each
family has its own table and decoder key.
"""

from __future__ import annotations

from collections.abc import Callable

from domain.decoders import DecodeError, DeviceModelSpec, Measurements
from domain.decoders._reader import ByteReader, check_fport

VENDOR = "Milesight"
DATA_FPORTS = (85,)

_Read = Callable[[ByteReader, Measurements], None]


def _battery(reader: ByteReader, out: Measurements) -> None:
    out["battery_pct"] = float(reader.u8("battery"))


def _temperature(reader: ByteReader, out: Measurements) -> None:
    out["temperature_c"] = reader.i16le("temperature") / 10.0


def _humidity(reader: ByteReader, out: Measurements) -> None:
    out["humidity_pct"] = reader.u8("humidity") / 2.0


def _activity(reader: ByteReader, out: Measurements) -> None:
    out["motion_count"] = float(reader.u16le("PIR activity"))


def _illumination(reader: ByteReader, out: Measurements) -> None:
    out["light_lux"] = float(reader.u16le("illumination"))
    # The raw visible+infrared and infrared channel counts follow; they only serve to
    # compute the illuminance the device already reports.
    reader.take(4, "infrared channels")


def _co2(reader: ByteReader, out: Measurements) -> None:
    out["co2_ppm"] = float(reader.u16le("co2"))


def _tvoc_ppb(reader: ByteReader, out: Measurements) -> None:
    out["tvoc_ppb"] = float(reader.u16le("tvoc"))


def _pressure(reader: ByteReader, out: Measurements) -> None:
    # 0.1 hPa on the wire; 1 hPa = 100 Pa.
    out["pressure_pa"] = reader.u16le("pressure") * 10.0


def _pir_status(reader: ByteReader, out: Measurements) -> None:
    start = reader.offset
    status = reader.u8("PIR status")
    if status > 1:
        raise DecodeError(f"{VENDOR}: PIR status {status} at byte {start} is not 0 or 1")
    out["occupancy"] = status == 1


def _pm2_5(reader: ByteReader, out: Measurements) -> None:
    out["pm2_5_ug_m3"] = float(reader.u16le("PM2.5"))


def _pm10(reader: ByteReader, out: Measurements) -> None:
    out["pm10_ug_m3"] = float(reader.u16le("PM10"))


def _distance(reader: ByteReader, out: Measurements) -> None:
    out["distance_mm"] = float(reader.u16le("distance"))


def _skip(size: int, what: str) -> _Read:
    def read(reader: ByteReader, _out: Measurements) -> None:
        reader.take(size, what)

    return read


# Channel 0xFF: device information, the same on every family.
_INFO: dict[tuple[int, int], _Read] = {
    (0xFF, 0x01): _skip(1, "protocol version"),
    (0xFF, 0x09): _skip(2, "hardware version"),
    (0xFF, 0x0A): _skip(2, "firmware version"),
    (0xFF, 0x0B): _skip(1, "power-on event"),
    (0xFF, 0x0F): _skip(1, "device class"),
    (0xFF, 0x16): _skip(8, "serial number"),
    (0xFF, 0xFF): _skip(2, "TSL version"),
}

AM100: dict[tuple[int, int], _Read] = {
    **_INFO,
    (0x01, 0x75): _battery,
    (0x03, 0x67): _temperature,
    (0x04, 0x68): _humidity,
    (0x05, 0x6A): _activity,
    (0x06, 0x65): _illumination,
    (0x07, 0x7D): _co2,
    (0x08, 0x7D): _tvoc_ppb,
    (0x09, 0x73): _pressure,
}

AM300: dict[tuple[int, int], _Read] = {
    **_INFO,
    (0x01, 0x75): _battery,
    (0x03, 0x67): _temperature,
    (0x04, 0x68): _humidity,
    (0x05, 0x00): _pir_status,
    # Light level 0..5 is a coarse class, not illuminance in lux.
    (0x06, 0xCB): _skip(1, "light level"),
    (0x07, 0x7D): _co2,
    # TVOC is an IAQ index (0xE6) or µg/m³ (0x7D) depending on firmware, neither of which
    # converts to ppb without knowing the gas mixture; not read.
    (0x08, 0x7D): _skip(2, "tvoc"),
    (0x08, 0xE6): _skip(2, "tvoc level"),
    (0x09, 0x73): _pressure,
    (0x0A, 0x7D): _skip(2, "HCHO"),  # formaldehyde: not in our vocabulary yet
    (0x0B, 0x7D): _pm2_5,
    (0x0C, 0x7D): _pm10,
    (0x0D, 0x7D): _skip(2, "O3"),  # ozone: not in our vocabulary yet
    (0x0E, 0x01): _skip(1, "buzzer status"),
}

EM310_UDL: dict[tuple[int, int], _Read] = {
    **_INFO,
    (0x01, 0x75): _battery,
    (0x03, 0x82): _distance,
    # Position 0 normal / 1 tilted: an installation alarm, not a measurement.
    (0x04, 0x00): _skip(1, "position"),
}

EM500: dict[tuple[int, int], _Read] = {
    **_INFO,
    (0x01, 0x75): _battery,
    (0x03, 0x67): _temperature,  # EM500-CO2
    (0x03, 0x82): _distance,  # EM500-UDL
    (0x04, 0x68): _humidity,
    (0x05, 0x7D): _co2,
    (0x06, 0x73): _pressure,
}


def _decode(
    payload: bytes, fport: int, family: str, table: dict[tuple[int, int], _Read]
) -> Measurements:
    vendor = f"{VENDOR} {family}"
    check_fport(vendor, fport, DATA_FPORTS)
    if not payload:
        raise DecodeError(f"{vendor}: empty payload")
    reader = ByteReader(payload, vendor)
    out: Measurements = {}
    while not reader.at_end():
        start = reader.offset
        channel = reader.u8("channel")
        type_byte = reader.u8("type")
        read = table.get((channel, type_byte))
        if read is None:
            raise DecodeError(
                f"{vendor}: unknown channel 0x{channel:02x} type 0x{type_byte:02x} at byte {start}"
            )
        read(reader, out)
    return out


def decode_am100(payload: bytes, fport: int) -> Measurements:
    """Canonical measurements from an AM100-family uplink (AM102, AM104, AM107; FPort 85)."""
    return _decode(payload, fport, "AM100", AM100)


def decode_am300(payload: bytes, fport: int) -> Measurements:
    """Canonical measurements from an AM300-family uplink (AM307, AM319; FPort 85)."""
    return _decode(payload, fport, "AM300", AM300)


def decode_em310_udl(payload: bytes, fport: int) -> Measurements:
    """Canonical measurements from an EM310-UDL ultrasonic distance sensor (FPort 85)."""
    return _decode(payload, fport, "EM310-UDL", EM310_UDL)


def decode_em500(payload: bytes, fport: int) -> Measurements:
    """Canonical measurements from an EM500-CO2 or EM500-UDL uplink (FPort 85)."""
    return _decode(payload, fport, "EM500", EM500)


DECODERS = {
    "milesight_am100": decode_am100,
    "milesight_am300": decode_am300,
    "milesight_em310_udl": decode_em310_udl,
    "milesight_em500": decode_em500,
}

_AM100_GUIDE = "Milesight AM100/AM102 Payload Structure V1.0"
_AM300_GUIDE = "Milesight AM300 series user guide, uplink payload section"
_EM_GUIDE = "Milesight {model} user guide, uplink payload section"
_CLIMATE = ["temperature_c", "humidity_pct", "battery_pct"]

DEVICE_MODELS = [
    DeviceModelSpec(
        VENDOR,
        "AM102",
        "milesight_am100",
        "climate",
        {"metrics": [*_CLIMATE, "light_lux", "motion_count"], "source": _AM100_GUIDE},
    ),
    DeviceModelSpec(
        VENDOR,
        "AM104",
        "milesight_am100",
        "climate",
        {"metrics": [*_CLIMATE, "light_lux", "motion_count"], "source": _AM100_GUIDE},
    ),
    DeviceModelSpec(
        VENDOR,
        "AM107",
        "milesight_am100",
        "climate",
        {
            "metrics": [
                *_CLIMATE,
                "light_lux",
                "motion_count",
                "co2_ppm",
                "tvoc_ppb",
                "pressure_pa",
            ],
            "source": _AM100_GUIDE,
        },
    ),
    DeviceModelSpec(
        VENDOR,
        "AM307",
        "milesight_am300",
        "climate",
        {"metrics": [*_CLIMATE, "occupancy", "co2_ppm", "pressure_pa"], "source": _AM300_GUIDE},
    ),
    DeviceModelSpec(
        VENDOR,
        "AM319",
        "milesight_am300",
        "climate",
        {
            "metrics": [
                "temperature_c",
                "humidity_pct",
                "occupancy",
                "co2_ppm",
                "pressure_pa",
                "pm2_5_ug_m3",
                "pm10_ug_m3",
            ],
            "source": _AM300_GUIDE,
        },
    ),
    DeviceModelSpec(
        VENDOR,
        "EM310-UDL",
        "milesight_em310_udl",
        "bin",
        {"metrics": ["distance_mm", "battery_pct"], "source": _EM_GUIDE.format(model="EM310-UDL")},
    ),
    DeviceModelSpec(
        VENDOR,
        "EM500-UDL",
        "milesight_em500",
        "bin",
        {"metrics": ["distance_mm", "battery_pct"], "source": _EM_GUIDE.format(model="EM500-UDL")},
    ),
    DeviceModelSpec(
        VENDOR,
        "EM500-CO2",
        "milesight_em500",
        "climate",
        {
            "metrics": [*_CLIMATE, "co2_ppm", "pressure_pa"],
            "source": _EM_GUIDE.format(model="EM500-CO2"),
        },
    ),
]
