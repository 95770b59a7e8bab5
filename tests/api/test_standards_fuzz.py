"""Whatever a client sends in the query languages of the standards APIs, the answer is a
result or a 400 in the standard's error shape: never a 500 (a crash) and never a hidden
sensor's data."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api.app import create_app
from models.db_roles import API, enable_logins, role_url
from models.settings import Settings
from tests.api.conftest import Fleet

WORDS = [
    "id", "@iot.id", "name", "result", "phenomenonTime", "resultTime", "properties/kind",
    "Datastream/@iot.id", "Datastreams/name", "Thing/name", "Locations/location", "location",
    "eq", "ne", "gt", "lt", "and", "or", "not", "add", "sub", "mul", "div", "mod", "(", ")",
    ",", "'a'", "'", "''", "1", "-1", "0", "1.5e308", "9223372036854775808", "null", "true",
    "2026-03-01T00:00:00Z", "year(", "substring(", "geo.intersects(", "geography'POINT(1 2)'",
    "now()", "tolower(", "concat(", ";", "|", "==", "..", '"x"', "co2", "fillingLevel", "status",
]  # fmt: skip
expressions = st.lists(st.sampled_from(WORDS), min_size=1, max_size=12).map(" ".join)
garbage = st.one_of(expressions, st.text(max_size=60))


@pytest.fixture
def app_client(settings: Settings, db: psycopg.Connection, fleet: Fleet) -> Iterator[TestClient]:
    """The app as the public API role over the seeded fleet (hidden sensors included)."""
    enable_logins(db, {})
    public = settings.model_copy(update={"database_url": role_url(settings.database_url, API)})
    with TestClient(create_app(public)) as client:
        yield client


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(text=garbage, where=st.sampled_from(["$filter", "$orderby", "$expand", "$select"]),
       collection=st.sampled_from(["Things", "Datastreams", "Observations",
                                   "Datastreams(100030)/Observations", "Locations"]))  # fmt: skip
def test_sensorthings_query_options_never_crash(
    app_client: TestClient, text: str, where: str, collection: str
) -> None:
    response = app_client.get(f"/sta/v1.1/{collection}", params={where: text})
    assert response.status_code in (200, 400), (text, response.text)
    if response.status_code == 400:
        assert set(response.json()) == {"code", "type", "message"}


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(text=garbage, where=st.sampled_from(["q", "coordinates", "georel", "attrs", "id"]))
def test_ngsi_ld_query_parameters_never_crash(
    app_client: TestClient, text: str, where: str
) -> None:
    params = {"type": "IndoorEnvironmentObserved", where: text}
    if where in ("coordinates", "georel"):
        params |= {"georel": "near;maxDistance==100", "geometry": "Point", "coordinates": "[1,2]"}
        params[where] = text
    response = app_client.get("/ngsi-ld/v1/entities", params=params)
    assert response.status_code in (200, 400), (text, response.text)
    if response.status_code == 400:
        assert response.json()["type"].startswith("https://uri.etsi.org/ngsi-ld/errors/")
