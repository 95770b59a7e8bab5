"""Data targets: a batch of readings committed by ingest's writer carries its deliveries in
the same transaction; the worker forwards them as HTTP JSON batches, MQTT republishes
(the real Mosquitto) and NGSI-LD entities valid against the Smart Data Models schemas."""

from __future__ import annotations

import json
import threading
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg
import pytest
from jsonschema import Draft202012Validator, FormatChecker
from paho.mqtt.enums import CallbackAPIVersion
from referencing import Registry, Resource

from ingest.writer import BatchWriter
from models.outbox import readings_rows
from outbound import ngsi
from outbound.channels import verify
from outbound.worker import DeliveryWorker
from tests.outbound.conftest import make_place, outbound_settings

SCHEMAS = Path(__file__).resolve().parents[1] / "schemas" / "smart-data-models"
COMMON_SCHEMA_URL = "https://smart-data-models.github.io/data-models/common-schema.json"


def metric_ids(db: psycopg.Connection) -> dict[str, int]:
    return dict(db.execute("SELECT name, id FROM metrics").fetchall())


def add_target(db, place, kind, url, **columns) -> int:
    columns = {
        "municipality_id": place.municipality,
        "name": f"{kind}-{uuid.uuid4().hex[:6]}",
        "kind": kind,
        "url": url,
        "enabled": True,
        **columns,
    }
    names = ", ".join(columns)
    marks = ", ".join(["%s"] * len(columns))
    return db.execute(
        f"INSERT INTO data_targets ({names}) VALUES ({marks}) RETURNING id", list(columns.values())
    ).fetchone()[0]


def write_batch(db, place, when: datetime | None = None, writer: BatchWriter | None = None):
    m = metric_ids(db)
    t = when or datetime.now(UTC) - timedelta(minutes=1)
    rows = [
        (t, place.climate, m["co2_ppm"], 1234.0),
        (t, place.climate, m["temperature_c"], 21.5),
        (t, place.climate, m["humidity_pct"], 41.0),
        (t, place.bin, m["fill_pct"], 80.0),
        (t, place.parking, m["occupied"], 1.0),
    ]
    writer = writer or BatchWriter()
    writer.outbox.recheck_s = 0
    return writer.write(db, rows, [])


def deliver(database_url: str):
    return DeliveryWorker(outbound_settings(database_url)).run(until_idle=True)


@pytest.mark.storage
def test_a_batch_carries_one_delivery_per_matching_target_in_its_transaction(db) -> None:
    place = make_place(db)
    other = make_place(db, "odder", 2)
    every = add_target(db, place, "http", "http://127.0.0.1:9/")
    co2_only = add_target(db, place, "http", "http://127.0.0.1:9/", metrics=["co2_ppm"])
    bins = add_target(db, place, "http", "http://127.0.0.1:9/", sensor_kinds=["bin"])
    one = add_target(db, place, "http", "http://127.0.0.1:9/", sensor_ids=[place.parking])
    add_target(db, place, "http", "http://127.0.0.1:9/", enabled=False)
    add_target(db, other, "http", "http://127.0.0.1:9/")  # another municipality's
    add_target(db, place, "http", "http://127.0.0.1:9/", metrics=["light_lux"])  # nothing
    write_batch(db, place)
    rows = db.execute(
        "SELECT target_id, municipality_id, payload FROM deliveries ORDER BY target_id"
    ).fetchall()
    assert [r[0] for r in rows] == [every, co2_only, bins, one]
    assert {r[1] for r in rows} == {place.municipality}
    payloads = {r[0]: readings_rows(r[2]) for r in rows}
    assert len(payloads[every]) == 5
    assert [r[2] for r in payloads[co2_only]] == ["co2_ppm"]
    assert [(r[1], r[2], r[3]) for r in payloads[bins]] == [(place.bin, "fill_pct", 80.0)]
    assert [r[1] for r in payloads[one]] == [place.parking]


def test_a_batch_that_rolls_back_leaves_no_delivery(db) -> None:
    place = make_place(db)
    add_target(db, place, "http", "http://127.0.0.1:9/")
    m = metric_ids(db)
    writer = BatchWriter()
    writer.outbox.recheck_s = 0
    now = datetime.now(UTC)
    # A sensor id that does not exist: latest_readings' foreign key refuses the batch.
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        writer.write(db, [(now, place.climate, m["co2_ppm"], 900.0), (now, 10**9, 1, 1.0)], [])
    assert db.execute("SELECT count(*) FROM deliveries").fetchone()[0] == 0
    assert db.execute("SELECT count(*) FROM readings").fetchone()[0] == 0


def test_http_target_gets_a_signed_json_batch(db, database_url, http_receiver) -> None:
    place = make_place(db)
    add_target(db, place, "http", http_receiver.url + "/in", secret="shh")
    when = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
    write_batch(db, place, when)
    assert deliver(database_url).delivered == 1
    [request] = http_receiver.requests
    headers = {k.lower(): v for k, v in request.headers.items()}
    assert verify("shh", headers["x-kommune-iot-timestamp"], request.body,
                  headers["x-kommune-iot-signature"])  # fmt: skip
    body = request.json()
    assert headers["idempotency-key"] == body["idempotency_key"]
    assert body["municipality"] == "aarhus"
    assert {"time": "2026-12-03T12:00:00Z", "sensor_id": place.climate,
            "external_id": "aarhus-climate-1", "metric": "co2_ppm",
            "value": 1234.0} in body["readings"]  # fmt: skip
    assert len(body["readings"]) == 5
    attempt = db.execute("SELECT ok, status_code FROM delivery_attempts").fetchone()
    assert attempt == (True, 204)


def test_a_refusing_receiver_is_logged_with_its_answer(db, database_url, http_receiver) -> None:
    place = make_place(db)
    add_target(db, place, "http", http_receiver.url)
    http_receiver.statuses = [422]
    write_batch(db, place)
    deliver(database_url)
    assert db.execute("SELECT ok, status_code, response FROM delivery_attempts").fetchone() == (
        False,
        422,
        '{"status": 422}',
    )


def test_mqtt_target_republishes_on_the_real_broker(db, database_url) -> None:
    place = make_place(db)
    topic = f"test/{uuid.uuid4().hex[:8]}/{{municipality}}/readings"
    add_target(db, place, "mqtt", "mqtt://127.0.0.1:1883", topic=topic)
    got: list[bytes] = []
    subscribed, arrived = threading.Event(), threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"sub-{uuid.uuid4().hex[:8]}")
    client.on_subscribe = lambda *a: subscribed.set()

    def on_message(c, userdata, message) -> None:
        got.append(message.payload)
        arrived.set()

    client.on_message = on_message
    client.connect("127.0.0.1", 1883)
    client.loop_start()
    try:
        client.subscribe(topic.replace("{municipality}", "aarhus"), qos=1)
        assert subscribed.wait(5)
        write_batch(db, place)
        assert deliver(database_url).delivered == 1
        assert arrived.wait(5)
    finally:
        client.loop_stop()
        client.disconnect()
    document = json.loads(got[0])
    assert document["municipality"] == "aarhus" and len(document["readings"]) == 5
    assert document["idempotency_key"].startswith("readings:")


def _validator(model: str) -> Draft202012Validator:
    common = json.loads((SCHEMAS / "common-schema.json").read_text())
    registry = Registry().with_resource(COMMON_SCHEMA_URL, Resource.from_contents(common))
    schema = json.loads((SCHEMAS / model / "schema.json").read_text())
    return Draft202012Validator(schema, registry=registry, format_checker=FormatChecker())


def test_ngsi_ld_entities_are_valid_smart_data_models_and_reach_the_broker(
    db, database_url, http_receiver
) -> None:
    place = make_place(db)
    add_target(db, place, "ngsi_ld", http_receiver.url + "/")
    write_batch(db, place, datetime(2026, 12, 3, 12, 0, tzinfo=UTC))
    assert deliver(database_url).delivered == 1
    [request] = http_receiver.requests
    assert request.path == "/ngsi-ld/v1/entityOperations/upsert?options=update"
    assert request.headers["Content-Type"] == "application/ld+json"
    entities = {e["type"]: e for e in request.json()}
    assert set(entities) == {"IndoorEnvironmentObserved", "WasteContainer", "ParkingSpot"}
    for model, entity in entities.items():
        errors = sorted(e.message for e in _validator(model).iter_errors(ngsi.simplified(entity)))
        assert errors == [], (model, errors)
        assert entity["location"]["type"] == "GeoProperty"
        assert entity["@context"][0] == ngsi.CONTEXTS[model]
    room = entities["IndoorEnvironmentObserved"]
    assert room["id"] == "urn:ngsi-ld:IndoorEnvironmentObserved:aarhus:aarhus-climate-1"
    assert room["co2"] == {"type": "Property", "value": 1234.0,
                           "observedAt": "2026-12-03T12:00:00Z", "unitCode": "59"}  # fmt: skip
    assert room["relativeHumidity"]["value"] == pytest.approx(0.41)
    assert entities["WasteContainer"]["fillingLevel"]["value"] == pytest.approx(0.8)
    assert entities["ParkingSpot"]["status"]["value"] == "occupied"


def test_the_schemas_catch_what_they_should() -> None:
    """The validation is not vacuous: an entity breaking its model fails it."""
    sensor = ngsi.SensorPlace(1, "bay-1", None, "parking", 56.1, 10.2, None, None)
    entity = ngsi.simplified(ngsi.entity("aarhus", sensor, {"occupied": (1.7e9, 0.0)}))
    validator = _validator("ParkingSpot")
    assert list(validator.iter_errors(entity)) == []
    assert list(validator.iter_errors({**entity, "status": "parked"}))
    assert list(validator.iter_errors({k: v for k, v in entity.items() if k != "refParkingSite"}))
    bin_sensor = ngsi.SensorPlace(2, "bin-1", None, "bin", 56.1, 10.2, None, None)
    wc = ngsi.simplified(ngsi.entity("aarhus", bin_sensor, {"fill_pct": (1.7e9, 50.0)}))
    assert list(_validator("WasteContainer").iter_errors({**wc, "fillingLevel": 50.0}))
