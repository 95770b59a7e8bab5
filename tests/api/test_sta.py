"""SensorThings API v1.1 (read) against the real database, served as the public API role.

Written from the conformance classes of OGC 18-088 (SensorThings API Part 1: Sensing
v1.1): A.1 data model / read (entity sets, entities, navigation, properties, $value,
$ref), A.2 request data ($filter, $orderby, $top, $skip, $select, $expand, $count) and the
data-array extension; and from the project's rule: only public, active sensors appear.
Seeded fleet: tests/api/conftest.py (public sensors 1, 3, 5; hidden 2, 4, 6).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import numpy as np
import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.sta.entities import datastream_id
from models.db_roles import API, enable_logins, role_url
from models.settings import Settings
from tests.api.conftest import HIDDEN_IDS, PUBLIC_IDS, Fleet

pytestmark = pytest.mark.storage

STA = "/sta/v1.1"
COLLECTIONS = (
    "Things",
    "Locations",
    "HistoricalLocations",
    "Sensors",
    "ObservedProperties",
    "Datastreams",
    "Observations",
    "FeaturesOfInterest",
)


@pytest.fixture
def sta(settings: Settings, db: psycopg.Connection) -> Iterator[TestClient]:
    """The app connected as iot_api, the public API's role (row-level security applies)."""
    enable_logins(db, {})
    public = settings.model_copy(update={"database_url": role_url(settings.database_url, API)})
    with TestClient(create_app(public)) as client:
        yield client


@pytest.fixture
def metric(db: psycopg.Connection) -> dict[str, int]:
    return dict(db.execute("SELECT name, id FROM metrics").fetchall())


def get(client: TestClient, path: str, status: int = 200, **params: Any) -> Any:
    response = client.get(STA + path, params=params)
    assert response.status_code == status, response.text
    return response.json()


def all_pages(client: TestClient, path: str, **params: Any) -> list[dict[str, Any]]:
    page = get(client, path, **params)
    items = list(page["value"])
    while "@iot.nextLink" in page:
        response = client.get(page["@iot.nextLink"])
        assert response.status_code == 200, response.text
        page = response.json()
        items += page["value"]
    return items


def assert_sta_error(body: dict[str, Any], code: int, *words: str) -> None:
    assert body["code"] == code and body["type"] == "error"
    for word in words:
        assert word in body["message"], body["message"]


# --- A.1 read: the service root, entity sets and entities ---------------------------------


def test_service_root_lists_every_entity_set_with_its_url(sta: TestClient) -> None:
    root = get(sta, "")
    assert [e["name"] for e in root["value"]] == list(COLLECTIONS)
    assert all(e["url"].endswith(f"{STA}/{e['name']}") for e in root["value"])
    assert any("data-array" in c for c in root["serverSettings"]["conformance"])


def test_every_entity_has_id_self_link_and_navigation_links(sta: TestClient, fleet: Fleet) -> None:
    for collection in COLLECTIONS:
        for entity in get(sta, f"/{collection}", **{"$top": "3"})["value"]:
            assert "@iot.id" in entity
            self_link = entity["@iot.selfLink"]
            assert sta.get(self_link).json()["@iot.id"] == entity["@iot.id"]
            for key, link in entity.items():
                if key.endswith("@iot.navigationLink"):
                    assert sta.get(link).status_code == 200, link


def test_only_public_active_sensors_appear_in_any_collection(
    sta: TestClient, fleet: Fleet, db: psycopg.Connection, metric: dict[str, int]
) -> None:
    # A device model used only by the private sensor must not appear as a Sensor either.
    db.execute(
        "INSERT INTO device_models (vendor, model, decoder, kind) "
        "VALUES ('Secret', 'Prototype', 'x', 'climate')"
    )
    db.execute("UPDATE sensors SET device_model_id = 2 WHERE id = 2")
    things = {t["@iot.id"] for t in all_pages(sta, "/Things")}
    assert things == set(PUBLIC_IDS)
    assert {x["@iot.id"] for x in all_pages(sta, "/Locations")} == {1, 5}  # 3 is unplaced
    assert {x["@iot.id"] for x in all_pages(sta, "/FeaturesOfInterest")} == set(PUBLIC_IDS)
    assert {x["name"] for x in all_pages(sta, "/Sensors")} == {
        "Elsys ERS CO2",
        "Unregistered device model",
    }
    streams = all_pages(sta, "/Datastreams", **{"$expand": "Thing"})
    assert {s["Thing"]["@iot.id"] for s in streams} == set(PUBLIC_IDS)
    observed = all_pages(sta, "/ObservedProperties", **{"$expand": "Datastreams($top=100)"})
    assert {s["@iot.id"] // 100_000 for op in observed for s in op["Datastreams"]} <= set(
        PUBLIC_IDS
    )
    hours = all_pages(
        sta,
        "/Observations",
        **{"$filter": "phenomenonTime ge 2026-03-02T00:00:00Z", "$top": "5000"},
    )
    assert {o["@iot.id"].split("-")[0] for o in hours} <= {
        str(datastream_id(s, m, r)) for s in PUBLIC_IDS for m in metric.values() for r in (0, 1, 2)
    }
    assert all(
        o["@iot.id"] // 100_000 in PUBLIC_IDS for o in get(sta, "/HistoricalLocations")["value"]
    )
    for hidden in HIDDEN_IDS:
        stream = datastream_id(hidden, metric["co2_ppm"], 0)
        first = int(fleet.start.timestamp() * 1_000_000)
        for path in (
            f"/Things({hidden})",
            f"/Things({hidden})/Datastreams",
            f"/Locations({hidden})",
            f"/FeaturesOfInterest({hidden})/Observations",
            f"/Datastreams({stream})",
            f"/Datastreams({stream})/Observations",
            f"/Observations('{stream}-{first}')",
        ):
            assert_sta_error(get(sta, path, 404), 404)
        by_filter = get(sta, "/Observations", **{"$filter": f"Datastream/@iot.id eq {stream}"})
        assert by_filter["value"] == []
        assert get(sta, "/Sensors(2)", 404)["code"] == 404
        through_navigation = get(sta, "/Things", **{"$filter": f"Datastreams/@iot.id eq {stream}"})
        assert through_navigation["value"] == []


def test_navigation_property_and_value_and_ref_paths(
    sta: TestClient, fleet: Fleet, metric: dict[str, int]
) -> None:
    stream = datastream_id(1, metric["co2_ppm"], 0)
    assert get(sta, f"/Datastreams({stream})/Thing")["@iot.id"] == 1
    assert get(sta, f"/Datastreams({stream})/ObservedProperty")["name"] == "co2_ppm"
    assert get(sta, f"/Datastreams({stream})/Sensor")["name"] == "Elsys ERS CO2"
    assert get(sta, f"/Datastreams({stream})/Thing/Locations")["value"][0]["location"] == {
        "type": "Point",
        "coordinates": [10.2107, 56.1572],
    }
    assert get(sta, "/Things(1)/name") == {"name": "a climate 1"}
    value = sta.get(f"{STA}/Things(1)/name/$value")
    assert value.status_code == 200 and value.text == "a climate 1"
    refs = get(sta, "/Things/$ref")["value"]
    assert [r["@iot.selfLink"].rsplit("/", 1)[1] for r in refs] == [
        f"Things({i})" for i in PUBLIC_IDS
    ]
    first = get(sta, f"/Datastreams({stream})/Observations", **{"$top": "1"})["value"][0]
    assert get(sta, f"/Observations('{first['@iot.id']}')/Datastream")["@iot.id"] == stream
    assert get(sta, f"/Observations('{first['@iot.id']}')/FeatureOfInterest")["feature"][
        "coordinates"
    ] == [10.2107, 56.1572]
    assert_sta_error(get(sta, "/Things(1)/nothing", 404), 404, "nothing")
    assert_sta_error(get(sta, "/Gadgets", 404), 404, "Gadgets")


def test_observations_are_the_seeded_readings_and_rollups_in_ucum_units(
    sta: TestClient, fleet: Fleet, metric: dict[str, int]
) -> None:
    raw = datastream_id(1, metric["co2_ppm"], 0)
    stream = get(sta, f"/Datastreams({raw})")
    assert stream["unitOfMeasurement"] == {
        "name": "[ppm]",
        "symbol": "ppm",
        "definition": "https://ucum.org/ucum#[ppm]",
    }
    results = [o["result"] for o in all_pages(sta, f"/Datastreams({raw})/Observations")]
    assert np.array_equal(results, fleet.co2_by_sensor[1])
    hourly = all_pages(sta, f"/Datastreams({raw + 1})/Observations")
    assert len(hourly) == 24 * 3
    first_hour = fleet.co2_by_sensor[1][:6]
    assert hourly[0]["result"] == pytest.approx(first_hour.mean())
    assert hourly[0]["parameters"] == {
        "min": first_hour.min(),
        "max": first_hour.max(),
        "count": 6,
    }
    assert hourly[0]["phenomenonTime"] == "2026-03-01T00:00:00Z/2026-03-01T01:00:00Z"
    daily = get(sta, f"/Datastreams({raw + 2})/Observations")["value"]
    assert [d["parameters"]["count"] for d in daily] == [144, 144, 144]


# --- A.2 request data ---------------------------------------------------------------


class Times:
    """The seeded reading times as arrays (UTC), for the expected values."""

    def __init__(self, fleet: Fleet) -> None:
        start = np.datetime64(fleet.start.replace(tzinfo=None), "s")
        self.t = start + np.arange(fleet.readings_per_sensor) * np.timedelta64(600, "s")
        self.year = self.t.astype("datetime64[Y]").astype(int) + 1970
        self.month = self.t.astype("datetime64[M]").astype(int) % 12 + 1
        days = self.t.astype("datetime64[D]")
        self.day = (days - days.astype("datetime64[M]")).astype(int) + 1
        seconds = (self.t - days).astype(int)
        self.hour, self.minute, self.second = seconds // 3600, seconds // 60 % 60, seconds % 60


def at(text: str) -> np.datetime64:
    return np.datetime64(text, "s")


FILTERS = [
    ("result gt 1000", lambda v, t: v > 1000),
    ("result ge 1000.5 and result le 1200", lambda v, t: (v >= 1000.5) & (v <= 1200)),
    ("result lt 500 or result eq 1800", lambda v, t: (v < 500) | (v == 1800)),
    ("not (result ne 600.0)", lambda v, t: v == 600.0),
    ("result add 100 gt 1500", lambda v, t: v + 100 > 1500),
    ("result sub 100 mul 2 lt 300", lambda v, t: v - 200 < 300),
    ("(result sub 100) mul 2 lt 1300", lambda v, t: (v - 100) * 2 < 1300),
    ("result div 2 gt 700", lambda v, t: v / 2 > 700),
    ("result mod 100 lt 10", lambda v, t: np.mod(v, 100) < 10),
    ("-result lt -1700", lambda v, t: -v < -1700),
    ("round(result) eq 1000 or floor(result) eq 999 or ceiling(result) eq 401",
     lambda v, t: (np.floor(v + 0.5) == 1000) | (np.floor(v) == 999) | (np.ceil(v) == 401)),
    ("hour(phenomenonTime) eq 3", lambda v, t: t.hour == 3),
    ("day(phenomenonTime) eq 2 and minute(phenomenonTime) eq 30",
     lambda v, t: (t.day == 2) & (t.minute == 30)),
    ("year(phenomenonTime) eq 2026 and month(phenomenonTime) eq 3 and second(phenomenonTime) eq 0",
     lambda v, t: (t.year == 2026) & (t.month == 3) & (t.second == 0)),
    ("phenomenonTime ge 2026-03-02T12:00:00Z and phenomenonTime lt 2026-03-02T14:00:00+01:00",
     lambda v, t: (t.t >= at("2026-03-02T12:00")) & (t.t < at("2026-03-02T13:00"))),
    ("resultTime gt 2026-03-03T23:00:00Z", lambda v, t: t.t > at("2026-03-03T23:00")),
    ("date(phenomenonTime) eq date(2026-03-01T18:00:00Z) and result gt 1500",
     lambda v, t: (t.day == 1) & (v > 1500)),
    ("time(phenomenonTime) eq time(2026-01-01T06:20:00Z)",
     lambda v, t: (t.hour == 6) & (t.minute == 20)),
    ("phenomenonTime lt now() and phenomenonTime gt mindatetime() and "
     "phenomenonTime lt maxdatetime() and totaloffsetminutes(phenomenonTime) eq 0",
     lambda v, t: v == v),
    ("fractionalseconds(phenomenonTime) eq 0 and result gt 1790", lambda v, t: v > 1790),
]  # fmt: skip


@pytest.mark.parametrize(("expression", "expected"), FILTERS, ids=[f[0] for f in FILTERS])
def test_filter_on_result_and_time_matches_the_seeded_values(
    sta: TestClient, fleet: Fleet, metric: dict[str, int], expression: str, expected: Any
) -> None:
    values = fleet.co2_by_sensor[1]
    stream = datastream_id(1, metric["co2_ppm"], 0)
    mask = expected(values, Times(fleet))
    page = get(
        sta,
        f"/Datastreams({stream})/Observations",
        **{"$filter": expression, "$count": "true", "$top": "1000"},
    )
    assert page["@iot.count"] == int(np.count_nonzero(mask))
    assert [o["result"] for o in page["value"]] == list(values[mask][:1000])


@pytest.mark.parametrize(
    ("expression", "ids"),
    [
        ("startswith(name, 'a ')", [1, 3]),
        ("endswith(name, 'climate 1')", [1, 5]),
        ("substringof('bin', name)", [3]),
        ("indexof(name, 'climate') eq 2", [1, 5]),
        ("length(name) eq 7 and toupper(name) eq 'A BIN 1'", [3]),
        ("tolower(concat(name, 'X')) eq 'o climate 1x'", [5]),
        ("substring(name, 2) eq 'climate 1' and substring(name, 0, 1) eq 'o'", [5]),
        ("trim(concat(' ', name)) eq 'a bin 1'", [3]),
        ("properties/kind eq 'climate' and properties/municipality ne 'odense'", [1]),
        ("Datastreams/ObservedProperty/name eq 'fill_pct'", [3]),
        (
            "geo.intersects(Locations/location, geography'POLYGON((10.19 56.15, 10.22 56.15, "
            "10.22 56.16, 10.19 56.16, 10.19 56.15))')",
            [1],
        ),
        ("@iot.id ge 3", [3, 5]),
        ("id eq 2", []),
    ],
)
def test_filter_string_functions_json_properties_and_navigation(
    sta: TestClient, fleet: Fleet, expression: str, ids: list[int]
) -> None:
    page = get(sta, "/Things", **{"$filter": expression})
    assert [t["@iot.id"] for t in page["value"]] == ids


def test_filter_through_to_one_navigation_paths(
    sta: TestClient, fleet: Fleet, metric: dict[str, int]
) -> None:
    streams = get(
        sta,
        "/Datastreams",
        **{"$filter": "ObservedProperty/name eq 'co2_ppm' and Thing/properties/municipality "
           "eq 'odense' and properties/resolution eq 'hour'"},
    )  # fmt: skip
    assert [s["@iot.id"] for s in streams["value"]] == [datastream_id(5, metric["co2_ppm"], 1)]
    streams = get(
        sta,
        "/Datastreams",
        **{"$filter": "ObservedProperty/name eq 'co2_ppm' and "
           "Thing/properties/municipality eq 'odense'"},
    )  # fmt: skip
    assert [s["@iot.id"] for s in streams["value"]] == [
        datastream_id(5, metric["co2_ppm"], r) for r in (0, 1, 2)
    ]
    rising = get(
        sta,
        "/Observations",
        **{
            "$filter": f"Datastream/@iot.id eq {datastream_id(5, metric['co2_ppm'], 0)} and "
            "Datastream/Thing/name eq 'o climate 1' and result gt 1799",
            "$count": "true",
        },
    )
    assert rising["@iot.count"] == int(np.count_nonzero(fleet.co2_by_sensor[5] > 1799))


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ({"$filter": "name eq"}, ["$filter", "ends too early"]),
        ({"$filter": "name eq 'x"}, ["$filter"]),
        ({"$filter": "colour eq 'red'"}, ["colour", "known"]),
        ({"$filter": "name eq 3"}, ["cannot compare a text with a number"]),
        ({"$filter": "name"}, ["condition"]),
        ({"$filter": "frobnicate(name)"}, ["unknown function"]),
        ({"$filter": "geo.distance(name, geography'POINT(1 2)') lt 3"}, ["geospatial"]),
        (
            {"$filter": "geo.intersects(Locations/location, geography'LINESTRING(1 2, 3 4)')"},
            ["POINT or POLYGON"],
        ),
        ({"$filter": "geo.intersects(name, geography'POINT(1 2)')"}, ["geo.intersects"]),
        ({"$filter": "startswith(name)"}, ["takes 2 argument"]),
        ({"$filter": "name eq 'a' eq 'b'"}, ["chained"]),
        ({"$filter": "(" * 50 + "id eq 1" + ")" * 50}, ["nested too deeply"]),
        ({"$orderby": "name sideways"}, ["$orderby"]),
        ({"$orderby": "true desc"}, ["$orderby", "property"]),
        ({"$top": "-1"}, ["$top"]),
        ({"$skip": "99999999"}, ["$skip", "nextLink"]),
        ({"$expand": "Datastreams($frob=1)"}, ["$expand"]),
        ({"$expand": "Gadgets"}, ["$expand", "Gadgets"]),
        ({"$select": "name,colour"}, ["$select", "colour"]),
        ({"$count": "maybe"}, ["$count"]),
        ({"$resultFormat": "csv"}, ["dataArray"]),
        ({"$skiptoken": "bm90IGEgdG9rZW4"}, ["$skiptoken"]),
        ({"$search": "x"}, ["unknown query option"]),
    ],
)
def test_malformed_queries_get_the_standard_error_shape(
    sta: TestClient, fleet: Fleet, query: dict[str, str], words: list[str]
) -> None:
    assert_sta_error(get(sta, "/Things", 400, **query), 400, *words)


def test_a_filter_that_divides_by_zero_or_overflows_is_a_400_not_a_crash(
    sta: TestClient, fleet: Fleet
) -> None:
    assert get(sta, "/Things", **{"$filter": "id div 0 eq 1"})["value"] == []
    body = get(sta, "/Things", 400, **{"$filter": "id mul 9223372036854775807 gt 1"})
    assert_sta_error(body, 400, "$filter")


def test_observations_that_would_scan_every_datastream_are_refused(
    sta: TestClient, fleet: Fleet, metric: dict[str, int]
) -> None:
    for query in (
        {"$filter": "result gt 5"},
        {"$orderby": "result desc"},
        {"$count": "true"},
        {"$filter": "phenomenonTime gt 2026-03-01T00:00:00Z or result gt 5"},
        {"$filter": "Datastream/Thing/name eq 'a climate 1'"},
    ):
        assert_sta_error(get(sta, "/Observations", 400, **query), 400, "without bound")
    for path, query in (
        ("/Datastreams", {"$filter": "Observations/result gt 5"}),
        ("/FeaturesOfInterest", {"$filter": "Observations/phenomenonTime gt 2026-03-01T00:00:00Z"}),
        ("/Datastreams", {"$expand": "Observations($filter=result gt 1799)"}),
        ("/Datastreams", {"$expand": "Observations($orderby=result desc)"}),
    ):
        body = get(sta, path, 400, **query)
        assert_sta_error(body, 400, "every reading")
    # One parent: its history is one Datastream's, allowed.
    stream = datastream_id(1, metric["co2_ppm"], 0)
    one = get(sta, f"/Datastreams({stream})", **{
        "$expand": "Observations($filter=result gt 1799;$orderby=result desc)"})  # fmt: skip
    assert [o["result"] for o in one["Observations"]] == sorted(
        fleet.co2_by_sensor[1][fleet.co2_by_sensor[1] > 1799], reverse=True
    )
    # Named Datastream (path or filter), or times only: allowed.
    assert get(sta, f"/Datastreams({stream})/Observations", **{"$orderby": "result desc"})
    assert get(sta, "/Observations", **{"$filter": f"Datastream/id eq {stream} and result gt 5"})[
        "value"
    ]
    assert get(sta, "/Observations", **{"$filter": "phenomenonTime gt 2026-03-03T00:00:00Z"})


def test_paging_follows_keyset_next_links_without_gaps_in_both_directions(
    sta: TestClient, fleet: Fleet, metric: dict[str, int]
) -> None:
    stream = datastream_id(1, metric["co2_ppm"], 0)
    path = f"/Datastreams({stream})/Observations"
    first = get(sta, path, **{"$top": "100"})
    assert "$skiptoken" in first["@iot.nextLink"].replace("%24", "$")
    forward = all_pages(sta, path, **{"$top": "100"})
    assert [o["result"] for o in forward] == list(fleet.co2_by_sensor[1])
    backward = all_pages(sta, path, **{"$top": "77", "$orderby": "phenomenonTime desc"})
    assert [o["result"] for o in backward] == list(fleet.co2_by_sensor[1][::-1])
    # Across Datastreams: every public reading of the day once.
    day = all_pages(
        sta, "/Observations", **{"$top": "500", "$filter": "phenomenonTime ge 2026-03-03T00:00:00Z"}
    )
    ids = [o["@iot.id"] for o in day]
    assert len(ids) == len(set(ids))
    expected = 5 * 144  # raw: two climate sensors x (co2, temperature) and the bin
    assert len([i for i in ids if i.split("-")[0].endswith("0")]) == expected
    # A token from other filters, or altered, is refused in the standard's shape.
    token = first["@iot.nextLink"].split("skiptoken=")[1]
    other = get(sta, path, 400, **{"$filter": "result gt 1", "$skiptoken": token})
    assert_sta_error(other, 400, "$skiptoken")


def test_orderby_on_other_properties_pages_by_skip(sta: TestClient, fleet: Fleet) -> None:
    ordered = all_pages(sta, "/Things", **{"$orderby": "name desc", "$top": "1"})
    assert [t["name"] for t in ordered] == ["o climate 1", "a climate 1", "a bin 1"]
    page = get(sta, "/Things", **{"$orderby": "name desc", "$top": "1", "$skip": "1"})
    assert [t["@iot.id"] for t in page["value"]] == [1]


def test_top_skip_count_and_select(sta: TestClient, fleet: Fleet) -> None:
    page = get(sta, "/Things", **{"$top": "2", "$count": "true", "$select": "id,name"})
    assert page["@iot.count"] == 3
    assert page["value"] == [
        {"@iot.id": 1, "name": "a climate 1"},
        {"@iot.id": 3, "name": "a bin 1"},
    ]
    assert "@iot.nextLink" in page
    assert get(sta, "/Things", **{"$top": "0", "$count": "true"}) == {"@iot.count": 3, "value": []}
    skipped = get(sta, "/Things", **{"$skip": "2"})
    assert [t["@iot.id"] for t in skipped["value"]] == [5]
    selected = get(sta, "/Things(1)", **{"$select": "Datastreams,description"})
    assert set(selected) == {"Datastreams@iot.navigationLink", "description"}


def test_nested_expand_with_its_own_options(
    sta: TestClient, fleet: Fleet, metric: dict[str, int]
) -> None:
    things = get(
        sta,
        "/Things",
        **{
            "$filter": "properties/kind eq 'climate'",
            "$expand": "Datastreams($filter=ObservedProperty/name eq 'co2_ppm';$select=id,name;"
            "$expand=Observations($top=2;$orderby=phenomenonTime desc;$select=result),"
            "ObservedProperty),Locations",
        },
    )["value"]
    assert [t["@iot.id"] for t in things] == [1, 5]
    for thing in things:
        sensor = thing["@iot.id"]
        assert thing["Locations"][0]["location"]["type"] == "Point"
        streams = thing["Datastreams"]
        assert [s["@iot.id"] for s in streams] == [
            datastream_id(sensor, metric["co2_ppm"], r) for r in (0, 1, 2)
        ]
        raw = streams[0]
        assert raw["ObservedProperty"]["name"] == "co2_ppm"
        assert [o["result"] for o in raw["Observations"]] == list(
            fleet.co2_by_sensor[sensor][::-1][:2]
        )
        assert "Observations@iot.nextLink" in raw
    path_form = get(sta, "/Datastreams", **{"$top": "1", "$expand": "Thing/Locations"})
    assert path_form["value"][0]["Thing"]["Locations"][0]["@iot.id"] == 1


def test_data_array_result_format(sta: TestClient, fleet: Fleet, metric: dict[str, int]) -> None:
    stream = datastream_id(5, metric["co2_ppm"], 0)
    page = get(
        sta,
        f"/Datastreams({stream})/Observations",
        **{"$resultFormat": "dataArray", "$top": "10", "$select": "result,phenomenonTime"},
    )
    (group,) = page["value"]
    assert group["Datastream@iot.navigationLink"].endswith(f"/Datastreams({stream})")
    assert group["components"] == ["result", "phenomenonTime"]
    assert group["dataArray@iot.count"] == 10
    assert [row[0] for row in group["dataArray"]] == list(fleet.co2_by_sensor[5][:10])
    assert group["dataArray"][1][1] == "2026-03-01T00:10:00Z"
    mixed = get(
        sta,
        "/Observations",
        **{
            "$resultFormat": "dataArray",
            "$filter": "phenomenonTime ge 2026-03-03T23:50:00Z",
        },
    )
    assert len(mixed["value"]) == 5  # one group per raw Datastream with a reading then
    assert all(g["components"] == ["id", "phenomenonTime", "result"] for g in mixed["value"])
    assert_sta_error(
        get(sta, "/Things", 400, **{"$resultFormat": "dataArray"}), 400, "Observations"
    )


def test_a_sparse_year_long_datastream_pages_across_time_windows(
    sta: TestClient, fleet: Fleet, db: psycopg.Connection, metric: dict[str, int]
) -> None:
    """Pages of one Datastream read by key across a year of daily partitions: rows every
    5 days over 400 days, pages of 7 and of everything, both directions, with a filter."""
    humidity = metric["humidity_pct"]
    start = fleet.start - timedelta(days=400)
    db.execute("SELECT iot_ensure_partitions(%s, %s)", (start.date(), fleet.start.date()))
    times = [start + timedelta(days=5 * i, hours=i % 24) for i in range(80)]
    with db.cursor() as cur:
        cur.executemany(
            "INSERT INTO readings (time, sensor_id, metric_id, value) VALUES (%s, 1, %s, %s)",
            [(t, humidity, float(i)) for i, t in enumerate(times)],
        )
    db.execute(
        "INSERT INTO latest_readings (sensor_id, metric_id, time, value) VALUES (1, %s, %s, 79)",
        (humidity, times[-1]),
    )
    db.execute("SELECT iot_refresh_rollups()")
    path = f"/Datastreams({datastream_id(1, humidity, 0)})/Observations"
    expected = [float(i) for i in range(80)]
    for top in ("7", "1000"):
        forward = all_pages(sta, path, **{"$top": top})
        assert [o["result"] for o in forward] == expected
        backward = all_pages(sta, path, **{"$top": top, "$orderby": "phenomenonTime desc"})
        assert [o["result"] for o in backward] == expected[::-1]
    odd = all_pages(sta, path, **{"$top": "3", "$filter": "result mod 2 eq 1"})
    assert [o["result"] for o in odd] == expected[1::2]
    daily = all_pages(sta, f"/Datastreams({datastream_id(1, humidity, 2)})/Observations")
    assert [o["result"] for o in daily] == expected


def test_qgis_style_geometry_and_extent_filters(sta: TestClient, fleet: Fleet) -> None:
    """What QGIS's SensorThings provider sends: the geometry type, then the map extent."""
    extent = "geography'POLYGON((10.0 55.0, 10.5 55.0, 10.5 56.5, 10.0 56.5, 10.0 55.0))'"
    points = get(sta, "/Locations", **{
        "$filter": "location/type eq 'Point' or location/geometry/type eq 'Point'"})  # fmt: skip
    assert [x["@iot.id"] for x in points["value"]] == [1, 5]
    aarhus = "geography'POLYGON((10.1 56.1, 10.3 56.1, 10.3 56.2, 10.1 56.2, 10.1 56.1))'"
    for collection, field, expected in (
        ("Locations", "location", [1]),
        ("FeaturesOfInterest", "feature", [1]),  # 3 has no place; 2 is private
        ("Things", "Locations/location", [1]),
    ):
        page = get(sta, f"/{collection}", **{
            "$filter": f"({field}/type eq 'Point' or {field}/geometry/type eq 'Point') and "
                       f"geo.intersects({field}, {aarhus})"})  # fmt: skip
        assert [x["@iot.id"] for x in page["value"]] == expected, collection
    both = get(sta, "/Locations", **{"$filter": f"geo.intersects(location, {extent})"})
    assert [x["@iot.id"] for x in both["value"]] == [1, 5]
    exact = get(sta, "/Locations", **{
        "$filter": "geo.intersects(location, geography'POINT(10.3883 55.3959)')"})  # fmt: skip
    assert [x["@iot.id"] for x in exact["value"]] == [5]


def test_observations_of_all_datastreams_walk_stream_by_stream_with_short_pages(
    sta: TestClient, fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Across Datastreams a page reads one Datastream's index range after another, at most
    MAX_STREAMS_PER_PAGE of them: then the page is short and @iot.nextLink resumes."""
    from api.sta import service

    query = {"$top": "1000", "$filter": "phenomenonTime ge 2026-03-03T22:00:00Z"}
    whole = all_pages(sta, "/Observations", **query)
    monkeypatch.setattr(service, "MAX_STREAMS_PER_PAGE", 2)
    first = get(sta, "/Observations", **query)
    assert "@iot.nextLink" in first
    assert len({o["@iot.id"].split("-")[0] for o in first["value"]}) <= 2
    walked = all_pages(sta, "/Observations", **query)
    assert [o["@iot.id"] for o in walked] == [o["@iot.id"] for o in whole]
    # the five public (sensor, metric) pairs' last two hours: 12 raw, 2 hourly (the day's
    # bucket starts before the filter's time)
    assert len(whole) == 5 * (12 + 2)


def test_a_filtered_page_reads_a_bounded_stretch_and_continues_where_it_stopped(
    sta: TestClient, fleet: Fleet, metric: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A filter that keeps few rows: a page reads at most MAX_SCANNED_ROWS rows of the
    Datastream, then ends short, and its @iot.nextLink continues after the last row read;
    the pages together are exactly the filter's rows, in both directions."""
    from api.sta import service

    values = fleet.co2_by_sensor[1]
    path = f"/Datastreams({datastream_id(1, metric['co2_ppm'], 0)})/Observations"
    query = {"$top": "5", "$filter": "result gt 1750"}
    expected = [float(v) for v in values if v > 1750]
    assert 5 < len(expected) < len(values) // 10
    monkeypatch.setattr(service, "MAX_SCANNED_ROWS", 40)
    first = get(sta, path, **query)
    assert len(first["value"]) < 5 and "@iot.nextLink" in first
    assert [o["result"] for o in first["value"]] == [float(v) for v in values[:40] if v > 1750]
    assert [o["result"] for o in all_pages(sta, path, **query)] == expected
    backward = all_pages(sta, path, **query, **{"$orderby": "phenomenonTime desc"})
    assert [o["result"] for o in backward] == expected[::-1]


def test_ordering_or_counting_a_long_datastream_is_refused_unless_a_time_range_bounds_it(
    sta: TestClient, fleet: Fleet, metric: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ordering by result or counting reads every row of the Datastream: beyond
    MAX_SCANNED_ROWS that is refused in the standard's shape, and a phenomenonTime range in
    $filter (pushed into the index range read) makes it answerable."""
    from api.sta import service

    values = fleet.co2_by_sensor[1]
    path = f"/Datastreams({datastream_id(1, metric['co2_ppm'], 0)})/Observations"
    monkeypatch.setattr(service, "MAX_SCANNED_ROWS", 100)
    for query in ({"$orderby": "result desc"}, {"$count": "true"},
                  {"$filter": "result gt 1000", "$count": "true"}):  # fmt: skip
        body = get(sta, path, 400, **query)
        assert_sta_error(body, 400, "without bound", "phenomenonTime ge")
    start = fleet.start + timedelta(hours=5)
    window = (
        f"phenomenonTime ge {start.isoformat().replace('+00:00', 'Z')} and "
        f"{(start + timedelta(hours=10)).isoformat().replace('+00:00', 'Z')} gt phenomenonTime"
    )
    page = get(sta, path, **{"$filter": window, "$orderby": "result desc", "$count": "true",
                             "$top": "1000"})  # fmt: skip
    in_window = values[30:90]  # 10-minute steps: from the 5th hour for 10 hours
    assert page["@iot.count"] == len(in_window) == 60
    assert [o["result"] for o in page["value"]] == sorted(in_window.tolist(), reverse=True)
    one = get(sta, path, **{"$filter": f"phenomenonTime eq {start.isoformat()[:19]}Z"})
    assert [o["result"] for o in one["value"]] == [float(values[30])]


def test_observations_of_all_datastreams_share_one_bound_on_rows_read_per_page(
    sta: TestClient, fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A time filter that cannot bound the index range (the hour of the day) makes each
    Datastream's rows be read and filtered: the Datastreams of one page read at most
    MAX_SCANNED_ROWS rows together, and the next links still reach every row once."""
    from api.sta import service

    query = {"$top": "1000", "$filter": "hour(phenomenonTime) ge 23"}
    whole = all_pages(sta, "/Observations", **query)
    assert 0 < len(whole) < 1000  # one page, were it not for the bound
    monkeypatch.setattr(service, "MAX_SCANNED_ROWS", 500)  # one raw Datastream: 432 rows
    first = get(sta, "/Observations", **query)
    assert "@iot.nextLink" in first and len(first["value"]) < len(whole)
    walked = all_pages(sta, "/Observations", **query)
    assert [o["@iot.id"] for o in walked] == [o["@iot.id"] for o in whole]
