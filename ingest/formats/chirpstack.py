"""ChirpStack v4 application integration, JSON marshaler: the ``event/up`` message.

Topic ``application/<application id>/device/<DevEUI>/event/up``. The application and the
device are the topic's (the broker's ACL confines a network server to its applications'
topics); the body's ``deviceInfo.devEui`` and ``deviceInfo.applicationId`` must agree
with them (``topic_mismatch`` otherwise). Fields read: ``time``
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

import re
from datetime import datetime
from functools import lru_cache
from typing import Any

import msgspec

from ingest.formats import chirpstack_v3
from ingest.formats._common import (
    Gateway,
    as_object,
    best_gateway,
    best_radio,
    load_json_object,
    network_server_uplink,
    normalise_dev_eui,
    parse_time,
    require_agreement,
    untimed_identity,
)
from ingest.uplink import Rejected, Uplink

NAME = "chirpstack"
TOPIC_PATTERN = r"application/(?P<application>[^/]+)/device/(?P<device>[^/]+)/event/up"

_TOPIC = re.compile(r"(?:^|/)" + TOPIC_PATTERN + r"$")


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


# One topic per device: remembering the answer spares each message the pattern search.
@lru_cache(maxsize=1 << 16)
def topic_ids(topic: str) -> tuple[str, str]:
    """(application id, DevEUI) named by `topic`."""
    match = _TOPIC.search(topic)
    dev_eui = match["device"].lower() if match else ""
    if match is None or not re.fullmatch(r"[0-9a-f]{16}", dev_eui):
        raise Rejected(
            "unsupported_topic",
            f"{topic!r} is not application/<application id>/device/<DevEUI>/event/up",
        )
    return match["application"], dev_eui


def _bind(topic: str, body_dev_eui: str, body_application: Any) -> str:
    """The topic's application, once the body's DevEUI and application agree with it."""
    application, dev_eui = topic_ids(topic)
    # Compared here first: agreement is the rule, and a call per field costs every message.
    if body_dev_eui != dev_eui:
        require_agreement(dev_eui, body_dev_eui, "deviceInfo.devEui", dev_eui)
    if body_application != application:
        require_agreement(application, body_application, "deviceInfo.applicationId", dev_eui)
    return application


def parse(
    topic: str, payload: bytes, arrival: datetime, *, v3_data_encoding: str = "base64"
) -> Uplink:
    """A v4 ``event/up`` message; a ChirpStack v3 one on the same topic (v3's later
    ``event_topic_template``) is read by `chirpstack_v3`."""
    try:
        event = _decode_event(payload)
    except msgspec.DecodeError:
        return _parse_loosely(topic, payload, arrival, v3_data_encoding)
    device = event.device_info
    body_eui = device.dev_eui
    try:
        application, topic_eui = topic_ids(topic)
    except Rejected:
        application = topic_eui = None
    if topic_eui is not None and body_eui == topic_eui and device.application_id == application:
        # The rule: the body names what the topic does, which topic_ids has checked (16
        # lower-case hexadecimal digits). Anything else is normalised and compared below.
        dev_eui = topic_eui
    else:
        dev_eui = normalise_dev_eui(body_eui, "deviceInfo.devEui")
        application = _bind(topic, dev_eui, device.application_id)
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
        application_id=application,
        fport=(event.f_port, "fPort"),
        data=(event.data, "data"),
        decoded=event.object,
        radio=best_gateway(event.rx_info),
    )
    if identity is not None:
        uplink.identity = identity
    return uplink


def _parse_loosely(
    topic: str, payload: bytes, arrival: datetime, v3_data_encoding: str = "base64"
) -> Uplink:
    event = load_json_object(payload)
    if chirpstack_v3.is_v3_body(event):
        return chirpstack_v3.parse(topic, payload, arrival, data_encoding=v3_data_encoding)
    device = as_object(event.get("deviceInfo"), "deviceInfo")
    dev_eui = normalise_dev_eui(device.get("devEui"), "deviceInfo.devEui")
    application = _bind(topic, dev_eui, device.get("applicationId"))
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
        application_id=application,
        fport=(event.get("fPort"), "fPort"),
        data=(event.get("data"), "data"),
        decoded=event.get("object"),
        radio=best_radio(event.get("rxInfo")),
    )
    if identity is not None:
        uplink.identity = identity
    return uplink
