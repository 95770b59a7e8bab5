"""Pepperl+Fuchs WILSEN.sonic.level wireless ultrasonic level sensor.

Source: Pepperl+Fuchs, "Description of the Payload — Wireless Ultrasonic Sensor
WILSEN.sonic.level" (tdoct7056). An uplink is a sequence of application data packages
(ADP): one length byte (covering what follows), a 16-bit UUID naming the value, then the
value, big-endian. Three payload kinds mix these ADPs: sensor data (proximity, fill
level, temperature, battery), the same plus GPS position, and a counters/serial-number
status frame.
"""

from __future__ import annotations

from collections.abc import Callable

from domain.decoders import DecodeError, DeviceModelSpec, Measurements
from domain.decoders._reader import APPLICATION_FPORTS, ByteReader, check_fport

VENDOR = "Pepperl+Fuchs WILSEN.sonic.level"
SOURCE = "Pepperl+Fuchs WILSEN.sonic.level payload description (tdoct7056)"


def _proximity(reader: ByteReader, out: Measurements) -> None:
    out["distance_mm"] = reader.u16("proximity") * 10.0  # cm on the wire


def _fill_level(reader: ByteReader, out: Measurements) -> None:
    # The device's own fill level, from the tank geometry configured in the WILSEN app.
    out["fill_pct"] = float(reader.u8("fill level"))


def _temperature(reader: ByteReader, out: Measurements) -> None:
    out["temperature_c"] = reader.f32("temperature")


def _battery(reader: ByteReader, out: Measurements) -> None:
    out["battery_v"] = reader.u8("battery") / 10.0  # volts × 10 on the wire


def _skip(what: str) -> Callable[[ByteReader, Measurements], None]:
    def read(reader: ByteReader, _out: Measurements) -> None:
        reader.take(reader.remaining, what)

    return read


# UUID → (value length in bytes, reader).
_ADPS: dict[int, tuple[int, Callable[[ByteReader, Measurements], None]]] = {
    0x0B01: (2, _proximity),
    0x0B06: (1, _fill_level),
    0x0201: (4, _temperature),
    0x5101: (1, _battery),
    # GPS latitude/longitude (int32, 1e-6 degrees): a bin's position belongs in the
    # registry; a moving bin is not a use case of ours.
    0x5001: (4, _skip("latitude")),
    0x5002: (4, _skip("longitude")),
    # Transmission and measurement counters: device diagnostics, not measurements.
    0x3101: (2, _skip("LoRa transmission counter")),
    0x3102: (2, _skip("GPS fix counter")),
    0x3103: (4, _skip("ultrasonic measurement counter")),
}
_SERIAL_NUMBER = 0x2A25  # ASCII, variable length: identifies the device, not a measurement


def decode(payload: bytes, fport: int) -> Measurements:
    """Canonical measurements from one WILSEN.sonic.level uplink (any application FPort)."""
    check_fport(VENDOR, fport, APPLICATION_FPORTS)
    if not payload:
        raise DecodeError(f"{VENDOR}: empty payload")
    reader = ByteReader(payload, VENDOR)
    out: Measurements = {}
    while not reader.at_end():
        start = reader.offset
        length = reader.u8("package length")
        if length < 2:
            raise DecodeError(f"{VENDOR}: package length {length} at byte {start} is below 2")
        package = ByteReader(reader.take(length, f"package at byte {start}"), VENDOR, start + 1)
        uuid = package.u16("UUID")
        if uuid == _SERIAL_NUMBER:
            continue
        if uuid not in _ADPS:
            raise DecodeError(f"{VENDOR}: unknown UUID 0x{uuid:04x} at byte {start + 1}")
        size, read = _ADPS[uuid]
        if package.remaining != size:
            raise DecodeError(
                f"{VENDOR}: UUID 0x{uuid:04x} at byte {start + 1} has {package.remaining} "
                f"value byte(s), expected {size}"
            )
        read(package, out)
    return out


DECODERS = {"pepperl_fuchs_wilsen": decode}

DEVICE_MODELS = [
    DeviceModelSpec(
        "Pepperl+Fuchs",
        "WILSEN.sonic.level",
        "pepperl_fuchs_wilsen",
        "bin",
        {"metrics": ["distance_mm", "fill_pct", "temperature_c", "battery_v"], "source": SOURCE},
    ),
]
