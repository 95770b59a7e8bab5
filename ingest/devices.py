"""Which sensor sent a message, and which municipality a network-server application
belongs to: a cached view of the sensor registry and of `network_applications` for ingest.

The whole registry and every application mapping are loaded at start-up and reloaded
periodically (100,000 sensors take well under a second), so the hot path never waits for
the database. A device not in the cache is looked up once; an unknown answer is
remembered for a short while so that a flood from an unregistered device does not hammer
the database. Applications are only ever read from the last load: a mapping made or
removed takes effect at the next reload.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import psycopg

_SELECT = """
SELECT s.id, s.municipality_id, m.slug, s.dev_eui, s.external_id, s.kind, s.status,
       dm.decoder, s.bin_depth_mm, s.mount_offset_mm,
       (SELECT c.id FROM device_codecs c WHERE c.device_model_id = s.device_model_id
        ORDER BY c.version DESC LIMIT 1)
FROM sensors s
JOIN municipalities m ON m.id = s.municipality_id
LEFT JOIN device_models dm ON dm.id = s.device_model_id
"""
_SELECT_APPLICATIONS = """
SELECT a.network, a.application_id, a.municipality_id, m.slug
FROM network_applications a
JOIN municipalities m ON m.id = a.municipality_id
"""


@dataclass(frozen=True, slots=True)
class ApplicationOwner:
    """The municipality a network-server application is mapped to."""

    municipality_id: int
    municipality_slug: str


@dataclass(frozen=True, slots=True)
class SensorInfo:
    sensor_id: int
    municipality_id: int
    municipality_slug: str
    dev_eui: str | None
    external_id: str
    kind: str
    status: str
    decoder: str | None
    bin_depth_mm: float | None
    mount_offset_mm: float | None
    # The newest codec version of the sensor's model, when it is a municipality's own
    # model (ingest/codecs); None for the built-in decoders.
    codec_id: int | None = None


class DeviceDirectory:
    """Finds sensors by DevEUI or by (municipality slug, external id)."""

    def __init__(self, reload_every_s: float = 60.0, negative_ttl_s: float = 10.0) -> None:
        self.reload_every_s = reload_every_s
        self.negative_ttl_s = negative_ttl_s
        self._by_eui: dict[str, SensorInfo] = {}
        self._by_external: dict[tuple[str, str], SensorInfo] = {}
        # external id -> municipality slugs using it, to tell a native gateway that writes
        # under the wrong municipality from one naming a sensor nobody registered.
        self._external_owners: dict[str, set[str]] = {}
        self._unknown: dict[object, float] = {}
        # (network, application id as the topic names it) -> its municipality.
        self._applications: dict[tuple[str, str], ApplicationOwner] = {}
        self._loaded_at = float("-inf")

    def _store(self, info: SensorInfo) -> None:
        if info.dev_eui:
            self._by_eui[info.dev_eui] = info
        self._by_external[(info.municipality_slug, info.external_id)] = info
        self._external_owners.setdefault(info.external_id, set()).add(info.municipality_slug)

    def reload_if_due(self, conn: psycopg.Connection) -> None:
        """Reload the whole registry and the application mapping when the last load is
        older than `reload_every_s`."""
        if not self._reload_due():
            return
        rows = conn.execute(_SELECT).fetchall()
        self._applications = {
            (network, application_id): ApplicationOwner(municipality_id, slug)
            for network, application_id, municipality_id, slug in conn.execute(_SELECT_APPLICATIONS)
        }
        self._by_eui.clear()
        self._by_external.clear()
        self._external_owners.clear()
        self._unknown.clear()
        for row in rows:
            self._store(SensorInfo(*row))
        self._loaded_at = time.monotonic()

    def _reload_due(self) -> bool:
        return time.monotonic() - self._loaded_at >= self.reload_every_s

    def application_owner(self, network: str, application_id: str) -> ApplicationOwner | None:
        """The municipality `application_id` of `network` (a wire format's name) is mapped
        to, as of the last load (`reload_if_due`); None when it is unmapped."""
        return self._applications.get((network, application_id))

    def cached(
        self, dev_eui: str | None, municipality_slug: str | None, external_id: str | None
    ) -> SensorInfo | None:
        """The sensor for a DevEUI, else for (municipality slug, external id), when it is
        loaded and no reload is due; None means "ask the database" (a lookup)."""
        if self._reload_due():
            return None
        if dev_eui:
            return self._by_eui.get(dev_eui)
        return self._by_external.get((municipality_slug, external_id))

    def invalidate(self) -> None:
        """Forget everything; the next lookup reloads (after a registry change)."""
        self._loaded_at = float("-inf")

    def _lookup(
        self, conn: psycopg.Connection, key: object, where: str, params: tuple
    ) -> SensorInfo | None:
        expires = self._unknown.get(key)
        if expires is not None and expires > time.monotonic():
            return None
        row = conn.execute(_SELECT + where, params).fetchone()
        if row is None:
            self._unknown[key] = time.monotonic() + self.negative_ttl_s
            if len(self._unknown) > 100_000:
                self._unknown.clear()
            return None
        info = SensorInfo(*row)
        self._store(info)
        return info

    def by_dev_eui(self, conn: psycopg.Connection, dev_eui: str) -> SensorInfo | None:
        info = self._by_eui.get(dev_eui)
        if info is not None:
            return info
        return self._lookup(conn, ("eui", dev_eui), "WHERE s.dev_eui = %s", (dev_eui,))

    def by_external_id(
        self, conn: psycopg.Connection, municipality_slug: str, external_id: str
    ) -> SensorInfo | None:
        info = self._by_external.get((municipality_slug, external_id))
        if info is not None:
            return info
        return self._lookup(
            conn,
            ("ext", municipality_slug, external_id),
            "WHERE m.slug = %s AND s.external_id = %s",
            (municipality_slug, external_id),
        )

    def municipalities_using(self, external_id: str) -> set[str]:
        """Slugs of the municipalities with a sensor of this external id (from the cache,
        at most `reload_every_s` old; no database round trip)."""
        return self._external_owners.get(external_id, set())
