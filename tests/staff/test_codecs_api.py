"""Device models with codecs through the staff API: added end to end with no code change
(upload → register a sensor → its uplinks ingest), refused with reasons, versions kept,
and one municipality's models invisible and untouchable to another's keys."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from domain.registry import sync_device_models
from ingest.subscriber import IngestService
from models.settings import Settings
from tests.ingest.conftest import Publisher, count, wait_for
from tests.staff.test_staff_api import Tenant, _tenant, auth

pytestmark = pytest.mark.storage

JS = Path(__file__).resolve().parents[1] / "codecs" / "js"
URL = "/api/v1/staff/device-models"
TENEO_MAPPING = {
    "fields": {
        "battery": "battery_v",
        "distance": {"metric": "distance_mm", "unit": "cm"},
        "temperature": "temperature_c",
        "relativeHumidity": "humidity_pct",
    }
}


@pytest.fixture
def tenants(db) -> tuple[Tenant, Tenant]:
    sync_device_models(db)
    return _tenant(db, "aarhus", "a81758fffe0a0001", 1), _tenant(db, "odder", "a81758fffe0b0001", 2)


@pytest.fixture
def client(database_url: str) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(database_url=database_url))) as c:
        yield c


def teneo_upload(**changes) -> dict:
    body = {
        "vendor": "Teneo IoT",
        "model": "Filling Degree Sensor (JS)",
        "kind": "bin",
        "script": (JS / "teneo_filling.js").read_text(),
        "examples": (JS / "teneo_filling.yaml").read_text(),
        "mapping": TENEO_MAPPING,
    }
    body.update(changes)
    return body


def test_a_model_is_added_end_to_end_and_its_uplinks_ingest(client, tenants, db, settings) -> None:
    a, _ = tenants
    added = client.post(f"{URL}/codecs", json=teneo_upload(), headers=auth(a.admin))
    assert added.status_code == 201, added.text
    body = added.json()
    assert body["version"] == 1 and body["created_model"] is True
    assert body["report"]["passed"] and body["report"]["form"] == "Decode"
    registered = client.post(
        "/api/v1/staff/sensors",
        json={
            "external_id": "bin-js-1",
            "dev_eui": "70b3d57ba1000042",
            "vendor": "Teneo IoT",
            "model": "Filling Degree Sensor (JS)",
            "bin_depth_mm": 1500,
        },
        headers=auth(a.admin),
    )
    assert registered.status_code == 201, registered.text
    prefix = settings.mqtt_topics[0].split("/application/")[0]
    service = IngestService(settings)
    service.start()
    publisher = Publisher()
    try:
        assert service.wait_connected(10)
        time.sleep(0.3)  # subscribed
        event = {
            "time": "2026-12-03T10:00:00Z",
            "deviceInfo": {"devEui": "70b3d57ba1000042", "applicationId": "aarhus-app"},
            "fPort": 1,
            "data": base64.b64encode(bytes.fromhex("0e0078000753114d")).decode(),
        }
        publisher.publish(
            f"{prefix}/application/aarhus-app/device/70b3d57ba1000042/event/up",
            orjson.dumps(event),
        )
        wait_for(lambda: service.totals.committed_messages == 1, what="the uplink committed")
    finally:
        publisher.close()
        service.stop()
    stored = dict(
        db.execute(
            "SELECT m.name, r.value FROM readings r JOIN metrics m ON m.id = r.metric_id "
            "JOIN sensors s ON s.id = r.sensor_id WHERE s.external_id = 'bin-js-1'"
        ).fetchall()
    )
    assert stored == pytest.approx(
        {
            "battery_v": 3.4,
            "distance_mm": 1200.0,
            "temperature_c": 18.75,
            "humidity_pct": 44.29,
            "fill_pct": 20.0,
        }
    )
    assert count(db, "SELECT count(*) FROM dead_letters WHERE municipality_id = %s", (a.id,)) == 1


def test_a_codec_failing_its_examples_is_refused_with_a_per_example_report(
    client, tenants, db
) -> None:
    a, _ = tenants
    wrong = (JS / "teneo_filling.yaml").read_text().replace("battery: 3.3", "battery: 3.0")
    refused = client.post(f"{URL}/codecs", json=teneo_upload(examples=wrong), headers=auth(a.admin))
    assert refused.status_code == 422
    report = refused.json()["report"]
    assert [e["passed"] for e in report["examples"]] == [True, False]
    assert report["examples"][1]["problems"] == ["battery: expected 3.0, codec gave 3.3"]
    assert "example 1" in refused.json()["detail"]
    # Only the two models the fixture gave the municipalities.
    assert count(db, "SELECT count(*) FROM device_codecs") == 2
    assert count(db, "SELECT count(*) FROM device_models WHERE municipality_id IS NOT NULL") == 2


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"mapping": {"fields": {"battery": "battery_volts"}}}, "'battery_volts' is not a metric"),
        (
            {"mapping": {"fields": {"distance": {"metric": "distance_mm", "unit": "furlong"}}}},
            "'furlong' is not a known unit",
        ),
        ({"examples": "{oops"}, "examples: "),
        ({"model": "Filling Degree Sensor"}, "built-in model"),
    ],
)
def test_an_unusable_upload_is_a_4xx_naming_the_problem(client, tenants, changes, problem):
    a, _ = tenants
    refused = client.post(f"{URL}/codecs", json=teneo_upload(**changes), headers=auth(a.admin))
    assert refused.status_code == 422
    assert problem in refused.json()["detail"]


def test_a_new_version_is_checked_before_it_replaces_the_old_which_is_kept(client, tenants) -> None:
    a, _ = tenants
    assert (
        client.post(f"{URL}/codecs", json=teneo_upload(), headers=auth(a.admin)).status_code == 201
    )
    broken = teneo_upload(script="function Decode(p, b) { return {battery: 0}; }")
    assert client.post(f"{URL}/codecs", json=broken, headers=auth(a.admin)).status_code == 422
    better = (JS / "teneo_filling.js").read_text().replace("// A codec", "// v2: a codec")
    second = client.post(f"{URL}/codecs", json=teneo_upload(script=better), headers=auth(a.admin))
    assert second.status_code == 201 and second.json()["version"] == 2
    model_id = second.json()["device_model_id"]
    versions = client.get(f"{URL}/{model_id}/codecs", headers=auth(a.reader)).json()
    assert [v["version"] for v in versions] == [2, 1]
    assert versions[0]["script"].startswith("// v2") and versions[1]["script"].startswith("// A")
    models = client.get(URL, headers=auth(a.reader)).json()
    own = [m for m in models if m["own"]]
    assert [(m["model"], m["latest_version"]) for m in own] == [
        ("aarhus secret room sensor", 1),  # the fixture's (vendor Acme)
        ("Filling Degree Sensor (JS)", 2),
    ]
    assert any(m["model"] == "ERS CO2" and not m["own"] for m in models)


def test_check_without_storing(client, tenants, db) -> None:
    a, _ = tenants
    checked = client.post(f"{URL}/codecs/check", json=teneo_upload(), headers=auth(a.admin))
    assert checked.status_code == 200 and checked.json()["passed"] is True
    assert count(db, "SELECT count(*) FROM device_codecs") == 2  # the fixture's


def test_another_municipalitys_models_are_invisible_and_untouchable(client, tenants, db) -> None:
    a, b = tenants
    added = client.post(f"{URL}/codecs", json=teneo_upload(), headers=auth(a.admin)).json()
    model_id = added["device_model_id"]
    # Odder sees neither the model nor its versions.
    listed = client.get(URL, headers=auth(b.reader)).json()
    assert all(m["id"] != model_id for m in listed)
    assert client.get(f"{URL}/{model_id}/codecs", headers=auth(b.reader)).status_code == 404
    # Odder cannot register a sensor with it...
    registered = client.post(
        "/api/v1/staff/sensors",
        json={"external_id": "x", "vendor": "Teneo IoT", "model": "Filling Degree Sensor (JS)"},
        headers=auth(b.admin),
    )
    assert registered.status_code == 422 and "unknown device model" in registered.json()["detail"]
    # ...and an upload under the same name is Odder's own model, not a new version of Aarhus's.
    own = client.post(f"{URL}/codecs", json=teneo_upload(), headers=auth(b.admin)).json()
    assert own["device_model_id"] != model_id and own["version"] == 1
    assert (
        count(db, "SELECT max(version) FROM device_codecs WHERE device_model_id = %s", (model_id,))
        == 1
    )
    # Reading keys cannot upload.
    assert (
        client.post(f"{URL}/codecs", json=teneo_upload(), headers=auth(a.reader)).status_code == 403
    )
