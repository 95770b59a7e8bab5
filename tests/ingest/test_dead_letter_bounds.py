"""Dead letters are bounded: kept for a retention period, payloads capped, repeats of one
(device, reason) sampled and counted, attributed to a municipality when written, and a
municipality's listing served by an index."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from api.queries.staff import _LIST_DEAD_LETTERS, list_dead_letters
from cli.db import maintain_once
from ingest.subscriber import IngestService
from ingest.writer import BatchWriter, DeadLetterRow
from tests.ingest.conftest import ELSYS_EUI, count, wait_for

UNKNOWN_EUI = "0011223344556677"


@pytest.fixture
def bounded_ingest(settings):
    settings.dead_letter_samples_per_hour = 5
    settings.dead_letter_max_payload_bytes = 100
    service = IngestService(settings)
    service.start()
    assert service.wait_connected(10)
    time.sleep(0.3)  # subscriptions granted
    yield service
    service.stop()


def test_repeats_of_one_device_and_reason_are_sampled_and_counted(
    db, fleet, bounded_ingest, publisher
) -> None:
    topic = fleet.chirpstack_topic(ELSYS_EUI)
    # Twelve messages with one mistake (identical bytes would be one message, redelivered).
    for n in range(11):
        publisher.client.publish(topic, b'{"deviceInfo": 7, "n": %d}' % n, qos=1)
    publisher.publish(topic, b'{"deviceInfo": 7, "n": 11}')
    wait_for(lambda: bounded_ingest.totals.committed_messages == 12, what="12 messages")
    assert count(db, "SELECT count(*) FROM dead_letters") == 5
    assert db.execute("SELECT key, reason, repeats FROM dead_letter_repeats").fetchall() == [
        (topic, "invalid_message", 7)
    ]
    # Every message is accounted for: stored as a letter or counted as a repeat.
    assert bounded_ingest.totals.dead_letters == 12


def test_a_long_payload_is_stored_cut_with_its_size(db, fleet, bounded_ingest, publisher) -> None:
    payload = b'{"deviceInfo": ' + b" " * 1000 + b"}"
    publisher.publish(fleet.chirpstack_topic(ELSYS_EUI), payload)
    wait_for(lambda: count(db, "SELECT count(*) FROM dead_letters") == 1, what="a dead letter")
    stored, size = db.execute("SELECT payload, payload_truncated_from FROM dead_letters").fetchone()
    assert bytes(stored) == payload[:100] and size == len(payload)


def test_letters_are_attributed_to_a_municipality_when_written(
    db, fleet, bounded_ingest, publisher
) -> None:
    # Not JSON, on Aarhus's native topic; an unknown device of Aarhus's application.
    publisher.publish(fleet.native_topic("aarhus", "gw-co2-1"), b"{")
    publisher.publish(fleet.chirpstack_topic(UNKNOWN_EUI), b'{"deviceInfo": 7}')
    wait_for(lambda: count(db, "SELECT count(*) FROM dead_letters") == 2, what="two letters")
    owners = db.execute("SELECT reason, municipality_id FROM dead_letters ORDER BY id").fetchall()
    assert owners == [
        ("malformed_json", fleet.municipality_id),
        ("invalid_message", fleet.municipality_id),
    ]


def _letter(at: datetime, municipality_id: int | None, device: str = "d") -> DeadLetterRow:
    # Bytes of its own: the same bytes on the same topic would be one message.
    payload = b"{" + device.encode() + b" " + at.isoformat().encode()
    return DeadLetterRow("t", payload, "malformed_json", "x", municipality_id, device, at)


def test_maintenance_deletes_dead_letters_past_their_retention(db, fleet) -> None:
    now = datetime.now(UTC)
    writer = BatchWriter()
    writer.write(db, [], [_letter(now - timedelta(days=31), 1, "old")])
    writer.write(db, [], [_letter(now - timedelta(days=29), 1, "recent")])
    done = maintain_once(db, days_ahead=2, retention_days=0, dead_letter_retention_days=30)
    assert done["dead_letters_deleted"] == 1
    assert [d for (d,) in db.execute("SELECT device_id FROM dead_letters")] == ["recent"]


def test_a_municipalitys_listing_is_served_by_an_index(db, fleet) -> None:
    now = datetime.now(UTC)
    db.execute(
        "INSERT INTO municipalities (slug, name) SELECT 'm' || i, 'M' || i "
        "FROM generate_series(1, 40) i"
    )
    db.execute(
        "INSERT INTO dead_letters (received_at, topic, payload, reason, municipality_id, "
        "device_id) SELECT %s, 't', '\\x7b'::bytea, 'malformed_json', 3 + i %% 40, 'dev' || i "
        "FROM generate_series(1, 50000) i",
        (now,),
    )
    db.execute("ANALYZE dead_letters")
    plan = "\n".join(
        r[0]
        for r in db.execute(
            "EXPLAIN " + _LIST_DEAD_LETTERS,
            {"m": fleet.municipality_id, "reason": None, "limit": 50},
        ).fetchall()
    )
    assert "ix_dead_letters_municipality_id_id" in plan, plan
    assert "Seq Scan on dead_letters" not in plan, plan


def test_the_listing_shows_own_letters_and_unattributed_ones_of_own_devices(db, fleet) -> None:
    now = datetime.now(UTC)
    writer = BatchWriter()
    writer.write(
        db,
        [],
        [
            _letter(now, fleet.municipality_id, "aarhus-own"),
            _letter(now, None, ELSYS_EUI),  # registered by Aarhus since
            _letter(now, None, "aarhus/gw-co2-1"),
            _letter(now, None, "nobody"),
            _letter(now, fleet.municipality_id + 1, "odense-own"),
        ],
    )

    async def listing() -> list[str]:
        url = db.info.dsn
        async with await psycopg.AsyncConnection.connect(url) as conn:
            rows = await list_dead_letters(conn, fleet.municipality_id, None, 10)
        return [r["device_id"] for r in rows]

    assert asyncio.run(listing()) == ["aarhus/gw-co2-1", ELSYS_EUI, "aarhus-own"]


def test_a_redelivered_message_is_one_dead_letter(db) -> None:
    """The broker delivers a message again when its acknowledgement was lost: in a later
    batch, or twice within one. Its letter is stored once; other messages are not held up."""
    now = datetime.now(UTC)
    topic = "test/redelivery/application/app-1/device/0011223344556677/event/up"
    again = DeadLetterRow(topic, b"{", "malformed_json", "not JSON", None, None, now)
    other = DeadLetterRow(topic, b"{{", "malformed_json", "not JSON", None, None, now)
    writer = BatchWriter()
    assert writer.write(db, [], [again]).dead_letters == 1
    writer.write(db, [], [again, other, again])
    stored = db.execute("SELECT payload FROM dead_letters ORDER BY id").fetchall()
    assert [bytes(p) for (p,) in stored] == [b"{", b"{{"]
    # The same bytes on another topic are another message.
    writer.write(db, [], [DeadLetterRow(topic + "x", b"{", "malformed_json", "", None, None, now)])
    assert count(db, "SELECT count(*) FROM dead_letters") == 3
