"""At-least-once, stated and enforced: QoS 0 deliveries are counted, sessions outlive a
long weekend, a redelivered uplink without a time of its own is stored once, and a
retained message is never taken for a new reading."""

from __future__ import annotations

import itertools
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import yaml
from paho.mqtt.subscribeoptions import SubscribeOptions

from ingest import telemetry
from ingest.subscriber import IngestService
from models.settings import Settings
from simulator.fleet import build_fleet
from simulator.publisher import MqttPublisher
from simulator.seed import seed_fleet
from simulator.stream import FleetStream
from tests.ingest.conftest import ELSYS_ERS_CO2_HEX, ELSYS_EUI, count, wait_for
from tests.ingest.test_end_to_end import chirpstack_up, tts_up

REPO = Path(__file__).resolve().parents[2]
TWO_DAYS_S = 2 * 24 * 3600


def _readings(db, sensor_id: int) -> int:
    return count(db, "SELECT count(*) FROM readings WHERE sensor_id = %s", (sensor_id,))


# --- (a) QoS 0 ------------------------------------------------------------------------


def test_uplinks_published_at_qos_0_are_stored_counted_and_warned_about(
    db, settings, ingest, caplog
) -> None:
    fleet = build_fleet(classrooms=3, bins=3, parking_bays=3, seed=5)
    seed_fleet(db, fleet)
    prefix = settings.mqtt_topics[0].split("application/")[0]
    stream = FleetStream(
        fleet,
        datetime.now(UTC) - timedelta(hours=2),
        seed=5,
        duplicate_share=0.0,
        malformed_share=0.0,
        topic_prefix=prefix,
    )
    uplinks = list(itertools.islice(stream.uplinks(), 20))
    before = telemetry.QOS0_MESSAGES._value.get()
    publisher = MqttPublisher(settings, client_id=f"test-sim-{uuid.uuid4().hex[:8]}", qos=0)
    publisher.connect()
    try:
        for uplink in uplinks:
            publisher.publish(uplink.topic, uplink.payload)
        assert publisher.flush(10)
    finally:
        publisher.close()
    wait_for(lambda: ingest.totals.committed_messages == 20, what="20 messages committed")
    assert count(db, "SELECT count(*) FROM readings") > 0
    assert ingest.totals.qos0_messages == 20
    assert telemetry.QOS0_MESSAGES._value.get() - before == 20
    assert any("qos0_messages" in r.getMessage() for r in caplog.records)


# --- (b) session expiry ---------------------------------------------------------------


def test_the_broker_keeps_ingest_sessions_for_days_by_default() -> None:
    assert Settings(_env_file=None).mqtt_session_expiry_s >= TWO_DAYS_S
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    env = compose["x-ingest-env"]
    value = str(env["IOT_MQTT_SESSION_EXPIRY_S"])
    default = int(value.split(":-", 1)[1].rstrip("}")) if ":-" in value else int(value)
    assert default >= TWO_DAYS_S


# --- (c) redelivery of uplinks without a time of their own ----------------------------


def test_a_redelivered_chirpstack_uplink_without_time_is_stored_once(
    db, fleet, ingest, publisher
) -> None:
    event = orjson.loads(chirpstack_up(ELSYS_EUI, ELSYS_ERS_CO2_HEX))
    del event["time"]  # no gateway had GPS time, and this ChirpStack sent no nsTime
    message = orjson.dumps(event)
    publisher.publish(fleet.chirpstack_topic(ELSYS_EUI), message)
    wait_for(lambda: ingest.totals.committed_messages == 1, what="first delivery")
    first = _readings(db, fleet.climate_sensor)
    assert first == 7
    time.sleep(0.05)  # a redelivery arrives later than the first delivery
    publisher.publish(fleet.chirpstack_topic(ELSYS_EUI), message)
    wait_for(lambda: ingest.totals.committed_messages == 2, what="redelivery")
    assert _readings(db, fleet.climate_sensor) == first
    assert ingest.totals.duplicates == first


def test_a_chirpstack_uplink_with_neither_time_nor_deduplication_id_is_refused(
    db, fleet, ingest, publisher
) -> None:
    event = orjson.loads(chirpstack_up(ELSYS_EUI, ELSYS_ERS_CO2_HEX))
    del event["time"], event["deduplicationId"]
    publisher.publish(fleet.chirpstack_topic(ELSYS_EUI), orjson.dumps(event))
    wait_for(lambda: count(db, "SELECT count(*) FROM dead_letters") == 1, what="a dead letter")
    reason, detail = db.execute("SELECT reason, detail FROM dead_letters").fetchone()
    assert reason == "invalid_message" and "deduplicationId" in detail
    assert _readings(db, fleet.climate_sensor) == 0


def test_a_redelivered_things_stack_uplink_without_received_at_is_stored_once(
    db, fleet, ingest, publisher
) -> None:
    message = orjson.loads(tts_up(ELSYS_EUI, ELSYS_ERS_CO2_HEX, datetime.now(UTC)))
    del message["received_at"], message["uplink_message"]["received_at"]
    message["correlation_ids"] = ["as:up:01JD0000000000000000000001", "gs:uplink:01JD00000000"]
    payload = orjson.dumps(message)
    for delivery in (1, 2):
        publisher.publish(fleet.tts_topic("room-101"), payload)
        wait_for(lambda n=delivery: ingest.totals.committed_messages == n, what="delivery")
        time.sleep(0.05)
    assert _readings(db, fleet.climate_sensor) == 7


def test_native_samples_without_time_need_a_message_id_and_are_then_stored_once(
    db, fleet, ingest, publisher
) -> None:
    topic = fleet.native_topic("aarhus", "gw-co2-1")
    untimed = orjson.dumps({"readings": {"co2_ppm": 700}})
    publisher.publish(topic, untimed)
    wait_for(lambda: ingest.totals.committed_messages == 1, what="refusal")
    assert db.execute("SELECT reason FROM dead_letters").fetchall() == [("invalid_message",)]

    identified = orjson.dumps({"message_id": "gw-co2-1/000042", "readings": {"co2_ppm": 701}})
    for delivery in (2, 3):
        publisher.publish(topic, identified)
        wait_for(lambda n=delivery: ingest.totals.committed_messages == n, what="delivery")
        time.sleep(0.05)
    assert _readings(db, fleet.native_sensor) == 1


# --- (d) retained messages ------------------------------------------------------------


def _clear_retained(publisher, topic: str) -> None:
    publisher.client.publish(topic, b"", qos=1, retain=True).wait_for_publish(5)


def test_a_retained_message_is_not_sent_to_ingest_on_subscribing(
    db, fleet, settings, publisher
) -> None:
    topic = fleet.native_topic("aarhus", "gw-co2-1")
    stale = orjson.dumps({"time": datetime.now(UTC).isoformat(), "readings": {"co2_ppm": 999}})
    publisher.client.publish(topic, stale, qos=1, retain=True).wait_for_publish(5)
    service = IngestService(settings)
    service.start()
    try:
        assert service.wait_connected(10)
        time.sleep(0.5)  # subscribed; a retained message would be on its way now
        publisher.publish(
            topic,
            orjson.dumps({"time": datetime.now(UTC).isoformat(), "readings": {"co2_ppm": 500}}),
        )
        wait_for(lambda: service.totals.committed_messages >= 1, what="the live message")
        time.sleep(0.3)
        assert service.totals.committed_messages == 1
        values = [v for (v,) in db.execute("SELECT value FROM readings").fetchall()]
        assert values == [500.0]
    finally:
        service.stop()
        _clear_retained(publisher, topic)


class _SendsRetained(IngestService):
    """An ingest whose broker sends retained messages on subscribing anyway (an MQTT
    3.1.1 bridge in between, or a broker that ignores retain handling)."""

    def _subscriptions(self):
        return [(topic, SubscribeOptions(qos=1)) for topic, _ in super()._subscriptions()]


def test_a_message_delivered_from_the_retained_store_is_a_dead_letter_not_a_reading(
    db, fleet, settings, publisher
) -> None:
    topic = fleet.native_topic("aarhus", "gw-co2-1")
    stale = orjson.dumps({"time": datetime.now(UTC).isoformat(), "readings": {"co2_ppm": 999}})
    publisher.client.publish(topic, stale, qos=1, retain=True).wait_for_publish(5)
    settings.mqtt_share_group = ""  # Mosquitto sends no retained messages to shared groups
    service = _SendsRetained(settings)
    service.start()
    try:
        assert service.wait_connected(10)
        wait_for(lambda: service.totals.committed_messages >= 1, what="the retained copy")
        assert count(db, "SELECT count(*) FROM readings") == 0
        letters = db.execute("SELECT reason, payload, municipality_id FROM dead_letters").fetchall()
        assert [(r, bytes(p), m) for r, p, m in letters] == [
            ("retained", stale, fleet.municipality_id)
        ]
    finally:
        service.stop()
        _clear_retained(publisher, topic)
