"""The Things Stack v3 MQTT integration: the uplink message.

Topic ``v3/<application id>@<tenant>/devices/<device id>/up`` (``v3/<application id>/...``
on a deployment without tenants). The application (the whole topic level, tenant
included) and the device id are the topic's (the broker's ACL confines a network server
to its applications' topics); the body's ``end_device_ids.device_id`` and
``.application_ids.application_id`` must agree with them (``topic_mismatch`` otherwise).
The topic does not carry the DevEUI: ingest binds it by requiring its sensor to belong to
the application's municipality (ingest/pipeline.py). Fields read:
``end_device_ids.dev_eui`` and ``.application_ids.application_id``,
``uplink_message.received_at`` (network server receive time; without it the readings
are keyed on the ``as:up:``/``ns:uplink:`` correlation id, see docs/ingest.md),
``f_port``, ``frm_payload``
(base64), ``decoded_payload`` (from the payload formatter, when configured) and
``rx_metadata[].rssi/snr``.

Decoded first against the types of just those fields, and field by field when the
message does not fit them, as ChirpStack's (ingest/formats/chirpstack.py says why).
"""

from __future__ import annotations

import re
from datetime import datetime
from functools import lru_cache
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
    require_agreement,
    untimed_identity,
)
from ingest.uplink import Rejected, Uplink

NAME = "thethings"
TOPIC_PATTERN = r"v3/(?P<application>[^/]+)/devices/(?P<device>[^/]+)/up"

_TOPIC = re.compile(r"(?:^|/)" + TOPIC_PATTERN + r"$")


class ApplicationIds(msgspec.Struct, frozen=True, gc=False):
    application_id: str | None = None


class EndDeviceIds(msgspec.Struct, frozen=True, gc=False):
    dev_eui: str | None = None
    device_id: str | None = None
    application_ids: ApplicationIds | None = None


class UplinkMessage(msgspec.Struct, frozen=True, gc=False):
    received_at: str | None = None
    f_port: int | None = None
    frm_payload: str | None = None
    decoded_payload: dict[str, Any] | None = None
    rx_metadata: list[Gateway] | None = None


class UpMessage(msgspec.Struct, frozen=True, gc=False):
    end_device_ids: EndDeviceIds
    uplink_message: UplinkMessage
    received_at: str | None = None
    correlation_ids: list[str] | None = None


def _uplink_id(correlation_ids: Any) -> str | None:
    """The correlation id naming this uplink in the Application Server (``as:up:…``), else
    the Network Server's (``ns:uplink:…``); None without either."""
    ids = (
        [c for c in correlation_ids if isinstance(c, str)]
        if isinstance(correlation_ids, list)
        else []
    )
    for prefix in ("as:up:", "ns:uplink:"):
        for correlation_id in ids:
            if correlation_id.startswith(prefix):
                return correlation_id
    return None


_decode_message = msgspec.json.Decoder(UpMessage).decode


def _without_dev_eui(device_id: Any) -> Rejected:
    return Rejected(
        "invalid_message",
        "end_device_ids.dev_eui is missing; enable DevEUI in the integration's message",
        device_id=str(device_id or "") or None,
    )


# One topic per device: remembering the answer spares each message the pattern search.
@lru_cache(maxsize=1 << 16)
def topic_ids(topic: str) -> tuple[str, str, str]:
    """(application as the topic names it, with its "@<tenant>"; device id; application
    id without the tenant, as the body names it) of `topic`."""
    match = _TOPIC.search(topic)
    if match is None:  # the router only sends matching topics
        raise Rejected("unsupported_topic", f"{topic!r} is not v3/<app>@<tenant>/devices/<id>/up")
    application = match["application"]
    return application, match["device"], application.partition("@")[0]


def _bind(topic: str, body_device_id: Any, body_application: Any) -> str:
    """The topic's application, once the body's device and application ids agree with it."""
    application, device_id, application_without_tenant = topic_ids(topic)
    # Compared here first: agreement is the rule, and a call per field costs every message.
    if body_device_id != device_id:
        require_agreement(device_id, body_device_id, "end_device_ids.device_id", device_id)
    if body_application != application_without_tenant:
        require_agreement(
            application_without_tenant,
            body_application,
            "end_device_ids.application_ids.application_id",
            device_id,
        )
    return application


def parse(topic: str, payload: bytes, arrival: datetime) -> Uplink:
    try:
        message = _decode_message(payload)
    except msgspec.DecodeError:
        return _parse_loosely(topic, payload, arrival)
    ids = message.end_device_ids
    if not ids.dev_eui:
        raise _without_dev_eui(ids.device_id)
    dev_eui = normalise_dev_eui(ids.dev_eui, "end_device_ids.dev_eui")
    application = _bind(
        topic, ids.device_id, ids.application_ids.application_id if ids.application_ids else None
    )
    uplink = message.uplink_message
    received_at = None
    if uplink.received_at:
        received_at = parse_time(uplink.received_at, "uplink_message.received_at")
    elif message.received_at:
        received_at = parse_time(message.received_at, "uplink_message.received_at")
    identity = None
    if received_at is None:
        received_at = arrival
        identity = untimed_identity(NAME, _uplink_id(message.correlation_ids), "correlation_ids")
    uplink = network_server_uplink(
        NAME,
        received_at=received_at,
        dev_eui=dev_eui,
        application_id=application,
        fport=(uplink.f_port, "uplink_message.f_port"),
        data=(uplink.frm_payload, "uplink_message.frm_payload"),
        decoded=uplink.decoded_payload,
        radio=best_gateway(uplink.rx_metadata),
    )
    if identity is not None:
        uplink.identity = identity
    return uplink


def _parse_loosely(topic: str, payload: bytes, arrival: datetime) -> Uplink:
    message = load_json_object(payload)
    ids = as_object(message.get("end_device_ids"), "end_device_ids")
    if not ids.get("dev_eui"):
        raise _without_dev_eui(ids.get("device_id"))
    dev_eui = normalise_dev_eui(ids.get("dev_eui"), "end_device_ids.dev_eui")
    body_application = ids.get("application_ids")
    application = _bind(
        topic,
        ids.get("device_id"),
        body_application.get("application_id") if isinstance(body_application, dict) else None,
    )
    uplink = as_object(message.get("uplink_message"), "uplink_message")
    received_at = None
    for source, field in ((uplink, "received_at"), (message, "received_at")):
        if source.get(field):
            received_at = parse_time(source[field], f"uplink_message.{field}")
            break
    identity = None
    if received_at is None:
        received_at = arrival
        identity = untimed_identity(
            NAME, _uplink_id(message.get("correlation_ids")), "correlation_ids"
        )
    uplink = network_server_uplink(
        NAME,
        received_at=received_at,
        dev_eui=dev_eui,
        application_id=application,
        fport=(uplink.get("f_port"), "uplink_message.f_port"),
        data=(uplink.get("frm_payload"), "uplink_message.frm_payload"),
        decoded=uplink.get("decoded_payload"),
        radio=best_radio(uplink.get("rx_metadata")),
    )
    if identity is not None:
        uplink.identity = identity
    return uplink
