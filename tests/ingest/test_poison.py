"""Poison input costs one message, not the batch: text the database cannot hold is made
safe, malformed metric names are refused before anything else, and a batch the database
refuses is split by bisection instead of being written message by message."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import orjson

from ingest.writer import BatchWriter, DeadLetterRow
from tests.ingest.conftest import ELSYS_ERS_CO2_HEX, count, wait_for
from tests.ingest.test_end_to_end import chirpstack_up


def _native_at(at: datetime, readings: dict) -> bytes:
    return orjson.dumps({"time": at.isoformat(), "readings": readings})


def test_a_nul_in_a_native_metric_name_costs_that_message_only(
    db, fleet, ingest, publisher
) -> None:
    topic = fleet.native_topic("aarhus", "gw-co2-1")
    start = datetime.now(UTC) - timedelta(minutes=30)
    poison = _native_at(start, {"co2\x00ppm": 1, "co2_ppm": 500})
    messages = [
        _native_at(start + timedelta(seconds=i + 1), {"co2_ppm": 600 + i}) for i in range(30)
    ]
    messages.insert(15, poison)
    # Published back to back, so they share a batch with the poison.
    for payload in messages[:-1]:
        publisher.client.publish(topic, payload, qos=1)
    publisher.publish(topic, messages[-1])
    wait_for(lambda: ingest.totals.committed_messages == 31, what="all messages committed")

    letters = db.execute("SELECT reason, payload, detail FROM dead_letters").fetchall()
    assert [(reason, bytes(payload)) for reason, payload, _ in letters] == [
        ("invalid_message", poison)
    ]
    assert "co2\\x00ppm" in letters[0][2], "the detail names the key, NUL made visible"
    stored = count(db, "SELECT count(*) FROM readings WHERE sensor_id = %s", (fleet.native_sensor,))
    assert stored == 30
    assert ingest.totals.refused_batches == 0, "the database never saw the poison"


def test_dead_letter_text_the_database_cannot_hold_is_escaped_not_fatal(db) -> None:
    at = datetime.now(UTC)
    letter = DeadLetterRow(
        topic="t/\x00/x",
        payload=b"\x00\xff",
        reason="invalid_message",
        detail="key 'a\x00b' and a lone surrogate \ud800",
        municipality_id=None,
        device_id="dev\x00ice",
        received_at=at,
    )
    BatchWriter().write(db, [], [letter])
    row = db.execute("SELECT topic, payload, detail, device_id FROM dead_letters").fetchone()
    assert row[0] == "t/\\x00/x"
    assert bytes(row[1]) == b"\x00\xff", "the payload keeps its exact bytes"
    assert row[2] == "key 'a\\x00b' and a lone surrogate \\ud800"
    assert row[3] == "dev\\x00ice"


def test_a_refused_batch_is_bisected_not_written_message_by_message(
    db, fleet, ingest, publisher
) -> None:
    model = db.execute("SELECT id FROM device_models WHERE model = 'ERS CO2'").fetchone()[0]
    doomed_eui = "0011223344556677"
    doomed = db.execute(
        "INSERT INTO sensors (municipality_id, dev_eui, external_id, kind, device_model_id) "
        "VALUES (%s, %s, 'room-gone', 'climate', %s) RETURNING id",
        (fleet.municipality_id, doomed_eui, model),
    ).fetchone()[0]
    publisher.publish(
        fleet.chirpstack_topic(doomed_eui), chirpstack_up(doomed_eui, ELSYS_ERS_CO2_HEX)
    )
    wait_for(lambda: ingest.totals.committed_messages == 1, what="the registry cached")
    db.execute("DELETE FROM sensors WHERE id = %s", (doomed,))

    # One message the database refuses (its sensor is gone) among 63 good ones.
    base = datetime.now(UTC) - timedelta(hours=1)
    topic = fleet.native_topic("aarhus", "gw-co2-1")
    good = [_native_at(base + timedelta(seconds=i), {"co2_ppm": 500 + i}) for i in range(63)]
    orphan = chirpstack_up(doomed_eui, ELSYS_ERS_CO2_HEX, fcnt=2)
    publisher.client.publish(fleet.chirpstack_topic(doomed_eui), orphan, qos=1)
    for payload in good[:-1]:
        publisher.client.publish(topic, payload, qos=1)
    publisher.publish(topic, good[-1])
    wait_for(lambda: ingest.totals.committed_messages == 65, what="all messages committed")

    assert (
        count(db, "SELECT count(*) FROM readings WHERE sensor_id = %s", (fleet.native_sensor,))
        == 63
    )
    letters = db.execute("SELECT reason, payload FROM dead_letters").fetchall()
    assert [(reason, bytes(payload)) for reason, payload in letters] == [("write_error", orphan)]
    assert ingest.totals.refused_batches >= 1
    # Message by message this would be 64 transactions; halving finds the one bad
    # message in at most 2·log2(64) + 1.
    assert ingest.totals.part_transactions <= 2 * math.ceil(math.log2(64)) + 1
