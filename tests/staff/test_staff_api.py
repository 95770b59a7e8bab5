"""Staff endpoints against the real database: what they do, and that a key of one
municipality can neither read another's private data nor change anything of it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.auth import create_key
from domain.registry import sync_device_models
from models.settings import Settings
from tests.ingest.conftest import ELSYS_ERS_CO2_HEX
from tests.ingest.test_end_to_end import chirpstack_up


@dataclass
class Tenant:
    id: int
    slug: str
    admin: str  # token with every scope
    reader: str  # read-private only
    sensor: int
    site: int
    zone: int
    alert: int
    dead_letter: int
    key: int
    dev_eui: str
    model: int = 0  # the municipality's own device model (ingest/codecs), with one codec


def _tenant(db: psycopg.Connection, slug: str, eui: str, n: int) -> Tenant:
    m = db.execute(
        "INSERT INTO municipalities (slug, name) VALUES (%s, %s) RETURNING id",
        (slug, f"{slug.title()} Kommune"),
    ).fetchone()[0]
    site = db.execute(
        "INSERT INTO sites (municipality_id, name, kind, lat, lon) "
        "VALUES (%s, %s, 'school', 56.1, 10.1) RETURNING id",
        (m, f"{slug} school"),
    ).fetchone()[0]
    zone = db.execute(
        "INSERT INTO zones (municipality_id, site_id, name) VALUES (%s, %s, 'room 1') RETURNING id",
        (m, site),
    ).fetchone()[0]
    model = db.execute("SELECT id FROM device_models WHERE model = 'ERS CO2'").fetchone()[0]
    sensor = db.execute(
        "INSERT INTO sensors (municipality_id, dev_eui, external_id, name, kind, "
        "device_model_id, site_id, zone_id, lat, lon, is_public) "
        "VALUES (%s, %s, %s, %s, 'climate', %s, %s, %s, 56.1, 10.1, false) RETURNING id",
        (m, eui, f"{slug}-room-1", f"{slug} secret room", model, site, zone),
    ).fetchone()[0]
    now = datetime.now(UTC)
    db.execute(
        "INSERT INTO readings VALUES (%s, %s, (SELECT id FROM metrics WHERE name='co2_ppm'), %s)",
        (now - timedelta(minutes=5), sensor, 1100.0 + n),
    )
    db.execute(
        "INSERT INTO latest_readings VALUES (%s, (SELECT id FROM metrics WHERE name='co2_ppm'), "
        "%s, %s)",
        (sensor, now - timedelta(minutes=5), 1100.0 + n),
    )
    alert = db.execute(
        "INSERT INTO alerts (municipality_id, sensor_id, rule, subject, started_at, message) "
        "VALUES (%s, %s, 'climate.co2_limit', %s, %s, 'CO2 above 1000 ppm') RETURNING id",
        (m, sensor, f"sensor:{sensor}", now - timedelta(hours=1)),
    ).fetchone()[0]
    dead = db.execute(
        "INSERT INTO dead_letters (topic, payload, reason, detail, municipality_id, device_id) "
        "VALUES (%s, %s, 'decode_error', 'bad', %s, %s) RETURNING id",
        (
            f"application/{slug}-app/device/{eui}/event/up",
            chirpstack_up(eui, "0100").replace(b'"app-1"', f'"{slug}-app"'.encode()),
            m,
            eui,
        ),
    ).fetchone()[0]
    db.execute(
        "INSERT INTO network_applications (network, application_id, municipality_id) "
        "VALUES ('chirpstack', %s, %s)",
        (f"{slug}-app", m),
    )
    admin = create_key(db, m, ["admin"])
    reader = create_key(db, m, ["read-private"])
    # A device model of the municipality's own, named so that a leak is caught as a secret.
    model_id = db.execute(
        "INSERT INTO device_models (vendor, model, decoder, kind, municipality_id) "
        "VALUES ('Acme', %s, 'codec', 'climate', %s) RETURNING id",
        (f"{slug} secret room sensor", m),
    ).fetchone()[0]
    db.execute(
        "INSERT INTO device_codecs (municipality_id, device_model_id, version, script, "
        "examples, mapping, report) VALUES (%s, %s, 1, %s, '[]', '{}', '{}')",
        (m, model_id, f"// {slug} secret room codec\nfunction Decode(p, b) {{ return {{}}; }}"),
    )
    return Tenant(
        m,
        slug,
        admin.token,
        reader.token,
        sensor,
        site,
        zone,
        alert,
        dead,
        reader.key_id,
        eui,
        model_id,
    )


@pytest.fixture
def tenants(db) -> tuple[Tenant, Tenant]:
    sync_device_models(db)
    return _tenant(db, "aarhus", "a81758fffe0a0001", 1), _tenant(db, "odder", "a81758fffe0b0001", 2)


@pytest.fixture
def client(database_url: str) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(database_url=database_url))) as c:
        yield c


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# --- what the endpoints do ---------------------------------------------------------------


def test_me_and_dashboard_show_the_callers_municipality(client, tenants) -> None:
    a, _ = tenants
    me = client.get("/api/v1/staff/me", headers=auth(a.reader)).json()
    assert me["municipality_slug"] == "aarhus" and me["municipality_name"] == "Aarhus Kommune"
    board = client.get("/api/v1/staff/dashboard", headers=auth(a.reader)).json()
    assert [r["id"] for r in board["rooms"]] == [a.sensor]
    assert board["rooms"][0]["co2_ppm"] == 1101.0
    assert [al["id"] for al in board["alerts"]] == [a.alert]


def test_keys_are_required_and_scopes_enforced(client, tenants) -> None:
    a, _ = tenants
    missing = client.get("/api/v1/staff/sensors")
    assert missing.status_code == 401 and "WWW-Authenticate" in missing.headers
    assert client.get("/api/v1/staff/sensors", headers=auth("kiot_x")).status_code == 401
    refused = client.post(f"/api/v1/staff/alerts/{a.alert}/acknowledge", headers=auth(a.reader))
    assert refused.status_code == 403 and "manage-alerts" in refused.json()["detail"]


def test_repeated_bad_keys_are_rate_limited(database_url, tenants) -> None:
    with TestClient(create_app(Settings(database_url=database_url))) as c:
        codes = [
            c.get("/api/v1/staff/me", headers=auth("kiot_aaaaaaaaaaaa_" + "b" * 43)).status_code
            for _ in range(25)
        ]
    assert codes[0] == 401 and codes[-1] == 429


def test_register_edit_and_import_sensors(client, tenants, db) -> None:
    a, _ = tenants
    created = client.post(
        "/api/v1/staff/sensors",
        headers=auth(a.admin),
        json={
            "external_id": "bin-1",
            "kind": "bin",
            "vendor": "Milesight",
            "model": "EM310-UDL",
            "dev_eui": "24E1:2471:3C10:0099",
            "bin_depth_mm": 1100,
            "lat": 56.2,
            "lon": 10.2,
        },
    )
    assert created.status_code == 201, created.text
    sensor_id = created.json()["id"]
    patched = client.patch(
        f"/api/v1/staff/sensors/{sensor_id}", headers=auth(a.admin), json={"is_public": False}
    )
    assert patched.status_code == 200 and patched.json()["is_public"] is False
    bad = client.post(
        "/api/v1/staff/sensor-imports",
        headers={**auth(a.admin), "Content-Type": "text/csv"},
        content="external_id,kind,lat\nroom-9,climate,56.1\nroom-10,volcano,999\n",
    )
    assert bad.status_code == 422
    assert any(e["line"] == 3 for e in bad.json()["errors"])
    assert db.execute("SELECT count(*) FROM sensors WHERE external_id = 'room-9'").fetchone() == (
        0,
    )
    good = client.post(
        "/api/v1/staff/sensor-imports",
        headers={**auth(a.admin), "Content-Type": "text/csv"},
        content="external_id,kind,lat,lon\nroom-9,climate,56.1,10.1\n",
    )
    assert good.status_code == 200 and good.json()["committed"] is True


def test_acknowledge_resolve_and_replay(client, tenants, db) -> None:
    a, _ = tenants
    ack = client.post(f"/api/v1/staff/alerts/{a.alert}/acknowledge", headers=auth(a.admin))
    assert ack.status_code == 200 and ack.json()["status"] == "acknowledged"
    res = client.post(f"/api/v1/staff/alerts/{a.alert}/resolve", headers=auth(a.admin))
    assert res.json()["status"] == "resolved"

    letter = client.get(f"/api/v1/staff/dead-letters/{a.dead_letter}", headers=auth(a.reader))
    assert letter.json()["payload_text"].startswith("{")
    # Still undecodable: the replay reports the reason and stores nothing.
    again = client.post(
        f"/api/v1/staff/dead-letters/{a.dead_letter}/replay", headers=auth(a.admin)
    ).json()
    assert again["stored"] is False and again["reason"] == "decode_error"
    # A good message for the device, dead-lettered before it was registered, is stored.
    db.execute(
        "INSERT INTO network_applications (network, application_id, municipality_id) "
        "VALUES ('chirpstack', 'app-1', %s)",
        (a.id,),
    )
    db.execute(
        "INSERT INTO dead_letters (topic, payload, reason, detail, device_id) VALUES "
        "(%s, %s, 'unknown_device', 'unknown', %s) RETURNING id",
        (
            f"application/app-1/device/{a.dev_eui}/event/up",  # chirpstack_up's application
            chirpstack_up(a.dev_eui, ELSYS_ERS_CO2_HEX, gateways=()),
            a.dev_eui,
        ),
    )
    unknown_id = db.execute("SELECT max(id) FROM dead_letters").fetchone()[0]
    stored = client.post(
        f"/api/v1/staff/dead-letters/{unknown_id}/replay", headers=auth(a.admin)
    ).json()
    assert stored["stored"] is True and stored["readings"] == 5


def test_admin_issues_and_revokes_keys(client, tenants) -> None:
    a, _ = tenants
    issued = client.post(
        "/api/v1/staff/keys", headers=auth(a.admin), json={"scopes": ["read-private"]}
    )
    assert issued.status_code == 201
    token = issued.json()["token"]
    assert client.get("/api/v1/staff/me", headers=auth(token)).status_code == 200
    listed = client.get("/api/v1/staff/keys", headers=auth(a.admin)).json()
    assert all("secret" not in k and "token" not in k for k in listed)
    assert (
        client.delete(
            f"/api/v1/staff/keys/{issued.json()['id']}", headers=auth(a.admin)
        ).status_code
        == 204
    )
    assert client.get("/api/v1/staff/me", headers=auth(token)).status_code == 401


def test_dashboard_page_and_its_files_are_served(client) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "dashboard.js" in page.text
    assert client.get("/static/dashboard.js").status_code == 200
    assert client.get("/static/vendor/leaflet/leaflet.js").status_code == 200


# --- isolation: every staff route, A's key against B's things ------------------------------

# For each staff route: how to call it with A's admin key aimed at B's resources. Routes
# with B's id in the path must answer 404; list routes must not mention B's ids or names.
# A staff route missing here fails test_every_staff_route_has_an_isolation_case.
ISOLATION: dict[tuple[str, str], dict] = {
    ("GET", "/api/v1/staff/me"): {"list": True},
    ("GET", "/api/v1/staff/dashboard"): {"list": True},
    ("GET", "/api/v1/staff/sensors"): {"list": True},
    ("GET", "/api/v1/staff/sensors/{sensor_id}"): {},
    ("GET", "/api/v1/staff/sensors/{sensor_id}/history"): {"params": {"metric": "co2_ppm"}},
    ("PATCH", "/api/v1/staff/sensors/{sensor_id}"): {"json": {"is_public": True}},
    ("POST", "/api/v1/staff/sensors"): {
        "json": {"external_id": "odder-room-1", "kind": "climate", "dev_eui": "a81758fffe0b0001"},
        "status": 422,
    },
    ("POST", "/api/v1/staff/sensor-imports"): {
        "content": "external_id,kind,dev_eui\nx,climate,a81758fffe0b0001\n",
        "headers": {"Content-Type": "text/csv"},
        "status": 422,
    },
    # A's historic file naming B's sensor: refused as unregistered, nothing of B written
    ("POST", "/api/v1/staff/historic-imports"): {
        "files": {"file": ("h.csv", b"sensor,time,co2\nodder-room-1,2026-03-01T10:00Z,900\n")},
        "data": {"mapping": '{"time": "time", "sensor": "sensor", "metrics": {"co2": "co2_ppm"}}'},
        "params": {"dry_run": "false"},
        "list": True,
    },
    ("GET", "/api/v1/staff/applications"): {"list": True},
    ("PUT", "/api/v1/staff/applications/{network}/{application_id}"): {"status": 409},
    ("DELETE", "/api/v1/staff/applications/{network}/{application_id}"): {},
    ("GET", "/api/v1/staff/sites"): {"list": True},
    ("POST", "/api/v1/staff/sites"): {"json": {"name": "odder school"}, "status": 201},
    ("PATCH", "/api/v1/staff/sites/{site_id}"): {"json": {"name": "taken over"}},
    ("GET", "/api/v1/staff/zones"): {"list": True},
    ("POST", "/api/v1/staff/zones"): {"json": {"site_id": "B.site", "name": "intruder"}},
    ("GET", "/api/v1/staff/alerts"): {"list": True},
    ("POST", "/api/v1/staff/alerts/{alert_id}/acknowledge"): {},
    ("POST", "/api/v1/staff/alerts/{alert_id}/resolve"): {},
    ("GET", "/api/v1/staff/dead-letters"): {"list": True},
    ("GET", "/api/v1/staff/dead-letters/{dead_letter_id}"): {},
    ("POST", "/api/v1/staff/dead-letters/{dead_letter_id}/replay"): {},
    ("GET", "/api/v1/staff/device-models"): {"list": True},
    ("GET", "/api/v1/staff/device-models/{model_id}/codecs"): {},
    # The same name as B's model makes A's own model, never a version of B's.
    ("POST", "/api/v1/staff/device-models/codecs"): {"json": "codec upload", "status": 201},
    ("POST", "/api/v1/staff/device-models/codecs/check"): {"json": "codec upload", "status": 200},
    ("GET", "/api/v1/staff/keys"): {"list": True},
    ("POST", "/api/v1/staff/keys"): {"json": {"scopes": ["admin"]}, "status": 201},
    ("DELETE", "/api/v1/staff/keys/{key_id}"): {},
    ("GET", "/api/v1/staff/collection/list"): {"list": True, "params": {"date": "2026-11-23"}},
    ("GET", "/api/v1/staff/collection/route"): {"list": True, "params": {"date": "2026-11-23"}},
    ("GET", "/api/v1/staff/audit"): {"list": True},
    ("GET", "/api/v1/staff/audit/export"): {"list": True},
    # school calendar and reports (analytics, api/routes/reports.py): a PUT replaces the
    # caller's own calendar only (the snapshot holds B's)
    ("GET", "/api/v1/staff/school-calendar"): {"list": True},
    ("PUT", "/api/v1/staff/school-calendar"): {
        "content": "type,weekday,opens,closes,first_day,last_day,name\nhours,1,07:00,12:00,,,\n",
        "headers": {"Content-Type": "text/csv"},
        "status": 200,
    },
    ("GET", "/api/v1/staff/reports/rooms"): {"list": True, "params": {"month": "2026-11"}},
    ("GET", "/api/v1/staff/reports/schools"): {"list": True, "params": {"month": "2026-11"}},
    ("GET", "/api/v1/staff/reports/bins"): {"list": True, "params": {"month": "2026-11"}},
    ("GET", "/api/v1/staff/reports/parking"): {"list": True, "params": {"month": "2026-11"}},
    ("GET", "/api/v1/staff/reports/month.xlsx"): {"list": True, "params": {"month": "2026-11"}},
    ("GET", "/api/v1/staff/reports/schools/{site_id}.pdf"): {"params": {"month": "2026-11"}},
}


def _staff_routes() -> set[tuple[str, str]]:
    paths = create_app(Settings()).openapi()["paths"]
    return {
        (method.upper(), path)
        for path, operations in paths.items()
        if path.startswith("/api/v1/staff")
        for method in operations
    }


def test_every_staff_route_has_an_isolation_case() -> None:
    from tests.outbound.test_outbound_api import OUTBOUND_ISOLATION  # outbound's own cases

    assert _staff_routes() == set(ISOLATION) | set(OUTBOUND_ISOLATION)


def _snapshot(db: psycopg.Connection, b: Tenant) -> tuple:
    return (
        db.execute(
            "SELECT * FROM sensors WHERE municipality_id = %s ORDER BY id", (b.id,)
        ).fetchall(),
        db.execute(
            "SELECT * FROM sites WHERE municipality_id = %s ORDER BY id", (b.id,)
        ).fetchall(),
        db.execute(
            "SELECT * FROM zones WHERE municipality_id = %s ORDER BY id", (b.id,)
        ).fetchall(),
        db.execute(
            "SELECT id, status, acknowledged_at, resolved_at FROM alerts "
            "WHERE municipality_id = %s ORDER BY id",
            (b.id,),
        ).fetchall(),
        db.execute(
            "SELECT id, reason, replayed_at FROM dead_letters WHERE municipality_id = %s", (b.id,)
        ).fetchall(),
        db.execute(
            "SELECT id, revoked_at FROM api_keys WHERE municipality_id = %s ORDER BY id", (b.id,)
        ).fetchall(),
        db.execute(
            "SELECT * FROM network_applications WHERE municipality_id = %s ORDER BY id", (b.id,)
        ).fetchall(),
        db.execute(
            "SELECT * FROM device_models WHERE municipality_id = %s ORDER BY id", (b.id,)
        ).fetchall(),
        db.execute(
            "SELECT id, device_model_id, version, script FROM device_codecs "
            "WHERE municipality_id = %s ORDER BY id",
            (b.id,),
        ).fetchall(),
        db.execute(
            "SELECT * FROM school_hours WHERE municipality_id = %s ORDER BY weekday", (b.id,)
        ).fetchall(),
        db.execute(
            "SELECT * FROM school_holidays WHERE municipality_id = %s ORDER BY id", (b.id,)
        ).fetchall(),
    )


@pytest.mark.parametrize(("method", "path"), sorted(ISOLATION))
def test_a_key_of_one_municipality_cannot_touch_anothers(client, tenants, db, method, path) -> None:
    a, b = tenants
    case = ISOLATION[(method, path)]
    ids = {
        "sensor_id": b.sensor,
        "site_id": b.site,
        "alert_id": b.alert,
        "dead_letter_id": b.dead_letter,
        "key_id": b.key,
        "network": "chirpstack",
        "application_id": f"{b.slug}-app",
        "model_id": b.model,
    }
    url = path.format(**{k: v for k, v in ids.items() if "{" + k + "}" in path})
    json_body = case.get("json")
    if json_body == "codec upload":
        json_body = {
            "vendor": "Acme",
            "model": f"{b.slug} secret room sensor",
            "kind": "climate",
            "examples": [{"input": {"fPort": 1, "bytes": []}, "output": {"data": {"t": 20}}}],
            "mapping": {"fields": {"t": "temperature_c"}},
        }
    elif json_body:
        json_body = {k: (b.site if v == "B.site" else v) for k, v in json_body.items()}
    before = _snapshot(db, b)
    response = client.request(
        method,
        url,
        headers={**auth(a.admin), **case.get("headers", {})},
        params=case.get("params"),
        json=json_body,
        content=case.get("content"),
        files=case.get("files"),
        data=case.get("data"),
    )
    assert _snapshot(db, b) == before, "B's data changed"
    if case.get("list"):
        assert response.status_code in (200, 409), response.text
        text = response.text
        for secret in (
            f"{b.slug} secret room",
            b.dev_eui,
            "Odder Kommune",
            f"{b.slug} school",
            f"{b.slug}-app",
        ):
            assert secret not in text
    else:
        assert response.status_code == case.get("status", 404), response.text
        if case.get("status", 404) == 404:
            assert "your municipality" in response.json()["detail"]
        if response.status_code >= 400:  # a refusal never names who holds what was asked for
            assert b.slug not in response.text.replace(f"{b.slug}-app", "").lower()


# --- network-server applications and DevEUIs held by another municipality ------------------


def test_applications_are_mapped_listed_and_unmapped_by_their_municipality(
    client, tenants, db
) -> None:
    a, _ = tenants
    url = "/api/v1/staff/applications/thethings/aarhus-parking@aarhus"
    assert client.put(url, headers=auth(a.reader)).status_code == 403
    assert client.put(url, headers=auth(a.admin)).status_code == 201
    assert client.put(url, headers=auth(a.admin)).status_code == 200  # already Aarhus's
    listed = client.get("/api/v1/staff/applications", headers=auth(a.reader)).json()
    assert {(x["network"], x["application_id"]) for x in listed} == {
        ("chirpstack", "aarhus-app"),
        ("thethings", "aarhus-parking@aarhus"),
    }
    bad = client.put("/api/v1/staff/applications/chirpstack/has space", headers=auth(a.admin))
    assert bad.status_code == 422 and "application_id" in bad.text
    unknown = client.put("/api/v1/staff/applications/lorawan/x", headers=auth(a.admin))
    assert unknown.status_code == 422 and "network" in unknown.text
    assert client.delete(url, headers=auth(a.admin)).status_code == 204
    assert client.delete(url, headers=auth(a.admin)).status_code == 404
    assert db.execute(
        "SELECT application_id FROM network_applications WHERE municipality_id = %s", (a.id,)
    ).fetchall() == [("aarhus-app",)]


def test_a_devEui_another_municipality_holds_cannot_be_claimed_nor_its_holder_learned(
    client, tenants, db
) -> None:
    a, b = tenants
    single = client.post(
        "/api/v1/staff/sensors",
        headers=auth(a.admin),
        json={"external_id": "claim-1", "kind": "climate", "dev_eui": b.dev_eui.upper()},
    )
    imported = client.post(
        "/api/v1/staff/sensor-imports",
        headers={**auth(a.admin), "Content-Type": "text/csv"},
        content=f"external_id,kind,dev_eui\nclaim-1,climate,{b.dev_eui}\n",
    )
    # And by updating a sensor of one's own to the other's DevEUI.
    renamed = client.post(
        "/api/v1/staff/sensors",
        headers=auth(a.admin),
        json={"external_id": "aarhus-room-1", "kind": "climate", "dev_eui": b.dev_eui},
    )
    for response in (single, imported, renamed):
        assert response.status_code == 422, response.text
        assert "another municipality" in response.text
        for secret in (b.slug, "Odder", f"{b.slug}-room-1", f"sensor {b.sensor}"):
            assert secret not in response.text.replace(b.dev_eui, "")
    owners = db.execute("SELECT municipality_id FROM sensors WHERE dev_eui = %s", (b.dev_eui,))
    assert owners.fetchall() == [(b.id,)]
