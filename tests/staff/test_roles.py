"""Every staff route asks for its scope: a key (or a signed-in person, whose roles map to
scopes the same way) holding every other scope is refused with 403 naming the one missing.
A new staff route is checked as soon as it exists."""

from __future__ import annotations

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.auth import SCOPES, create_key
from domain.registry import sync_device_models
from models.settings import Settings
from tests.staff.test_audit import _api_routes, outbound_rows
from tests.staff.test_staff_api import Tenant, _tenant, auth

STAFF = ("/api/v1/staff",)


def _required_scopes(app) -> dict[tuple[str, str], str | None]:
    """(method, path) -> the scope its require_scope dependency asks for."""
    found = {}
    for route in _api_routes(app.routes):
        if not route.path.startswith(STAFF):
            continue
        scopes = []
        stack = list(route.dependant.dependencies)
        while stack:
            dependency = stack.pop()
            closure = dict(
                zip(
                    dependency.call.__code__.co_freevars,
                    (c.cell_contents for c in dependency.call.__closure__ or ()),
                    strict=True,
                )
            ) if getattr(dependency.call, "__code__", None) else {}  # fmt: skip
            if "scope" in closure and dependency.call.__qualname__.startswith("require_scope"):
                scopes.append(closure["scope"])
            stack.extend(dependency.dependencies)
        for method in route.methods - {"HEAD"}:
            found[(method, route.path)] = scopes[0] if len(scopes) == 1 else None
    return found


ROUTES = sorted(_required_scopes(create_app(Settings())).items())


def test_every_staff_route_names_exactly_one_scope() -> None:
    missing = [route for route, scope in ROUTES if scope is None]
    assert ROUTES and missing == []


@pytest.fixture
def tenant(db: psycopg.Connection) -> Tenant:
    sync_device_models(db)
    return _tenant(db, "aarhus", "a81758fffe0a0001", 1)


@pytest.fixture
def client(database_url: str) -> TestClient:
    with TestClient(create_app(Settings(database_url=database_url))) as c:
        yield c


@pytest.mark.parametrize(("route", "scope"), ROUTES, ids=[f"{m} {p}" for (m, p), _ in ROUTES])
def test_a_key_without_the_routes_scope_is_refused(client, tenant, db, route, scope) -> None:
    method, path = route
    others = sorted(set(SCOPES) - {scope, "admin"})
    key = create_key(db, tenant.id, others, owner="role test")
    ids = {"sensor_id": tenant.sensor, "site_id": tenant.site, "alert_id": tenant.alert,
           "dead_letter_id": tenant.dead_letter, "key_id": tenant.key, "network": "chirpstack",
           "application_id": "aarhus-app", "model_id": tenant.model,
           **outbound_rows(db, tenant.id)}  # fmt: skip
    url = path.format(**{k: v for k, v in ids.items() if "{" + k + "}" in path})
    response = client.request(method, url, headers=auth(key.token))
    assert response.status_code == 403, response.text
    assert f"'{scope}'" in response.json()["detail"]
