"""ChirpStack v3 (Application Server 3.x) MQTT integration: uplink and status events.

ChirpStack v3 publishes on ``application/<application id>/device/<DevEUI>/rx`` and
``.../status`` (older releases) or ``.../event/up`` and ``.../event/status`` (later 3.x,
``event_topic_template``); the application id is an integer. The ``event/up`` topic is
shared with ChirpStack v4, so `ingest.formats.chirpstack` hands a message on that topic
here when its body has v3's top-level ``devEUI`` instead of v4's ``deviceInfo``.

Two JSON encodings exist in v3 (the ``marshaler`` setting) and both are read:

* ``json_v3`` (legacy): ``devEUI`` as 16 hex digits, the decoded object as ``object``;
* ``json`` (Protocol Buffers JSON mapping): ``devEUI`` as base64 of its 8 bytes, the
  decoded object as a string ``objectJSON``, and ``publishedAt``.

Fields read from an uplink: ``applicationID`` and ``devEUI`` (must agree with the topic),
``fPort``, ``data`` (FRMPayload, base64), ``object``/``objectJSON``, the time and
``rxInfo[].rssi``/``loRaSNR``. The time is ``publishedAt`` when present, else the first
``rxInfo[].time`` (only gateways with GPS or NTP time give one), else the time the message
reached ingest; then the message's identity is the SHA-256 of its bytes (v3 has no
deduplication id), so a redelivery of the same message gets the same time and is stored
once.

A status event (``margin``, ``batteryLevel``, ``batteryLevelUnavailable``,
``externalPowerSource``) carries the battery level the device reported in its
DevStatusAns, in percent: stored as ``battery_pct``. One whose level is unavailable or
that runs on external power carries nothing to store (device information, not an error).
ChirpStack v4's status event (``deviceInfo``, same fields) is read the same way.

``data`` is base64, as ChirpStack sends it. A bridge or logger that re-encodes it as hex
(the CampusIoT dataset does) is read with ``IOT_CHIRPSTACK_V3_DATA_ENCODING=hex``: the
two cannot be told apart from the text (a hex string may also be valid base64).
"""

from __future__ import annotations

import binascii
import hashlib
import math
import re
from datetime import datetime
from functools import lru_cache
from typing import Any

import orjson

from ingest.formats._common import (
    best_radio,
    decode_base64,
    fport_of,
    load_json_object,
    normalise_dev_eui,
    optional_object,
    parse_time,
    require_agreement,
)
from ingest.uplink import Rejected, Sample, Uplink

NAME = "chirpstack_v3"
# Application mappings (network_applications.network) are ChirpStack's, whichever version.
NETWORK = "chirpstack"
TOPIC_PATTERN = (
    r"application/(?P<application>[^/]+)/device/(?P<device>[^/]+)/(?:rx|status|event/status)"
)
DATA_ENCODINGS = ("base64", "hex")

_TOPIC = re.compile(
    r"(?:^|/)application/(?P<application>[^/]+)/device/(?P<device>[^/]+)/"
    r"(?P<event>rx|status|event/status|event/up)$"
)


@lru_cache(maxsize=1 << 16)
def topic_ids(topic: str) -> tuple[str, str, str]:
    """(application id, DevEUI, event) named by `topic`; event is "up" or "status"."""
    match = _TOPIC.search(topic)
    dev_eui = match["device"].lower() if match else ""
    if match is None or not re.fullmatch(r"[0-9a-f]{16}", dev_eui):
        raise Rejected(
            "unsupported_topic",
            f"{topic!r} is not application/<application id>/device/<DevEUI>/"
            "rx|status|event/up|event/status",
        )
    event = "status" if match["event"].endswith("status") else "up"
    return match["application"], dev_eui, event


def _dev_eui(value: Any) -> str:
    """v3's devEUI: hex (json_v3) or base64 of 8 bytes (Protocol Buffers JSON)."""
    if isinstance(value, str) and len(value.strip()) == 12:
        try:
            raw = binascii.a2b_base64(value.strip(), strict_mode=True)
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) == 8:
            return raw.hex()
    return normalise_dev_eui(value, "devEUI")


def _payload(value: Any, data_encoding: str) -> bytes:
    if data_encoding == "hex" and value not in (None, ""):
        if not isinstance(value, str):
            raise Rejected("invalid_message", "data must be a hex string")
        try:
            return bytes.fromhex(value)
        except ValueError:
            raise Rejected("invalid_message", "data is not valid hex") from None
    return decode_base64(value, "data")


def _decoded(event: dict[str, Any]) -> dict[str, Any] | None:
    """The network server's decoded object: ``object``, or ``objectJSON`` as text."""
    if "object" in event:
        return optional_object(event["object"])
    text = event.get("objectJSON")
    if text in (None, ""):
        return None
    if not isinstance(text, str):
        raise Rejected("invalid_message", "objectJSON must be a string holding a JSON object")
    try:
        decoded = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise Rejected("invalid_message", "objectJSON is not valid JSON") from None
    if not isinstance(decoded, dict):
        raise Rejected("invalid_message", "objectJSON must hold a JSON object")
    return optional_object(decoded)


def _received_at(event: dict[str, Any], payload: bytes, arrival: datetime) -> tuple:
    """(time, identity or None): the event's own time, or the arrival and an identity."""
    if event.get("publishedAt"):
        return parse_time(event["publishedAt"], "publishedAt"), None
    rx_info = event.get("rxInfo")
    for rx in rx_info if isinstance(rx_info, list) else ():
        if isinstance(rx, dict) and rx.get("time"):
            return parse_time(rx["time"], "rxInfo.time"), None
    # No deduplication id in v3: the message's own bytes identify a redelivery of it.
    return arrival, f"{NAME}:{hashlib.sha256(payload).hexdigest()}"


def _bind(topic: str, event: dict[str, Any]) -> tuple[str, str, str]:
    """(application, DevEUI, event kind) once the body's ids agree with the topic's."""
    application, dev_eui, kind = topic_ids(topic)
    device = event.get("deviceInfo")
    if isinstance(device, dict):  # ChirpStack v4's status event
        body_eui = normalise_dev_eui(device.get("devEui"), "deviceInfo.devEui")
        body_application = device.get("applicationId")
    else:
        body_eui = _dev_eui(event.get("devEUI"))
        body_application = event.get("applicationID")
        if isinstance(body_application, int) and not isinstance(body_application, bool):
            body_application = str(body_application)
    require_agreement(dev_eui, body_eui, "devEUI", dev_eui)
    require_agreement(application, body_application, "applicationID", dev_eui)
    return application, dev_eui, kind


def parse(
    topic: str, payload: bytes, arrival: datetime, *, data_encoding: str = "base64"
) -> Uplink:
    event = load_json_object(payload)
    application, dev_eui, kind = _bind(topic, event)
    if kind == "status":
        return _status(event, payload, arrival, application, dev_eui)
    received_at, identity = _received_at(event, payload, arrival)
    rssi, snr = best_radio(event.get("rxInfo"))
    uplink = Uplink(
        format=NAME,
        network=NETWORK,
        received_at=received_at,
        dev_eui=dev_eui,
        application_id=application,
        fport=fport_of(event.get("fPort"), "fPort"),
        payload=_payload(event.get("data"), data_encoding),
        decoded=_decoded(event),
        rssi_dbm=rssi,
        snr_db=snr,
    )
    uplink.identity = identity
    return uplink


def _status(
    event: dict[str, Any], payload: bytes, arrival: datetime, application: str, dev_eui: str
) -> Uplink:
    """A status event: the battery level in percent, unless the device cannot tell."""
    if event.get("time"):  # ChirpStack v4 names the time
        received_at, identity = parse_time(event["time"], "time"), None
    else:
        received_at, identity = _received_at(event, payload, arrival)
    values: dict[str, float | bool] = {}
    level = event.get("batteryLevel")
    unavailable = event.get("batteryLevelUnavailable") is True
    external = event.get("externalPowerSource") is True
    if level is not None and not unavailable and not external:
        is_number = isinstance(level, int | float) and not isinstance(level, bool)
        if not is_number or not math.isfinite(level):
            raise Rejected("invalid_message", "batteryLevel must be a number (percent)")
        values["battery_pct"] = float(level)
    uplink = Uplink(
        format=NAME,
        network=NETWORK,
        received_at=received_at,
        dev_eui=dev_eui,
        application_id=application,
        # An empty sample is device information: nothing to store, and not an error.
        samples=[Sample(None, values)],
    )
    uplink.identity = identity
    return uplink


def is_v3_body(event: Any) -> bool:
    """True for a v3 event body (top-level devEUI, no deviceInfo) on a shared topic."""
    return isinstance(event, dict) and "deviceInfo" not in event and "devEUI" in event
