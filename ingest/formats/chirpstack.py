"""ChirpStack v4 application integration, JSON marshaler: the ``event/up`` message.

Topic ``application/<application id>/device/<DevEUI>/event/up``. Fields read: ``time``
(receive time, RFC 3339; absent when no gateway had GPS/NTP time; then
``rxInfo[].nsTime``; when neither, the readings are keyed on ``deduplicationId``, see
docs/ingest.md), ``deviceInfo.devEui``,
``deviceInfo.applicationId``, ``fPort``, ``data`` (base64 FRMPayload), ``object`` (decoded by
the device profile's codec, when configured) and ``rxInfo[].rssi/snr``.

A message is first decoded against the types of just those fields (`UpEvent`), which
skips the rest of it (gateway contexts, locations, metadata: most of its bytes) without
building objects for it; that was the largest single cost of a message. A message that
does not fit those types, or is not JSON, is read field by field instead
(`_parse_loosely`), which either refuses it with a reason or takes what it can use, as
for any message (a gateway entry that is not an object is skipped, not fatal). Both
readings give the same uplink for every message the typed one accepts
(tests/ingest/test_typed_formats.py). The one difference: what is skipped is not checked,
so invalid UTF-8 inside a field ingest does not read passes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from ingest.formats._common import (
    Gateway,
    as_object,
    best_gateway,
    best_radio,
    load_json_object,
    network_server_uplink,
    normalise_dev_eui,
    parse_time,
    untimed_identity,
)
from ingest.uplink import Uplink

NAME = "chirpstack"
TOPIC_PATTERN = r"application/[^/]+/device/[^/]+/event/up"


class DeviceInfo(msgspec.Struct, frozen=True, gc=False, rename="camel"):
    dev_eui: str | None = None
    application_id: str | None = None


class UpEvent(msgspec.Struct, frozen=True, gc=False, rename="camel"):
    device_info: DeviceInfo
    time: str | None = None
    f_port: int | None = None
    data: str | None = None
    object: dict[str, Any] | None = None
    rx_info: list[Gateway] | None = None


class Deduplication(msgspec.Struct, frozen=True, gc=False, rename="camel"):
    deduplication_id: Any = None


_decode_event = msgspec.json.Decoder(UpEvent).decode
# Read only for the rare uplink without any time: not part of UpEvent, whose every field
# costs every message.
_decode_deduplication = msgspec.json.Decoder(Deduplication).decode


def parse(topic: str, payload: bytes, arrival: datetime) -> Uplink:
    try:
        event = _decode_event(payload)
    except msgspec.DecodeError:
        return _parse_loosely(payload, arrival)
    device = event.device_info
    dev_eui = normalise_dev_eui(device.dev_eui, "deviceInfo.devEui")
    identity = None
    if event.time:
        received_at = parse_time(event.time, "time")
    else:
        received_at = None
        for rx in event.rx_info or ():
            if rx.ns_time:
                received_at = parse_time(rx.ns_time, "rxInfo.nsTime")
                break
        if received_at is None:
            received_at = arrival
            deduplication_id = _decode_deduplication(payload).deduplication_id
            identity = untimed_identity(NAME, deduplication_id, "deduplicationId")
    uplink = network_server_uplink(
        NAME,
        received_at=received_at,
        dev_eui=dev_eui,
        application_id=device.application_id or None,
        fport=(event.f_port, "fPort"),
        data=(event.data, "data"),
        decoded=event.object,
        radio=best_gateway(event.rx_info),
    )
    if identity is not None:
        uplink.identity = identity
    return uplink


def _parse_loosely(payload: bytes, arrival: datetime) -> Uplink:
    event = load_json_object(payload)
    device = as_object(event.get("deviceInfo"), "deviceInfo")
    dev_eui = normalise_dev_eui(device.get("devEui"), "deviceInfo.devEui")
    received_at = None
    if event.get("time"):
        received_at = parse_time(event["time"], "time")
    else:
        rx_info = event.get("rxInfo")
        for rx in rx_info if isinstance(rx_info, list) else ():
            if isinstance(rx, dict) and rx.get("nsTime"):
                received_at = parse_time(rx["nsTime"], "rxInfo.nsTime")
                break
    identity = None
    if received_at is None:
        received_at = arrival
        identity = untimed_identity(NAME, event.get("deduplicationId"), "deduplicationId")
    uplink = network_server_uplink(
        NAME,
        received_at=received_at,
        dev_eui=dev_eui,
        application_id=str(device.get("applicationId") or "") or None,
        fport=(event.get("fPort"), "fPort"),
        data=(event.get("data"), "data"),
        decoded=event.get("object"),
        radio=best_radio(event.get("rxInfo")),
    )
    if identity is not None:
        uplink.identity = identity
    return uplink
