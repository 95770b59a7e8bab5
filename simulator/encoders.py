"""Encode measurements into the byte formats real sensors send (the decoders' inverse).

Written from the vendors' public payload documents:

* Elsys ERS / ERS CO2 — "Elsys LoRa payload": a sequence of (type byte, value) pairs,
  big-endian; 0x01 temperature int16 0.1 °C, 0x02 humidity uint8 %, 0x04 light uint16 lx,
  0x05 motion uint8 count, 0x06 CO2 uint16 ppm, 0x07 supply voltage uint16 mV. fPort 1.
* Milesight AM107 — channel/type pairs, little-endian: 01 75 battery %, 03 67 temperature
  int16 0.1 °C, 04 68 humidity uint8 0.5 %, 05 6A activity uint16, 06 65 illumination /
  visible+IR / IR uint16 ×3, 07 7D CO2 uint16 ppm, 08 7D TVOC uint16 ppb, 09 73 pressure
  uint16 0.1 hPa. fPort 85.
* Decentlab protocol version 2 (DL-IAM, DL-MBX): version byte 2, device id uint16, sensor
  flags uint16, then for each flagged sensor its uint16 big-endian words in flag order.
* Bosch TPS110 (firmware 0.29.x) and Nwave NPS parking sensors: fPort 1 parking status,
  fPort 2 heartbeat; bit 0 of byte 0 is "occupied"; Bosch's heartbeat adds an int8 °C.

Every encoder takes canonical measurements (metric names of ``domain.metrics``) and
returns a ``Frame``; values are rounded and clipped to what the wire format can carry.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from typing import NamedTuple


class Frame(NamedTuple):
    """One LoRaWAN application payload and the port it is sent on."""

    fport: int
    payload: bytes


# (values, heartbeat, serial) -> Frame. `heartbeat` selects the periodic status frame of
# event-driven sensors; `serial` is the device's own number where the format carries one.
Encoder = Callable[[Mapping[str, float], bool, int], Frame]


def _clip_int(value: float, low: int, high: int) -> int:
    return int(min(max(round(value), low), high))


def encode_elsys_ers(
    values: Mapping[str, float], heartbeat: bool = False, serial: int = 0
) -> Frame:
    """Elsys ERS / ERS CO2: temperature, humidity, light, motion, CO2 (if given), supply."""
    out = bytearray()
    if "temperature_c" in values:
        out += b"\x01" + struct.pack(">h", _clip_int(values["temperature_c"] * 10, -32768, 32767))
    if "humidity_pct" in values:
        out += b"\x02" + struct.pack(">B", _clip_int(values["humidity_pct"], 0, 100))
    if "light_lux" in values:
        out += b"\x04" + struct.pack(">H", _clip_int(values["light_lux"], 0, 65535))
    if "motion_count" in values:
        out += b"\x05" + struct.pack(">B", _clip_int(values["motion_count"], 0, 255))
    if "co2_ppm" in values:
        out += b"\x06" + struct.pack(">H", _clip_int(values["co2_ppm"], 0, 10000))
    if "battery_v" in values:
        out += b"\x07" + struct.pack(">H", _clip_int(values["battery_v"] * 1000, 0, 65535))
    return Frame(1, bytes(out))


def encode_milesight_am107(
    values: Mapping[str, float], heartbeat: bool = False, serial: int = 0
) -> Frame:
    """Milesight AM107: the full periodic report on fPort 85."""
    out = bytearray()
    if "battery_pct" in values:
        out += b"\x01\x75" + struct.pack("<B", _clip_int(values["battery_pct"], 0, 100))
    if "temperature_c" in values:
        out += b"\x03\x67" + struct.pack(
            "<h", _clip_int(values["temperature_c"] * 10, -32768, 32767)
        )
    if "humidity_pct" in values:
        out += b"\x04\x68" + struct.pack("<B", _clip_int(values["humidity_pct"] * 2, 0, 200))
    if "motion_count" in values:
        out += b"\x05\x6a" + struct.pack("<H", _clip_int(values["motion_count"], 0, 65535))
    if "light_lux" in values:
        lux = _clip_int(values["light_lux"], 0, 65535)
        # The sensor also reports its raw visible+IR and IR channels; daylight-like ratio.
        out += b"\x06\x65" + struct.pack("<HHH", lux, min(lux * 4 + 20, 65535), lux // 2 + 10)
    if "co2_ppm" in values:
        out += b"\x07\x7d" + struct.pack("<H", _clip_int(values["co2_ppm"], 0, 65535))
    if "tvoc_ppb" in values:
        out += b"\x08\x7d" + struct.pack("<H", _clip_int(values["tvoc_ppb"], 0, 65535))
    if "pressure_pa" in values:
        out += b"\x09\x73" + struct.pack("<H", _clip_int(values["pressure_pa"] / 10, 0, 65535))
    return Frame(85, bytes(out))


def _decentlab(serial: int, sensors: list[tuple[int, list[int]]]) -> bytes:
    flags = 0
    words: list[int] = []
    for bit, sensor_words in sensors:
        flags |= 1 << bit
        words.extend(sensor_words)
    return struct.pack(f">BHH{len(words)}H", 2, serial & 0xFFFF, flags, *words)


def _battery_words(values: Mapping[str, float]) -> list[int]:
    return [_clip_int(values["battery_v"] * 1000, 0, 65535)]


def encode_decentlab_dl_iam(
    values: Mapping[str, float], heartbeat: bool = False, serial: int = 0
) -> Frame:
    """Decentlab DL-IAM indoor ambience monitor (protocol 2).

    Sensor flags: 0 battery, 1 temperature + humidity (SHT), 2 pressure, 3 ambient light
    (visible+IR, IR), 4 CO2 (value + 32768, status, raw IR), 5 activity, 6 TVOC.
    """
    sensors: list[tuple[int, list[int]]] = []
    if "battery_v" in values:
        sensors.append((0, _battery_words(values)))
    if "temperature_c" in values and "humidity_pct" in values:
        temp_word = _clip_int((values["temperature_c"] + 45) * 65535 / 175, 0, 65535)
        hum_word = _clip_int(values["humidity_pct"] * 65535 / 100, 0, 65535)
        sensors.append((1, [temp_word, hum_word]))
    if "pressure_pa" in values:
        sensors.append((2, [_clip_int(values["pressure_pa"] / 2, 0, 65535)]))
    if "light_lux" in values:
        # Illuminance = 1.5504 × (visible+IR − 1.64 × IR) on the dominant branch; choose
        # IR = 0.1 × visible+IR so that branch applies and invert it.
        vis_ir = _clip_int(values["light_lux"] / (1.5504 * (1 - 0.164)), 0, 65535)
        sensors.append((3, [vis_ir, vis_ir // 10]))
    if "co2_ppm" in values:
        co2_word = _clip_int(values["co2_ppm"] + 32768, 0, 65535)
        sensors.append((4, [co2_word, 0, 37000]))
    if "motion_count" in values:
        sensors.append((5, [_clip_int(values["motion_count"], 0, 65535)]))
    if "tvoc_ppb" in values:
        sensors.append((6, [_clip_int(values["tvoc_ppb"], 0, 65535)]))
    return Frame(1, _decentlab(serial, sensors))


def encode_decentlab_dl_mbx(
    values: Mapping[str, float], heartbeat: bool = False, serial: int = 0
) -> Frame:
    """Decentlab DL-MBX ultrasonic distance sensor (protocol 2).

    Sensor flags: 0 distance (mm, number of valid samples), 1 battery (mV).
    """
    sensors: list[tuple[int, list[int]]] = []
    if "distance_mm" in values:
        sensors.append((0, [_clip_int(values["distance_mm"], 0, 65535), 16]))
    if "battery_v" in values:
        sensors.append((1, _battery_words(values)))
    return Frame(1, _decentlab(serial, sensors))


def encode_bosch_tps110(
    values: Mapping[str, float], heartbeat: bool = False, serial: int = 0
) -> Frame:
    """Bosch TPS110: parking status (fPort 1) or heartbeat with temperature (fPort 2)."""
    occupied = 1 if values["occupied"] else 0
    if not heartbeat:
        return Frame(1, bytes([occupied]))
    temp = _clip_int(values.get("temperature_c", 10.0), -128, 127)
    return Frame(2, bytes([occupied, temp & 0xFF]))


def encode_nwave_nps(
    values: Mapping[str, float], heartbeat: bool = False, serial: int = 0
) -> Frame:
    """Nwave NPS parking sensor: parking status (fPort 1) or heartbeat (fPort 2).

    Bits 7..1 of the status byte carry the compressed duration of the previous state;
    the simulator leaves them zero.
    """
    occupied = 1 if values["occupied"] else 0
    return Frame(2 if heartbeat else 1, bytes([occupied]))


# Keyed by (vendor, model) as the device models are registered.
ENCODERS: dict[tuple[str, str], Encoder] = {
    ("Elsys", "ERS CO2"): encode_elsys_ers,
    ("Elsys", "ERS"): encode_elsys_ers,
    ("Milesight", "AM107"): encode_milesight_am107,
    ("Decentlab", "DL-IAM"): encode_decentlab_dl_iam,
    ("Decentlab", "DL-MBX"): encode_decentlab_dl_mbx,
    ("Bosch", "TPS110"): encode_bosch_tps110,
    ("Nwave", "NPS-3.10-SM"): encode_nwave_nps,
}


# Frames that stay valid with their last byte cut off: a Bosch heartbeat without its
# optional temperature byte is a valid heartbeat, not a malformed one.
_OPTIONAL_LAST_BYTE: frozenset[tuple[str, str, int]] = frozenset({("Bosch", "TPS110", 2)})


def truncate_frame(frame: Frame, vendor: str, model: str) -> Frame | None:
    """The same frame with its last byte cut off, as a radio glitch or bad firmware gives,
    or None when what is left would still be a valid frame of the product.

    In the other formats above every byte belongs to a value, so the cut frame always leaves
    one incomplete and a correct decoder must refuse it. A one-byte frame has nothing left to
    cut, and a frame whose last byte is optional would pass as a shorter valid one.
    """
    if len(frame.payload) < 2 or (vendor, model, frame.fport) in _OPTIONAL_LAST_BYTE:
        return None
    return Frame(frame.fport, frame.payload[:-1])
