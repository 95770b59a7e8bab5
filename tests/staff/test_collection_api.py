"""Staff collection endpoints over the real app and database, authenticated by API key."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.auth import create_key
from models.settings import Settings

ROUND_UTC = datetime(2026, 3, 5, 6, 0, tzinfo=UTC)  # Thursday 07:00 in Copenhagen


def _seed_town(db: psycopg.Connection, slug: str, with_depot: bool = True) -> int:
    mid = db.execute(
        "INSERT INTO municipalities (slug, name) VALUES (%s, %s) RETURNING id", (slug, slug)
    ).fetchone()[0]
    if with_depot:
        db.execute(
            "INSERT INTO sites (municipality_id, name, kind, lat, lon)"
            " VALUES (%s, 'Genbrug', 'depot', 56.18, 9.55)",
            (mid,),
        )
    metric_id = db.execute("SELECT id FROM metrics WHERE name = 'fill_pct'").fetchone()[0]
    db.execute("SELECT iot_ensure_partitions('2026-03-03', '2026-03-05')")
    # Three bins at 2 %/h, ending at 50, 70 and 20 % an hour before the round.
    for k, last in enumerate([50.0, 70.0, 20.0]):
        sid = db.execute(
            "INSERT INTO sensors (municipality_id, external_id, name, kind, lat, lon,"
            " bin_depth_mm) VALUES (%s, %s, %s, 'bin', %s, 9.54, 1000) RETURNING id",
            (mid, f"bin-{k}", f"bin {k}", 56.16 + 0.01 * k),
        ).fetchone()[0]
        with db.cursor() as cur:
            cur.executemany(
                "INSERT INTO readings (time, sensor_id, metric_id, value) VALUES (%s,%s,%s,%s)",
                [
                    (ROUND_UTC - timedelta(hours=h), sid, metric_id, last - 2 * (h - 1))
                    for h in (7, 4, 1)
                ],
            )
    return mid


@pytest.fixture
def client(database_url: str):
    with TestClient(create_app(Settings(database_url=database_url))) as c:
        yield c


def _auth(db, mid: int, scopes=("read-private",)) -> dict[str, str]:
    return {"Authorization": f"Bearer {create_key(db, mid, list(scopes)).token}"}


def test_collection_list_shows_the_callers_bins_due_before_the_next_round(db, client):
    mid = _seed_town(db, "silkeborg")
    other = _seed_town(db, "skanderborg")
    response = client.get(
        "/api/v1/staff/collection/list", params={"date": "2026-03-05"}, headers=_auth(db, mid)
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["municipality_id"] == mid and body["bins_total"] == 3
    # 72 % at the round -> 120 % on Friday; 52 % -> 100 %; 22 % -> 70 % (not due).
    assert [b["name"] for b in body["bins"]] == ["bin 1", "bin 0"]
    assert {b["reason"] for b in body["bins"]} == {"full_before_next_opportunity"}
    other_ids = {
        r[0] for r in db.execute("SELECT id FROM sensors WHERE municipality_id = %s", (other,))
    }
    assert not other_ids & {b["bin_id"] for b in body["bins"]}


def test_collection_route_as_json_geojson_and_vroom_input(db, client):
    mid = _seed_town(db, "silkeborg")
    headers = _auth(db, mid)
    url = "/api/v1/staff/collection/route"
    as_json = client.get(url, params={"date": "2026-03-05"}, headers=headers)
    assert as_json.status_code == 200, as_json.text
    route = as_json.json()["routes"][0]
    assert sorted(s["name"] if "name" in s else s["bin_id"] for s in route["stops"])
    assert len(route["stops"]) == 2 and route["distance_m"] > 0
    assert route["stops"][0]["arrival_at"].startswith("2026-03-05T07:")
    geo = client.get(url, params={"date": "2026-03-05", "format": "geojson"}, headers=headers)
    assert geo.headers["content-type"].startswith("application/geo+json")
    types = [f["geometry"]["type"] for f in geo.json()["features"]]
    assert types == ["LineString", "Point", "Point"]
    vroom = client.get(url, params={"date": "2026-03-05", "format": "vroom"}, headers=headers)
    assert set(vroom.json()) == {"vehicles", "jobs", "matrices"}
    assert len(vroom.json()["jobs"]) == 2


def test_collection_errors_say_what_is_wrong(db, client):
    mid = _seed_town(db, "silkeborg", with_depot=False)
    headers = _auth(db, mid)
    url = "/api/v1/staff/collection/route"
    no_depot = client.get(url, params={"date": "2026-03-05"}, headers=headers)
    assert no_depot.status_code == 409 and "depot" in no_depot.json()["detail"]
    bad_date = client.get(url, params={"date": "05-03-2026"}, headers=headers)
    assert bad_date.status_code == 422
    bad_format = client.get(url, params={"date": "2026-03-05", "format": "kml"}, headers=headers)
    assert bad_format.status_code == 422


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer kiot_nope"}])
def test_collection_needs_a_staff_key(db, client, headers):
    response = client.get(
        "/api/v1/staff/collection/list", params={"date": "2026-03-05"}, headers=headers
    )
    assert response.status_code == 401


def test_collection_needs_the_read_private_scope(db, client):
    mid = _seed_town(db, "silkeborg")
    response = client.get(
        "/api/v1/staff/collection/list",
        params={"date": "2026-03-05"},
        headers=_auth(db, mid, scopes=("write-sensors",)),
    )
    assert response.status_code == 403
