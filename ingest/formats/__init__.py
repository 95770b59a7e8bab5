"""Wire formats: which parser reads a topic. One module per format.

Topics are matched on their tail, so deployments (and tests) may put a prefix in front,
e.g. ``tenant-a/application/...``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from functools import lru_cache

from ingest.formats import chirpstack, chirpstack_v3, native, thethings
from ingest.uplink import Rejected, Uplink

Parser = Callable[[str, bytes, datetime], Uplink]

_ROUTES: list[tuple[re.Pattern[str], str, Parser]] = [
    (re.compile(r"(?:^|/)" + module.TOPIC_PATTERN + r"$"), module.NAME, module.parse)
    for module in (chirpstack, chirpstack_v3, thethings, native)
]


# Topics name the device, so a fleet has one per device; remembering the answer spares each
# message the pattern searches (refused topics raise, and are not remembered).
@lru_cache(maxsize=1 << 16)
def format_of(topic: str) -> tuple[str, Parser]:
    """(format name, parser) for `topic`; Rejected('unsupported_topic') when none reads it."""
    for pattern, name, parser in _ROUTES:
        if pattern.search(topic):
            return name, parser
    raise Rejected("unsupported_topic", f"no wire format is known for topic {topic!r}")


def parse(topic: str, payload: bytes, arrival: datetime) -> Uplink:
    """Parse one MQTT message into an Uplink, or raise Rejected."""
    return format_of(topic)[1](topic, payload, arrival)
