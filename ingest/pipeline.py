"""One message from topic and bytes to rows, or to the reason it cannot be stored.

Shared by the MQTT subscriber and by dead-letter replay, so that a replayed message is
judged exactly as a live one would be.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import TypeVar

import psycopg

from ingest.attribution import Attributor
from ingest.codecs.runtime import CodecResult, CodecRunner
from ingest.codecs.sandbox import Limits
from ingest.devices import ApplicationOwner, DeviceDirectory, SensorInfo
from ingest.formats import Parser, chirpstack, chirpstack_v3, format_of
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


@dataclass(slots=True)
class _Staged:
    """A message parsed, its sensor found and checked; what `Pipeline._finish` needs."""

    topic: str
    format: str
    uplink: Uplink
    sensor: SensorInfo
    by_codec: bool  # decoded by the sensor's model's codec (ingest/codecs)
    codec_result: CodecResult | Rejected | None = None


def _unmapped(uplink: Uplink) -> Rejected:
    return Rejected(
        "unmapped_application",
        f"{uplink.format} application {uplink.application_id!r} is mapped to no "
        "municipality; map it (`python -m cli admin map-application` or the staff API), "
        "then replay",
        device_id=uplink.device_id,
    )


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
        self._attributor = Attributor(self.directory)
        self.codecs = CodecRunner(
            Limits(
                time_limit_s=settings.codec_time_limit_ms / 1000.0,
                memory_limit_bytes=settings.codec_memory_limit_mb * 1024 * 1024,
            )
        )
        # Parsers that take a setting, bound to it; the others are used as format_of gives.
        self._parsers: dict[str, Parser] = {}
        if settings.chirpstack_v3_data_encoding != "base64":
            encoding = settings.chirpstack_v3_data_encoding
            self._parsers = {
                chirpstack.NAME: partial(chirpstack.parse, v3_data_encoding=encoding),
                chirpstack_v3.NAME: partial(chirpstack_v3.parse, data_encoding=encoding),
            }

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
        return self.handle_many(with_db, [(topic, payload, arrival)])[0]

    def handle_many(
        self, with_db: WithDb, messages: Sequence[tuple[str, bytes, datetime]]
    ) -> list[Outcome]:
        """`handle` of each (topic, payload, arrival), in order, each judged as it would
        be alone; the uplinks that JavaScript codecs decode are decoded together
        (CodecRunner.decode_many), which in a busy process is several times cheaper than
        one at a time. Database errors propagate: none of the messages is judged then."""
        staged = [self._stage(with_db, *message) for message in messages]
        to_decode = [item for item in staged if isinstance(item, _Staged) and item.by_codec]
        if to_decode:
            try:
                results = self.codecs.decode_many(
                    with_db, [(item.uplink, item.sensor) for item in to_decode]
                )
            except (psycopg.OperationalError, psycopg.InterfaceError):
                raise
            except Exception as exc:  # a bug must neither stop ingest nor lose the messages
                log.error("message_failed", exc_info=True, topic=to_decode[0].topic)
                rejection = Rejected("internal_error", f"{type(exc).__name__}: {exc}")
                results = [rejection for _ in to_decode]
            for item, result in zip(to_decode, results, strict=True):
                item.codec_result = result
        return [item if isinstance(item, Outcome) else self._finish(item) for item in staged]

    def _stage(
        self, with_db: WithDb, topic: str, payload: bytes, arrival: datetime
    ) -> Outcome | _Staged:
        """The message parsed and its sensor found and checked, or its Outcome when that
        already decides it."""
        try:
            fmt, parser = format_of(topic)
        except Rejected as rejected:
            return Outcome("unknown", [], rejected)
        parser = self._parsers.get(fmt, parser)
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
            # The directory is loaded now (a cache hit means no reload was due, a miss
            # reloaded when one was), the application mapping with it.
            owner = None
            if uplink.application_id is not None:  # a network server's: bound by the mapping
                owner = self.directory.application_owner(
                    uplink.network or uplink.format, uplink.application_id
                )
                if owner is None and not self.settings.allow_unmapped_applications:
                    raise _unmapped(uplink)
            sensor = self._check_sensor(uplink, owner, sensor, with_db)
            by_codec = sensor.codec_id is not None and not uplink.samples
            return _Staged(topic, fmt, uplink, sensor, by_codec)
        except Rejected as rejected:
            return Outcome(fmt, [], rejected)
        except (psycopg.OperationalError, psycopg.InterfaceError):
            raise
        except Exception as exc:  # a bug must neither stop ingest nor lose the message
            log.error("message_failed", exc_info=True, topic=topic)
            return Outcome(fmt, [], Rejected("internal_error", f"{type(exc).__name__}: {exc}"))

    def _finish(self, staged: _Staged) -> Outcome:
        """Rows (and any rejection) of a staged message, its codec result in hand."""
        uplink, sensor, fmt = staged.uplink, staged.sensor, staged.format
        try:
            codec_problems: list[str] = []
            if staged.by_codec:
                decoded = staged.codec_result
                if isinstance(decoded, Rejected):
                    raise decoded
                assert decoded is not None
                samples, codec_problems = decoded.samples, decoded.problems
            else:
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
            elif codec_problems:
                rejection = Rejected(
                    "decode_error",
                    "stored the other values; could not read " + "; ".join(codec_problems),
                    device_id=uplink.device_id,
                    municipality_id=sensor.municipality_id,
                )
            return Outcome(fmt, result.rows, rejection)
        except Rejected as rejected:
            return Outcome(fmt, [], rejected)
        except Exception as exc:  # a bug must neither stop ingest nor lose the message
            log.error("message_failed", exc_info=True, topic=staged.topic)
            return Outcome(fmt, [], Rejected("internal_error", f"{type(exc).__name__}: {exc}"))

    def _sensor_for(self, conn: psycopg.Connection, uplink: Uplink) -> SensorInfo | None:
        self.directory.reload_if_due(conn)
        if uplink.dev_eui:
            return self.directory.by_dev_eui(conn, uplink.dev_eui)
        assert uplink.municipality_slug is not None and uplink.external_id is not None
        return self.directory.by_external_id(conn, uplink.municipality_slug, uplink.external_id)

    def _check_sensor(
        self,
        uplink: Uplink,
        owner: ApplicationOwner | None,
        sensor: SensorInfo | None,
        with_db: WithDb,
    ) -> SensorInfo:
        if sensor is None:
            if uplink.external_id is not None:
                owners = self.directory.municipalities_using(uplink.external_id)
                if owners and uplink.municipality_slug not in owners:
                    # Said without naming who has such a sensor: the sender is not to learn.
                    raise Rejected(
                        "municipality_mismatch",
                        f"{uplink.municipality_slug!r} named in the topic has no sensor "
                        f"{uplink.external_id!r}; another municipality's sensor cannot be "
                        "written from it",
                        device_id=uplink.device_id,
                    )
            registered = self._maybe_register(uplink, owner, with_db)
            raise Rejected(
                "unknown_device",
                registered
                or f"no sensor is registered for {uplink.device_id}; register it, then replay",
                device_id=uplink.device_id,
                municipality_id=owner.municipality_id if owner else None,
            )
        # The topic names an application mapped to a municipality, or (native) the
        # municipality itself: the sensor must be that municipality's, whatever the body
        # claims. Said without naming whose sensor it is.
        if owner is not None and sensor.municipality_id != owner.municipality_id:
            raise Rejected(
                "municipality_mismatch",
                f"{uplink.device_id} is not a sensor of {owner.municipality_slug!r}, the "
                f"municipality {uplink.format} application {uplink.application_id!r} is "
                "mapped to",
                device_id=uplink.device_id,
                municipality_id=owner.municipality_id,
            )
        if uplink.municipality_slug is not None and (
            sensor.municipality_slug != uplink.municipality_slug
        ):
            raise Rejected(
                "municipality_mismatch",
                f"{uplink.device_id} is not a sensor of {uplink.municipality_slug!r} named "
                "in the topic",
                device_id=uplink.device_id,
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

    def _maybe_register(
        self, uplink: Uplink, owner: ApplicationOwner | None, with_db: WithDb
    ) -> str | None:
        """Register an unknown LoRaWAN device as pending, when configured, as a sensor of the
        municipality its application is mapped to. Returns a note for the dead letter."""
        if not (self.settings.auto_register_unknown and uplink.dev_eui and owner):
            return None
        municipality_id = owner.municipality_id

        def register(conn: psycopg.Connection) -> int | None:
            row = conn.execute(
                "INSERT INTO sensors (municipality_id, dev_eui, external_id, kind, status) "
                "VALUES (%s, %s, %s, 'other', 'pending') ON CONFLICT DO NOTHING RETURNING id",
                (municipality_id, uplink.dev_eui, uplink.dev_eui),
            ).fetchone()
            return row[0] if row else None

        sensor_id = with_db(register)
        if sensor_id is None:
            return None
        self.directory.invalidate()
        slug = owner.municipality_slug
        log.info("device_auto_registered", dev_eui=uplink.dev_eui, municipality=slug)
        return (
            f"registered {uplink.device_id} as pending sensor {sensor_id} of {slug}; "
            "complete its registration, then replay"
        )
