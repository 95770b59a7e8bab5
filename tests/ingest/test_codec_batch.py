"""The uplinks of one read that JavaScript codecs decode cross into the sandbox together
(Pipeline.handle_many → CodecRunner.decode_many → CompiledCodec.decode_many). Each must
still be judged exactly as it would be alone: a hostile uplink becomes its own dead letter
with its reason, a time limit stops an infinite loop without losing the batch's other
uplinks, and a codec paused after its limits is paused at the same uplink."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from domain.metrics import sync_metrics
from domain.registry import register_sensor
from ingest.codecs.sandbox import CompiledCodec
from ingest.codecs.store import CodecUpload, add_codec_version
from ingest.pipeline import Outcome, Pipeline
from models.schemas import SensorCreate
from tests.ingest.conftest import ELSYS_ERS_CO2_HEX, ELSYS_EUI
from tests.ingest.test_codec_ingest import EXPECTED, TRAP_EUI, trap  # noqa: F401 (fixture)
from tests.ingest.test_end_to_end import chirpstack_up

pytestmark = pytest.mark.storage

START = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)


class Calls:
    """Counts the calls into the sandbox, to see that a batch is one call."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.alone = self.together = 0
        decode, decode_many = CompiledCodec.decode, CompiledCodec.decode_many

        def counted_decode(codec, *args, **kwargs):
            self.alone += 1
            return decode(codec, *args, **kwargs)

        def counted_decode_many(codec, uplinks):
            self.together += 1
            return decode_many(codec, uplinks)

        monkeypatch.setattr(CompiledCodec, "decode", counted_decode)
        monkeypatch.setattr(CompiledCodec, "decode_many", counted_decode_many)


def _trap_message(fleet, n: int, first_byte: int, second_byte: int = 0):
    payload = f"{first_byte:02x}{second_byte:02x}"
    at = START + timedelta(minutes=n)
    topic = fleet.chirpstack_topic(TRAP_EUI)
    return topic, chirpstack_up(TRAP_EUI, payload, time=at, fcnt=n), at


def _good(fleet, n: int):
    return _trap_message(fleet, n, 0x01, 40 + n)  # temperature (40 + n) / 2


def _summary(outcomes: list[Outcome]) -> list[tuple]:
    return [
        (
            sorted((str(t), m, v) for t, _, m, v in o.rows),
            o.rejection and (o.rejection.reason, o.rejection.detail),
        )
        for o in outcomes
    ]


def _temperatures(outcome: Outcome, db) -> list[float]:
    temperature = sync_metrics(db)["temperature_c"]
    return [value for _, _, metric, value in outcome.rows if metric == temperature]


@pytest.mark.usefixtures("trap")
def test_good_uplinks_of_a_batch_are_decoded_in_one_sandbox_call(
    db, fleet, settings, monkeypatch
) -> None:
    pipeline = Pipeline(settings, sync_metrics(db))
    calls = Calls(monkeypatch)
    outcomes = pipeline.handle_many(lambda op: op(db), [_good(fleet, n) for n in range(6)])
    assert [o.rejection for o in outcomes] == [None] * 6
    assert [_temperatures(o, db) for o in outcomes] == [[(40 + n) / 2] for n in range(6)]
    assert (calls.together, calls.alone) == (1, 0)


@pytest.mark.usefixtures("trap")
def test_hostile_uplinks_in_a_batch_are_each_their_own_dead_letter(
    db, fleet, settings, monkeypatch
) -> None:
    """Every trap of the trap codec (infinite loop, memory, throw, stack, ...) between good
    uplinks of the same codec and an uplink of a built-in decoder, all in one batch."""
    messages = []
    for n, trap_byte in enumerate(EXPECTED):
        messages.append(_trap_message(fleet, 2 * n, trap_byte))
        messages.append(_good(fleet, 2 * n + 1))
    elsys = (
        fleet.chirpstack_topic(ELSYS_EUI),
        chirpstack_up(ELSYS_EUI, ELSYS_ERS_CO2_HEX, time=START),
        START,
    )
    messages.insert(5, elsys)
    pipeline = Pipeline(settings, sync_metrics(db))
    calls = Calls(monkeypatch)
    outcomes = pipeline.handle_many(lambda op: op(db), messages)
    assert calls.together == 1, "one batch call, which fails"
    elsys_outcome = outcomes.pop(5)
    assert elsys_outcome.rejection is None and len(elsys_outcome.rows) == 7
    for n, trap_byte in enumerate(EXPECTED):
        hostile, good = outcomes[2 * n], outcomes[2 * n + 1]
        assert hostile.rows == [] and hostile.rejection is not None
        assert hostile.rejection.reason == "decode_error"
        assert hostile.rejection.detail.startswith("Trap T1 v1: ")
        assert EXPECTED[trap_byte] in hostile.rejection.detail, hex(trap_byte)
        assert good.rejection is None and _temperatures(good, db) == [(40 + 2 * n + 1) / 2]


@pytest.mark.usefixtures("trap")
def test_a_batch_is_judged_as_its_messages_would_be_one_by_one(db, fleet, settings) -> None:
    """Including the pause: three infinite loops in a row pause the codec, and the good
    uplinks after them in the same batch are refused as paused, as they would be alone."""
    first_bytes = [0x01, 0xA3, 0x01, 0xA1, 0x01, 0xA1, 0xA1, 0xA1, 0x01, 0x01]
    messages = [_trap_message(fleet, n, b, 40 + n) for n, b in enumerate(first_bytes)]
    together = Pipeline(settings, sync_metrics(db)).handle_many(lambda op: op(db), messages)
    alone_pipeline = Pipeline(settings, sync_metrics(db))
    alone = [alone_pipeline.handle(lambda op: op(db), *message) for message in messages]
    assert _summary(together) == _summary(alone)
    assert [bool(o.rows) for o in together] == [1, 0, 1, 0, 1, 0, 0, 0, 0, 0]
    details = [o.rejection.detail for o in together[-2:] if o.rejection]
    assert len(details) == 2 and all("is paused for" in d for d in details)


SLOW_EUI = "70b3d57ba10000fe"
# Legitimate but slow: 20 ms per uplink, within the 50 ms limit alone; four of them in
# one batch call exceed it.
SLOW = """
function decodeUplink(input) {
  var until = Date.now() + 20;
  while (Date.now() < until) {}
  return {data: {temperature: input.bytes[0] / 2}};
}
"""


def test_a_slow_codec_whose_batch_exceeds_the_time_limit_loses_no_uplink(
    db, fleet, settings
) -> None:
    add_codec_version(
        db,
        fleet.municipality_id,
        CodecUpload(
            "Slow",
            "S1",
            "climate",
            {"fields": {"temperature": "temperature_c"}},
            "- input: {fPort: 5, bytes: '2b'}\n  output: {data: {temperature: 21.5}}\n",
            SLOW,
        ),
    )
    register_sensor(
        db,
        fleet.municipality_id,
        SensorCreate(external_id="slow-1", dev_eui=SLOW_EUI, vendor="Slow", model="S1"),
    )
    topic = fleet.chirpstack_topic(SLOW_EUI)
    messages = [
        (topic, chirpstack_up(SLOW_EUI, f"{40 + n:02x}", time=START + timedelta(minutes=n)), START)
        for n in range(4)
    ]
    outcomes = Pipeline(settings, sync_metrics(db)).handle_many(lambda op: op(db), messages)
    assert [o.rejection for o in outcomes] == [None] * 4
    assert [_temperatures(o, db) for o in outcomes] == [[(40 + n) / 2] for n in range(4)]


@pytest.mark.usefixtures("trap")
def test_a_burst_through_mosquitto_stores_every_good_uplink_and_letters_each_trap(
    db, fleet, ingest
) -> None:
    """The same mix published without waiting for each PUBACK, so that ingest's socket
    reads hold several messages and the real subscriber judges them together."""
    from tests.ingest.conftest import count, wait_for
    from tests.ingest.test_resilience import StreamPublisher

    publisher = StreamPublisher(1883)
    try:
        sent = 0
        for n, trap_byte in enumerate(EXPECTED):
            for topic, payload, _ in (
                _trap_message(fleet, 3 * n, trap_byte),
                _good(fleet, 3 * n + 1),
                _good(fleet, 3 * n + 2),
            ):
                publisher.publish(topic, payload)
                sent += 1
        publisher.wait_all_acknowledged()
        wait_for(lambda: ingest.totals.committed_messages == sent, 60, "every message committed")
    finally:
        publisher.close()
    letters = db.execute("SELECT reason, detail FROM dead_letters ORDER BY id").fetchall()
    assert len(letters) == len(EXPECTED)
    for (reason, detail), expected in zip(letters, EXPECTED.values(), strict=True):
        assert reason == "decode_error" and expected in detail, detail
    stored = count(
        db,
        "SELECT count(*) FROM readings r JOIN sensors s ON s.id = r.sensor_id "
        "JOIN metrics m ON m.id = r.metric_id WHERE s.dev_eui = %s AND m.name = 'temperature_c'",
        (TRAP_EUI,),
    )
    assert stored == 2 * len(EXPECTED)
