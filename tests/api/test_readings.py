"""GET /api/v1/readings: raw and bucketed values against what was seeded, limits, paging."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import Fleet

# Runs on plain PostgreSQL and on TimescaleDB (tests/conftest.py).
pytestmark = pytest.mark.storage

URL = "/api/v1/readings"
DAY = {"from": "2026-03-01T00:00:00Z", "to": "2026-03-02T00:00:00Z"}


def test_raw_readings_are_the_stored_values_in_time_order(client: TestClient, fleet: Fleet) -> None:
    response = client.get(URL, params={"sensor_id": 1, "metric": "co2_ppm", **DAY})
    assert response.status_code == 200
    body = response.json()
    assert body["unit"] == "ppm" and body["bucket"] == "raw"
    values = [item["value"] for item in body["items"]]
    assert values == fleet.co2_by_sensor[1][:144].tolist()
    assert body["items"][0]["time"] == "2026-03-01T00:00:00Z"


@pytest.mark.parametrize("bucket", ["5min", "hour", "day"])
def test_bucketed_aggregates_match_numpy_over_the_raw_values(
    client: TestClient, fleet: Fleet, bucket: str
) -> None:
    response = client.get(
        URL,
        params={
            "sensor_id": 5,
            "metric": "co2_ppm",
            "bucket": bucket,
            "from": "2026-03-01T00:00:00Z",
            "to": "2026-03-04T00:00:00Z",
            "limit": 10000,
            # The seeded days are UTC days (local days: tests/api/test_local_days.py).
            "tz": "UTC",
        },
    )
    assert response.status_code == 200, response.text
    items = response.json()["items"]
    per_bucket = {"5min": 1, "hour": 6, "day": 144}[bucket]
    expected = fleet.co2_by_sensor[5].reshape(-1, per_bucket)
    assert len(items) == expected.shape[0]
    np.testing.assert_allclose([i["avg"] for i in items], expected.mean(axis=1))
    np.testing.assert_allclose([i["max"] for i in items], expected.max(axis=1))
    np.testing.assert_allclose([i["min"] for i in items], expected.min(axis=1))
    assert {i["count"] for i in items} == {per_bucket}


def test_agg_selects_fields_and_unaligned_range_widens_to_whole_hours(
    client: TestClient, fleet: Fleet
) -> None:
    params = {
        "sensor_id": 1,
        "metric": "co2_ppm",
        "bucket": "hour",
        "agg": "avg,count",
        "from": "2026-03-01T00:30:00+01:00",
        "to": "2026-03-01T01:10:00Z",
    }
    items = client.get(URL, params=params).json()["items"]
    # [23:00Z, 02:00Z) after widening; data starts at 00:00Z
    assert [i["time"] for i in items] == ["2026-03-01T00:00:00Z", "2026-03-01T01:00:00Z"]
    assert set(items[0]) == {"sensor_id", "time", "avg", "count"}


def test_pages_cover_several_sensors_without_gaps(client: TestClient, fleet: Fleet) -> None:
    params = {
        "sensor_id": [5, 1],
        "metric": "co2_ppm",
        "bucket": "hour",
        "limit": 7,
        "from": "2026-03-01T00:00:00Z",
        "to": "2026-03-01T10:00:00Z",
    }
    got: list[tuple[int, str]] = []
    while True:
        body = client.get(URL, params=params).json()
        got += [(i["sensor_id"], i["time"]) for i in body["items"]]
        if body["next_cursor"] is None:
            break
        params["cursor"] = body["next_cursor"]
    assert len(got) == 20 and len(set(got)) == 20
    assert got == sorted(got)


def test_five_minute_pages_never_split_a_bucket(client: TestClient, fleet: Fleet) -> None:
    params = {"sensor_id": 1, "metric": "co2_ppm", "bucket": "5min", "limit": 5, **DAY}
    first = client.get(URL, params=params).json()
    second = client.get(URL, params={**params, "cursor": first["next_cursor"]}).json()
    times = [i["time"] for i in first["items"] + second["items"]]
    assert len(times) == len(set(times)) == 10
    assert second["items"][0]["time"] == "2026-03-01T00:50:00Z"


@pytest.mark.parametrize(
    ("params", "status", "fragment"),
    [
        (
            {
                "sensor_id": 1,
                "metric": "co2_ppm",
                "from": "2026-01-01T00:00:00Z",
                "to": "2026-03-01T00:00:00Z",
            },
            400,
            "31 days, the limit for bucket=raw",
        ),
        (
            {"sensor_id": 1, "metric": "co2_ppm", "from": "2026-03-01T00:00:00"},
            400,
            "'from' needs a timezone",
        ),
        (
            {
                "sensor_id": 1,
                "metric": "co2_ppm",
                "from": "2026-03-02T00:00:00Z",
                "to": "2026-03-01T00:00:00Z",
            },
            400,
            "'from' must be before 'to'",
        ),
        ({"sensor_id": 1, "metric": "no_such_metric"}, 400, "unknown metric 'no_such_metric'"),
        ({"sensor_id": 1, "metric": "co2_ppm", "agg": "avg"}, 400, "'agg' applies to bucketed"),
        (
            {"sensor_id": 1, "metric": "co2_ppm", "bucket": "hour", "agg": "mean"},
            400,
            "subset of avg,min,max,count",
        ),
        ({"sensor_id": list(range(1, 102)), "metric": "co2_ppm"}, 400, "at most 100 sensors"),
        ({"sensor_id": 1, "metric": "co2_ppm", "limit": 10001}, 422, "query parameter 'limit'"),
        ({"metric": "co2_ppm"}, 422, "query parameter 'sensor_id'"),
        ({"sensor_id": 1, "metric": "co2_ppm", "bucket": "week"}, 422, "query parameter 'bucket'"),
    ],
)
def test_bad_parameters_get_a_4xx_naming_the_parameter_and_limit(
    client: TestClient, fleet: Fleet, params: dict, status: int, fragment: str
) -> None:
    response = client.get(URL, params=params)
    assert response.status_code == status, response.text
    assert fragment in response.json()["detail"]


def test_closed_historic_ranges_may_be_cached_for_a_day(client: TestClient, fleet: Fleet) -> None:
    response = client.get(URL, params={"sensor_id": 1, "metric": "co2_ppm", **DAY})
    assert response.headers["cache-control"] == "public, max-age=86400"
    recent = client.get(URL, params={"sensor_id": 1, "metric": "co2_ppm"})
    assert recent.headers["cache-control"] == "public, max-age=60"


def test_out_of_range_ids_and_odd_metric_names_are_4xx_not_5xx(
    client: TestClient, fleet: Fleet
) -> None:
    huge = str(2**70)
    assert client.get(URL, params={"sensor_id": huge, "metric": "co2_ppm"}).status_code == 400
    assert client.get("/api/v1/latest", params={"sensor_id": huge}).status_code == 400
    nul = client.get(URL, params={"sensor_id": 1, "metric": "co2\x00ppm"})
    assert nul.status_code == 422 and "'metric'" in nul.json()["detail"]
    export = client.get("/api/v1/export/aarhus/readings.csv", params={"metric": "x\x00"})
    assert export.status_code == 422
