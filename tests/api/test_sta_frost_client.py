"""The SensorThings API as a real client uses it: FROST's Python client (frost-sta-client,
Fraunhofer IOSB) against ``python -m cli api`` (uvicorn) connected as the public API role."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import frost_sta_client as fsc
import httpx
import numpy as np
import psycopg
import pytest

from api.sta.entities import datastream_id
from models.db_roles import API, enable_logins, role_url
from tests.api.conftest import PUBLIC_IDS, Fleet
from tests.processes import free_port, wait_for_port

pytestmark = pytest.mark.storage

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def sta_url(database_url: str, db: psycopg.Connection, tmp_path: Path) -> Iterator[str]:
    """The service root of a uvicorn server of the API, as iot_api."""
    enable_logins(db, {})
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "IOT_DATABASE_URL": role_url(database_url, API),
        "IOT_PUBLIC_BASE_URL": base,
        "IOT_LOG_LEVEL": "WARNING",
    }
    with (tmp_path / "api.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "cli", "api", "--host", "127.0.0.1", "--port", str(port)],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_port(port, timeout=30)
        deadline = time.monotonic() + 30
        while httpx.get(base + "/health").status_code != 200:
            assert time.monotonic() < deadline, "the API never became healthy"
            time.sleep(0.2)
        yield base + "/sta/v1.1"
    finally:
        process.terminate()
        process.wait(10)


def co2(db: psycopg.Connection) -> int:
    return db.execute("SELECT id FROM metrics WHERE name = 'co2_ppm'").fetchone()[0]


def test_frost_client_lists_navigates_and_pages_the_public_data(
    sta_url: str, fleet: Fleet, db: psycopg.Connection
) -> None:
    service = fsc.SensorThingsService(sta_url)
    things = list(service.things().query().list())
    assert [t.id for t in things] == list(PUBLIC_IDS)
    assert things[0].name == "a climate 1"
    assert things[0].properties == {"kind": "climate", "municipality": "aarhus"}

    thing = service.things().find(1)
    locations = list(thing.get_locations().query().list())
    assert locations[0].location["coordinates"] == [10.2107, 56.1572]
    streams = {d.id: d for d in thing.get_datastreams().query().list()}
    raw = datastream_id(1, co2(db), 0)
    assert set(streams) >= {raw, raw + 1, raw + 2}

    stream = service.datastreams().find(raw)
    assert stream.unit_of_measurement.symbol == "ppm"
    # The client follows @iot.nextLink (keyset $skiptoken) through every page.
    observations = list(stream.get_observations().query().top(100).list())
    assert [o.result for o in observations] == list(fleet.co2_by_sensor[1])
    assert len({o.id for o in observations}) == fleet.readings_per_sensor

    one = service.observations().find(observations[5].id)
    assert one.result == fleet.co2_by_sensor[1][5]

    high = list(
        stream.get_observations()
        .query()
        .filter("result gt 1500 and hour(phenomenonTime) lt 12")
        .orderby("phenomenonTime", "desc")
        .top(50)
        .list()
    )
    values = fleet.co2_by_sensor[1]
    hours = (np.arange(len(values)) * 10 // 60) % 24
    expected = values[(values > 1500) & (hours < 12)][::-1]
    assert [o.result for o in high] == list(expected)


def test_frost_client_expands_and_gets_the_standard_error_shape(
    sta_url: str, fleet: Fleet, db: psycopg.Connection
) -> None:
    service = fsc.SensorThingsService(sta_url)
    things = list(
        service.things()
        .query()
        .filter("properties/kind eq 'climate'")
        .expand(
            "Datastreams($filter=ObservedProperty/name eq 'co2_ppm';"
            "$expand=Observations($top=1;$orderby=phenomenonTime desc))"
        )
        .list()
    )
    assert [t.id for t in things] == [1, 5]
    newest = things[1].datastreams.get(0).observations.get(0)
    assert newest.result == fleet.co2_by_sensor[5][-1]
    with pytest.raises(Exception) as error:
        list(service.observations().query().filter("result gt 1").list())
    assert "400" in str(error.value) or "bound" in str(error.value)
    response = httpx.get(sta_url + "/Observations", params={"$filter": "result gt 1"})
    assert response.status_code == 400
    assert set(response.json()) == {"code", "type", "message"}
