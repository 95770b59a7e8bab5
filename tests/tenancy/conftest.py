"""Two municipalities with one of everything a municipality owns, and empty instances to
import into."""

from __future__ import annotations

import hashlib
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from api.auth import create_key
from models.partitions import create_partitions
from tests.conftest import ADMIN_URL, TIMESCALE_ADMIN_URL, migrated_database

# Across a month boundary: the export reads readings a month at a time.
START = datetime(2026, 2, 27, tzinfo=UTC)
DAYS = 3
STEP_MINUTES = 10


@dataclass(frozen=True)
class Tenants:
    """What was seeded; `token` is aarhus's API key (it must never be exported)."""

    aarhus: int
    odense: int
    token: str
    readings_per_municipality: dict[str, int]


def seed_municipality(
    db: psycopg.Connection, slug: str, code: str, dev_eui_prefix: str, model_id: int
) -> int:
    """One municipality: a site with a zone, three sensors (public and private, one
    LoRaWAN), a network application, an alert on a sensor, a dead letter and a repeat."""
    municipality = db.execute(
        "INSERT INTO municipalities (slug, name, kommune_code, settings) VALUES "
        '(%s, %s, %s, \'{"new_sensors_public": true, "thresholds": {"co2_ppm": 1000}}\') '
        "RETURNING id",
        (slug, f"{slug.title()} Kommune", code),
    ).fetchone()[0]
    site = db.execute(
        "INSERT INTO sites (municipality_id, name, kind, address, lat, lon) "
        "VALUES (%s, 'Skolen', 'school', 'Skolevej 1', 56.1, 10.2) RETURNING id",
        (municipality,),
    ).fetchone()[0]
    zone = db.execute(
        "INSERT INTO zones (municipality_id, site_id, name, kind, floor, capacity) "
        "VALUES (%s, %s, 'Lokale 1.01', 'room', '1', 28) RETURNING id",
        (municipality, site),
    ).fetchone()[0]
    own_model = seed_own_models(db, municipality, slug)
    sensors = []
    for n, (kind, public) in enumerate((("climate", True), ("climate", False), ("bin", True))):
        sensors.append(
            db.execute(
                "INSERT INTO sensors (municipality_id, dev_eui, external_id, name, kind, "
                "device_model_id, site_id, zone_id, lat, lon, is_public, bin_depth_mm, "
                "install_meta, installed_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, "
                '56.15, 10.21, %s, %s, \'{"mounted_by": "Jens"}\', %s) RETURNING id',
                (
                    municipality,
                    f"{dev_eui_prefix}{n:02x}" if n != 2 else None,
                    f"{slug}-{n}",
                    f"Sensor {n} ({slug})",
                    kind,
                    model_id if kind == "climate" else own_model,
                    site,
                    zone if kind == "climate" else None,
                    public,
                    1200.0 if kind == "bin" else None,
                    START - timedelta(days=30),
                ),
            ).fetchone()[0]
        )
    db.execute(
        "INSERT INTO network_applications (network, application_id, municipality_id) "
        "VALUES ('chirpstack', %s, %s)",
        (f"app-{slug}", municipality),
    )
    db.execute(
        "INSERT INTO alerts (municipality_id, sensor_id, zone_id, rule, severity, subject, "
        "started_at, last_value, message, details) VALUES "
        "(%s, %s, %s, 'co2_high', 'warning', %s, %s, 1450, 'CO2 over 1400 ppm', "
        "'{\"limit\": 1400}')",
        (municipality, sensors[0], zone, f"sensor:{sensors[0]}", START + timedelta(hours=9)),
    )
    payload = bytes(range(256)) + slug.encode()
    db.execute(
        "INSERT INTO dead_letters (received_at, topic, payload, reason, detail, "
        "municipality_id, device_id, fingerprint) VALUES (%s, %s, %s, 'decode_error', "
        "'bad length', %s, %s, %s)",
        (
            START,
            f"application/app-{slug}/device/x/event/up",
            payload,
            municipality,
            f"{dev_eui_prefix}00",
            hashlib.sha256(payload).digest(),
        ),
    )
    db.execute(
        "INSERT INTO dead_letter_repeats (key, reason, hour, municipality_id, device_id, "
        "repeats, last_received_at) VALUES (%s, 'decode_error', %s, %s, %s, 7, %s)",
        (f"{dev_eui_prefix}00", START, municipality, f"{dev_eui_prefix}00", START),
    )
    seed_identity_and_outbound(db, slug, municipality, site, zone, sensors)
    # A school calendar: two weekdays' hours (one different per municipality), two holidays.
    db.execute(
        "INSERT INTO school_hours (municipality_id, weekday, opens, closes) VALUES "
        "(%s, 1, '08:00', '15:00'), (%s, 5, %s, '13:00')",
        (municipality, municipality, "08:15" if slug == "aarhus" else "08:30"),
    )
    db.execute(
        "INSERT INTO school_holidays (municipality_id, first_day, last_day, name) VALUES "
        "(%s, '2026-12-21', '2027-01-01', 'Juleferie'), "
        "(%s, '2026-10-12', '2026-10-16', 'Efterårsferie')",
        (municipality, municipality),
    )
    metrics = dict(db.execute("SELECT name, id FROM metrics").fetchall())
    for n, sensor in enumerate(sensors):
        names = ("co2_ppm", "temperature_c") if n < 2 else ("fill_pct",)
        for name in names:
            db.execute(
                "INSERT INTO readings (time, sensor_id, metric_id, value) "
                "SELECT t, %s, %s, 400 + (extract(epoch FROM t)::bigint %% 977) / 3.0 + %s "
                "FROM generate_series(%s::timestamptz, %s::timestamptz - interval '1 second', "
                "%s * interval '1 minute') t",
                (
                    sensor,
                    metrics[name],
                    n,
                    START,
                    START + timedelta(days=DAYS),
                    STEP_MINUTES,
                ),
            )
    db.execute(
        "INSERT INTO latest_readings (sensor_id, metric_id, time, value) "
        "SELECT DISTINCT ON (sensor_id, metric_id) sensor_id, metric_id, time, value "
        "FROM readings WHERE sensor_id = ANY(%s) ORDER BY sensor_id, metric_id, time DESC",
        (sensors,),
    )
    return municipality


def codec_script(slug: str, version: int) -> str:
    return f"// {slug} bin codec v{version}\nfunction Decode(fPort, bytes) {{ return {{}}; }}"


def seed_own_models(db: psycopg.Connection, municipality: int, slug: str) -> int:
    """Two device models of the municipality's own (uploaded codecs, ingest/codecs): one
    with two codec versions, which its bin sensor uses, and one no sensor uses yet. Both
    municipalities name theirs alike, as they may. Returns the first one's id."""
    models = []
    for name, versions in (("Fill level v2", 2), ("Fill level v3 (test)", 1)):
        model = db.execute(
            "INSERT INTO device_models (vendor, model, decoder, kind, meta, municipality_id) "
            "VALUES ('Teneo IoT', %s, 'codec', 'bin', '{\"source\": \"uploaded codec\"}', %s) "
            "RETURNING id",
            (name, municipality),
        ).fetchone()[0]
        for version in range(1, versions + 1):
            db.execute(
                "INSERT INTO device_codecs (municipality_id, device_model_id, version, script, "
                "examples, mapping, report, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    municipality,
                    model,
                    version,
                    codec_script(slug, version),
                    '[{"input": {"fPort": 1, "bytes": [1, 2]}, "output": {"data": {}}}]',
                    '{"fields": {"distance": {"metric": "distance_mm", "unit": "cm"}}}',
                    '{"passed": true}',
                    START - timedelta(days=10 - version),
                ),
            )
        models.append(model)
    return models[0]


def secrets_of(slug: str) -> dict[str, bytes]:
    """The secrets seeded for `slug` (none may leave in an export)."""
    return {
        "client secret": f"{slug}-oidc-client-secret".encode(),
        "webhook secret": f"{slug}-webhook-signing-secret".encode(),
        "data target secret": f"{slug}-target-bearer-secret".encode(),
        "session token hash": hashlib.sha256(f"{slug}-session".encode()).digest(),
        "session csrf hash": hashlib.sha256(f"{slug}-csrf".encode()).digest(),
        "login state hash": hashlib.sha256(f"{slug}-state".encode()).digest(),
        "PKCE verifier": f"{slug}-pkce-code-verifier".encode(),
    }


def seed_identity_and_outbound(
    db: psycopg.Connection, slug: str, municipality: int, site: int, zone: int, sensors: list
) -> None:
    """A sign-in provider with a signed-in person and a sign-in under way, a notification
    channel and rule, a data target, a delivery with its attempt, and an audit event."""
    secrets = secrets_of(slug)
    provider = db.execute(
        "INSERT INTO identity_providers (municipality_id, slug, display_name, config) "
        "VALUES (%s, %s, 'Entra ID', jsonb_build_object('issuer', 'https://login.example', "
        "'client_id', 'kommune-iot', 'client_secret', %s::text)) RETURNING id",
        (municipality, f"{slug}-entra", secrets["client secret"].decode()),
    ).fetchone()[0]
    now = datetime.now(UTC)
    db.execute(
        "INSERT INTO staff_sessions (token_hash, csrf_hash, municipality_id, provider_id, "
        "subject, name, email, scopes, idle_expires_at, expires_at) VALUES "
        "(%s, %s, %s, %s, 'sub-1', 'Mette Hansen', 'mette@example.dk', '{admin}', %s, %s)",
        (
            secrets["session token hash"],
            secrets["session csrf hash"],
            municipality,
            provider,
            now + timedelta(hours=1),
            now + timedelta(hours=8),
        ),
    )
    db.execute(
        "INSERT INTO login_states (state_hash, provider_id, municipality_id, browser_hash, "
        "nonce, code_verifier) VALUES (%s, %s, %s, %s, 'nonce-1', %s)",
        (
            secrets["login state hash"],
            provider,
            municipality,
            hashlib.sha256(slug.encode()).digest(),
            secrets["PKCE verifier"].decode(),
        ),
    )
    channel = db.execute(
        "INSERT INTO notification_channels (municipality_id, name, kind, url, secret) "
        "VALUES (%s, 'Driftsvagt', 'webhook', 'https://hooks.example/drift', %s) RETURNING id",
        (municipality, secrets["webhook secret"].decode()),
    ).fetchone()[0]
    escalation = db.execute(
        "INSERT INTO notification_channels (municipality_id, name, kind, recipients) "
        "VALUES (%s, 'Teknik', 'email', '{teknik@example.dk}') RETURNING id",
        (municipality,),
    ).fetchone()[0]
    rule = db.execute(
        "INSERT INTO notification_rules (municipality_id, channel_id, alert_rule, site_id, "
        "zone_id, escalate_after_min, escalate_channel_id) "
        "VALUES (%s, %s, 'co2_high', %s, %s, 30, %s) RETURNING id",
        (municipality, channel, site, zone, escalation),
    ).fetchone()[0]
    target = db.execute(
        "INSERT INTO data_targets (municipality_id, name, kind, url, secret, sensor_ids) "
        "VALUES (%s, 'Datavarehus', 'http', 'https://dwh.example/in', %s, %s) RETURNING id",
        (municipality, secrets["data target secret"].decode(), [sensors[0], sensors[2]]),
    ).fetchone()[0]
    delivery = db.execute(
        "INSERT INTO deliveries (municipality_id, channel_id, rule_id, event, "
        "idempotency_key, payload, status) VALUES (%s, %s, %s, 'alert.opened', %s, "
        "'{\"rule\": \"co2_high\"}', 'delivered') RETURNING id",
        (municipality, channel, rule, f"{slug}-delivery-1"),
    ).fetchone()[0]
    db.execute(
        "INSERT INTO deliveries (municipality_id, target_id, event, idempotency_key, payload) "
        "VALUES (%s, %s, 'readings', %s, '[]')",
        (municipality, target, f"{slug}-delivery-2"),
    )
    db.execute(
        "INSERT INTO delivery_attempts (delivery_id, municipality_id, ok, status_code) "
        "VALUES (%s, %s, true, 204)",
        (delivery, municipality),
    )
    db.execute(
        "INSERT INTO audit_events (municipality_id, occurred_at, actor_kind, actor_id, "
        "actor_name, action, target_table, target_id, operation, after) VALUES "
        "(%s, %s, 'person', 'sub-1', 'Mette Hansen', 'sensor.update', 'sensors', %s, "
        "'UPDATE', '{\"is_public\": true}')",
        (municipality, START, str(sensors[0])),
    )


@pytest.fixture
def tenants(db: psycopg.Connection) -> Tenants:
    create_partitions(db, [START.date() + timedelta(days=d) for d in range(DAYS)])
    model = db.execute(
        "INSERT INTO device_models (vendor, model, decoder, kind, meta) VALUES "
        "('Elsys', 'ERS CO2', 'elsys', 'climate', '{\"lorawan\": \"1.0.3\"}') RETURNING id"
    ).fetchone()[0]
    aarhus = seed_municipality(db, "aarhus", "0751", "a0b1c2d3e4f500", model)
    odense = seed_municipality(db, "odense", "0461", "0d0d0d0d0d0d00", model)
    token = create_key(db, aarhus, ["admin"], "IT").token
    create_key(db, odense, ["read-private"], "odense dashboard")
    per = 2 * 2 * DAYS * 24 * 60 // STEP_MINUTES + DAYS * 24 * 60 // STEP_MINUTES
    return Tenants(aarhus, odense, token, {"aarhus": per, "odense": per})


def compress_all(db: psycopg.Connection, backend: str) -> None:
    """On TimescaleDB, compress every chunk, as the policy does to data older than a week:
    export, import and delete must work on compressed chunks too."""
    if backend == "timescaledb":
        db.execute(
            "SELECT compress_chunk(c, if_not_compressed => true) FROM show_chunks('readings') c"
        )
        assert (
            db.execute(
                "SELECT count(*) FROM timescaledb_information.chunks "
                "WHERE hypertable_name = 'readings' AND NOT is_compressed"
            ).fetchone()[0]
            == 0
        )


@pytest.fixture
def empty_instance(backend: str) -> Iterator[str]:
    """Another instance: a freshly migrated database on the same backend."""
    if backend == "timescaledb":
        context = migrated_database("on", "iot_tenant_target", TIMESCALE_ADMIN_URL)
    else:
        context = migrated_database("off", "iot_tenant_target", ADMIN_URL)
    with context as url:
        yield url


def archive_entries(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}
