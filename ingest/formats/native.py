"""Native JSON for gateways that are not LoRaWAN network servers.

Topic ``municipality/<municipality slug>/sensors/<external id>/readings``; the body is
either one sample or a batch, with canonical metric names (docs/metrics.md)::

    {"time": "2026-11-22T08:15:00Z", "readings": {"co2_ppm": 812, "temperature_c": 21.4}}
    {"samples": [{"time": "...", "readings": {...}}, ...]}

Each sample needs ``time``; a message whose samples leave it out must carry a
``message_id`` (a string unique per sensor, at most 200 characters): those samples get
the broker receive time of the first delivery, also on a redelivery.
Metric names are ASCII identifiers of at most 64 characters; a message with any other
key in ``readings`` is refused whole (``invalid_message``). At most 1,000 samples.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from ingest.formats._common import load_json_object, parse_time, untimed_identity
from ingest.uplink import Rejected, Sample, Uplink

NAME = "native"
TOPIC_PATTERN = r"municipality/(?P<municipality>[^/]+)/sensors/(?P<external_id>[^/]+)/readings"
MAX_SAMPLES = 1000

_TOPIC = re.compile(r"(?:^|/)" + TOPIC_PATTERN + r"$")
MAX_NAME_CHARS = 64


def _is_metric_name(name: str) -> bool:
    """A key that can name a metric: checked before anything else is read, so that a key
    holding NUL, control characters or megabytes never reaches a detail or the database.
    (str methods: a regular expression per key costs several times more.)"""
    return len(name) <= MAX_NAME_CHARS and name.isascii() and name.isidentifier()


def _sample(item: Any, where: str) -> Sample:
    if not isinstance(item, dict):
        raise Rejected("invalid_message", f"{where} must be an object")
    readings = item.get("readings")
    if not isinstance(readings, dict) or not readings:
        raise Rejected("invalid_message", f"{where}.readings must be a non-empty object")
    for name in readings:
        if not _is_metric_name(name):
            raise Rejected(
                "invalid_message",
                f"{where}.readings has a key that is not a metric name "
                f"(ASCII letters, digits and _, at most {MAX_NAME_CHARS}): {name[:80]!r}",
            )
    for name, value in readings.items():
        if not isinstance(value, int | float):  # bool is an int: occupied may be true/false
            raise Rejected("invalid_message", f"{where}.readings.{name} must be a number")
    time = parse_time(item["time"], f"{where}.time") if item.get("time") is not None else None
    return Sample(time=time, values=readings)


def parse(topic: str, payload: bytes, arrival: datetime) -> Uplink:
    match = _TOPIC.search(topic)
    if match is None:  # the router only sends matching topics
        raise Rejected("unsupported_topic", f"{topic} is not a native readings topic")
    message = load_json_object(payload)
    if "samples" in message:
        items = message["samples"]
        if not isinstance(items, list) or not items:
            raise Rejected("invalid_message", "samples must be a non-empty list")
        if len(items) > MAX_SAMPLES:
            raise Rejected("invalid_message", f"at most {MAX_SAMPLES} samples per message")
        samples = [_sample(item, f"samples[{i}]") for i, item in enumerate(items)]
    else:
        samples = [_sample(message, "message")]
    identity = None
    if any(sample.time is None for sample in samples):
        message_id = message.get("message_id")
        if message_id is None:
            raise Rejected(
                "invalid_message",
                "time is required (or a message_id, so that a redelivery is recognised)",
            )
        identity = (
            untimed_identity(NAME, message_id, "message_id")
            + f"@{match['municipality']}/{match['external_id']}"
        )
    return Uplink(
        format=NAME,
        received_at=arrival,
        municipality_slug=match["municipality"],
        external_id=match["external_id"],
        samples=samples,
        identity=identity,
    )
