"""One message from topic and bytes to rows, or to the reason it cannot be stored.

Shared by the MQTT subscriber and by dead-letter replay, so that a replayed message is
judged exactly as a live one would be.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import psycopg

from ingest.attribution import Attributor
from ingest.devices import DeviceDirectory, SensorInfo
from ingest.formats import format_of
from ingest.identity import claim_time
from ingest.normalise import Row, decode_uplink, metric_table, to_rows
from ingest.uplink import Rejected, Uplink
from models.logging import log
from models.settings import Settings

T = TypeVar("T")
# Runs a database operation; the subscriber's version retries while the database is away.
WithDb = Callable[[Callable[[psycopg.Connection], T]], T]


@dataclass(slots=True)
class Outcome:
    """What became of a message: rows to store and/or the reason it is a dead letter."""

    format: str
    rows: list[Row]
    rejection: Rejected | None


class Pipeline:
    def __init__(
        self,
        settings: Settings,
        metric_ids: dict[str, int],
        directory: DeviceDirectory | None = None,
    ) -> None:
        self.settings = settings
        self.metric_ids = metric_ids
        self._metrics = metric_table(metric_ids)
        self.directory = directory or DeviceDirectory()
        # Never older than retention keeps: such a row would recreate a dropped partition
        # (or fail the batch for want of one) only to be dropped again.
        days = settings.max_past_age_days
        if settings.retention_days:
            days = min(days, settings.retention_days)
        self.max_age = timedelta(days=days)
        self.max_future_skew = timedelta(seconds=settings.max_future_skew_s)
        self._attributor = Attributor(self.directory, settings.application_municipalities)

    def attribute(self, with_db: WithDb, topic: str, rejection: Rejected) -> None:
        """Give a refusal without a municipality the one its message names, if any
        (ingest/attribution.py). Called by the callers for refusals only, so that the
        messages that are stored never pay for it."""
        if rejection.municipality_id is None:
            rejection.municipality_id = self._attributor.municipality_of(
                with_db, topic, rejection.device_id
            )

    def handle(self, with_db: WithDb, topic: str, payload: bytes, arrival: datetime) -> Outcome:
        """Judge one message. Database errors propagate (the caller retries); everything
        else about the message ends in `Outcome.rejection` (see `attribute`)."""
        try:
            fmt, parser = format_of(topic)
        except Rejected as rejected:
            return Outcome("unknown", [], rejected)
        try:
            if len(payload) > self.settings.max_message_bytes:
                raise Rejected(
                    "oversized",
                    f"message has {len(payload)} bytes; the limit is "
                    f"{self.settings.max_message_bytes} (IOT_MAX_MESSAGE_BYTES)",
                )
            uplink = parser(topic, payload, arrival)
            if uplink.identity is not None:
                identity = uplink.identity
                uplink.received_at = with_db(lambda c: claim_time(c, identity, arrival))
            sensor = self.directory.cached(
                uplink.dev_eui, uplink.municipality_slug, uplink.external_id
            )
            if sensor is None:
                sensor = with_db(lambda c: self._sensor_for(c, uplink))
            sensor = self._check_sensor(uplink, sensor, with_db)
            samples = decode_uplink(uplink, sensor)
            result = to_rows(
                uplink,
                sensor,
                samples,
                self._metrics,
                datetime.now(UTC),
                self.max_future_skew,
                self.max_age,
            )
            rejection = None
            if result.refused_reason:
                rejection = Rejected(
                    result.refused_reason,
                    "stored the other values; refused " + "; ".join(result.refused),
                    device_id=uplink.device_id,
                    municipality_id=sensor.municipality_id,
                )
            return Outcome(fmt, result.rows, rejection)
        except Rejected as rejected:
            return Outcome(fmt, [], rejected)
        except (psycopg.OperationalError, psycopg.InterfaceError):
            raise
        except Exception as exc:  # a bug must neither stop ingest nor lose the message
            log.error("message_failed", exc_info=True, topic=topic)
            return Outcome(fmt, [], Rejected("internal_error", f"{type(exc).__name__}: {exc}"))

    def _sensor_for(self, conn: psycopg.Connection, uplink: Uplink) -> SensorInfo | None:
        self.directory.reload_if_due(conn)
        if uplink.dev_eui:
            return self.directory.by_dev_eui(conn, uplink.dev_eui)
        assert uplink.municipality_slug is not None and uplink.external_id is not None
        return self.directory.by_external_id(conn, uplink.municipality_slug, uplink.external_id)

    def _check_sensor(
        self, uplink: Uplink, sensor: SensorInfo | None, with_db: WithDb
    ) -> SensorInfo:
        if sensor is None:
            if uplink.external_id is not None:
                owners = self.directory.municipalities_using(uplink.external_id)
                if owners and uplink.municipality_slug not in owners:
                    raise Rejected(
                        "municipality_mismatch",
                        f"sensor {uplink.external_id!r} belongs to {', '.join(sorted(owners))}, "
                        f"not to {uplink.municipality_slug!r} named in the topic",
                        device_id=uplink.device_id,
                    )
            registered = self._maybe_register(uplink, with_db)
            raise Rejected(
                "unknown_device",
                registered
                or f"no sensor is registered for {uplink.device_id}; register it, then replay",
                device_id=uplink.device_id,
            )
        expected = self.settings.application_municipalities.get(uplink.application_id or "")
        if expected is not None and expected != sensor.municipality_slug:
            raise Rejected(
                "municipality_mismatch",
                f"application {uplink.application_id!r} belongs to {expected!r} "
                f"(IOT_APPLICATION_MUNICIPALITIES) but sensor {sensor.sensor_id} "
                f"belongs to {sensor.municipality_slug!r}",
                device_id=uplink.device_id,
                municipality_id=sensor.municipality_id,
            )
        if sensor.status == "retired":
            raise Rejected(
                "retired_device",
                f"sensor {sensor.sensor_id} is retired",
                device_id=uplink.device_id,
                municipality_id=sensor.municipality_id,
            )
        if sensor.status == "pending":
            raise Rejected(
                "pending_device",
                f"sensor {sensor.sensor_id} awaits registration (device model, location); "
                "complete it, then replay",
                device_id=uplink.device_id,
                municipality_id=sensor.municipality_id,
            )
        return sensor

    def _maybe_register(self, uplink: Uplink, with_db: WithDb) -> str | None:
        """Register an unknown LoRaWAN device as pending, when configured and its
        application belongs to a known municipality. Returns a note for the dead letter."""
        s = self.settings
        slug = s.application_municipalities.get(uplink.application_id or "")
        if not (s.auto_register_unknown and uplink.dev_eui and slug):
            return None

        def register(conn: psycopg.Connection) -> int | None:
            row = conn.execute(
                "INSERT INTO sensors (municipality_id, dev_eui, external_id, kind, status) "
                "SELECT id, %s, %s, 'other', 'pending' FROM municipalities WHERE slug = %s "
                "ON CONFLICT DO NOTHING RETURNING id",
                (uplink.dev_eui, uplink.dev_eui, slug),
            ).fetchone()
            return row[0] if row else None

        sensor_id = with_db(register)
        if sensor_id is None:
            return None
        self.directory.invalidate()
        log.info("device_auto_registered", dev_eui=uplink.dev_eui, municipality=slug)
        return (
            f"registered {uplink.device_id} as pending sensor {sensor_id} of {slug}; "
            "complete its registration, then replay"
        )
