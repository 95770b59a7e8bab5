"""Helpers shared by the wire-format parsers."""

from __future__ import annotations

import binascii
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import msgspec
import orjson

from ingest.uplink import Rejected, Uplink

_DEV_EUI = re.compile(r"^[0-9a-f]{16}$")


def load_json_object(payload: bytes) -> dict[str, Any]:
    """The message as a JSON object; Rejected('malformed_json') otherwise."""
    try:
        document = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise Rejected("malformed_json", f"message is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise Rejected("invalid_message", "message must be a JSON object")
    return document


def parse_time(value: Any, field: str) -> datetime:
    """An RFC 3339 timestamp as an aware UTC datetime; naive times are taken as UTC."""
    if not isinstance(value, str):
        raise Rejected("invalid_message", f"{field} must be an RFC 3339 timestamp string")
    try:
        # Python 3.11 reads what network servers send ("Z", nanoseconds) as it is.
        parsed = datetime.fromisoformat(value)
    except ValueError:
        parsed = _parse_time_leniently(value, field)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _parse_time_leniently(value: str, field: str) -> datetime:
    """Times fromisoformat refuses as they are: surrounding space, a lower-case "z"."""
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    # Network servers send nanoseconds; Python keeps microseconds.
    match = re.match(r"^(.*?\.\d{6})\d+(.*)$", text)
    if match:
        text = match.group(1) + match.group(2)
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise Rejected("invalid_message", f"{field} {value!r} is not an RFC 3339 time") from None


def decode_base64(value: Any, field: str) -> bytes:
    if value is None or value == "":
        return b""
    if not isinstance(value, str):
        raise Rejected("invalid_message", f"{field} must be a base64 string")
    try:
        # strict_mode refuses what b64decode(validate=True) refuses (characters outside
        # the alphabet, misplaced padding) without its regular expression over the text.
        return binascii.a2b_base64(value, strict_mode=True)
    except (binascii.Error, ValueError):
        raise Rejected("invalid_message", f"{field} is not valid base64") from None


def normalise_dev_eui(value: Any, field: str) -> str:
    eui = value.strip().lower() if isinstance(value, str) else ""
    if not _DEV_EUI.match(eui):
        raise Rejected("invalid_message", f"{field} must be 16 hexadecimal digits")
    return eui


def require_agreement(topic_value: str, body_value: Any, field: str, device_id: str) -> None:
    """Rejected('topic_mismatch') unless the body's `field` is absent or names what the topic
    does. The topic is what the broker's ACL vouches for; the body is the sender's word."""
    if body_value is None or body_value == "" or body_value == topic_value:
        return
    raise Rejected(
        "topic_mismatch",
        f"{field} {str(body_value)[:80]!r} in the body is not {topic_value!r} named in the topic",
        device_id=device_id,
    )


def as_object(value: Any, field: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise Rejected("invalid_message", f"{field} must be a JSON object")
    return value


def optional_object(value: Any) -> Mapping[str, Any] | None:
    """A decoded-payload object when the network server sent a non-empty one."""
    return value if isinstance(value, dict) and value else None


def network_server_uplink(
    fmt: str,
    *,
    received_at: datetime,
    dev_eui: str,
    application_id: str | None,
    fport: tuple[Any, str],
    data: tuple[Any, str],
    decoded: Any,
    radio: tuple[float | None, float | None],
) -> Uplink:
    """The uplink of a LoRaWAN network server's message from its fields as read, however
    they were read: `fport` and `data` are (value, field name), checked in that order."""
    rssi, snr = radio
    return Uplink(
        format=fmt,
        received_at=received_at,
        dev_eui=dev_eui,
        application_id=application_id,
        fport=fport_of(*fport),
        payload=decode_base64(*data),
        decoded=optional_object(decoded),
        rssi_dbm=rssi,
        snr_db=snr,
    )


def untimed_identity(fmt: str, identity: Any, field: str) -> str:
    """The identity of an uplink that carries no time of its own; Rejected when it has
    none either, for then a redelivery could not be told from a new uplink."""
    if not isinstance(identity, str) or not identity.strip() or len(identity) > 200:
        raise Rejected(
            "invalid_message",
            f"the message has no time and no {field}: a redelivery could not be recognised",
        )
    return f"{fmt}:{identity.strip()}"


def fport_of(value: Any, field: str) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 255:
        raise Rejected("invalid_message", f"{field} must be an integer 0..255")
    return value


class Gateway(msgspec.Struct, frozen=True, gc=False):
    """What ingest reads of one gateway's reception (ChirpStack ``rxInfo[]``, The Things
    Stack ``rx_metadata[]``), typed; other fields are skipped unread."""

    rssi: float | None = None
    channel_rssi: float | None = None
    snr: float | None = None
    lora_snr: float | None = msgspec.field(default=None, name="loRaSNR")
    ns_time: str | None = msgspec.field(default=None, name="nsTime")


def best_radio(rx: Any) -> tuple[float | None, float | None]:
    """(rssi_dbm, snr_db) of the gateway that heard the uplink best, from the gateways
    as decoded JSON: entries that are not objects, or whose RSSI is not a number, are
    skipped."""
    best: tuple[float | None, float | None] = (None, None)
    if not isinstance(rx, list):
        return best
    for gateway in rx:
        if not isinstance(gateway, dict):
            continue
        rssi = gateway.get("rssi")
        if rssi is None:
            rssi = gateway.get("channel_rssi")
        is_number = isinstance(rssi, int | float) and not isinstance(rssi, bool)
        if is_number and (best[0] is None or rssi > best[0]):
            snr = gateway.get("snr")
            if snr is None:
                snr = gateway.get("loRaSNR")
            best = (float(rssi), float(snr) if isinstance(snr, int | float) else None)
    return best


def best_gateway(gateways: Iterable[Gateway] | None) -> tuple[float | None, float | None]:
    """`best_radio` for typed gateways (whose numbers the decoder has checked)."""
    best_rssi = best_snr = None
    for gateway in gateways or ():
        rssi = gateway.rssi if gateway.rssi is not None else gateway.channel_rssi
        if rssi is not None and (best_rssi is None or rssi > best_rssi):
            best_rssi = rssi
            best_snr = gateway.snr if gateway.snr is not None else gateway.lora_snr
    return best_rssi, best_snr
