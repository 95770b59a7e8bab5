"""The relational schema (SQLAlchemy 2.0). Migrations in migrations/versions create it.

Readings use a narrow layout, one row per (sensor, metric, time), keyed so that a
re-insert of the same sample is a no-op. On TimescaleDB the table is a hypertable; on
plain PostgreSQL it is range-partitioned by day (see migrations and docs/storage.md).
"""

from __future__ import annotations

from datetime import date as dt_date
from datetime import datetime, time
from datetime import time as dt_time
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    Double,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    Text,
    Time,
    UniqueConstraint,
    column,
    func,
    table,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.sql.expression import TableClause

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

SENSOR_KINDS = ("climate", "bin", "parking", "other")
SENSOR_STATUSES = ("active", "pending", "retired")
ALERT_STATUSES = ("open", "acknowledged", "resolved")

Timestamp = DateTime(timezone=True)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Municipality(Base):
    """A tenant: one municipality owns its sensors, data, keys and settings."""

    __tablename__ = "municipalities"

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    slug: Mapped[str] = mapped_column(Text, unique=True)
    name: Mapped[str] = mapped_column(Text)
    # The four-digit Danish municipality code (e.g. 0751 Aarhus), when known.
    kommune_code: Mapped[str | None] = mapped_column(Text, unique=True)
    # Per-municipality overrides of analytics thresholds, open-data licence, ...
    settings: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    created_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())

    __table_args__ = (CheckConstraint("slug ~ '^[a-z0-9][a-z0-9-]{0,62}$'", name="slug_format"),)


class Site(Base):
    """A place with an address: a school, a depot, a parking area, a street."""

    __tablename__ = "sites"

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    municipality_id: Mapped[int] = mapped_column(
        ForeignKey("municipalities.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(Text, server_default="other")
    address: Mapped[str | None] = mapped_column(Text)
    lat: Mapped[float | None] = mapped_column(Double)
    lon: Mapped[float | None] = mapped_column(Double)

    __table_args__ = (UniqueConstraint("municipality_id", "name"),)


class Zone(Base):
    """A part of a site: a classroom, a parking zone, a group of bins."""

    __tablename__ = "zones"

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    municipality_id: Mapped[int] = mapped_column(
        ForeignKey("municipalities.id", ondelete="CASCADE"), index=True
    )
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(Text, server_default="room")
    floor: Mapped[str | None] = mapped_column(Text)
    capacity: Mapped[int | None] = mapped_column(Integer)

    __table_args__ = (UniqueConstraint("site_id", "name"),)


class DeviceModel(Base):
    """A sensor product and the payload decoder that reads its uplinks."""

    __tablename__ = "device_models"

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    vendor: Mapped[str] = mapped_column(Text)
    model: Mapped[str] = mapped_column(Text)
    decoder: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(Text)
    meta: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    # NULL: a built-in model (Python decoder), shared; else the municipality that added it
    # with its own codec (migration 0013, ingest/codecs/store.py).
    municipality_id: Mapped[int | None] = mapped_column(
        ForeignKey("municipalities.id", ondelete="CASCADE")
    )

    __table_args__ = (
        Index(
            "ux_device_models_shared_vendor_model",
            "vendor",
            "model",
            unique=True,
            postgresql_where=text("municipality_id IS NULL"),
        ),
        Index(
            "ux_device_models_municipality_vendor_model",
            "municipality_id",
            "vendor",
            "model",
            unique=True,
            postgresql_where=text("municipality_id IS NOT NULL"),
        ),
    )


class DeviceCodec(Base):
    """One checked version of a municipality's device model's codec (migration 0013):
    JavaScript source (NULL when the network server decodes), examples, field mapping and
    the check report. Ingest uses the highest version; the others are kept."""

    __tablename__ = "device_codecs"

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    municipality_id: Mapped[int] = mapped_column(
        ForeignKey("municipalities.id", ondelete="CASCADE"), index=True
    )
    device_model_id: Mapped[int] = mapped_column(ForeignKey("device_models.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    script: Mapped[str | None] = mapped_column(Text)
    examples: Mapped[Any] = mapped_column(JSONB)
    mapping: Mapped[dict[str, Any]] = mapped_column(JSONB)
    report: Mapped[dict[str, Any]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())

    __table_args__ = (
        UniqueConstraint("device_model_id", "version"),
        CheckConstraint("version > 0", name="version_positive"),
    )


class Sensor(Base):
    """One physical device, owned by one municipality."""

    __tablename__ = "sensors"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    municipality_id: Mapped[int] = mapped_column(
        ForeignKey("municipalities.id", ondelete="CASCADE"), index=True
    )
    # LoRaWAN devices are found by DevEUI (16 lowercase hex digits); others by external id.
    dev_eui: Mapped[str | None] = mapped_column(Text, unique=True)
    external_id: Mapped[str] = mapped_column(Text)
    name: Mapped[str | None] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(Text)
    device_model_id: Mapped[int | None] = mapped_column(
        ForeignKey("device_models.id", ondelete="RESTRICT"), index=True
    )
    site_id: Mapped[int | None] = mapped_column(ForeignKey("sites.id", ondelete="SET NULL"))
    zone_id: Mapped[int | None] = mapped_column(
        ForeignKey("zones.id", ondelete="SET NULL"), index=True
    )
    lat: Mapped[float | None] = mapped_column(Double)
    lon: Mapped[float | None] = mapped_column(Double)
    installed_at: Mapped[datetime | None] = mapped_column(Timestamp)
    install_meta: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    # Waste bins: inner depth and the sensor's distance above the full line, in millimetres.
    bin_depth_mm: Mapped[float | None] = mapped_column(Double)
    mount_offset_mm: Mapped[float | None] = mapped_column(Double)
    expected_interval_s: Mapped[int | None] = mapped_column(Integer)
    is_public: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    status: Mapped[str] = mapped_column(Text, server_default="active")
    created_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())

    __table_args__ = (
        UniqueConstraint("municipality_id", "external_id"),
        CheckConstraint("dev_eui ~ '^[0-9a-f]{16}$'", name="dev_eui_format"),
        CheckConstraint(
            "kind IN (" + ", ".join(f"'{k}'" for k in SENSOR_KINDS) + ")", name="kind_known"
        ),
        CheckConstraint(
            "status IN (" + ", ".join(f"'{s}'" for s in SENSOR_STATUSES) + ")",
            name="status_known",
        ),
        CheckConstraint("lat BETWEEN -90 AND 90 AND lon BETWEEN -180 AND 180", name="lat_lon"),
        CheckConstraint("bin_depth_mm > 0", name="bin_depth_positive"),
    )


NETWORKS = ("chirpstack", "thethings")


class NetworkApplication(Base):
    """A LoRaWAN network-server application and the municipality its uplinks belong to
    (migration 0006). Ingest binds uplinks by it; `broker-acl` grants topics by it."""

    __tablename__ = "network_applications"

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    # The wire format's name: "chirpstack" (v4) or "thethings" (The Things Stack v3).
    network: Mapped[str] = mapped_column(Text)
    # As the topic names it: ChirpStack's application UUID, TTS's "<app id>@<tenant>".
    application_id: Mapped[str] = mapped_column(Text)
    municipality_id: Mapped[int] = mapped_column(
        ForeignKey("municipalities.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())

    __table_args__ = (
        UniqueConstraint("network", "application_id"),
        CheckConstraint(
            "network IN (" + ", ".join(f"'{n}'" for n in NETWORKS) + ")", name="network_known"
        ),
        CheckConstraint(
            "application_id ~ '^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$'",
            name="application_id_topic_level",
        ),
    )


class MetricRow(Base):
    """The metric vocabulary, kept in step with domain/metrics.py at start-up."""

    __tablename__ = "metrics"

    id: Mapped[int] = mapped_column(SmallInteger, Identity(), primary_key=True)
    name: Mapped[str] = mapped_column(Text, unique=True)
    unit: Mapped[str] = mapped_column(Text)
    description: Mapped[str] = mapped_column(Text)
    min_value: Mapped[float] = mapped_column(Double)
    max_value: Mapped[float] = mapped_column(Double)


class Reading(Base):
    """One sample: narrow, keyed by (sensor, metric, time) so re-inserts are no-ops."""

    __tablename__ = "readings"

    time: Mapped[datetime] = mapped_column(Timestamp)
    sensor_id: Mapped[int] = mapped_column(BigInteger)
    metric_id: Mapped[int] = mapped_column(SmallInteger)
    value: Mapped[float] = mapped_column(Double)

    # No foreign keys: they would cost on every COPY row and block partition maintenance;
    # ingest only writes ids it has just looked up. The key carries `value` so that a
    # sensor's series is read from the index alone (migration 0023).
    __table_args__ = (
        PrimaryKeyConstraint(
            "sensor_id", "metric_id", "time", name="pk_readings", postgresql_include=["value"]
        ),
        {"postgresql_partition_by": "RANGE (time)"},
    )


class LatestReading(Base):
    """The newest value of each (sensor, metric); upserted by the ingest writer."""

    __tablename__ = "latest_readings"
    # Half of each page free so that the ingest's updates are HOT (migration 0004).
    __table_args__ = ({"postgresql_with": {"fillfactor": 50}},)

    sensor_id: Mapped[int] = mapped_column(
        ForeignKey("sensors.id", ondelete="CASCADE"), primary_key=True
    )
    metric_id: Mapped[int] = mapped_column(
        ForeignKey("metrics.id", ondelete="CASCADE"), primary_key=True
    )
    time: Mapped[datetime] = mapped_column(Timestamp)
    value: Mapped[float] = mapped_column(Double)


class LatestPending(Base):
    """Sensors whose latest values an ingest process holds in memory, one row per batch
    that deferred them (migration 0005, ingest/latest.py)."""

    __tablename__ = "latest_pending"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now(), index=True)
    oldest: Mapped[datetime] = mapped_column(Timestamp)
    sensor_ids: Mapped[list[int]] = mapped_column(ARRAY(BigInteger))


class DeadLetter(Base):
    """A message that could not be stored, kept with its raw bytes and the reason."""

    __tablename__ = "dead_letters"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    received_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())
    topic: Mapped[str] = mapped_column(Text)
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    reason: Mapped[str] = mapped_column(Text)
    detail: Mapped[str] = mapped_column(Text, server_default="")
    municipality_id: Mapped[int | None] = mapped_column(
        ForeignKey("municipalities.id", ondelete="SET NULL")
    )
    device_id: Mapped[str | None] = mapped_column(Text)
    replayed_at: Mapped[datetime | None] = mapped_column(Timestamp)
    # Size of a payload stored cut to IOT_DEAD_LETTER_MAX_PAYLOAD_BYTES; NULL: stored whole.
    payload_truncated_from: Mapped[int | None] = mapped_column(Integer)
    # SHA-256 of topic, NUL and the whole payload: a redelivered message is one letter
    # (migration 0012).
    fingerprint: Mapped[bytes | None] = mapped_column(LargeBinary)

    __table_args__ = (
        Index("ix_dead_letters_received_at", "received_at"),
        Index("ix_dead_letters_reason", "reason"),
        # A municipality's newest letters, in id order, without a sort.
        Index("ix_dead_letters_municipality_id_id", "municipality_id", "id"),
        Index("ux_dead_letters_fingerprint", "fingerprint", unique=True),
        Index(
            "ix_dead_letters_unattributed_device_id",
            "device_id",
            postgresql_where=text("municipality_id IS NULL"),
        ),
    )


class DeadLetterRepeat(Base):
    """Dead letters of one (device or topic, reason) in one hour beyond the sample stored
    in ``dead_letters``: counted, not kept (ingest/dead_letters.py)."""

    __tablename__ = "dead_letter_repeats"

    key: Mapped[str] = mapped_column(Text, primary_key=True)
    reason: Mapped[str] = mapped_column(Text, primary_key=True)
    hour: Mapped[datetime] = mapped_column(Timestamp, primary_key=True, index=True)
    municipality_id: Mapped[int | None] = mapped_column(
        ForeignKey("municipalities.id", ondelete="SET NULL"), index=True
    )
    device_id: Mapped[str | None] = mapped_column(Text)
    repeats: Mapped[int] = mapped_column(BigInteger)
    last_received_at: Mapped[datetime] = mapped_column(Timestamp)


class UplinkIdentity(Base):
    """The time first given to an uplink without a time of its own, by its identity, so
    that a redelivery is keyed alike (ingest/identity.py)."""

    __tablename__ = "uplink_identities"

    identity: Mapped[str] = mapped_column(Text, primary_key=True)
    received_at: Mapped[datetime] = mapped_column(Timestamp)
    first_seen: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now(), index=True)


class Alert(Base):
    """An alert with a lifecycle: open, acknowledged, resolved.

    At most one unresolved alert exists per (rule, subject), so re-running an evaluation
    updates the open alert instead of adding another.
    """

    __tablename__ = "alerts"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    municipality_id: Mapped[int] = mapped_column(
        ForeignKey("municipalities.id", ondelete="CASCADE"), index=True
    )
    sensor_id: Mapped[int | None] = mapped_column(ForeignKey("sensors.id", ondelete="CASCADE"))
    zone_id: Mapped[int | None] = mapped_column(ForeignKey("zones.id", ondelete="CASCADE"))
    rule: Mapped[str] = mapped_column(Text)
    severity: Mapped[str] = mapped_column(Text, server_default="warning")
    status: Mapped[str] = mapped_column(Text, server_default="open")
    # A stable key for the subject (e.g. "sensor:42"), part of the dedup key.
    subject: Mapped[str] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(Timestamp)
    ended_at: Mapped[datetime | None] = mapped_column(Timestamp)
    last_value: Mapped[float | None] = mapped_column(Double)
    message: Mapped[str] = mapped_column(Text, server_default="")
    details: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    acknowledged_at: Mapped[datetime | None] = mapped_column(Timestamp)
    acknowledged_by: Mapped[str | None] = mapped_column(Text)
    resolved_at: Mapped[datetime | None] = mapped_column(Timestamp)
    updated_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())

    __table_args__ = (
        CheckConstraint(
            "status IN (" + ", ".join(f"'{s}'" for s in ALERT_STATUSES) + ")",
            name="status_known",
        ),
        Index(
            "uq_alerts_unresolved_rule_subject",
            "rule",
            "subject",
            unique=True,
            postgresql_where=text("status <> 'resolved'"),
        ),
        Index("ix_alerts_municipality_id_status", "municipality_id", "status"),
    )


class ApiKey(Base):
    """A municipality's API key; only a hash of the secret is stored."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    municipality_id: Mapped[int] = mapped_column(
        ForeignKey("municipalities.id", ondelete="CASCADE"), index=True
    )
    # The public part of the key, used to find the row before the constant-time compare.
    prefix: Mapped[str] = mapped_column(Text, unique=True)
    secret_hash: Mapped[bytes] = mapped_column(LargeBinary)
    name: Mapped[str] = mapped_column(Text, server_default="")
    scopes: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default=text("'{}'"))
    created_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())
    expires_at: Mapped[datetime | None] = mapped_column(Timestamp)
    revoked_at: Mapped[datetime | None] = mapped_column(Timestamp)
    last_used_at: Mapped[datetime | None] = mapped_column(Timestamp)
    # The person or system the key belongs to (migration 0018): keys are for machines, and
    # someone answers for each.
    owner: Mapped[str] = mapped_column(Text)

    __table_args__ = (CheckConstraint("length(btrim(owner)) > 0", name="owner_named"),)


class AuditEvent(Base):
    """One staff write (a row inserted, changed or deleted) or audited read, append-only;
    written by the iot_audit_row() trigger in the write's own transaction (migration 0018)."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    municipality_id: Mapped[int] = mapped_column(
        ForeignKey("municipalities.id", ondelete="CASCADE")
    )
    occurred_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())
    actor_kind: Mapped[str] = mapped_column(Text)  # "key" or "person"
    actor_id: Mapped[str] = mapped_column(Text)
    actor_name: Mapped[str] = mapped_column(Text)
    client_address: Mapped[str | None] = mapped_column(Text)
    request_method: Mapped[str | None] = mapped_column(Text)
    request_path: Mapped[str | None] = mapped_column(Text)
    request_id: Mapped[str | None] = mapped_column(Text)
    action: Mapped[str] = mapped_column(Text)
    target_table: Mapped[str | None] = mapped_column(Text)
    target_id: Mapped[str | None] = mapped_column(Text)
    operation: Mapped[str | None] = mapped_column(Text)
    before: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSONB)

    __table_args__ = (
        Index("ix_audit_events_municipality_id_id", "municipality_id", "id"),
        Index("ix_audit_events_occurred_at", "occurred_at"),
    )


class IdentityProvider(Base):
    """An OpenID Connect or SAML 2.0 provider the staff of one municipality sign in with."""

    __tablename__ = "identity_providers"

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    municipality_id: Mapped[int] = mapped_column(
        ForeignKey("municipalities.id", ondelete="CASCADE"), index=True
    )
    slug: Mapped[str] = mapped_column(Text, unique=True)
    kind: Mapped[str] = mapped_column(Text, server_default="oidc")
    display_name: Mapped[str] = mapped_column(Text)
    # OIDC: issuer, client, role claim and mapping (api/oidc.py); SAML: api/saml.py
    config: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'"))
    enabled: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    created_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())

    __table_args__ = (CheckConstraint("kind IN ('oidc', 'saml')", name="kind_known"),)


class StaffSession(Base):
    """A signed-in person: only hashes of the cookie's token and the CSRF token are kept."""

    __tablename__ = "staff_sessions"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    token_hash: Mapped[bytes] = mapped_column(LargeBinary, unique=True)
    csrf_hash: Mapped[bytes] = mapped_column(LargeBinary)
    municipality_id: Mapped[int] = mapped_column(
        ForeignKey("municipalities.id", ondelete="CASCADE"), index=True
    )
    provider_id: Mapped[int] = mapped_column(
        ForeignKey("identity_providers.id", ondelete="CASCADE"), index=True
    )
    subject: Mapped[str] = mapped_column(Text)
    name: Mapped[str] = mapped_column(Text)
    email: Mapped[str | None] = mapped_column(Text)
    scopes: Mapped[list[str]] = mapped_column(ARRAY(Text))
    created_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())
    idle_expires_at: Mapped[datetime] = mapped_column(Timestamp)
    expires_at: Mapped[datetime] = mapped_column(Timestamp)
    revoked_at: Mapped[datetime | None] = mapped_column(Timestamp)


class LoginState(Base):
    """A sign-in under way: the OIDC state (hashed), nonce and PKCE verifier, bound to the
    browser that started it."""

    __tablename__ = "login_states"

    state_hash: Mapped[bytes] = mapped_column(LargeBinary, primary_key=True)
    provider_id: Mapped[int] = mapped_column(
        ForeignKey("identity_providers.id", ondelete="CASCADE"), index=True
    )
    municipality_id: Mapped[int] = mapped_column(
        ForeignKey("municipalities.id", ondelete="CASCADE"), index=True
    )
    browser_hash: Mapped[bytes] = mapped_column(LargeBinary)
    nonce: Mapped[str] = mapped_column(Text)
    code_verifier: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())


class RollupDirtyHour(Base):
    """Log of hours whose rollups need recomputing: one row per statement that stored
    readings and hour it touched; the refresh consumes the rows it sees (plain PostgreSQL
    only, migration 0007)."""

    __tablename__ = "rollup_dirty_hours"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    bucket: Mapped[datetime] = mapped_column(Timestamp, index=True)


class SystemInfo(Base):
    """Facts the migrations record about this database, e.g. the storage backend."""

    __tablename__ = "system_info"

    key: Mapped[str] = mapped_column(Text, primary_key=True)
    value: Mapped[str] = mapped_column(Text)


def _rollup(name: str) -> TableClause:
    return table(
        name,
        column("bucket", Timestamp),
        column("sensor_id", BigInteger),
        column("metric_id", SmallInteger),
        column("count", BigInteger),
        column("sum", Double),
        column("avg", Double),
        column("min", Double),
        column("max", Double),
    )


# Rollups: tables kept by triggers and a job on plain PostgreSQL, continuous aggregates on
# TimescaleDB. Same names and columns on both, so queries never need to know which.
# Hourly and daily buckets are UTC.
readings_hourly = _rollup("readings_hourly")
readings_daily = _rollup("readings_daily")


# --- outbound deliveries (migration 0015, docs/notifications.md) ----------------------------

CHANNEL_KINDS = ("webhook", "email", "teams", "slack")
TARGET_KINDS = ("http", "mqtt", "ngsi_ld")
SEVERITIES = ("info", "warning", "critical")
# confirming: an e-mail's final dot is (about to be) written, the server's reply awaited;
# unconfirmed: its worker died meanwhile, so it is not sent again (docs/notifications.md).
DELIVERY_STATUSES = (
    "pending",
    "held",
    "delivered",
    "dead",
    "digested",
    "confirming",
    "unconfirmed",
)


class NotificationChannel(Base):
    """Where a municipality's alert notices go: a webhook, e-mail recipients, or a Teams /
    Slack incoming webhook."""

    __tablename__ = "notification_channels"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    municipality_id: Mapped[int] = mapped_column(
        ForeignKey("municipalities.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(Text)
    url: Mapped[str | None] = mapped_column(Text)
    recipients: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default=text("'{}'"))
    # HMAC-SHA256 key of webhook signatures.
    secret: Mapped[str | None] = mapped_column(Text)
    language: Mapped[str] = mapped_column(Text, server_default="da")
    enabled: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    created_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())

    __table_args__ = (
        CheckConstraint(
            "kind IN (" + ", ".join(f"'{k}'" for k in CHANNEL_KINDS) + ")", name="kind_known"
        ),
        CheckConstraint("language IN ('da', 'en')", name="language_known"),
        UniqueConstraint("municipality_id", "name"),
    )


class NotificationRule(Base):
    """Which alerts (rule, site or zone, least severity) go to which channel, when (quiet
    hours in Europe/Copenhagen time), and where to escalate an unacknowledged one."""

    __tablename__ = "notification_rules"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    municipality_id: Mapped[int] = mapped_column(
        ForeignKey("municipalities.id", ondelete="CASCADE"), index=True
    )
    channel_id: Mapped[int] = mapped_column(
        ForeignKey("notification_channels.id", ondelete="CASCADE"), index=True
    )
    # An alert rule ("climate.co2_limit") or a family ending in a dot ("climate."); NULL: all.
    alert_rule: Mapped[str | None] = mapped_column(Text)
    site_id: Mapped[int | None] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"))
    zone_id: Mapped[int | None] = mapped_column(ForeignKey("zones.id", ondelete="CASCADE"))
    min_severity: Mapped[str] = mapped_column(Text, server_default="warning")
    quiet_from: Mapped[time | None] = mapped_column(Time)
    quiet_until: Mapped[time | None] = mapped_column(Time)
    escalate_after_min: Mapped[int | None] = mapped_column(Integer)
    escalate_channel_id: Mapped[int | None] = mapped_column(
        ForeignKey("notification_channels.id", ondelete="SET NULL")
    )
    notify_resolved: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    enabled: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))

    __table_args__ = (
        CheckConstraint(
            "min_severity IN (" + ", ".join(f"'{s}'" for s in SEVERITIES) + ")",
            name="min_severity_known",
        ),
        CheckConstraint(
            "(quiet_from IS NULL) = (quiet_until IS NULL)", name="quiet_hours_complete"
        ),
    )


class DataTarget(Base):
    """A system a municipality's readings are forwarded to, with a filter."""

    __tablename__ = "data_targets"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    municipality_id: Mapped[int] = mapped_column(
        ForeignKey("municipalities.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(Text)
    # http(s):// endpoint, NGSI-LD broker base URL, or mqtt(s)://host:port for republish.
    url: Mapped[str] = mapped_column(Text)
    topic: Mapped[str | None] = mapped_column(Text)
    secret: Mapped[str | None] = mapped_column(Text)
    # Filters; NULL: no filter on that dimension.
    sensor_kinds: Mapped[list[str] | None] = mapped_column(ARRAY(Text))
    sensor_ids: Mapped[list[int] | None] = mapped_column(ARRAY(BigInteger))
    metrics: Mapped[list[str] | None] = mapped_column(ARRAY(Text))
    enabled: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    created_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())

    __table_args__ = (
        CheckConstraint(
            "kind IN (" + ", ".join(f"'{k}'" for k in TARGET_KINDS) + ")", name="kind_known"
        ),
        UniqueConstraint("municipality_id", "name"),
    )


class Delivery(Base):
    """The outbox: one message to one channel or data target, written in the transaction
    that caused it, delivered at least once by `python -m cli deliver`."""

    __tablename__ = "deliveries"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    municipality_id: Mapped[int] = mapped_column(
        ForeignKey("municipalities.id", ondelete="CASCADE")
    )
    channel_id: Mapped[int | None] = mapped_column(
        ForeignKey("notification_channels.id", ondelete="CASCADE"), index=True
    )
    target_id: Mapped[int | None] = mapped_column(
        ForeignKey("data_targets.id", ondelete="CASCADE"), index=True
    )
    rule_id: Mapped[int | None] = mapped_column(
        ForeignKey("notification_rules.id", ondelete="SET NULL")
    )
    alert_id: Mapped[int | None] = mapped_column(
        ForeignKey("alerts.id", ondelete="SET NULL"), index=True
    )
    digest_id: Mapped[int | None] = mapped_column(ForeignKey("deliveries.id", ondelete="SET NULL"))
    event: Mapped[str] = mapped_column(Text)
    idempotency_key: Mapped[str] = mapped_column(Text, unique=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    status: Mapped[str] = mapped_column(Text, server_default="pending")
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    created_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())
    next_attempt_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())
    delivered_at: Mapped[datetime | None] = mapped_column(Timestamp)
    last_error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        CheckConstraint(
            "status IN (" + ", ".join(f"'{s}'" for s in DELIVERY_STATUSES) + ")",
            name="status_known",
        ),
        CheckConstraint("(channel_id IS NULL) <> (target_id IS NULL)", name="one_destination"),
        Index(
            "ix_deliveries_due",
            "next_attempt_at",
            postgresql_where=text("status IN ('pending', 'held')"),
        ),
        Index("ix_deliveries_municipality_id_id", "municipality_id", "id"),
        Index(
            "ix_deliveries_in_doubt",
            "municipality_id",
            postgresql_where=text("status IN ('confirming', 'unconfirmed')"),
        ),
    )


class DeliveryAttempt(Base):
    """One try to deliver: written (committed) before the send, finished after it. One left
    unfinished is in doubt: the worker died during that send (docs/notifications.md). An
    e-mail's attempt records when it passed SMTP's point of no return, the final dot."""

    __tablename__ = "delivery_attempts"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    delivery_id: Mapped[int] = mapped_column(
        ForeignKey("deliveries.id", ondelete="CASCADE"), index=True
    )
    municipality_id: Mapped[int] = mapped_column(
        ForeignKey("municipalities.id", ondelete="CASCADE")
    )
    started_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())
    finished_at: Mapped[datetime | None] = mapped_column(Timestamp)
    ok: Mapped[bool | None] = mapped_column(Boolean)
    status_code: Mapped[int | None] = mapped_column(Integer)
    # The receiver's answer (HTTP body, SMTP reply), cut to 2000 characters.
    response: Mapped[str | None] = mapped_column(Text)
    # Committed just before the e-mail's terminating <CRLF>.<CRLF> was written (migration 0027).
    final_dot_at: Mapped[datetime | None] = mapped_column(Timestamp)


class SchoolHours(Base):
    """A municipality's school opening hours on one ISO weekday (migration 0014); the
    analytics judge rooms in occupied hours (analytics/occupancy.py)."""

    __tablename__ = "school_hours"

    municipality_id: Mapped[int] = mapped_column(
        ForeignKey("municipalities.id", ondelete="CASCADE"), primary_key=True
    )
    weekday: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    opens: Mapped[dt_time] = mapped_column(Time)
    closes: Mapped[dt_time] = mapped_column(Time)

    __table_args__ = (
        CheckConstraint("weekday BETWEEN 1 AND 7", name="weekday_iso"),
        CheckConstraint("opens < closes", name="opens_before_closes"),
    )


class SchoolHoliday(Base):
    """A school holiday of a municipality, first and last day inclusive (migration 0014)."""

    __tablename__ = "school_holidays"

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    municipality_id: Mapped[int] = mapped_column(
        ForeignKey("municipalities.id", ondelete="CASCADE")
    )
    first_day: Mapped[dt_date] = mapped_column(Date)
    last_day: Mapped[dt_date] = mapped_column(Date)
    name: Mapped[str] = mapped_column(Text, server_default="")

    __table_args__ = (
        UniqueConstraint("municipality_id", "first_day"),
        CheckConstraint("first_day <= last_day", name="ordered"),
    )
