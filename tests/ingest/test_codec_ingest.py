"""Hostile codecs through the real subscriber and Mosquitto: every failure is a dead
letter with its reason, the other sensors' uplinks are stored meanwhile, and a codec that
keeps hitting its limits is paused instead of slowing ingest down."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from domain.registry import register_sensor
from ingest.codecs.store import CodecUpload, add_codec_version
from models.schemas import SensorCreate
from tests.ingest.conftest import ELSYS_ERS_CO2_HEX, ELSYS_EUI, count, wait_for
from tests.ingest.test_end_to_end import chirpstack_up

pytestmark = pytest.mark.storage

TRAP_EUI = "70b3d57ba10000ff"
# Behaves on its examples; its first byte springs a trap on anything else.
TRAP = """
function recurse(n) { return recurse(n + 1) + 1; }
function decodeUplink(input) {
  var b = input.bytes;
  switch (b[0]) {
    case 0xa1: for (;;) {}
    case 0xa2: var hoard = []; for (;;) { hoard.push(new Array(1e5).fill(b)); }
    case 0xa3: throw new Error("trap sprung");
    case 0xa4: return {data: function () { return 1; }};
    case 0xa5: return {data: {fs: require("fs").readFileSync("/etc/passwd")}};
    case 0xa6: return {data: {env: process.env}};
    case 0xa7: fetch("http://127.0.0.1:1883/"); return {data: {}};
    case 0xa8: return {data: {n: 10n}};
    case 0xa9: return {data: {n: recurse(0)}};
    case 0xaa: return "not an object";
  }
  return {data: {temperature: b[1] / 2}};
}
"""
TRAP_EXAMPLES = """
- input: {fPort: 5, bytes: "012b"}
  output: {data: {temperature: 21.5}}
"""
EXPECTED = {
    0xA1: "stopped at the time limit of 50 ms",
    0xA2: "stopped at the memory limit of 16 MiB",
    0xA3: "threw Error: trap sprung",
    0xA4: "returned nothing as its data",
    0xA5: "'require' is not defined",
    0xA6: "'process' is not defined",
    0xA7: "'fetch' is not defined",
    0xA8: "bigint are forbidden in JSON.stringify",
    0xA9: "stack overflow",
    0xAA: "returned string, not an object",
}


@pytest.fixture
def trap(db, fleet) -> None:
    add_codec_version(
        db,
        fleet.municipality_id,
        CodecUpload(
            "Trap",
            "T1",
            "climate",
            {"fields": {"temperature": "temperature_c"}},
            TRAP_EXAMPLES,
            TRAP,
        ),
    )
    register_sensor(
        db,
        fleet.municipality_id,
        SensorCreate(external_id="trap-1", dev_eui=TRAP_EUI, vendor="Trap", model="T1"),
    )


def _letters(db) -> list[tuple[str, str, str]]:
    return db.execute("SELECT device_id, reason, detail FROM dead_letters ORDER BY id").fetchall()


def test_each_hostile_codec_run_is_a_dead_letter_and_ingest_goes_on(
    db, fleet, trap, ingest, publisher
) -> None:
    start = datetime.now(UTC) - timedelta(hours=1)
    sent = 0
    started = time.monotonic()
    for n, trap_byte in enumerate(EXPECTED):
        at = start + timedelta(minutes=n)
        publisher.publish(
            fleet.chirpstack_topic(TRAP_EUI), chirpstack_up(TRAP_EUI, f"{trap_byte:02x}00", time=at)
        )
        # A good uplink of the same codec between traps, and one of another sensor.
        publisher.publish(
            fleet.chirpstack_topic(TRAP_EUI),
            chirpstack_up(TRAP_EUI, f"01{40 + n:02x}", time=at + timedelta(seconds=1)),
        )
        publisher.publish(
            fleet.chirpstack_topic(ELSYS_EUI), chirpstack_up(ELSYS_EUI, ELSYS_ERS_CO2_HEX, time=at)
        )
        sent += 3
    wait_for(lambda: ingest.totals.committed_messages == sent, what="every message committed")
    assert time.monotonic() - started < 20
    letters = _letters(db)
    assert [device for device, _, _ in letters] == [TRAP_EUI] * len(EXPECTED)
    for (_, reason, detail), (trap_byte, expected) in zip(letters, EXPECTED.items(), strict=True):
        assert reason == "decode_error"
        assert expected in detail, (hex(trap_byte), detail)
        assert detail.startswith("Trap T1 v1: ")
    trap_temperatures = count(
        db,
        "SELECT count(*) FROM readings r JOIN sensors s ON s.id = r.sensor_id "
        "JOIN metrics m ON m.id = r.metric_id WHERE s.dev_eui = %s AND m.name = 'temperature_c'",
        (TRAP_EUI,),
    )
    assert trap_temperatures == len(EXPECTED)
    co2 = count(
        db,
        "SELECT count(*) FROM readings r JOIN metrics m ON m.id = r.metric_id "
        "WHERE r.sensor_id = %s AND m.name = 'co2_ppm'",
        (fleet.climate_sensor,),
    )
    assert co2 == len(EXPECTED)


def test_a_codec_stopped_at_its_limit_three_times_in_a_row_is_paused(
    db, fleet, trap, ingest, publisher
) -> None:
    start = datetime.now(UTC) - timedelta(hours=1)
    for n in range(6):
        publisher.publish(
            fleet.chirpstack_topic(TRAP_EUI),
            chirpstack_up(TRAP_EUI, "a100", time=start + timedelta(minutes=n)),
        )
    publisher.publish(
        fleet.chirpstack_topic(ELSYS_EUI), chirpstack_up(ELSYS_EUI, ELSYS_ERS_CO2_HEX)
    )
    wait_for(lambda: ingest.totals.committed_messages == 7, what="every message committed")
    details = [detail for _, _, detail in _letters(db)]
    assert len(details) == 6
    assert all("time limit" in d for d in details[:3]), details
    assert all("is paused for" in d and "replay" in d for d in details[3:]), details
    assert count(db, "SELECT count(*) FROM readings WHERE sensor_id = %s", (fleet.climate_sensor,))


def test_an_object_decoded_upstream_is_mapped_by_the_model_not_guessed(db, fleet, settings):
    """A Decentlab DL-LP8P decoded by the network server: the mapping stores the air
    temperature and the measured CO2, not the CO2 chip's temperature or the smoothed CO2;
    a value the mapping cannot read is stored as nothing and dead-lettered with the rest."""
    from domain.metrics import sync_metrics
    from ingest.pipeline import Pipeline
    from tests.codecs.test_mapping import DL_LP8P, DL_LP8P_MAPPING

    examples = [{"input": {"fPort": 1, "bytes": []}, "output": {"data": DL_LP8P}}]
    mapping = {
        **DL_LP8P_MAPPING,
        "ignore": [*DL_LP8P_MAPPING["ignore"], "capacitor_voltage_1", "raw_ir_reading"],
    }
    add_codec_version(
        db, fleet.municipality_id, CodecUpload("Decentlab", "DL-LP8P", "climate", mapping, examples)
    )
    register_sensor(
        db,
        fleet.municipality_id,
        SensorCreate(
            external_id="lp8p-1", dev_eui="0004a30b00000001", vendor="Decentlab", model="DL-LP8P"
        ),
    )
    pipeline = Pipeline(settings, sync_metrics(db))
    topic = fleet.chirpstack_topic("0004a30b00000001")
    outcome = pipeline.handle(
        lambda op: op(db), topic, chirpstack_up("0004a30b00000001", obj=DL_LP8P), datetime.now(UTC)
    )
    assert outcome.rejection is None
    metric_names = {metric_id: name for name, metric_id in sync_metrics(db).items()}
    stored = {metric_names[metric_id]: value for _, _, metric_id, value in outcome.rows}
    assert stored["temperature_c"] == 21.62 and stored["co2_ppm"] == 812.0
    broken = {**DL_LP8P, "air_humidity": {"value": "n/a", "unit": "%"}}
    outcome = pipeline.handle(
        lambda op: op(db),
        topic,
        chirpstack_up(
            "0004a30b00000001", obj=broken, fcnt=2, time=datetime.now(UTC) - timedelta(minutes=1)
        ),
        datetime.now(UTC),
    )
    assert outcome.rows, "the readable values are stored"
    assert outcome.rejection is not None and outcome.rejection.reason == "decode_error"
    assert "air_humidity: 'n/a' is not a number" in outcome.rejection.detail
