"""Nothing is dropped silently: every refused message is a dead letter with its reason and
its exact bytes, and a replay after fixing the registration stores it."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from ingest.replay import dead_letters_of_sensor, replay
from tests.ingest.conftest import (
    ELSYS_ERS_CO2_HEX,
    ELSYS_EUI,
    ODENSE_EUI,
    PENDING_EUI,
    RETIRED_EUI,
    count,
    wait_for,
)
from tests.ingest.test_end_to_end import chirpstack_up

# Runs on plain PostgreSQL and on TimescaleDB (tests/conftest.py).
pytestmark = pytest.mark.storage

UNKNOWN_EUI = "0011223344556677"


def _native(readings: dict, time: datetime | None = None) -> bytes:
    return orjson.dumps({"readings": readings, "time": (time or datetime.now(UTC)).isoformat()})


CASES = {
    "malformed_json": lambda f: (f.chirpstack_topic(ELSYS_EUI), b'{"deviceInfo": {'),
    "invalid_message": lambda f: (f.chirpstack_topic(ELSYS_EUI), b'{"deviceInfo": 7}'),
    "unknown_device": lambda f: (
        f.chirpstack_topic(UNKNOWN_EUI),
        chirpstack_up(UNKNOWN_EUI, ELSYS_ERS_CO2_HEX),
    ),
    "retired_device": lambda f: (
        f.chirpstack_topic(RETIRED_EUI),
        chirpstack_up(RETIRED_EUI, ELSYS_ERS_CO2_HEX),
    ),
    "pending_device": lambda f: (
        f.chirpstack_topic(PENDING_EUI),
        chirpstack_up(PENDING_EUI, ELSYS_ERS_CO2_HEX),
    ),
    "decode_error": lambda f: (
        f.chirpstack_topic(ELSYS_EUI),
        chirpstack_up(ELSYS_EUI, "0100"),  # temperature record cut after one byte
    ),
    "out_of_range": lambda f: (
        f.native_topic("aarhus", "gw-co2-1"),
        _native({"co2_ppm": 99999999, "humidity_pct": 140}),
    ),
    "future_timestamp": lambda f: (
        f.native_topic("aarhus", "gw-co2-1"),
        _native({"co2_ppm": 500}, datetime.now(UTC) + timedelta(hours=2)),
    ),
    "too_old": lambda f: (
        f.native_topic("aarhus", "gw-co2-1"),
        _native({"co2_ppm": 500}, datetime(2001, 1, 1, tzinfo=UTC)),
    ),
    "unknown_metric": lambda f: (
        f.native_topic("aarhus", "gw-co2-1"),
        _native({"radon_bq_m3": 40}),
    ),
    "municipality_mismatch": lambda f: (
        f.native_topic("aarhus", "gw-odense-1"),  # Odense's sensor under Aarhus's topic
        _native({"co2_ppm": 500}),
    ),
    "oversized": lambda f: (
        f.native_topic("aarhus", "gw-co2-1"),
        b'{"readings": {"co2_ppm": 500}, "pad": "' + b"x" * 70_000 + b'"}',
    ),
}


@pytest.mark.parametrize("reason", sorted(CASES))
def test_each_refusal_becomes_a_dead_letter_with_reason_and_exact_bytes(
    reason, db, fleet, ingest, publisher
) -> None:
    topic, payload = CASES[reason](fleet)
    publisher.publish(topic, payload)
    wait_for(lambda: count(db, "SELECT count(*) FROM dead_letters") == 1, what="a dead letter")
    stored = db.execute(
        "SELECT topic, payload, reason, detail, payload_truncated_from FROM dead_letters"
    ).fetchone()
    assert stored[0] == topic
    if reason == "oversized":
        # Only what cannot be replayed anyway is cut to IOT_DEAD_LETTER_MAX_PAYLOAD_BYTES.
        assert bytes(stored[1]) == payload[: 64 * 1024] and stored[4] == len(payload)
    else:
        assert bytes(stored[1]) == payload and stored[4] is None
    assert stored[2] == reason
    assert stored[3], "a dead letter must say what was wrong"
    assert (
        count(
            db,
            "SELECT count(*) FROM readings WHERE metric_id NOT IN "
            "(SELECT id FROM metrics WHERE name IN ('rssi_dbm', 'snr_db'))",
        )
        == 0
    )


@pytest.mark.parametrize(
    "payload_hex",
    [
        "fe0102",  # Elsys settings dump
        "3e0a0102030405",  # Elsys start-up sensor settings (0x3E, sent on FPort + 1)
    ],
)
def test_a_device_information_frame_is_nothing_to_store_not_a_dead_letter(
    payload_hex, db, fleet, ingest, publisher
) -> None:
    """A valid frame that only describes the device (no radio metadata either) is
    acknowledged and leaves nothing: no readings, and no dead letter to alarm staff."""
    publisher.publish(
        fleet.chirpstack_topic(ELSYS_EUI), chirpstack_up(ELSYS_EUI, payload_hex, gateways=())
    )
    wait_for(lambda: ingest.totals.committed_messages == 1, what="the frame committed")
    assert count(db, "SELECT count(*) FROM dead_letters") == 0
    assert count(db, "SELECT count(*) FROM readings") == 0


def test_good_values_are_kept_when_others_are_out_of_range(db, fleet, ingest, publisher) -> None:
    publisher.publish(
        fleet.native_topic("aarhus", "gw-co2-1"),
        _native({"co2_ppm": 640, "temperature_c": 900}),
    )
    wait_for(lambda: count(db, "SELECT count(*) FROM dead_letters") == 1, what="a dead letter")
    assert db.execute(
        "SELECT m.name, r.value FROM readings r JOIN metrics m ON m.id = r.metric_id"
    ).fetchall() == [("co2_ppm", 640.0)]
    reason, detail = db.execute("SELECT reason, detail FROM dead_letters").fetchone()
    assert reason == "out_of_range" and "temperature_c=900" in detail


def test_message_on_a_topic_no_format_reads_is_a_dead_letter(
    db, fleet, settings, publisher
) -> None:
    from ingest.subscriber import IngestService

    settings.mqtt_topics.append(f"{fleet.prefix}/other/#")
    service = IngestService(settings)
    service.start()
    try:
        assert service.wait_connected(10)
        time.sleep(0.3)
        publisher.publish(f"{fleet.prefix}/other/thing", b"hello")
        wait_for(lambda: count(db, "SELECT count(*) FROM dead_letters") == 1, what="dead letter")
    finally:
        service.stop()
    assert db.execute("SELECT reason FROM dead_letters").fetchone() == ("unsupported_topic",)


def test_application_of_one_municipality_cannot_write_anothers_sensor(
    db, fleet, ingest, publisher
) -> None:
    # app-1 is mapped to Aarhus (register_fleet); ODENSE_EUI is Odense's sensor.
    odense_uplink = chirpstack_up(ODENSE_EUI, ELSYS_ERS_CO2_HEX)
    publisher.publish(fleet.chirpstack_topic(ODENSE_EUI), odense_uplink)
    publisher.publish(
        fleet.chirpstack_topic(ELSYS_EUI), chirpstack_up(ELSYS_EUI, ELSYS_ERS_CO2_HEX)
    )
    wait_for(lambda: ingest.totals.committed_messages == 2, what="both messages committed")
    reason, payload, detail = db.execute(
        "SELECT reason, payload, detail FROM dead_letters"
    ).fetchone()
    assert reason == "municipality_mismatch" and bytes(payload) == odense_uplink
    assert "'aarhus'" in detail and "odense" not in detail
    sensors = db.execute("SELECT DISTINCT sensor_id FROM readings").fetchall()
    assert sensors == [(fleet.climate_sensor,)]


def test_replay_after_registering_the_device_stores_its_readings(
    db, fleet, ingest, publisher, settings
) -> None:
    sent = datetime.now(UTC).replace(microsecond=0)
    publisher.publish(
        fleet.chirpstack_topic(UNKNOWN_EUI),
        chirpstack_up(UNKNOWN_EUI, ELSYS_ERS_CO2_HEX, time=sent),
    )
    wait_for(lambda: count(db, "SELECT count(*) FROM dead_letters") == 1, what="dead letter")

    model = db.execute("SELECT id FROM device_models WHERE model = 'ERS CO2'").fetchone()[0]
    sensor = db.execute(
        "INSERT INTO sensors (municipality_id, dev_eui, external_id, kind, device_model_id) "
        "VALUES (%s, %s, 'room-202', 'climate', %s) RETURNING id",
        (fleet.municipality_id, UNKNOWN_EUI, model),
    ).fetchone()[0]
    ids = dead_letters_of_sensor(db, sensor)
    assert len(ids) == 1
    [result] = replay(db, ids, settings)
    assert result.stored and result.readings == 7
    assert count(db, "SELECT count(*) FROM readings WHERE sensor_id = %s", (sensor,)) == 7
    assert db.execute("SELECT replayed_at IS NOT NULL FROM dead_letters").fetchone() == (True,)
    # A second replay finds nothing left to do and stores nothing twice.
    assert replay(db, ids, settings) == []
    assert dead_letters_of_sensor(db, sensor) == []


def test_replay_that_still_fails_records_the_new_reason(db, fleet, settings) -> None:
    db.execute(
        "INSERT INTO dead_letters (topic, payload, reason, detail) VALUES (%s, %s, %s, %s)",
        (
            fleet.chirpstack_topic(RETIRED_EUI),
            chirpstack_up(RETIRED_EUI, ELSYS_ERS_CO2_HEX),
            "unknown_device",
            "was unknown",
        ),
    )
    [result] = replay(db, [1], settings)
    assert not result.stored and result.reason == "retired_device"
    assert db.execute("SELECT reason, replayed_at FROM dead_letters").fetchone() == (
        "retired_device",
        None,
    )


def test_samples_older_than_retention_are_too_old_not_new_partitions(db, fleet, settings) -> None:
    from domain.metrics import sync_metrics
    from ingest.pipeline import Pipeline

    settings.retention_days = 30
    pipeline = Pipeline(settings, sync_metrics(db))
    now = datetime.now(UTC)
    topic = fleet.native_topic("aarhus", "gw-co2-1")
    old = pipeline.handle(
        lambda op: op(db), topic, _native({"co2_ppm": 500}, now - timedelta(days=31)), now
    )
    assert old.rows == [] and old.rejection is not None
    assert old.rejection.reason == "too_old" and "30 days" in old.rejection.detail
    recent = pipeline.handle(
        lambda op: op(db), topic, _native({"co2_ppm": 500}, now - timedelta(days=29)), now
    )
    assert recent.rejection is None and len(recent.rows) == 1


def test_a_sensor_deleted_while_cached_costs_only_its_own_messages(
    db, fleet, ingest, publisher
) -> None:
    model = db.execute("SELECT id FROM device_models WHERE model = 'ERS CO2'").fetchone()[0]
    doomed = db.execute(
        "INSERT INTO sensors (municipality_id, dev_eui, external_id, kind, device_model_id) "
        "VALUES (%s, %s, 'room-gone', 'climate', %s) RETURNING id",
        (fleet.municipality_id, UNKNOWN_EUI, model),
    ).fetchone()[0]
    publisher.publish(
        fleet.chirpstack_topic(UNKNOWN_EUI), chirpstack_up(UNKNOWN_EUI, ELSYS_ERS_CO2_HEX)
    )
    wait_for(lambda: ingest.totals.committed_messages == 1, what="the registry cached")
    db.execute("DELETE FROM sensors WHERE id = %s", (doomed,))

    # Its next uplink can no longer be stored (latest_readings refers to the sensor);
    # messages committed with it must not suffer.
    orphan = chirpstack_up(UNKNOWN_EUI, ELSYS_ERS_CO2_HEX, fcnt=2)
    good = chirpstack_up(ELSYS_EUI, ELSYS_ERS_CO2_HEX)
    publisher.client.publish(fleet.chirpstack_topic(UNKNOWN_EUI), orphan, qos=1)
    publisher.publish(fleet.chirpstack_topic(ELSYS_EUI), good)
    wait_for(lambda: ingest.totals.committed_messages == 3, what="both messages committed")

    assert (
        count(db, "SELECT count(*) FROM readings WHERE sensor_id = %s", (fleet.climate_sensor,))
        == 7
    )
    letters = db.execute("SELECT reason, payload FROM dead_letters").fetchall()
    assert [(reason, bytes(payload)) for reason, payload in letters] == [("write_error", orphan)]
