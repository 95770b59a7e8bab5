"""All runtime configuration, read once from the environment (prefix ``IOT_``).

Defaults run the whole system on one developer machine: PostgreSQL on 127.0.0.1:5432
(trust auth, user ``postgres``) and Mosquitto on 127.0.0.1:1883.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_TOPICS = (
    # ChirpStack v4 application integration (JSON marshaler); ChirpStack v3 with its
    # later event topics publishes uplinks here too
    "application/+/device/+/event/up",
    # ChirpStack v3 application integration: uplinks and device status (battery), and v4's
    # device status
    "application/+/device/+/rx",
    "application/+/device/+/status",
    "application/+/device/+/event/status",
    # The Things Stack v3 MQTT integration
    "v3/+/devices/+/up",
    # Native JSON from non-LoRaWAN gateways, see docs/ingest.md
    "municipality/+/sensors/+/readings",
)


class Settings(BaseSettings):
    """Configuration of every process (ingest, API, jobs); see docs/configuration.md."""

    model_config = SettingsConfigDict(env_prefix="IOT_", env_file=".env", extra="ignore")

    # --- database -----------------------------------------------------------------------
    database_url: str = Field(
        "postgresql://postgres@127.0.0.1:5432/kommune_iot",
        description="libpq URL of the PostgreSQL/TimescaleDB database.",
    )
    timescaledb: Literal["auto", "on", "off"] = Field(
        "auto",
        description="Use TimescaleDB when the extension is available (auto), require it (on), "
        "or use native partitioning even when it is available (off). Read by the migrations.",
    )
    partition_days_ahead: int = Field(7, ge=1, le=366)
    partition_lock_timeout_ms: int = Field(
        1000,
        ge=1,
        le=600_000,
        description="How long creating a partition (plain PostgreSQL) may wait for its locks "
        "per attempt before giving up and trying again (3 attempts per batch); a lock it "
        "waits for never queues ingest or readers behind it for longer.",
    )
    retention_days: int = Field(
        0, ge=0, description="Drop raw readings older than this many days; 0 keeps them forever."
    )
    compress_after_days: int = Field(7, ge=1, description="TimescaleDB compression age.")
    db_pool_max: int = Field(
        10,
        ge=1,
        le=200,
        description="Connections of the API's request pool (per worker); exports and staff "
        "writes and reports have pools of their own (IOT_EXPORT_MAX_CONCURRENT, "
        "IOT_DB_STAFF_WRITE_POOL_MAX, IOT_DB_STAFF_REPORT_POOL_MAX).",
    )
    db_staff_write_pool_max: int = Field(
        2,
        ge=1,
        le=50,
        description="Connections for the API's staff writes that share code with the CLI "
        "(sensor registration and imports, alerts, keys, replays); more writes at once wait.",
    )
    db_staff_report_pool_max: int = Field(
        2,
        ge=1,
        le=50,
        description="Connections for the staff reports and the school calendar read (a report "
        "reads a month of readings); more reports at once wait, staff writes do not wait "
        "for them.",
    )
    staff_database_url: str | None = Field(
        None,
        description="libpq URL the staff API connects with (role iot_staff), while "
        "IOT_DATABASE_URL serves the public API (role iot_api). Unset: IOT_DATABASE_URL.",
    )
    db_role_passwords: dict[str, str] = Field(
        default_factory=dict,
        description="Read by migrate: passwords that let the database roles log in, as JSON: "
        '{"iot_api": "...", "iot_staff": "...", "iot_ingest": "...", "iot_maintenance": '
        '"..."} (docs/operations.md). A role left out logs in only where the server trusts '
        "the connection without a password.",
    )

    # --- MQTT ---------------------------------------------------------------------------
    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = Field(1883, ge=1, le=65535)
    mqtt_username: str | None = None
    mqtt_password: str | None = None
    mqtt_tls: bool = False
    mqtt_client_id: str = Field(
        "kommune-iot-ingest",
        description="Persistent-session identity; every ingest replica needs its own.",
    )
    mqtt_share_group: str = Field(
        "ingest", description="Shared-subscription group; empty to subscribe without sharing."
    )
    mqtt_topics: list[str] = Field(default_factory=lambda: list(DEFAULT_TOPICS))
    # 7 days: the broker keeps the session (subscriptions and every unacknowledged QoS 1
    # message) across an ingest outage of a long weekend; with one hour a Friday-evening
    # failure lost everything queued after the first hour.
    mqtt_session_expiry_s: int = Field(
        7 * 24 * 3600,
        ge=0,
        description="How long the broker keeps ingest's session and queued messages while "
        "no ingest process is connected.",
    )
    mqtt_receive_maximum: int = Field(
        1000, ge=1, le=65535, description="Unacknowledged QoS 1 messages the broker may send."
    )

    # --- ingest -------------------------------------------------------------------------
    batch_max_rows: int = Field(5000, ge=1)
    batch_max_delay_s: float = Field(0.5, gt=0)
    # 5 s: invisible next to sensors that report every few minutes and dashboards that
    # refresh every 30 s, and while a backlog drains each key is upserted once per
    # interval, not once per second (BENCHMARKS.md: PostgreSQL 88 -> 61 us per message).
    latest_flush_interval_s: float = Field(
        5.0,
        ge=0,
        description="How long ingest may hold the newest values before upserting them into "
        "latest_readings together (0: with every batch).",
    )
    max_message_bytes: int = Field(64 * 1024, ge=256)
    max_future_skew_s: float = Field(300.0, ge=0)
    # 60 days: a gateway's buffer of a school's summer closure still comes in; anything
    # older is a broken clock or a back-fill, which belongs in an import, not in live ingest.
    max_past_age_days: int = Field(
        60,
        ge=1,
        description="Samples older than this (or than IOT_RETENTION_DAYS when that is "
        "shorter) are dead-lettered as too_old; also bounds the days one sender can make "
        "ingest create partitions for.",
    )
    auto_register_unknown: bool = Field(
        False,
        description="Register unknown LoRaWAN devices as pending sensors (still dead-lettered) "
        "of the municipality their network-server application is mapped to.",
    )
    codec_time_limit_ms: float = Field(
        50.0,
        gt=0,
        le=5000,
        description="Longest one run of a device model's JavaScript codec may take (per "
        "uplink) before it is stopped and the uplink dead-lettered. Codecs that decode bytes "
        "take well under 1 ms; a codec stopped here 3 times in a row is paused for a minute.",
    )
    codec_memory_limit_mb: int = Field(
        16,
        ge=2,
        le=1024,
        description="Heap of each device model's JavaScript codec, MiB; an allocation beyond "
        "it fails inside the codec, which dead-letters the uplink.",
    )
    chirpstack_v3_data_encoding: Literal["base64", "hex"] = Field(
        "base64",
        description="How `data` (the FRMPayload) of ChirpStack v3 uplinks is encoded: base64 "
        "as ChirpStack sends it, or hex where a bridge re-encodes it. The two cannot be told "
        "apart from the text, so it is a setting, not a guess.",
    )
    allow_unmapped_applications: bool = Field(
        False,
        description="Take uplinks of network-server applications mapped to no municipality "
        "(`admin map-application`), binding them to no municipality: any sensor's DevEUI is "
        "then accepted from such an application. Off: they are unmapped_application dead "
        "letters.",
    )
    dead_letter_retention_days: int = Field(
        30, ge=1, description="The maintenance job deletes dead letters older than this."
    )
    dead_letter_max_payload_bytes: int = Field(
        64 * 1024,
        ge=0,
        description="Payload bytes kept per dead letter; longer payloads are stored cut, "
        "with their size.",
    )
    dead_letter_samples_per_hour: int = Field(
        20,
        ge=1,
        description="Dead letters stored per (device, reason) and hour by each ingest "
        "process; the rest are counted in dead_letter_repeats.",
    )
    ingest_metrics_port: int = Field(9101, ge=0, le=65535, description="0 disables it.")
    ingest_metrics_host: str = Field(
        "127.0.0.1",
        description="Address ingest's /metrics and /health listen on: this machine only by "
        "default; 0.0.0.0 where Prometheus scrapes from elsewhere (compose's private network).",
    )
    ingest_gc_interval_s: float = Field(
        60.0,
        ge=0,
        description="Ingest collects cyclic garbage this often instead of Python collecting "
        "by allocation count (0: Python's automatic collection).",
    )

    # --- API ----------------------------------------------------------------------------
    api_host: str = "127.0.0.1"
    api_port: int = Field(8000, ge=1, le=65535)
    public_base_url: str = "http://127.0.0.1:8000"
    cors_origins: list[str] = Field(default_factory=lambda: ["*"])
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="Addresses or CIDR networks of reverse proxies whose X-Forwarded-For the "
        'API believes, as JSON: ["172.30.0.10"]. Empty: the TCP peer is the client. Only a '
        "trusted proxy's forwarded address identifies a client to the failed-key limiter.",
    )
    open_data_license: str = "https://creativecommons.org/licenses/by/4.0/"
    open_data_files_dir: str = Field(
        "var/open-data",
        description="Where `open-data-files` writes the daily and monthly files of the public "
        "data (CSV gzip and Parquet, per municipality and sensor kind) and the API serves "
        "them from (/api/v1/files/...) and lists them in the DCAT catalogue.",
    )
    export_max_concurrent: int = Field(
        4,
        ge=1,
        le=100,
        description="Exports streamed at once per API worker, each holding a database "
        "connection of its own while the client reads; further exports are refused with 429 "
        "and Retry-After instead of taking connections from the other routes.",
    )
    export_send_timeout_s: float = Field(
        30.0,
        gt=0,
        description="An export whose client accepts no data for this long is aborted, "
        "freeing its connection (a stalled reader cannot hold one forever).",
    )
    export_max_duration_s: float = Field(
        900.0,
        gt=0,
        description="Longest an export may stream, slow client included: the PostgreSQL "
        "statement_timeout of the export connections, and checked by the API between chunks; "
        "a longer export is cut off. A year of a large municipality streams in well under a "
        "minute on a fast link.",
    )

    # --- staff identity and audit (docs/staff.md) ----------------------------------------
    audit_retention_days: int = Field(
        1825,
        ge=0,
        description="The maintenance job deletes audit-trail events older than this many "
        "days (default five years); 0 keeps them forever.",
    )
    session_idle_minutes: int = Field(
        15,
        ge=1,
        le=24 * 60,
        description="A signed-in staff session ends after this long without a request; each "
        "request refreshes it, up to IOT_SESSION_MAX_HOURS after sign-in.",
    )
    session_max_hours: float = Field(
        8.0,
        gt=0,
        le=7 * 24,
        description="A staff session ends this long after sign-in however active it is; "
        "then the person signs in again at their identity provider.",
    )
    session_cookie_secure: bool = Field(
        True,
        description="Send the session cookies only over HTTPS (Secure). Switch off only for "
        "a plain-HTTP address other than localhost on a trusted network.",
    )

    saml_sp_key_file: str | None = Field(
        None,
        description="PEM private key the API signs its SAML authentication requests with "
        "(SAML sign-in, docs/staff.md); unset: SAML sign-in is off.",
    )
    saml_sp_cert_file: str | None = Field(
        None,
        description="PEM certificate of IOT_SAML_SP_KEY_FILE, published in the service "
        "provider metadata at /auth/saml/metadata.",
    )

    # --- outbound deliveries (python -m cli deliver, docs/notifications.md) ---------------
    deliver_concurrency: int = Field(
        4, ge=1, le=64, description="Deliveries the worker sends at once (one connection each)."
    )
    deliver_poll_interval_s: float = Field(
        1.0, gt=0, description="How often an idle worker looks for due deliveries."
    )
    deliver_timeout_s: float = Field(
        10.0, gt=0, description="Longest wait for a receiver (HTTP, SMTP, MQTT) per attempt."
    )
    deliver_backoff_base_s: float = Field(
        10.0,
        gt=0,
        description="Wait after the first failed attempt; doubled after each further one, "
        "up to IOT_DELIVER_BACKOFF_MAX_S, each wait between half and all of that (jitter).",
    )
    deliver_backoff_max_s: float = Field(900.0, gt=0, description="Longest wait between tries.")
    deliver_max_age_s: float = Field(
        86400.0,
        gt=0,
        description="A delivery still failing this long after it was written is given up: "
        "status dead, listed to staff, retried only by hand.",
    )
    deliver_log_retention_days: int = Field(
        30,
        ge=0,
        description="Delivered, digested and dead deliveries (and their attempts) are deleted "
        "this many days after they were written; alert notices not before their alert "
        "resolved. 0 keeps them forever.",
    )
    smtp_host: str = Field("127.0.0.1", description="SMTP server of the e-mail channel.")
    smtp_port: int = Field(587, ge=1, le=65535)
    smtp_starttls: bool = Field(
        True, description="Upgrade the SMTP connection with STARTTLS before authenticating."
    )
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_from: str = Field("kommune-iot@localhost", description="From address of notices.")
    smtp_ca_file: str | None = Field(
        None,
        description="CA certificates (PEM) to verify the SMTP server with, instead of the "
        "system's; the server's certificate is always verified.",
    )

    # --- analytics ----------------------------------------------------------------------
    local_timezone: str = Field(
        "Europe/Copenhagen",
        description="IANA time zone of the municipalities' clocks: local days of daily "
        "aggregates and reports, school hours, seasons. Daylight saving is followed (23- and "
        "25-hour days); the API's `tz` parameter overrides it per request.",
    )

    log_level: str = "INFO"
    log_format: Literal["logfmt", "json"] = "logfmt"

    @field_validator("database_url", "staff_database_url")
    @classmethod
    def _postgres_only(cls, url: str | None) -> str | None:
        if url is None:
            return None
        if not url.startswith(("postgresql://", "postgres://", "postgresql+psycopg://")):
            raise ValueError(
                "IOT_DATABASE_URL and IOT_STAFF_DATABASE_URL must be PostgreSQL URLs such as "
                "postgresql://user:password@host:5432/dbname"
            )
        return url

    @field_validator("trusted_proxies")
    @classmethod
    def _addresses_or_networks(cls, entries: list[str]) -> list[str]:
        from ipaddress import ip_network

        for entry in entries:
            try:
                ip_network(entry.strip(), strict=False)
            except ValueError:
                raise ValueError(
                    f"IOT_TRUSTED_PROXIES: {entry!r} is not an IP address or CIDR network"
                ) from None
        return entries

    @field_validator("local_timezone")
    @classmethod
    def _known_timezone(cls, name: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            raise ValueError(
                f"IOT_LOCAL_TIMEZONE: {name!r} is not an IANA time zone such as Europe/Copenhagen"
            ) from None
        return name

    @property
    def psycopg_url(self) -> str:
        """The URL in the plain libpq form psycopg expects."""
        return self.database_url.replace("postgresql+psycopg://", "postgresql://", 1)

    @property
    def staff_psycopg_url(self) -> str:
        """The staff API's URL in libpq form (IOT_DATABASE_URL's when unset)."""
        url = self.staff_database_url or self.database_url
        return url.replace("postgresql+psycopg://", "postgresql://", 1)

    @property
    def sqlalchemy_url(self) -> str:
        """The URL with SQLAlchemy's psycopg 3 driver selected."""
        url = self.psycopg_url
        for prefix in ("postgresql://", "postgres://"):
            if url.startswith(prefix):
                return "postgresql+psycopg://" + url[len(prefix) :]
        return url


@lru_cache
def get_settings() -> Settings:
    """Settings of this process; cached so the environment is read once."""
    return Settings()
