"""A fuzz pass over every staff route with the keys of two municipalities: generated
requests (schemathesis, from the OpenAPI schema) with one municipality's admin key never
get a server error, never answer outside the schema, never change anything of the other
municipality and never show any of its names, ids or keys. The app connects with the
production database roles (models/db_roles.py)."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

from api.app import create_app
from domain.registry import sync_device_models
from models.db_roles import API, STAFF, enable_logins, role_url
from models.settings import Settings
from tests.staff.test_staff_api import Tenant, _snapshot, _tenant

schema = schemathesis.openapi.from_dict(create_app(Settings()).openapi()).include(
    path_regex="^/api/v1/staff/"
)


@pytest.fixture(params=["aarhus calls", "odder calls"])
def pair(request: pytest.FixtureRequest, db: psycopg.Connection) -> tuple[Tenant, Tenant]:
    """(caller, other): both municipalities exist; either one holds the key."""
    sync_device_models(db)
    aarhus = _tenant(db, "aarhus", "a81758fffe0a0001", 1)
    odder = _tenant(db, "odder", "a81758fffe0b0001", 2)
    return (aarhus, odder) if request.param == "aarhus calls" else (odder, aarhus)


@pytest.fixture
def app(database_url: str, db: psycopg.Connection) -> Iterator[FastAPI]:
    """The API as deployed: public routes as iot_api, staff routes as iot_staff, so that
    the pass also finds a staff route the staff role's grants do not cover."""
    enable_logins(db, {})
    yield create_app(
        Settings(
            database_url=role_url(database_url, API),
            staff_database_url=role_url(database_url, STAFF),
        )
    )


def _secrets(other: Tenant, db: psycopg.Connection) -> list[str]:
    """What of `other` must never appear in an answer to the caller."""
    prefixes = [
        row[0]
        for row in db.execute(
            "SELECT prefix FROM api_keys WHERE municipality_id = %s", (other.id,)
        ).fetchall()
    ]
    return [
        f"{other.slug} secret room",
        f"{other.slug} school",
        f"{other.slug.title()} Kommune",
        f"{other.slug}-room-1",
        other.dev_eui,
        *prefixes,
    ]


def _readable(content: bytes) -> str:
    """The text a person would see: an XLSX workbook (a ZIP) unpacked, other bytes decoded
    without failing on binary (a PDF's text is checked in tests/analytics/test_reports.py)."""
    import io
    import zipfile

    if content.startswith(b"PK"):
        with zipfile.ZipFile(io.BytesIO(content)) as archive:
            content = b"".join(archive.read(name) for name in archive.namelist())
    return content.decode("utf-8", "replace")


@schema.parametrize()
@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_generated_staff_requests_never_reach_the_other_municipality(
    case: schemathesis.Case,
    app: FastAPI,
    pair: tuple[Tenant, Tenant],
    db: psycopg.Connection,
) -> None:
    caller, other = pair
    before = _snapshot(db, other)
    secrets = _secrets(other, db)
    response = case.call_and_validate(
        app=app,
        headers={"Authorization": f"Bearer {caller.admin}"},
        # Request bodies are parsed leniently on purpose (a JSON false is a valid 0.0 for
        # pydantic, as "56,1" is for a CSV cell): schema-invalid input that the API coerces
        # is not what this pass is about. Every other check runs, 5xx included.
        excluded_checks=[positive_data_acceptance, negative_data_rejection],
    )
    assert _snapshot(db, other) == before, f"{case.method} {case.formatted_path} changed it"
    leaked = [secret for secret in secrets if secret in _readable(response.content)]
    assert leaked == [], f"{case.method} {case.formatted_path} showed {leaked}"
    # A generated DELETE /keys/{id} may revoke the caller's own key: keep fuzzing with it.
    db.execute("UPDATE api_keys SET revoked_at = NULL WHERE municipality_id = %s", (caller.id,))


def test_null_for_a_required_field_is_refused_by_name(
    app: FastAPI, pair: tuple[Tenant, Tenant], db: psycopg.Connection
) -> None:
    """Found by the fuzz pass: PATCH {"is_public": null} answered 500 (NOT NULL violation)."""
    from fastapi.testclient import TestClient

    caller, _ = pair
    auth = {"Authorization": f"Bearer {caller.admin}"}
    with TestClient(app) as client:
        for path, body, field in (
            (f"/api/v1/staff/sensors/{caller.sensor}", {"is_public": None}, "is_public"),
            (f"/api/v1/staff/sensors/{caller.sensor}", {"status": None}, "status"),
            (f"/api/v1/staff/sites/{caller.site}", {"name": None}, "name"),
            (f"/api/v1/staff/sites/{caller.site}", {"kind": None}, "kind"),
        ):
            response = client.patch(path, headers=auth, json=body)
            assert response.status_code == 422, (path, body, response.text)
            assert f"'{field}'" in response.json()["detail"]


def test_values_the_database_cannot_hold_are_refused_not_crashed_on(
    app: FastAPI, pair: tuple[Tenant, Tenant], db: psycopg.Connection
) -> None:
    """Found by the fuzz pass: a NUL character in a name, a site id beyond PostgreSQL's
    integer and a collection day in year 1 answered 500."""
    from fastapi.testclient import TestClient

    caller, _ = pair
    auth = {"Authorization": f"Bearer {caller.admin}"}
    with TestClient(app) as client:
        sensor = client.post(
            "/api/v1/staff/sensors", headers=auth, json={"external_id": "a\x00b", "kind": "other"}
        )
        assert sensor.status_code == 422 and "NUL" in sensor.json()["detail"]
        imported = client.post(
            "/api/v1/staff/sensor-imports",
            headers={**auth, "Content-Type": "text/csv"},
            content="external_id,kind\nok,other\nbad\x00,other\n",
        )
        assert imported.status_code == 422
        assert [(e["line"], "NUL" in e["message"]) for e in imported.json()["errors"]] == [
            (3, True)
        ]
        zone = client.post(
            "/api/v1/staff/zones", headers=auth, json={"site_id": caller.site, "name": "\x00"}
        )
        assert zone.status_code == 400 and "NUL" in zone.json()["detail"]
        zones = client.get("/api/v1/staff/zones", headers=auth, params={"site_id": 2**31})
        assert zones.status_code == 422 and "site_id" in zones.json()["detail"]
        for path in ("/api/v1/staff/collection/list", "/api/v1/staff/collection/route"):
            far = client.get(path, headers=auth, params={"date": "0001-01-01"})
            assert far.status_code == 422 and "'date'" in far.json()["detail"], far.text
