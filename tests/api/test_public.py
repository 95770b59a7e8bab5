"""Public endpoints against the real database: shapes, filters, and no private leaks."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.api.conftest import Fleet


def test_health_reports_database_backend_and_newest_reading(
    client: TestClient, fleet: Fleet
) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["storage_backend"] == "postgresql"
    assert body["last_reading_at"].startswith("2026-03-03T23:50:00")


def test_metrics_endpoint_counts_requests_by_route_template(client: TestClient) -> None:
    client.get("/api/v1/municipalities/nowhere")
    text = client.get("/metrics").text
    assert 'route="/api/v1/municipalities/{slug}",status="404"' in text


def test_municipalities_count_only_public_active_sensors(client: TestClient, fleet: Fleet) -> None:
    response = client.get("/api/v1/municipalities")
    assert response.status_code == 200
    by_slug = {m["slug"]: m for m in response.json()}
    assert by_slug["aarhus"]["public_sensors"] == 2
    assert by_slug["aarhus"]["sensors_by_kind"] == {"climate": 1, "bin": 1}
    assert by_slug["odense"]["sensors_by_kind"] == {"climate": 1}
    assert by_slug["aarhus"]["kommune_code"] == "0751"


def test_unknown_municipality_is_404_with_a_helpful_detail(client: TestClient) -> None:
    response = client.get("/api/v1/municipalities/nowhere")
    assert response.status_code == 404
    assert "/api/v1/municipalities" in response.json()["detail"]
