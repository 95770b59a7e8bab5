"""POST /api/v1/staff/historic-imports: a dry run by default, stores with dry_run=false,
only ever into the caller's municipality."""

from __future__ import annotations

import json
from collections.abc import Iterator

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from domain.registry import sync_device_models
from models.settings import Settings
from tests.ingest.test_historic import _drop_partitions_made_here  # noqa: F401 (autouse)
from tests.staff.test_staff_api import Tenant, _tenant, auth

URL = "/api/v1/staff/historic-imports"
MAPPING = json.dumps(
    {
        "time": "Tidspunkt",
        "timezone": "Europe/Copenhagen",
        "sensor": "Måler",
        "metrics": {"CO2 (ppm)": "co2_ppm", "RH": "humidity_pct"},
        "units": {"RH": "fraction"},
    }
)
# Semicolons and a decimal comma, as Excel writes CSV in a Danish locale.
CSV = (
    "Måler;Tidspunkt;CO2 (ppm);RH\n"
    "aarhus-room-1;2025-01-15 08:00;612;0,41\n"
    "aarhus-room-1;2025-01-15 08:10;655;0,43\n"
    "aarhus-room-1;2025-01-15 08:20;-5;0,44\n"
    "odder-room-1;2025-01-15 08:20;700;0,40\n"
).encode()


@pytest.fixture
def pair(db: psycopg.Connection) -> tuple[Tenant, Tenant]:
    sync_device_models(db)
    return _tenant(db, "aarhus", "a81758fffe0a0001", 1), _tenant(db, "odder", "a81758fffe0b0001", 2)


@pytest.fixture
def api(database_url: str) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(database_url=database_url))) as test_client:
        yield test_client


def _post(client: TestClient, token: str, dry_run: str | None = None, mapping: str = MAPPING):
    params = {"dry_run": dry_run} if dry_run is not None else None
    return client.post(
        URL,
        headers=auth(token),
        params=params,
        files={"file": ("klima.csv", CSV, "text/csv")},
        data={"mapping": mapping},
    )


def _readings(db: psycopg.Connection, sensor: int) -> int:
    return db.execute("SELECT count(*) FROM readings WHERE sensor_id = %s", (sensor,)).fetchone()[0]


def test_dry_run_by_default_then_stored_then_nothing_twice(
    api: TestClient, pair: tuple[Tenant, Tenant], db: psycopg.Connection
) -> None:
    a, b = pair
    before_a, before_b = _readings(db, a.sensor), _readings(db, b.sensor)
    dry = _post(api, a.admin)
    assert dry.status_code == 200, dry.text
    report = dry.json()
    assert report["dry_run"] is True
    assert (report["readings"], report["stored"]) == (5, 5)
    assert report["refused"]["co2_ppm outside its plausible range"] == {"count": 1, "lines": [4]}
    assert report["refused"]["sensor not registered in the municipality"]["lines"] == [5, 5]
    assert report["first_time"] == "2025-01-15T07:00:00+00:00"  # 08:00 in Copenhagen, winter
    assert _readings(db, a.sensor) == before_a

    stored = _post(api, a.admin, "false").json()
    assert stored["stored"] == 5 and stored["dry_run"] is False
    assert _readings(db, a.sensor) == before_a + 5
    rh = db.execute(
        "SELECT r.value FROM readings r JOIN metrics m ON m.id = r.metric_id "
        "WHERE r.sensor_id = %s AND m.name = 'humidity_pct' ORDER BY r.time LIMIT 1",
        (a.sensor,),
    ).fetchone()
    assert rh == (41.0,)
    again = _post(api, a.admin, "false").json()
    assert (again["stored"], again["already_stored"]) == (0, 5)
    assert _readings(db, b.sensor) == before_b


def test_scope_and_mapping_errors(api: TestClient, pair: tuple[Tenant, Tenant]) -> None:
    a, _ = pair
    assert _post(api, a.reader).status_code == 403
    not_json = _post(api, a.admin, mapping="{time: x}")
    assert not_json.status_code == 422 and "'mapping'" in not_json.json()["detail"]
    wrong_column = _post(api, a.admin, mapping=MAPPING.replace("Tidspunkt", "Tid"))
    assert wrong_column.status_code == 422
    assert "['Tid'] are not in the file" in wrong_column.json()["detail"]
    unknown_metric = _post(api, a.admin, mapping=MAPPING.replace("co2_ppm", "co2"))
    assert unknown_metric.status_code == 422 and "unknown metric" in unknown_metric.text


def test_unreadable_files_are_refused_not_crashed_on(
    api: TestClient, pair: tuple[Tenant, Tenant]
) -> None:
    a, _ = pair
    for name, content in (
        ("broken.xlsx", b"PK\x03\x04 not really a workbook"),
        ("nul.csv", b"Tidspunkt,M\x00ler\n\x81\x00,1\n"),
    ):
        response = api.post(
            URL,
            headers=auth(a.admin),
            files={"file": (name, content)},
            data={"mapping": MAPPING},
        )
        assert response.status_code == 422, response.text
        assert response.json()["detail"].startswith(("form field 'file'", "form field 'mapping'"))
