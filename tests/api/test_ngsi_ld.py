"""NGSI-LD read API against the real database as the public API role, validated against
the Smart Data Models JSON schemas (tests/schemas/smart-data-models, CC BY 4.0, copied
unchanged from the smart-data-models repositories; see SOURCE.md there).

Seeded fleet: tests/api/conftest.py, plus here the bin placed, a public parking bay (7)
and values for the hidden sensors, so a leak would show.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from api.app import create_app
from models.db_roles import API, enable_logins, role_url
from models.ngsi_ld import key_values
from models.settings import Settings
from tests.api.conftest import Fleet

pytestmark = pytest.mark.storage

NGSI = "/ngsi-ld/v1"
SCHEMAS = Path(__file__).resolve().parents[1] / "schemas" / "smart-data-models"
COMMON_URL = "https://smart-data-models.github.io/data-models/common-schema.json"
TYPES = ("IndoorEnvironmentObserved", "WasteContainer", "ParkingSpot")


def validator(model: str) -> Draft202012Validator:
    common = json.loads((SCHEMAS / "common" / "common-schema.json").read_text())
    registry = Registry().with_resource(COMMON_URL, Resource.from_contents(common))
    schema = json.loads((SCHEMAS / model / "schema.json").read_text())
    return Draft202012Validator(schema, registry=registry)


@pytest.fixture
def ngsi(settings: Settings, db: psycopg.Connection, fleet: Fleet) -> Iterator[TestClient]:
    """The app as iot_api over the fleet, with a placed bin and public parking bay 7."""
    db.execute("UPDATE sensors SET lat = 56.1530, lon = 10.2040 WHERE id = 3")
    db.execute(
        "INSERT INTO sensors (municipality_id, external_id, name, kind, lat, lon, is_public,"
        " status) VALUES (1, 'a-bay-7', 'Bay 7', 'parking', 56.1590, 10.2150, true, 'active')"
    )
    db.execute(
        "INSERT INTO latest_readings (sensor_id, metric_id, time, value) "
        "SELECT s, m.id, '2026-03-03T12:00Z', 1 FROM metrics m, unnest(ARRAY[4, 7]) s "
        "WHERE m.name = 'occupied'"
    )
    enable_logins(db, {})
    public = settings.model_copy(update={"database_url": role_url(settings.database_url, API)})
    with TestClient(create_app(public)) as client:
        yield client


def get(client: TestClient, path: str, status: int = 200, **params: Any) -> Any:
    response = client.get(NGSI + path, params=params)
    assert response.status_code == status, response.text
    return response.json()


def ids(entities: list[dict[str, Any]]) -> list[int]:
    return [int(e["id"].rsplit(":", 1)[1]) for e in entities]


def test_entities_are_valid_smart_data_models_in_both_representations(
    ngsi: TestClient,
) -> None:
    for model in TYPES:
        check = validator(model)
        simplified = get(ngsi, "/entities", type=model, options="keyValues")
        normalized = get(ngsi, "/entities", type=model)
        assert simplified, model
        for entity in simplified:
            errors = sorted(check.iter_errors(entity), key=str)
            assert not errors, f"{model}: {errors[0].message} in {entity}"
        for entity, flat in zip(normalized, simplified, strict=True):
            for name, attribute in entity.items():
                if name not in ("id", "type"):
                    assert attribute["type"] in ("Property", "GeoProperty", "Relationship")
            assert key_values(entity) == flat
    # A broken entity fails the same validator (the check can fail).
    broken = {**get(ngsi, "/entities", type="ParkingSpot", options="keyValues")[0]}
    broken["status"] = "maybe"
    assert list(validator("ParkingSpot").iter_errors(broken))


def test_values_are_the_newest_readings_in_the_models_units(ngsi: TestClient, fleet: Fleet) -> None:
    (room,) = get(ngsi, "/entities", type="IndoorEnvironmentObserved", id=(
        "urn:ngsi-ld:IndoorEnvironmentObserved:kommune-iot:5"))  # fmt: skip
    assert room["co2"] == {
        "type": "Property",
        "value": fleet.co2_by_sensor[5][-1],
        "observedAt": "2026-03-03T23:50:00Z",
        "unitCode": "59",
    }
    assert room["dateObserved"]["value"] == "2026-03-03T23:50:00Z"
    assert room["location"]["value"] == {"type": "Point", "coordinates": [10.3883, 55.3959]}
    (bin_,) = get(ngsi, "/entities", type="WasteContainer", options="keyValues")
    assert bin_["fillingLevel"] == 0.4  # fill_pct 40 as the model's fraction
    (bay,) = get(ngsi, "/entities", type="ParkingSpot", options="keyValues")
    assert bay["status"] == "occupied" and bay["category"] == ["onStreet"]


def test_only_public_active_placed_sensors_are_entities(ngsi: TestClient) -> None:
    everything = get(ngsi, "/entities", type=",".join(TYPES), limit="1000")
    assert sorted(ids(everything)) == [1, 3, 5, 7]
    for hidden, model in ((2, "IndoorEnvironmentObserved"), (4, "ParkingSpot"),
                          (6, "IndoorEnvironmentObserved")):  # fmt: skip
        urn = f"urn:ngsi-ld:{model}:kommune-iot:{hidden}"
        for path in (f"/entities/{urn}", f"/temporal/entities/{urn}"):
            body = get(ngsi, path, 404)
            assert body["type"].endswith("ResourceNotFound")
        assert get(ngsi, "/entities", type=model, id=urn) == []
    # Sensor 2 (private) sits 100 m from nothing public: a geo-query finds nothing there.
    near_private = get(
        ngsi,
        "/entities",
        type="IndoorEnvironmentObserved",
        georel="near;maxDistance==100",
        geometry="Point",
        coordinates="[10.2000,56.1500]",
    )
    assert near_private == []
    temporal = get(
        ngsi,
        "/temporal/entities",
        type="IndoorEnvironmentObserved",
        timerel="between",
        timeAt="2026-03-01T00:00:00Z",
        endTimeAt="2026-03-02T00:00:00Z",
    )
    assert ids(temporal) == [1, 5]


@pytest.mark.parametrize(
    ("model", "q", "expected"),
    [
        ("IndoorEnvironmentObserved", "temperature==21.5", [1, 5]),
        ("IndoorEnvironmentObserved", "co2>1000;temperature<30", "co2>1000"),
        ("IndoorEnvironmentObserved", 'co2<1000|name=="o climate 1"', "co2<1000|5"),
        ("IndoorEnvironmentObserved", '(co2>=0;co2<=100000);name~="^a "', [1]),
        ("IndoorEnvironmentObserved", 'co2==0..100000;dataProvider!="Aarhus Kommune"', [5]),
        ("IndoorEnvironmentObserved", "illuminance", []),
        ("IndoorEnvironmentObserved", 'name=="a climate 1","o climate 1"', [1, 5]),
        ("WasteContainer", "fillingLevel==0.3..0.5", [3]),
        ("WasteContainer", "fillingLevel>0.5", []),
        ("ParkingSpot", 'status=="occupied"', [7]),
        ("ParkingSpot", 'status!="occupied"', []),
    ],
)
def test_q_selects_by_attribute_values(
    ngsi: TestClient, fleet: Fleet, model: str, q: str, expected: Any
) -> None:
    newest = {s: fleet.co2_by_sensor[s][-1] for s in (1, 5)}
    if expected == "co2>1000":
        expected = [s for s in (1, 5) if newest[s] > 1000]
    elif expected == "co2<1000|5":
        expected = sorted({s for s in (1, 5) if newest[s] < 1000} | {5})
    assert ids(get(ngsi, "/entities", type=model, q=q)) == expected


def test_georel_near_and_within(ngsi: TestClient) -> None:
    aarhus = "[10.2107,56.1572]"
    near = get(ngsi, "/entities", type=",".join(TYPES), georel="near;maxDistance==1000",
               geometry="Point", coordinates=aarhus)  # fmt: skip
    assert sorted(ids(near)) == [1, 3, 7]  # 3 is ~570 m away, 7 ~300 m; Odense is far
    far = get(ngsi, "/entities", type=",".join(TYPES), georel="near;minDistance==50000",
              geometry="Point", coordinates=aarhus)  # fmt: skip
    assert ids(far) == [5]
    box = [[[10.19, 56.15], [10.22, 56.15], [10.22, 56.16], [10.19, 56.16], [10.19, 56.15]]]
    within = get(ngsi, "/entities", type="IndoorEnvironmentObserved", georel="within",
                 geometry="Polygon", coordinates=json.dumps(box))  # fmt: skip
    assert ids(within) == [1]


def test_temporal_representation_holds_the_readings(ngsi: TestClient, fleet: Fleet) -> None:
    urn = "urn:ngsi-ld:IndoorEnvironmentObserved:kommune-iot:1"
    body = get(
        ngsi,
        f"/temporal/entities/{urn}",
        timerel="between",
        timeAt="2026-03-02T00:00:00Z",
        endTimeAt="2026-03-03T00:00:00Z",
        attrs="co2",
    )
    assert set(body) == {"id", "type", "co2"}
    assert [i["value"] for i in body["co2"]] == list(fleet.co2_by_sensor[1][144:288])
    assert body["co2"][0]["observedAt"] == "2026-03-02T00:00:00Z"
    simplified = get(
        ngsi,
        f"/temporal/entities/{urn}",
        timerel="between",
        timeAt="2026-03-02T00:00:00Z",
        endTimeAt="2026-03-03T00:00:00Z",
        attrs="co2,temperature",
        options="temporalValues",
        lastN="3",
    )
    assert simplified["co2"]["values"] == [
        [v, t]
        for v, t in zip(
            fleet.co2_by_sensor[1][285:288],
            ["2026-03-02T23:30:00Z", "2026-03-02T23:40:00Z", "2026-03-02T23:50:00Z"],
            strict=True,
        )
    ]
    assert len(simplified["temperature"]["values"]) == 3
    bay = get(ngsi, "/temporal/entities/urn:ngsi-ld:ParkingSpot:kommune-iot:7",
              timerel="between", timeAt="2026-03-03T00:00:00Z",
              endTimeAt="2026-03-04T00:00:00Z")  # fmt: skip
    assert bay["id"].endswith(":7") and "status" not in bay  # no readings, only a latest value


def test_pages_follow_the_link_header_by_key(ngsi: TestClient, db: psycopg.Connection) -> None:
    db.execute(
        "INSERT INTO sensors (municipality_id, external_id, name, kind, lat, lon, is_public,"
        " status) SELECT 2, 'bay-' || i, 'Bay ' || i, 'parking', 55.4, 10.4, true, 'active'"
        " FROM generate_series(1, 45) i"
    )
    seen: list[int] = []
    response = ngsi.get(NGSI + "/entities", params={"type": "ParkingSpot", "limit": "10",
                                                    "count": "true"})  # fmt: skip
    assert response.headers["NGSILD-Results-Count"] == "46"
    while True:
        assert response.status_code == 200, response.text
        seen += ids(response.json())
        link = response.headers.get("Link", "")
        if 'rel="next"' not in link:
            break
        next_url = link.split(">;", 1)[0].lstrip("<")
        response = ngsi.get(next_url)
    assert len(seen) == 46 and seen == sorted(set(seen))


@pytest.mark.parametrize(
    ("path", "params", "words"),
    [
        ("/entities", {}, "type: required"),
        ("/entities", {"type": "Bench"}, "not served"),
        ("/entities", {"type": "WasteContainer", "q": "fillingLevel>>1"}, "q:"),
        ("/entities", {"type": "WasteContainer", "q": "colour==\"red\""}, "colour"),
        ("/entities", {"type": "WasteContainer", "q": "fillingLevel==\"x\""}, "cannot be compared"),
        ("/entities", {"type": "WasteContainer,ParkingSpot", "q": "status"}, "exactly one type"),
        ("/entities", {"type": "WasteContainer", "georel": "near;maxDistance==5",
                       "geometry": "Point", "coordinates": "[200,1]"}, "position"),
        ("/entities", {"type": "WasteContainer", "georel": "equals", "geometry": "Point",
                       "coordinates": "[10,56]"}, "not offered"),
        ("/entities", {"type": "WasteContainer", "georel": "within"}, "go together"),
        ("/entities", {"type": "WasteContainer", "limit": "5000"}, "limit"),
        ("/entities", {"type": "WasteContainer", "cursor": "abc"}, "cursor"),
        ("/temporal/entities", {"type": "WasteContainer", "timerel": "between",
                                "timeAt": "2026-01-01T00:00:00Z",
                                "endTimeAt": "2026-03-01T00:00:00Z"}, "at most 31 days"),
        ("/temporal/entities", {"type": "WasteContainer", "timerel": "before",
                                "timeAt": "2026-01-01T00:00:00Z"}, "not offered"),
        ("/temporal/entities", {"type": "WasteContainer", "timerel": "after",
                                "timeAt": "2026-01-01T00:00:00"}, "timezone"),
    ],
)  # fmt: skip
def test_bad_queries_get_problem_details(
    ngsi: TestClient, path: str, params: dict[str, str], words: str
) -> None:
    body = get(ngsi, path, 400, **params)
    assert body["type"] == "https://uri.etsi.org/ngsi-ld/errors/BadRequestData"
    assert words in body["detail"], body["detail"]


def test_context_in_the_body_for_json_ld_and_in_a_link_header_for_json(
    ngsi: TestClient,
) -> None:
    ld = ngsi.get(NGSI + "/entities", params={"type": "WasteContainer"},
                  headers={"Accept": "application/ld+json"})  # fmt: skip
    assert ld.headers["content-type"].startswith("application/ld+json")
    assert "smart-data-models" in ld.json()[0]["@context"][0]
    plain = ngsi.get(NGSI + "/entities", params={"type": "WasteContainer"})
    assert plain.headers["content-type"].startswith("application/json")
    assert 'rel="http://www.w3.org/ns/json-ld#context"' in plain.headers["Link"]
    assert "@context" not in plain.json()[0]


def test_schema_copies_are_the_upstream_files_with_their_licence() -> None:
    for model in TYPES:
        licence = (SCHEMAS / model / "LICENSE.md").read_text()
        assert licence.startswith("# Creative Commons Attribution 4.0")
        assert json.loads((SCHEMAS / model / "schema.json").read_text())["allOf"]
    assert "Smart Data Models" in (SCHEMAS / "SOURCE.md").read_text()
