"""The Things Stack v3 MQTT integration: the uplink message.

Topic ``v3/<application id>@<tenant>/devices/<device id>/up``. Fields read:
``end_device_ids.dev_eui`` and ``.application_ids.application_id``,
``uplink_message.received_at`` (network server receive time), ``f_port``, ``frm_payload``
(base64), ``decoded_payload`` (from the payload formatter, when configured) and
``rx_metadata[].rssi/snr``.
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
from ingest.uplink import Rejected, Uplink

NAME = "thethings"
TOPIC_PATTERN = r"v3/[^/]+/devices/[^/]+/up"


def parse(topic: str, payload: bytes, arrival: datetime) -> Uplink:
    message = load_json_object(payload)
    ids = as_object(message.get("end_device_ids"), "end_device_ids")
    if not ids.get("dev_eui"):
        raise Rejected(
            "invalid_message",
            "end_device_ids.dev_eui is missing; enable DevEUI in the integration's message",
            device_id=str(ids.get("device_id") or "") or None,
        )
    dev_eui = normalise_dev_eui(ids.get("dev_eui"), "end_device_ids.dev_eui")
    uplink = as_object(message.get("uplink_message"), "uplink_message")
    received_at = arrival
    for source, field in ((uplink, "received_at"), (message, "received_at")):
        if source.get(field):
            received_at = parse_time(source[field], f"uplink_message.{field}")
            break
    application = ids.get("application_ids")
    rssi, snr = best_radio(uplink.get("rx_metadata"))
    return Uplink(
        format=NAME,
        received_at=received_at,
        dev_eui=dev_eui,
        application_id=(application or {}).get("application_id")
        if isinstance(application, dict)
        else None,
        fport=fport_of(uplink.get("f_port"), "uplink_message.f_port"),
        payload=decode_base64(uplink.get("frm_payload"), "uplink_message.frm_payload"),
        decoded=optional_object(uplink.get("decoded_payload")),
        rssi_dbm=rssi,
        snr_db=snr,
    )
