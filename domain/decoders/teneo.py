"""Teneo IoT Filling Degree Sensor (ultrasonic waste-bin sensor).

Teneo publishes no byte-format document that we could find. This layout is INFERRED
from the four uplink examples published in The Things Network's Device Repository
(`vendor/teneo-iot/filling-degree-sensor-codec.yaml`, see shared/vectors/README.md);
treat anything beyond those examples as unverified:

    byte 0      battery: 2.0 V + 0.1 V per step (0x0b → 3.1 V ... 0x0e → 3.4 V)
    bytes 1-2   distance in cm, big-endian
    byte 3      (optional) status: 0 valid measurement, otherwise an error code, in which
                case the distance is not a measurement and is not reported
    bytes 4-5   (optional) temperature, signed, 0.01 °C
    bytes 6-7   (optional) relative humidity, 0.01 %

So a frame is 3 bytes (data only), 4 bytes (data + status) or 8 bytes (data + status +
climate), on FPort 1 (and any other application FPort but 2).

FPort 2 carries the sensor's status frame instead, 2 bytes: the battery byte as above,
then a byte whose meaning is not published (``0d00``: battery 3.3 V). It carries no
distance, so only the battery voltage is read.

The examples report charging/settings flags too, but all four show the same values,
so which bits carry them cannot be inferred; we read none.
"""

from __future__ import annotations

from domain.decoders import DecodeError, DeviceModelSpec, Measurements
from domain.decoders._reader import APPLICATION_FPORTS, ByteReader, check_fport

VENDOR = "Teneo IoT Filling Degree Sensor"
SOURCE = "No vendor document; inferred from TTN Device Repository examples (see module)"
_LENGTHS = (3, 4, 8)
_STATUS_FPORT = 2


def decode(payload: bytes, fport: int) -> Measurements:
    """Distance, battery and (when present) temperature and humidity from one uplink."""
    check_fport(VENDOR, fport, APPLICATION_FPORTS)
    if fport == _STATUS_FPORT:
        if len(payload) != 2:
            raise DecodeError(
                f"{VENDOR}: status frame (fPort 2) must be 2 bytes long, got {len(payload)}"
            )
        return {"battery_v": 2.0 + ByteReader(payload, VENDOR).u8("battery") / 10.0}
    if len(payload) not in _LENGTHS:
        raise DecodeError(f"{VENDOR}: frame must be 3, 4 or 8 bytes long, got {len(payload)}")
    reader = ByteReader(payload, VENDOR)
    battery_steps = reader.u8("battery")
    distance_cm = reader.u16("distance")
    status = reader.u8("status") if not reader.at_end() else 0
    out: Measurements = {"battery_v": 2.0 + battery_steps / 10.0}
    if status == 0:
        out["distance_mm"] = distance_cm * 10.0
    if not reader.at_end():
        out["temperature_c"] = reader.i16("temperature") / 100.0
        out["humidity_pct"] = reader.u16("humidity") / 100.0
    return out


DECODERS = {"teneo_filling_degree": decode}

DEVICE_MODELS = [
    DeviceModelSpec(
        "Teneo IoT",
        "Filling Degree Sensor",
        "teneo_filling_degree",
        "bin",
        {
            "metrics": ["distance_mm", "battery_v", "temperature_c", "humidity_pct"],
            "source": SOURCE,
        },
    ),
]
