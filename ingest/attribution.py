"""Which municipality a dead letter belongs to, decided when it is written.

A letter is listed to a municipality's staff by ``dead_letters.municipality_id`` (one
index range, ix_dead_letters_municipality_id_id). Refusals that happen before the sensor
is known (malformed JSON, an unknown device, a bad field) carry no municipality of their
own, so it is resolved from what the message says about where it came from, in this
order: the sensor of its DevEUI, the municipality slug of a native topic, the application
of a network-server topic (the ``network_applications`` mapping the device directory
holds). Only for refusals: the hot
path never comes here.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import TypeVar

import psycopg

from ingest.devices import DeviceDirectory

T = TypeVar("T")
WithDb = Callable[[Callable[[psycopg.Connection], T]], T]

_NATIVE = re.compile(r"(?:^|/)municipality/([^/]+)/sensors/[^/]+/readings$")
_CHIRPSTACK = re.compile(
    r"(?:^|/)application/([^/]+)/device/([^/]+)/(?:event/up|event/status|rx|status)$"
)
_THETHINGS = re.compile(r"(?:^|/)v3/([^/]+)/devices/[^/]+/up$")
_DEV_EUI = re.compile(r"^[0-9a-f]{16}$")
RELOAD_S = 60.0


class Attributor:
    def __init__(self, directory: DeviceDirectory) -> None:
        self._directory = directory
        self._slugs: dict[str, int] = {}
        self._loaded_at = float("-inf")

    def _municipality_id(self, with_db: WithDb, slug: str | None) -> int | None:
        if slug is None:
            return None
        age = time.monotonic() - self._loaded_at
        # Reloaded every RELOAD_S, and at most once a second for a slug not known yet.
        if age >= RELOAD_S or (slug not in self._slugs and age >= 1.0):
            rows = with_db(lambda c: c.execute("SELECT slug, id FROM municipalities").fetchall())
            self._slugs = dict(rows)
            self._loaded_at = time.monotonic()
        return self._slugs.get(slug)

    def municipality_of(self, with_db: WithDb, topic: str, device_id: str | None) -> int | None:
        """The municipality a refused message from `topic` (naming `device_id`) belongs
        to, or None when nothing tells."""
        eui = device_id if device_id and _DEV_EUI.match(device_id) else None
        if eui is None and (chirpstack := _CHIRPSTACK.search(topic)):
            candidate = chirpstack[2].lower()
            eui = candidate if _DEV_EUI.match(candidate) else None
        if eui is not None:
            sensor = with_db(lambda c: self._directory.by_dev_eui(c, eui))
            if sensor is not None:
                return sensor.municipality_id
        if native := _NATIVE.search(topic):
            return self._municipality_id(with_db, native[1])
        # Applications are keyed as the topic names them (The Things Stack's with its tenant).
        # A refusal at parse time can come before anything loaded the mapping.
        with_db(self._directory.reload_if_due)
        owner = None
        if chirpstack := _CHIRPSTACK.search(topic):
            owner = self._directory.application_owner("chirpstack", chirpstack[1])
        elif thethings := _THETHINGS.search(topic):
            owner = self._directory.application_owner("thethings", thethings[1])
        return owner.municipality_id if owner is not None else None
