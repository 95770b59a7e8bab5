"""The school calendar staff API: import by CSV, read back, all or nothing, and a key of
one municipality neither sees nor changes another's calendar."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.auth import create_key
from models.settings import Settings

URL = "/api/v1/staff/school-calendar"
CSV = "text/csv"

AARHUS_CSV = (
    "type,weekday,opens,closes,first_day,last_day,name\n"
    "hours,1,08:00,15:00,,,\n"
    "hours,2,08:00,15:00,,,\n"
    "holiday,,,,2026-10-12,2026-10-16,Efterårsferie\n"
)
ODENSE_CSV = "type;weekday;opens;closes;first_day;last_day;name\nhours;fredag;08:15;12:00;;;\n"


@pytest.fixture
def keys(db: psycopg.Connection) -> dict[str, str]:
    tokens = {}
    for slug in ("aarhus", "odense"):
        m = db.execute(
            "INSERT INTO municipalities (slug, name) VALUES (%s, %s) RETURNING id", (slug, slug)
        ).fetchone()[0]
        tokens[slug] = create_key(db, m, ["write-sensors", "read-private"]).token
        tokens[f"{slug}-reader"] = create_key(db, m, ["read-private"]).token
    return tokens


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def _auth(token: str, csv: bool = False) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {token}"}
    if csv:
        headers["Content-Type"] = CSV
    return headers


def test_each_municipality_imports_and_sees_only_its_own_calendar(client, keys) -> None:
    assert client.get(URL, headers=_auth(keys["aarhus"])).json()["default"] is True
    put = client.put(URL, content=AARHUS_CSV.encode(), headers=_auth(keys["aarhus"], csv=True))
    assert put.status_code == 200, put.text
    assert put.json()["stored"] == {"hours": 2, "holidays": 1}

    # Odense still has the default, and its import leaves Aarhus's calendar alone.
    assert client.get(URL, headers=_auth(keys["odense"])).json()["default"] is True
    put = client.put(URL, content=ODENSE_CSV.encode(), headers=_auth(keys["odense"], csv=True))
    assert put.status_code == 200, put.text
    aarhus = client.get(URL, headers=_auth(keys["aarhus-reader"])).json()
    odense = client.get(URL, headers=_auth(keys["odense-reader"])).json()
    assert aarhus == {
        "default": False,
        "hours": [
            {"weekday": 1, "opens": "08:00", "closes": "15:00"},
            {"weekday": 2, "opens": "08:00", "closes": "15:00"},
        ],
        "holidays": [
            {"first_day": "2026-10-12", "last_day": "2026-10-16", "name": "Efterårsferie"}
        ],
    }
    assert odense["hours"] == [{"weekday": 5, "opens": "08:15", "closes": "12:00"}]
    assert odense["holidays"] == []


def test_a_bad_csv_stores_nothing_and_names_every_line(client, keys) -> None:
    client.put(URL, content=AARHUS_CSV.encode(), headers=_auth(keys["aarhus"], csv=True))
    bad = (
        "type,weekday,opens,closes,first_day,last_day,name\n"
        "hours,1,08:00,15:00,,,\n"
        "hours,9,x,y,,,\n"
    )
    response = client.put(URL, content=bad.encode(), headers=_auth(keys["aarhus"], csv=True))
    assert response.status_code == 422
    assert response.json()["errors"][0].startswith("line 3: weekday '9'")
    # Still the calendar of the first import: all or nothing.
    assert len(client.get(URL, headers=_auth(keys["aarhus"])).json()["hours"]) == 2


def test_reading_keys_cannot_import_and_strangers_are_refused(client, keys) -> None:
    response = client.put(
        URL, content=AARHUS_CSV.encode(), headers=_auth(keys["aarhus-reader"], csv=True)
    )
    assert response.status_code == 403
    assert client.get(URL).status_code == 401
    assert client.get(URL, headers=_auth(keys["aarhus"])).json()["default"] is True
    latin1 = AARHUS_CSV.encode("utf-8").replace("å".encode(), b"\xe5")
    response = client.put(URL, content=latin1, headers=_auth(keys["aarhus"], csv=True))
    assert response.status_code == 400 and "UTF-8" in response.json()["detail"]
