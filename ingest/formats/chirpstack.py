"""ChirpStack v4 application integration, JSON marshaler: the ``event/up`` message.

Topic ``application/<application id>/device/<DevEUI>/event/up``. Fields read: ``time``
(receive time, RFC 3339; absent when no gateway had GPS/NTP time), ``deviceInfo.devEui``,
``deviceInfo.applicationId``, ``fPort``, ``data`` (base64 FRMPayload), ``object`` (decoded by
the device profile's codec, when configured) and ``rxInfo[].rssi/snr``.
"""

from __future__ import annotations

from datetime import datetime

from ingest.formats._common import (
    as_object,
    best_radio,
    decode_base64,
    fport_of,
    load_json_object,
    normalise_dev_eui,
    optional_object,
    parse_time,
)
from ingest.uplink import Uplink

NAME = "chirpstack"
TOPIC_PATTERN = r"application/[^/]+/device/[^/]+/event/up"


def parse(topic: str, payload: bytes, arrival: datetime) -> Uplink:
    event = load_json_object(payload)
    device = as_object(event.get("deviceInfo"), "deviceInfo")
    dev_eui = normalise_dev_eui(device.get("devEui"), "deviceInfo.devEui")
    received_at = arrival
    if event.get("time"):
        received_at = parse_time(event["time"], "time")
    else:
        for rx in event.get("rxInfo") or ():
            if isinstance(rx, dict) and rx.get("nsTime"):
                received_at = parse_time(rx["nsTime"], "rxInfo.nsTime")
                break
    rssi, snr = best_radio(event.get("rxInfo"))
    return Uplink(
        format=NAME,
        received_at=received_at,
        dev_eui=dev_eui,
        application_id=str(device.get("applicationId") or "") or None,
        fport=fport_of(event.get("fPort"), "fPort"),
        payload=decode_base64(event.get("data"), "data"),
        decoded=optional_object(event.get("object")),
        rssi_dbm=rssi,
        snr_db=snr,
    )
