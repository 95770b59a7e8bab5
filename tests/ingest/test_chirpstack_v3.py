"""ChirpStack v3 as a wire format: the 9,786 real v3 events of the CampusIoT dataset
(../shared/datasets/campusiot_chirpstack_v3, read there) all ingest, and v3's own
encodings, topics and status events are read as ChirpStack v3 sends them."""

from __future__ import annotations

import base64
import gzip
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import psycopg
import pytest

from domain.metrics import sync_metrics
from domain.registry import register_sensor
from ingest.codecs.store import CodecUpload, add_codec_version
from ingest.formats import chirpstack, chirpstack_v3
from ingest.pipeline import Pipeline
from ingest.subscriber import IngestService
from ingest.uplink import Rejected
from ingest.writer import BatchWriter
from models.schemas import SensorCreate
from models.settings import Settings
from tests.ingest.conftest import count, wait_for

pytestmark = pytest.mark.storage

REPO_ROOT = Path(__file__).resolve().parents[2]
DATASET = (
    REPO_ROOT
    / ".."
    / "shared"
    / "datasets"
    / "campusiot_chirpstack_v3"
    / "d1d1e80000000032_campusiot.ndjson.gz"
)
EUI = "d1d1e80000000032"
APPLICATION = "17"  # v3 application ids are integers
ARRIVAL = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)

# The Wyres board's object as its network server decodes it: temperature in °C, pressure in
# hPa (879 hPa at 1,350 m), battery in V. "light" is a relative level with no unit, and
# payloadVersion/willListen describe the frame: known, deliberately not stored.
WYRES_MAPPING = {
    "fields": {
        "temperature": {"metric": "temperature_c", "unit": "°C"},
        "pressure": {"metric": "pressure_pa", "unit": "hPa"},
        "battery": {"metric": "battery_v", "unit": "V"},
    },
    "ignore": ["payloadVersion", "willListen", "light"],
}
WYRES_EXAMPLES = """
- description: temperature and pressure, as the network server decodes them
  input: {fPort: 3, bytes: "501e0f0400fe40fe03020107040401570100f00c000000000000000000a40108"}
  output: {data: {payloadVersion: 1, willListen: true, temperature: 17.93, pressure: 878.09}}
- description: a frame with nothing to store
  input: {fPort: 3, bytes: "5000"}
  output: {data: {payloadVersion: 1, willListen: true}}
"""


def dataset_lines() -> list[bytes]:
    if not DATASET.exists():
        pytest.fail(f"dataset not found at {DATASET.resolve()}: ../shared beside the repository")
    with gzip.open(DATASET, "rb") as f:
        return [line for line in f.read().splitlines() if line.strip()]


def topic_of(prefix: str, line: bytes) -> str:
    """The v3 topic the event was published on (the dataset's `_topic` keeps only its
    kind: application/rx or application/status)."""
    kind = orjson.loads(line)["_topic"].rsplit("/", 1)[1]
    return f"{prefix}/application/{APPLICATION}/device/{EUI}/{kind}"


def arrival_of(line: bytes) -> datetime:
    """When the dataset's logger received the event (its `_timestamp`, ms): the time the
    message would have reached ingest."""
    return datetime.fromtimestamp(orjson.loads(line)["_timestamp"] / 1000, UTC)


def register_wyres(db: psycopg.Connection) -> int:
    municipality = db.execute(
        "INSERT INTO municipalities (slug, name) VALUES ('grenoble', 'Grenoble') RETURNING id"
    ).fetchone()[0]
    db.execute(
        "INSERT INTO network_applications (network, application_id, municipality_id) "
        "VALUES ('chirpstack', %s, %s)",
        (APPLICATION, municipality),
    )
    add_codec_version(
        db,
        municipality,
        CodecUpload("Wyres", "W8 base", "climate", WYRES_MAPPING, WYRES_EXAMPLES),
    )
    register_sensor(
        db,
        municipality,
        SensorCreate(external_id="saint-eynard-door", dev_eui=EUI, vendor="Wyres", model="W8 base"),
    )
    return municipality


def ingest_dataset(db: psycopg.Connection, lines: list[bytes], settings: Settings) -> list:
    """Every line through the live pipeline, committed in batches; returns the refusals."""
    pipeline = Pipeline(settings, sync_metrics(db))
    writer = BatchWriter()
    refused = []
    rows = []
    for line in lines:
        outcome = pipeline.handle(lambda op: op(db), topic_of("site", line), line, arrival_of(line))
        if outcome.rejection is not None:
            refused.append((outcome.rejection.reason, outcome.rejection.detail, line[:200]))
        rows.extend(outcome.rows)
        if len(rows) > 5000:
            writer.write(db, rows, [])
            rows = []
    writer.write(db, rows, [])
    return refused


def dataset_settings(settings: Settings) -> Settings:
    # The dataset's authors re-encoded `data` as hex; its events are from 2023.
    return settings.model_copy(
        update={"chirpstack_v3_data_encoding": "hex", "max_past_age_days": 3650}
    )


def _expected_readings(lines: list[bytes]) -> int:
    """Readings the events carry: the mapped object fields, the battery level of status
    events that have one, and radio quality (RSSI, SNR) of every uplink; repeats of one
    uplink (same gateway time or same bytes) once."""
    seen = set()
    for line in lines:
        event = orjson.loads(line)
        if "object" not in event:  # a status event
            if not event["batteryLevelUnavailable"] and not event["externalPowerSource"]:
                seen.add(("battery_pct", line))
            continue
        times = [rx["time"] for rx in event["rxInfo"] if rx.get("time")]
        key = times[0] if times else line
        for name in ("temperature", "pressure", "battery"):
            if name in event["object"]:
                seen.add((name, key))
        seen.update({("rssi", key), ("snr", key)})
    return len(seen)


def test_a_slice_of_the_real_v3_events_all_ingest(db, settings) -> None:
    lines = dataset_lines()
    # Both event kinds, frames with and without measurements and with and without a
    # gateway time: the first 300 events and every status event.
    status = [line for line in lines if b'"application/status"' in line]
    chosen = lines[:300] + status[:50]
    assert any(b'"temperature"' not in line and b'"object"' in line for line in chosen)
    register_wyres(db)
    refused = ingest_dataset(db, chosen, dataset_settings(settings))
    assert refused == []
    assert count(db, "SELECT count(*) FROM readings") == _expected_readings(chosen)
    temperatures = count(
        db,
        "SELECT count(*) FROM readings r JOIN metrics m ON m.id = r.metric_id "
        "WHERE m.name = 'temperature_c'",
    )
    assert temperatures == sum(1 for line in chosen if b'"temperature"' in line)


@pytest.mark.slow
def test_every_one_of_the_9786_real_v3_events_ingests(db, settings) -> None:
    lines = dataset_lines()
    assert len(lines) == 9786
    register_wyres(db)
    refused = ingest_dataset(db, lines, dataset_settings(settings))
    assert refused == [], f"{len(refused)} refused, e.g. {refused[:3]}"
    assert count(db, "SELECT count(*) FROM readings") == _expected_readings(lines)
    assert count(db, "SELECT count(*) FROM dead_letters") == 0


def _v3_up(**fields) -> bytes:
    event = {
        "applicationID": APPLICATION,
        "applicationName": "campus",
        "deviceName": "door",
        "devEUI": EUI,
        "rxInfo": [{"gatewayID": "0303030303030303", "rssi": -57, "loRaSNR": 10}],
        "txInfo": {"frequency": 868100000, "dr": 5},
        "adr": True,
        "fCnt": 10,
        "fPort": 3,
        "data": base64.b64encode(b"\x50\x00").decode(),
        "object": {"payloadVersion": 1, "willListen": True, "temperature": 21.5},
    }
    event.update(fields)
    return orjson.dumps({k: v for k, v in event.items() if v is not None})


def test_v3_json_v3_and_protobuf_json_encodings_are_read_alike() -> None:
    topic = f"application/{APPLICATION}/device/{EUI}/rx"
    legacy = chirpstack_v3.parse(topic, _v3_up(), ARRIVAL)
    protobuf_json = chirpstack_v3.parse(
        topic,
        _v3_up(
            devEUI=base64.b64encode(bytes.fromhex(EUI)).decode(),
            object=None,
            objectJSON=json.dumps({"payloadVersion": 1, "willListen": True, "temperature": 21.5}),
            publishedAt="2026-12-03T11:59:58.5Z",
        ),
        ARRIVAL,
    )
    for uplink in (legacy, protobuf_json):
        assert uplink.dev_eui == EUI and uplink.application_id == APPLICATION
        assert uplink.network == "chirpstack" and uplink.format == "chirpstack_v3"
        assert uplink.fport == 3 and uplink.payload == b"\x50\x00"
        assert uplink.decoded == {"payloadVersion": 1, "willListen": True, "temperature": 21.5}
        assert (uplink.rssi_dbm, uplink.snr_db) == (-57.0, 10.0)
    # No time of its own: the arrival, and the message's identity to keep a redelivery once.
    assert legacy.received_at == ARRIVAL and legacy.identity.startswith("chirpstack_v3:")
    assert protobuf_json.received_at == datetime(2026, 12, 3, 11, 59, 58, 500000, tzinfo=UTC)
    assert protobuf_json.identity is None


def test_v3_on_the_later_event_up_topic_is_told_from_v4_by_its_body() -> None:
    topic = f"application/{APPLICATION}/device/{EUI}/event/up"
    with_time = _v3_up(rxInfo=[{"time": "2026-12-03T11:00:00Z", "rssi": -90, "loRaSNR": 1}])
    uplink = chirpstack.parse(topic, with_time, ARRIVAL)
    assert uplink.format == "chirpstack_v3" and uplink.dev_eui == EUI
    assert uplink.received_at == datetime(2026, 12, 3, 11, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"devEUI": "0000000000000001"}, "topic_mismatch"),
        ({"applicationID": "18"}, "topic_mismatch"),
        ({"devEUI": "not-an-eui"}, "invalid_message"),
        ({"data": "***"}, "invalid_message"),
        ({"objectJSON": "{not json", "object": None}, "invalid_message"),
        ({"fPort": 300}, "invalid_message"),
    ],
)
def test_v3_messages_that_do_not_fit_are_refused_with_a_reason(fields, reason) -> None:
    with pytest.raises(Rejected) as refused:
        chirpstack_v3.parse(f"application/{APPLICATION}/device/{EUI}/rx", _v3_up(**fields), ARRIVAL)
    assert refused.value.reason == reason


def test_hex_data_is_read_only_when_configured() -> None:
    # "50270c04" is valid base64 too: without the setting it would be other bytes.
    topic = f"application/{APPLICATION}/device/{EUI}/rx"
    as_hex = chirpstack_v3.parse(topic, _v3_up(data="50270c04"), ARRIVAL, data_encoding="hex")
    as_base64 = chirpstack_v3.parse(topic, _v3_up(data="50270c04"), ARRIVAL)
    assert as_hex.payload == bytes.fromhex("50270c04")
    assert as_base64.payload == base64.b64decode("50270c04")


def test_status_events_store_the_battery_level_or_nothing() -> None:
    topic = f"application/{APPLICATION}/device/{EUI}/status"
    status = {"applicationID": APPLICATION, "devEUI": EUI, "margin": 6}
    level = chirpstack_v3.parse(
        topic,
        orjson.dumps(status | {"batteryLevel": 75.5, "batteryLevelUnavailable": False}),
        ARRIVAL,
    )
    assert [dict(s.values) for s in level.samples] == [{"battery_pct": 75.5}]
    unknown = chirpstack_v3.parse(
        topic,
        orjson.dumps(status | {"batteryLevel": 0, "batteryLevelUnavailable": True}),
        ARRIVAL,
    )
    assert [dict(s.values) for s in unknown.samples] == [{}]
    v4 = chirpstack_v3.parse(
        f"application/{APPLICATION}/device/{EUI}/event/status",
        orjson.dumps(
            {
                "time": "2026-12-03T11:00:00Z",
                "deviceInfo": {"devEui": EUI, "applicationId": APPLICATION},
                "batteryLevel": 40,
            }
        ),
        ARRIVAL,
    )
    assert [dict(s.values) for s in v4.samples] == [{"battery_pct": 40.0}]


def test_v3_events_through_mosquitto_each_stored_once(db, settings, publisher) -> None:
    """Through the real subscriber: 40 timeless uplinks of one device queued by the broker
    while ingest was away arrive together (many per socket read) and are 40 readings,
    a redelivered one is not stored twice, and a status event without a battery level
    is nothing to store."""
    register_wyres(db)
    prefix = settings.mqtt_topics[0].split("/application/")[0]
    topic = f"{prefix}/application/{APPLICATION}/device/{EUI}/rx"
    first = IngestService(settings)
    first.start()
    assert first.wait_connected(10)
    time.sleep(0.3)  # subscribed: the persistent session now queues for it
    first.stop()
    messages = [
        _v3_up(fCnt=n, object={"payloadVersion": 1, "willListen": True, "temperature": 20 + n / 10})
        for n in range(40)
    ]
    for message in messages:
        publisher.publish(topic, message)
    publisher.publish(topic, messages[0])  # the same message again
    publisher.publish(
        f"{prefix}/application/{APPLICATION}/device/{EUI}/status",
        orjson.dumps({"devEUI": EUI, "batteryLevelUnavailable": True, "margin": 7}),
    )
    again = IngestService(settings)
    again.start()
    try:
        wait_for(lambda: again.totals.committed_messages == 42, what="42 messages committed")
    finally:
        again.stop()
    temperature = (
        "SELECT count(*) FROM readings r JOIN metrics m ON m.id = r.metric_id "
        "WHERE m.name = 'temperature_c'"
    )
    assert count(db, temperature) == 40
    assert count(db, "SELECT count(*) FROM dead_letters") == 0
    newest = db.execute("SELECT max(time) FROM readings").fetchone()[0]
    assert newest > datetime.now(UTC) - timedelta(minutes=5)
