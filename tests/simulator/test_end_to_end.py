"""Simulated fleet → real Mosquitto → ``python -m cli ingest`` → PostgreSQL, counted exactly."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from domain.decoders import get_decoder
from simulator.fleet import build_fleet
from simulator.publisher import MqttPublisher
from simulator.seed import seed_fleet
from simulator.stream import (
    BAD_JSON,
    DUPLICATE,
    TRUNCATED_PAYLOAD,
    UNKNOWN_DEVICE,
    UPLINK,
    FleetStream,
)

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _topic_prefix(settings) -> str:
    # The fixture's topics look like "test/<run>/application/+/device/+/event/up".
    return settings.mqtt_topics[0].split("application/")[0]


def _start_ingest(settings, log_path: Path) -> subprocess.Popen:
    env = dict(os.environ)
    env.update(
        IOT_DATABASE_URL=settings.database_url,
        IOT_MQTT_HOST=settings.mqtt_host,
        IOT_MQTT_PORT=str(settings.mqtt_port),
        IOT_MQTT_CLIENT_ID=settings.mqtt_client_id,
        IOT_MQTT_SHARE_GROUP=settings.mqtt_share_group,
        IOT_MQTT_TOPICS=json.dumps(settings.mqtt_topics),
        IOT_INGEST_METRICS_PORT="0",
        IOT_BATCH_MAX_DELAY_S="0.2",
    )
    return subprocess.Popen(
        [sys.executable, "-m", "cli", "ingest"],
        cwd=REPO,
        env=env,
        stdout=log_path.open("wb"),
        stderr=subprocess.STDOUT,
    )


def _wait_until(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _expected_readings(db: psycopg.Connection, uplinks) -> set[tuple[str, str, datetime]]:
    """(dev_eui, metric, time) of every reading the valid uplinks carry: what our decoders
    read, the fill level ingest derives for bins, and the radio quality of the uplink."""
    decoder_of = dict(
        db.execute(
            "SELECT s.dev_eui, dm.decoder FROM sensors s "
            "JOIN device_models dm ON dm.id = s.device_model_id"
        ).fetchall()
    )
    expected = set()
    for u in uplinks:
        if u.kind == UPLINK:
            values = get_decoder(decoder_of[u.dev_eui])(u.frame.payload, u.frame.fport)
            metrics = {*values, "rssi_dbm", "snr_db"}
            if "distance_mm" in values:
                metrics.add("fill_pct")
            expected |= {(u.dev_eui, metric, u.time) for metric in metrics}
    return expected


def test_simulated_fleet_is_stored_exactly_once_and_malformed_messages_are_dead_lettered(
    db, settings, tmp_path
):
    fleet = build_fleet(classrooms=19, bins=19, parking_bays=19, seed=21)
    seed_fleet(db, fleet)
    stream = FleetStream(
        fleet,
        datetime.now(UTC) - timedelta(hours=8),
        seed=21,
        duplicate_share=0.05,
        malformed_share=0.03,
        topic_prefix=_topic_prefix(settings),
    )
    uplinks = list(itertools.islice(stream.uplinks(), 800))
    kinds = stream.counts.by_kind
    malformed = kinds[BAD_JSON] + kinds[TRUNCATED_PAYLOAD] + kinds[UNKNOWN_DEVICE]
    assert kinds[DUPLICATE] > 10 and min(kinds[BAD_JSON], kinds[UNKNOWN_DEVICE]) > 0
    expected = _expected_readings(db, uplinks)

    ingest = _start_ingest(settings, tmp_path / "ingest.log")
    publisher = MqttPublisher(settings, client_id=f"test-sim-{uuid.uuid4().hex[:8]}")
    try:
        # The ingest uses a persistent session, but the first subscription must exist
        # before we publish: wait until a probe reaches the dead-letter table.
        publisher.connect()

        def probe_arrived() -> bool:
            assert ingest.poll() is None, (tmp_path / "ingest.log").read_text()
            publisher.publish(uplinks[0].topic.replace(uplinks[0].dev_eui, "f" * 16), b"{")
            return db.execute("SELECT count(*) FROM dead_letters").fetchone()[0] > 0

        _wait_until(probe_arrived, 30, "the ingest to subscribe")
        probes = publisher.sent

        for u in uplinks:
            publisher.publish(u.topic, u.payload)
        assert publisher.flush(30)
        stored = lambda: db.execute("SELECT count(*) FROM readings").fetchone()[0]  # noqa: E731
        dead = lambda: db.execute("SELECT count(*) FROM dead_letters").fetchone()[0]  # noqa: E731
        _wait_until(lambda: stored() >= len(expected) and dead() > malformed, 60, "ingest")
        time.sleep(1.5)  # anything extra (a duplicate stored twice) would arrive by now
    finally:
        publisher.close()
        ingest.terminate()
        ingest.wait(timeout=30)

    rows = db.execute(
        "SELECT s.dev_eui, m.name, r.time FROM readings r "
        "JOIN sensors s ON s.id = r.sensor_id JOIN metrics m ON m.id = r.metric_id"
    ).fetchall()
    assert len(rows) == len(set(rows))
    assert set(rows) == expected
    assert publisher.sent - probes == len(uplinks)
    # The probes (a lone "{") are dead letters too; count the simulator's own.
    payloads = [bytes(r[0]) for r in db.execute("SELECT payload FROM dead_letters")]
    assert len([p for p in payloads if p != b"{"]) == malformed
