"""A network server or gateway tries to write another municipality's sensors from its own
topics, through the real Mosquitto and the real ingest service into PostgreSQL.

The broker's ACL confines each sender to its own topics (tests/deploy/test_broker_acl.py);
these tests publish on topics an Aarhus sender is allowed, with bodies naming what it is
not: ingest must bind the uplink to the topic's application, device and municipality.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import orjson
import psycopg
import pytest

from ingest.subscriber import IngestService
from models.settings import Settings
from tests.ingest.conftest import (
    ELSYS_ERS_CO2_HEX,
    ELSYS_EUI,
    ODENSE_EUI,
    Fleet,
    Publisher,
    count,
    wait_for,
)
from tests.ingest.test_end_to_end import chirpstack_up

AARHUS_APP = "app-1"  # fleet.chirpstack_topic's application, mapped to Aarhus
AARHUS_TTS_APP = "school-climate@aarhus"  # fleet.tts_topic's application, mapped to Aarhus


def chirpstack_body(dev_eui: str, application_id: str) -> bytes:
    event = orjson.loads(chirpstack_up(dev_eui, ELSYS_ERS_CO2_HEX))
    event["deviceInfo"]["applicationId"] = application_id
    return orjson.dumps(event)


def tts_body(dev_eui: str, device_id: str, application_id: str) -> bytes:
    return orjson.dumps(
        {
            "end_device_ids": {
                "device_id": device_id,
                "application_ids": {"application_id": application_id},
                "dev_eui": dev_eui.upper(),
            },
            "uplink_message": {
                "f_port": 5,
                "frm_payload": base64.b64encode(bytes.fromhex(ELSYS_ERS_CO2_HEX)).decode(),
                "rx_metadata": [{"gateway_ids": {"gateway_id": "gw-1"}, "rssi": -90, "snr": 7}],
                "received_at": datetime.now(UTC).isoformat(),
            },
        }
    )


def readings_of_municipality(db: psycopg.Connection, slug: str) -> int:
    return count(
        db,
        "SELECT count(*) FROM readings r JOIN sensors s ON s.id = r.sensor_id "
        "JOIN municipalities m ON m.id = s.municipality_id WHERE m.slug = %s",
        (slug,),
    )


def dead_letters(db: psycopg.Connection) -> list[tuple[str, str, bytes]]:
    rows = db.execute("SELECT reason, detail, payload FROM dead_letters ORDER BY id").fetchall()
    return [(reason, detail, bytes(payload)) for reason, detail, payload in rows]


def publish_and_settle(
    db: psycopg.Connection, ingest: IngestService, publisher: Publisher, messages: list
) -> None:
    """Publish (topic, payload) pairs, then wait until ingest has committed all of them."""
    for topic, payload in messages:
        publisher.publish(topic, payload)
    wait_for(
        lambda: ingest.totals.committed_messages >= len(messages),
        what=f"{len(messages)} messages committed",
    )


# --- ChirpStack v4 ------------------------------------------------------------------------


def test_chirpstack_body_naming_another_device_than_the_topic_is_a_topic_mismatch(
    db, fleet: Fleet, ingest, publisher
) -> None:
    # Aarhus's network server, on its own application and device topic, sends a body that
    # names Odense's DevEUI: today's parsers believed the body.
    hostile = chirpstack_body(ODENSE_EUI, AARHUS_APP)
    publish_and_settle(db, ingest, publisher, [(fleet.chirpstack_topic(ELSYS_EUI), hostile)])
    assert readings_of_municipality(db, "odense") == 0
    assert readings_of_municipality(db, "aarhus") == 0
    [(reason, detail, payload)] = dead_letters(db)
    assert (reason, payload) == ("topic_mismatch", hostile)
    assert "deviceInfo.devEui" in detail


def test_chirpstack_body_with_an_unlisted_application_for_anothers_device_is_refused(
    db, fleet: Fleet, ingest, publisher
) -> None:
    # The case: Aarhus's own topic (its application, Odense's DevEUI as device
    # level, which the ACL's application/<app>/# allows) with a body naming an application
    # nobody listed. Stored into Odense's sensor today.
    hostile = chirpstack_body(ODENSE_EUI, "not-listed-anywhere")
    publish_and_settle(db, ingest, publisher, [(fleet.chirpstack_topic(ODENSE_EUI), hostile)])
    assert readings_of_municipality(db, "odense") == 0
    [(reason, detail, _)] = dead_letters(db)
    assert reason == "topic_mismatch" and "deviceInfo.applicationId" in detail


def test_chirpstack_uplink_of_anothers_device_agreeing_with_the_topic_is_refused(
    db, fleet: Fleet, ingest, publisher
) -> None:
    # Topic and body agree, but the device is Odense's and the application Aarhus's.
    hostile = chirpstack_body(ODENSE_EUI, AARHUS_APP)
    honest = chirpstack_body(ELSYS_EUI, AARHUS_APP)
    publish_and_settle(
        db,
        ingest,
        publisher,
        [
            (fleet.chirpstack_topic(ODENSE_EUI), hostile),
            (fleet.chirpstack_topic(ELSYS_EUI), honest),
        ],
    )
    assert readings_of_municipality(db, "odense") == 0
    assert readings_of_municipality(db, "aarhus") > 0
    [(reason, detail, payload)] = dead_letters(db)
    assert (reason, payload) == ("municipality_mismatch", hostile)
    # The sender learns that the device is not Aarhus's, not whose it is.
    assert "odense" not in detail.lower() and "gw-odense-1" not in detail
    letter_municipality = db.execute("SELECT municipality_id FROM dead_letters").fetchone()[0]
    assert letter_municipality == fleet.municipality_id


# --- The Things Stack v3 ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("device_id", "application_id", "field"),
    [
        ("room-101", "someone-elses-app", "application_id"),
        ("odense-room", "school-climate", "device_id"),
    ],
)
def test_tts_body_disagreeing_with_the_topic_is_a_topic_mismatch(
    db, fleet: Fleet, ingest, publisher, device_id: str, application_id: str, field: str
) -> None:
    hostile = tts_body(ODENSE_EUI, device_id, application_id)
    publish_and_settle(db, ingest, publisher, [(fleet.tts_topic("room-101"), hostile)])
    assert readings_of_municipality(db, "odense") == 0
    [(reason, detail, _)] = dead_letters(db)
    assert reason == "topic_mismatch" and field in detail


def test_tts_uplink_of_anothers_device_agreeing_with_the_topic_is_refused(
    db, fleet: Fleet, ingest, publisher
) -> None:
    # TTS topics name the device by its id, not its DevEUI: the body's DevEUI is bound by
    # the sensor's municipality having to be the application's.
    hostile = tts_body(ODENSE_EUI, "room-101", "school-climate")
    honest = tts_body(ELSYS_EUI, "room-101", "school-climate")
    publish_and_settle(
        db,
        ingest,
        publisher,
        [(fleet.tts_topic("room-101"), hostile), (fleet.tts_topic("room-101"), honest)],
    )
    assert readings_of_municipality(db, "odense") == 0
    assert readings_of_municipality(db, "aarhus") > 0
    [(reason, detail, payload)] = dead_letters(db)
    assert (reason, payload) == ("municipality_mismatch", hostile)
    assert "odense" not in detail.lower()


# --- applications mapped to no municipality ----------------------------------------------


@contextmanager
def running(settings: Settings) -> Iterator[IngestService]:
    service = IngestService(settings)
    service.start()
    try:
        assert service.wait_connected(10)
        time.sleep(0.3)  # subscriptions granted
        yield service
    finally:
        service.stop()


def test_uplinks_of_an_unmapped_application_are_dead_letters(
    db, fleet: Fleet, settings: Settings, publisher
) -> None:
    topic = f"{fleet.prefix}/application/unmapped-app/device/{ODENSE_EUI}/event/up"
    body = chirpstack_body(ODENSE_EUI, "unmapped-app")
    tts_topic = f"{fleet.prefix}/v3/unmapped@aarhus/devices/room-101/up"
    tts = tts_body(ELSYS_EUI, "room-101", "unmapped")
    with running(settings) as service:
        publish_and_settle(db, service, publisher, [(topic, body), (tts_topic, tts)])
    assert count(db, "SELECT count(*) FROM readings") == 0
    letters = dead_letters(db)
    assert [reason for reason, _, _ in letters] == ["unmapped_application"] * 2
    assert "unmapped-app" in letters[0][1] and "unmapped@aarhus" in letters[1][1]


def test_an_operator_may_explicitly_allow_unmapped_applications(
    db, fleet: Fleet, settings: Settings, publisher
) -> None:
    topic = f"{fleet.prefix}/application/unmapped-app/device/{ODENSE_EUI}/event/up"
    settings.allow_unmapped_applications = True
    with running(settings) as service:
        publish_and_settle(db, service, publisher, [(topic, chirpstack_body(ODENSE_EUI, ""))])
    assert readings_of_municipality(db, "odense") > 0
    assert dead_letters(db) == []


def test_a_mapping_made_while_ingest_runs_is_used_after_the_directory_reload(
    db, fleet: Fleet, settings: Settings, publisher
) -> None:
    topic = f"{fleet.prefix}/application/late-app/device/{ELSYS_EUI}/event/up"
    with running(settings) as service:
        service._pipeline.directory.reload_every_s = 0.5
        publish_and_settle(db, service, publisher, [(topic, chirpstack_body(ELSYS_EUI, ""))])
        db.execute(
            "INSERT INTO network_applications (network, application_id, municipality_id) "
            "VALUES ('chirpstack', 'late-app', %s)",
            (fleet.municipality_id,),
        )
        time.sleep(0.6)
        publisher.publish(topic, chirpstack_body(ELSYS_EUI, "late-app"))
        wait_for(lambda: readings_of_municipality(db, "aarhus") > 0, what="stored after mapping")
    assert [reason for reason, _, _ in dead_letters(db)] == ["unmapped_application"]


def test_auto_registration_registers_under_the_applications_municipality_only(
    db, fleet: Fleet, settings: Settings, publisher
) -> None:
    new_eui, unmapped_eui = "a81758fffe0300f1", "a81758fffe0300f2"
    settings.auto_register_unknown = True
    settings.allow_unmapped_applications = True
    unmapped_topic = f"{fleet.prefix}/application/unmapped-app/device/{unmapped_eui}/event/up"
    with running(settings) as service:
        publish_and_settle(
            db,
            service,
            publisher,
            [
                (fleet.chirpstack_topic(new_eui), chirpstack_body(new_eui, AARHUS_APP)),
                # Odense's registered device: no second registration, no reading.
                (fleet.chirpstack_topic(ODENSE_EUI), chirpstack_body(ODENSE_EUI, AARHUS_APP)),
                # Nobody's application: nobody to register it for.
                (unmapped_topic, chirpstack_body(unmapped_eui, "unmapped-app")),
            ],
        )
    registered = db.execute(
        "SELECT s.dev_eui, m.slug, s.status FROM sensors s "
        "JOIN municipalities m ON m.id = s.municipality_id "
        "WHERE s.dev_eui IN (%s, %s, %s) ORDER BY s.dev_eui",
        (new_eui, unmapped_eui, ODENSE_EUI),
    ).fetchall()
    assert registered == [(ODENSE_EUI, "odense", "active"), (new_eui, "aarhus", "pending")]
    assert sorted(reason for reason, _, _ in dead_letters(db)) == [
        "municipality_mismatch",
        "unknown_device",
        "unknown_device",
    ]
    assert readings_of_municipality(db, "odense") == 0


# --- native gateways ----------------------------------------------------------------------


def test_native_topic_municipality_must_be_the_sensors(db, fleet: Fleet, ingest, publisher) -> None:
    # Aarhus's gateway may publish only under municipality/aarhus/...: it names Odense's
    # external id there. Nothing reaches Odense's sensor, and the refusal does not say
    # who has a sensor of that name.
    message = orjson.dumps({"time": datetime.now(UTC).isoformat(), "readings": {"co2_ppm": 612}})
    publish_and_settle(
        db, ingest, publisher, [(fleet.native_topic("aarhus", "gw-odense-1"), message)]
    )
    assert readings_of_municipality(db, "odense") == 0
    [(reason, detail, _)] = dead_letters(db)
    assert reason == "municipality_mismatch"
    assert "odense" not in detail.replace("gw-odense-1", "").lower()
