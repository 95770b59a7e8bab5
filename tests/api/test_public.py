"""Public endpoints against the real database: shapes, filters, and no private leaks."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from models.settings import Settings
from tests.api.conftest import HIDDEN_IDS, PUBLIC_IDS, Fleet

# Runs on plain PostgreSQL and on TimescaleDB (tests/conftest.py).
pytestmark = pytest.mark.storage


def test_health_reports_database_backend_and_newest_reading(
    client: TestClient, fleet: Fleet, backend: str
) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["storage_backend"] == {"postgres": "postgresql"}.get(backend, backend)
    assert body["last_reading_at"].startswith("2026-03-03T23:50:00")
    # TimescaleDB's jobs are listed when their last run failed (tests/test_timescaledb.py).
    assert isinstance(body["failing_jobs"], list)
    if backend == "postgres":
        assert body["failing_jobs"] == []


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


def test_sensors_list_only_public_active_sensors_with_model_and_last_seen(
    client: TestClient, fleet: Fleet
) -> None:
    response = client.get("/api/v1/sensors")
    assert response.status_code == 200
    items = response.json()["items"]
    assert [s["id"] for s in items] == list(PUBLIC_IDS)
    first = items[0]
    assert first["vendor"] == "Elsys" and first["model"] == "ERS CO2"
    assert first["municipality"] == "aarhus"
    assert first["metrics"] == ["co2_ppm", "temperature_c"]
    assert first["last_seen"].startswith("2026-03-03T23:50:00")
    assert response.json()["next_cursor"] is None


def test_sensor_pages_follow_the_cursor_without_gaps_or_repeats(
    client: TestClient, fleet: Fleet
) -> None:
    seen: list[int] = []
    cursor = None
    for _ in range(5):
        params = {"limit": 1, **({"cursor": cursor} if cursor else {})}
        page = client.get("/api/v1/sensors", params=params).json()
        seen += [s["id"] for s in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(PUBLIC_IDS)


def test_sensor_filters_by_municipality_and_kind(client: TestClient, fleet: Fleet) -> None:
    ids = lambda **p: [s["id"] for s in client.get("/api/v1/sensors", params=p).json()["items"]]  # noqa: E731
    assert ids(municipality="odense") == [5]
    assert ids(kind="bin") == [3]
    assert ids(municipality="aarhus", kind="parking") == []


def test_tampered_cursor_is_400_saying_how_to_recover(client: TestClient, fleet: Fleet) -> None:
    cursor = client.get("/api/v1/sensors", params={"limit": 1}).json()["next_cursor"]
    for bad in (cursor[:-3] + "xyz", "not-a-cursor", cursor + "AAAA"):
        response = client.get("/api/v1/sensors", params={"limit": 1, "cursor": bad})
        assert response.status_code == 400, bad
        assert "cursor" in response.json()["detail"]


def test_cursor_from_other_filters_is_refused(client: TestClient, fleet: Fleet) -> None:
    cursor = client.get("/api/v1/sensors", params={"limit": 1}).json()["next_cursor"]
    response = client.get("/api/v1/sensors", params={"cursor": cursor, "kind": "bin"})
    assert response.status_code == 400
    assert "other filters" in response.json()["detail"]


def test_sensors_geojson_puts_longitude_first_and_null_geometry_for_unplaced(
    client: TestClient, fleet: Fleet
) -> None:
    response = client.get("/api/v1/sensors.geojson")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/geo+json")
    collection = response.json()
    assert collection["type"] == "FeatureCollection"
    by_id = {f["id"]: f for f in collection["features"]}
    assert set(by_id) == set(PUBLIC_IDS)
    assert by_id[1]["geometry"] == {"type": "Point", "coordinates": [10.2107, 56.1572]}
    assert by_id[3]["geometry"] is None
    assert by_id[1]["properties"]["kind"] == "climate"


def test_hidden_sensor_ids_answer_404_like_missing_ones(client: TestClient, fleet: Fleet) -> None:
    assert client.get("/api/v1/sensors/1").status_code == 200
    for sensor_id in (*HIDDEN_IDS, 999):
        response = client.get(f"/api/v1/sensors/{sensor_id}")
        assert response.status_code == 404
        assert response.json()["detail"] == (
            f"no public sensor with id {sensor_id}; see /api/v1/sensors"
        )
        readings = client.get(
            "/api/v1/readings", params={"sensor_id": [1, sensor_id], "metric": "co2_ppm"}
        )
        assert readings.status_code == 404
        assert str(sensor_id) in readings.json()["detail"]


def test_latest_has_one_item_per_public_sensor_with_each_metric(
    client: TestClient, fleet: Fleet
) -> None:
    body = client.get("/api/v1/latest").json()
    assert [item["sensor_id"] for item in body["items"]] == list(PUBLIC_IDS)
    first = body["items"][0]
    assert first["values"]["co2_ppm"]["value"] == fleet.co2_by_sensor[1][-1]
    assert first["values"]["co2_ppm"]["time"].startswith("2026-03-03T23:50:00")
    assert set(first["values"]) == {"co2_ppm", "temperature_c"}
    only_co2 = client.get("/api/v1/latest", params={"metric": "co2_ppm", "sensor_id": [5, 2]})
    assert [i["sensor_id"] for i in only_co2.json()["items"]] == [5]
    assert set(only_co2.json()["items"][0]["values"]) == {"co2_ppm"}


def test_latest_pages_by_sensor(client: TestClient, fleet: Fleet) -> None:
    first = client.get("/api/v1/latest", params={"limit": 2}).json()
    assert [i["sensor_id"] for i in first["items"]] == [1, 3]
    rest = client.get("/api/v1/latest", params={"limit": 2, "cursor": first["next_cursor"]})
    assert [i["sensor_id"] for i in rest.json()["items"]] == [5]
    assert rest.json()["next_cursor"] is None


def test_etag_answers_304_when_unchanged_and_cache_control_is_short_for_latest(
    client: TestClient, fleet: Fleet
) -> None:
    response = client.get("/api/v1/latest")
    etag = response.headers["etag"]
    assert etag.startswith('W/"')
    assert response.headers["cache-control"] == "public, max-age=30"
    again = client.get("/api/v1/latest", headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""
    other = client.get("/api/v1/latest", headers={"If-None-Match": 'W/"other"'})
    assert other.status_code == 200


def test_responses_are_gzipped_and_carry_cors_and_security_headers(
    client: TestClient, fleet: Fleet
) -> None:
    response = client.get(
        "/api/v1/sensors",
        headers={"Accept-Encoding": "gzip", "Origin": "https://example.org"},
        params={"limit": 10},
    )
    assert response.headers["access-control-allow-origin"] == "*"
    assert response.headers["x-content-type-options"] == "nosniff"
    big = client.get("/api/v1/openapi.json", headers={"Accept-Encoding": "gzip"})
    assert big.headers["content-encoding"] == "gzip"


def test_health_is_503_with_json_when_the_database_is_unreachable(settings: Settings) -> None:
    # A database name that does not exist on the real server: every connection fails.
    unreachable = settings.model_copy(
        update={"database_url": settings.database_url.rsplit("/", 1)[0] + "/no_such_db_x"}
    )
    with TestClient(create_app(unreachable)) as client:
        response = client.get("/health")
    assert response.status_code == 503
    assert response.json()["status"] == "unavailable"
    assert response.headers["cache-control"] == "no-store"


def test_the_served_app_keeps_the_garbage_collector_out_of_the_latency_tail(
    settings: Settings,
) -> None:
    """`python -m cli api` serves create_served_app(): start-up objects frozen out of
    collections and a larger young-generation threshold; create_app() alone leaves the
    process's collector as it is."""
    import gc

    from api.app import GC_YOUNG_THRESHOLD, create_served_app

    before = gc.get_threshold()
    try:
        with TestClient(create_app(settings)):
            assert gc.get_threshold() == before
        gc.unfreeze()
        with TestClient(create_served_app(settings)) as client:
            assert client.get("/health").status_code == 200
            assert gc.get_threshold()[0] == GC_YOUNG_THRESHOLD
            assert gc.get_freeze_count() > 10_000
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
