"""Elsys ERS family (ERS, ERS CO2, ERS Sound, ERS Desk, ERS Eye, ERS Lite, ELT Lite).

Source: Elsys, "Elsys LoRa payload" structure document (generic payload v2): the
payload is a sequence of (type byte, value) records; each type has a fixed value length,
and integers are big-endian. Type 0xFE (settings) takes the rest of the frame. The FPort
is configurable on the device (default 5), so any application FPort is accepted.

Read into canonical metrics: temperature (0x01, int16 × 0.1 °C), humidity (0x02, %),
light (0x04, lux), motion (0x05, PIR count), CO2 (0x06, ppm), VDD (0x07, mV), external
distance (0x0E, mm), occupancy (0x11, 0 free / 1 pending / 2 occupied), pressure (0x14,
uint32 hPa × 1000), sound (0x15, peak then average dB), TVOC (0x1C, ppb).

Type 0x3E is the sensor-settings frame the device sends at start-up on its configured
FPort + 1 (6 by default): device information, not measurements. Like 0xFE it takes the
rest of the frame, so a frame starting with it decodes to nothing to store, as the
vendor's decoder treats it, not to an error.
"""

from __future__ import annotations

from collections.abc import Callable

from domain.decoders import DecodeError, DeviceModelSpec, Measurements
from domain.decoders._reader import APPLICATION_FPORTS, ByteReader, check_fport

VENDOR = "Elsys"
SOURCE = "Elsys LoRa payload structure document (generic payload v2)"

# Value length in bytes of each type we skip: the quantity exists but has no canonical
# metric a municipality uses (accelerometer, pulse counters, analog inputs, GPS of a
# static device, external probes that are not air temperature, debug words).
_SKIPPED_LENGTHS = {
    0x03: 3,  # acceleration X, Y, Z: device orientation, not an environmental quantity
    0x08: 2,  # analog input 1 (mV): meaning depends on what is wired to it
    0x09: 6,  # GPS: sensor position belongs in the registry, not in readings
    0x0A: 2,  # pulse input 1, relative count: meaning depends on the meter wired to it
    0x0B: 4,  # pulse input 1, absolute count
    0x0C: 2,  # external temperature probe: a surface/liquid probe, not air temperature
    0x0D: 1,  # external digital input
    0x0F: 1,  # accelerometer motion count: vibration, not people
    0x10: 4,  # IR temperature (internal + external): surface temperatures
    0x12: 1,  # water leak level: not a use case of ours yet
    0x13: 65,  # Grid-EYE 8×8 thermal image
    0x16: 2,  # pulse input 2, relative
    0x17: 4,  # pulse input 2, absolute
    0x18: 2,  # analog input 2
    0x19: 2,  # external temperature probe 2
    0x1A: 1,  # external digital input 2
    0x1B: 4,  # external analog input (µV)
    0x3D: 4,  # debug word
}
_SETTINGS = 0xFE
_SENSOR_SETTINGS = 0x3E  # start-up settings frame (FPort + 1): the rest is settings


def _temperature(reader: ByteReader, out: Measurements) -> None:
    out["temperature_c"] = reader.i16("temperature") / 10.0


def _humidity(reader: ByteReader, out: Measurements) -> None:
    out["humidity_pct"] = float(reader.u8("humidity"))


def _light(reader: ByteReader, out: Measurements) -> None:
    out["light_lux"] = float(reader.u16("light"))


def _motion(reader: ByteReader, out: Measurements) -> None:
    out["motion_count"] = float(reader.u8("motion"))


def _co2(reader: ByteReader, out: Measurements) -> None:
    out["co2_ppm"] = float(reader.u16("co2"))


def _vdd(reader: ByteReader, out: Measurements) -> None:
    out["battery_v"] = reader.u16("vdd") / 1000.0


def _distance(reader: ByteReader, out: Measurements) -> None:
    out["distance_mm"] = float(reader.u16("external distance"))


def _occupancy(reader: ByteReader, out: Measurements) -> None:
    start = reader.offset
    state = reader.u8("occupancy")
    if state > 2:
        raise DecodeError(f"{VENDOR}: occupancy value {state} at byte {start} is not 0, 1 or 2")
    # 1 means "pending" (someone entering or leaving): not yet occupied.
    out["occupancy"] = state == 2


def _pressure(reader: ByteReader, out: Measurements) -> None:
    # hPa × 1000 on the wire; 1 hPa = 100 Pa.
    out["pressure_pa"] = reader.u32("pressure") / 10.0


def _sound(reader: ByteReader, out: Measurements) -> None:
    out["sound_peak_dba"] = float(reader.u8("sound peak"))
    out["sound_avg_dba"] = float(reader.u8("sound average"))


def _tvoc(reader: ByteReader, out: Measurements) -> None:
    out["tvoc_ppb"] = float(reader.u16("tvoc"))


_READERS: dict[int, Callable[[ByteReader, Measurements], None]] = {
    0x01: _temperature,
    0x02: _humidity,
    0x04: _light,
    0x05: _motion,
    0x06: _co2,
    0x07: _vdd,
    0x0E: _distance,
    0x11: _occupancy,
    0x14: _pressure,
    0x15: _sound,
    0x1C: _tvoc,
}


def decode(payload: bytes, fport: int) -> Measurements:
    """Canonical measurements from one Elsys uplink (any application FPort)."""
    check_fport(VENDOR, fport, APPLICATION_FPORTS)
    if not payload:
        raise DecodeError(f"{VENDOR}: empty payload")
    reader = ByteReader(payload, VENDOR)
    out: Measurements = {}
    while not reader.at_end():
        type_offset = reader.offset
        type_byte = reader.u8("type")
        if type_byte in (_SETTINGS, _SENSOR_SETTINGS):
            break  # the rest of the frame is a settings dump, not measurements
        if type_byte in _READERS:
            _READERS[type_byte](reader, out)
        elif type_byte in _SKIPPED_LENGTHS:
            reader.take(_SKIPPED_LENGTHS[type_byte], f"type 0x{type_byte:02x}")
        else:
            raise DecodeError(
                f"{VENDOR}: unknown data type 0x{type_byte:02x} at byte {type_offset}"
            )
    return out


DECODERS = {"elsys": decode}

_CLIMATE = ["temperature_c", "humidity_pct", "light_lux", "motion_count", "battery_v"]
DEVICE_MODELS = [
    DeviceModelSpec(VENDOR, "ERS", "elsys", "climate", {"metrics": _CLIMATE, "source": SOURCE}),
    DeviceModelSpec(
        VENDOR, "ERS CO2", "elsys", "climate", {"metrics": [*_CLIMATE, "co2_ppm"], "source": SOURCE}
    ),
    DeviceModelSpec(
        VENDOR,
        "ERS Sound",
        "elsys",
        "climate",
        {"metrics": [*_CLIMATE, "sound_peak_dba", "sound_avg_dba"], "source": SOURCE},
    ),
    DeviceModelSpec(
        VENDOR,
        "ERS Desk",
        "elsys",
        "climate",
        {"metrics": ["temperature_c", "humidity_pct", "occupancy", "battery_v"], "source": SOURCE},
    ),
    DeviceModelSpec(
        VENDOR,
        "ERS Eye",
        "elsys",
        "climate",
        {"metrics": [*_CLIMATE, "occupancy"], "source": SOURCE},
    ),
    DeviceModelSpec(
        VENDOR,
        "ELT Lite",
        "elsys",
        "bin",
        {"metrics": ["distance_mm", "battery_v"], "source": SOURCE},
    ),
]
