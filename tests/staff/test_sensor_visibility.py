"""Registering a sensor again through the staff API changes only what the request names:
a private sensor stays private (out of the open-data API and the DCAT catalogue) and keeps
its position, and every change of visibility is reported back."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from domain.registry import sync_device_models
from models.settings import Settings
from tests.staff.test_staff_api import Tenant, _tenant, auth


@pytest.fixture
def tenants(db) -> tuple[Tenant, Tenant]:
    sync_device_models(db)
    return _tenant(db, "aarhus", "a81758fffe0a0001", 1), _tenant(db, "odder", "a81758fffe0b0001", 2)


@pytest.fixture
def client(database_url: str) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(database_url=database_url))) as c:
        yield c


CSV = {"Content-Type": "text/csv"}


def _published(client: TestClient, sensor_id: int) -> bool:
    public = client.get("/api/v1/sensors", params={"municipality": "aarhus", "limit": 1000})
    assert public.status_code == 200
    ids = {item["id"] for item in public.json()["items"]}
    catalogue = client.get("/api/v1/catalog.jsonld").text
    in_catalogue = "/catalog/datasets/aarhus-climate" in catalogue
    assert (sensor_id in ids) == in_catalogue  # the fixture's only aarhus sensor
    return sensor_id in ids


def _position(client: TestClient, tenant: Tenant) -> tuple:
    row = client.get(f"/api/v1/staff/sensors/{tenant.sensor}", headers=auth(tenant.reader)).json()
    return row["name"], row["lat"], row["lon"], row["zone"], row["is_public"]


def test_posting_a_sensor_again_without_visibility_keeps_it_private(client, tenants) -> None:
    a, _ = tenants
    before = _position(client, a)
    assert not _published(client, a.sensor)
    again = client.post(
        "/api/v1/staff/sensors",
        headers=auth(a.admin),
        json={"external_id": "aarhus-room-1", "kind": "climate", "expected_interval_s": 600},
    )
    assert again.status_code == 201, again.text
    assert _position(client, a) == before
    assert not _published(client, a.sensor)
    assert again.json() == {
        "id": a.sensor,
        "action": "updated",
        "is_public": False,
        "was_public": False,
        "visibility_changed": False,
    }


def test_reuploading_a_csv_without_visibility_keeps_it_private(client, tenants) -> None:
    a, _ = tenants
    before = _position(client, a)
    upload = client.post(
        "/api/v1/staff/sensor-imports",
        headers={**auth(a.admin), **CSV},
        content="external_id,kind\naarhus-room-1,climate\n",
    )
    assert upload.status_code == 200, upload.text
    assert _position(client, a) == before
    assert not _published(client, a.sensor)
    assert upload.json()["visibility_changes"] == []


def test_a_change_of_visibility_is_reported(client, tenants) -> None:
    a, _ = tenants
    published = client.post(
        "/api/v1/staff/sensors",
        headers=auth(a.admin),
        json={"external_id": "aarhus-room-1", "is_public": True},
    )
    assert published.status_code == 201, published.text
    assert published.json()["visibility_changed"] is True
    assert published.json()["was_public"] is False
    assert _published(client, a.sensor)
    hidden = client.post(
        "/api/v1/staff/sensor-imports",
        headers={**auth(a.admin), **CSV},
        content="external_id,is_public\naarhus-room-1,nej\n",
    ).json()
    assert [
        (c["external_id"], c["was_public"], c["is_public"]) for c in hidden["visibility_changes"]
    ] == [("aarhus-room-1", True, False)]
    assert not _published(client, a.sensor)
