"""The public API's database role reads no private sensor's readings or rollups.

Tried as someone holding the public API role's credentials (a leaked IOT_DATABASE_URL, an
injection into the API) would: direct SELECTs, the view and functions the API uses with a
private sensor's id, and a condition built to raise an error carrying a private value.
On both storage backends (a hypertable and continuous aggregates on TimescaleDB, where
row-level security is not available).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from cli.db import maintain_once
from ingest.writer import BatchWriter
from models.db_roles import API, enable_logins, role_url
from models.settings import Settings

pytestmark = pytest.mark.storage

DENIED = psycopg.errors.InsufficientPrivilege
# Private values end in .25 so that no published value equals one of them.
PRIVATE_VALUE = 1234.25


@pytest.fixture
def fleet(db: psycopg.Connection) -> dict:
    """A published sensor, a private one and a retired one with a day of CO2 readings
    every 10 minutes up to the last full hour, the rollups refreshed."""
    enable_logins(db, {})
    m = db.execute(
        "INSERT INTO municipalities (slug, name) VALUES ('syddjurs', 'Syddjurs') RETURNING id"
    ).fetchone()[0]
    metric = db.execute("SELECT id FROM metrics WHERE name = 'co2_ppm'").fetchone()[0]
    ids = {}
    for name, public, status in (
        ("public", True, "active"),
        ("private", False, "active"),
        ("retired", True, "retired"),
    ):
        ids[name] = db.execute(
            "INSERT INTO sensors (municipality_id, external_id, name, kind, is_public, status) "
            "VALUES (%s, %s, %s, 'climate', %s, %s) RETURNING id",
            (m, name, f"{name} room", public, status),
        ).fetchone()[0]
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    start = end - timedelta(days=1)
    rows = []
    for i in range(144):
        t = start + timedelta(minutes=10 * i)
        rows.append((t, ids["public"], metric, 500.5 + i))
        rows.append((t, ids["private"], metric, PRIVATE_VALUE + i))
        rows.append((t, ids["retired"], metric, PRIVATE_VALUE + i))
    assert BatchWriter().write(db, rows, []).inserted == len(rows)
    maintain_once(db, days_ahead=1, retention_days=0)
    return {**ids, "metric": metric, "start": start, "end": end, "municipality": m}


def _api(database_url: str) -> psycopg.Connection:
    return psycopg.connect(role_url(database_url, API), autocommit=True)


def test_the_public_role_cannot_read_readings_or_rollups_directly(
    database_url: str, fleet: dict
) -> None:
    with _api(database_url) as api:
        for table in ("readings", "readings_hourly", "readings_daily"):
            with pytest.raises(DENIED):
                api.execute(f"SELECT * FROM {table} WHERE sensor_id = %s", (fleet["private"],))


def test_the_view_and_functions_let_out_published_sensors_only(
    database_url: str, fleet: dict
) -> None:
    asked = [fleet["public"], fleet["private"], fleet["retired"]]
    args = (asked, fleet["metric"], fleet["start"], fleet["end"], 10_000)
    with _api(database_url) as api:
        seen = api.execute(
            "SELECT DISTINCT sensor_id FROM published_readings WHERE sensor_id = ANY(%s)",
            (asked,),
        ).fetchall()
        assert seen == [(fleet["public"],)]
        raw = api.execute(
            "SELECT DISTINCT sensor_id FROM iot_published_readings(%s, %s::smallint, %s, %s, %s)",
            args,
        ).fetchall()
        assert raw == [(fleet["public"],)]
        for width in ("5min", "hour", "day"):
            buckets = api.execute(
                "SELECT sensor_id, count(*) FROM iot_published_buckets("
                "%s, %s, %s::smallint, %s, %s, %s) GROUP BY 1",
                (width, *args),
            ).fetchall()
            assert [sensor for sensor, _ in buckets] == [fleet["public"]], width
            assert buckets[0][1] > 0, width
        first_days = api.execute(
            "SELECT sensor_id FROM iot_published_first_days() WHERE sensor_id = ANY(%s)",
            (asked,),
        ).fetchall()
        assert {row[0] for row in first_days} <= {fleet["public"]}
        with pytest.raises(psycopg.errors.InvalidParameterValue):
            api.execute(
                "SELECT * FROM iot_published_buckets('week', %s, %s::smallint, %s, %s, %s)",
                args,
            )


def test_the_latest_values_function_lets_out_published_sensors_only(
    database_url: str, db: psycopg.Connection, fleet: dict
) -> None:
    """``iot_published_latest`` runs with the owner's rights, which row-level security does
    not restrict: its own filter is all that keeps private and retired sensors out."""
    asked = [fleet["public"], fleet["private"], fleet["retired"]]
    stored = {row[0] for row in db.execute("SELECT sensor_id FROM latest_readings").fetchall()}
    assert set(asked) <= stored  # every one has latest values to leak
    calls = [
        (None, None, None, None, 0, 10_000),
        (None, None, None, asked, 0, 10_000),
        ("syddjurs", "climate", "co2_ppm", asked, 0, 10_000),
        (None, None, None, [fleet["private"]], 0, 10_000),
        (None, None, None, None, fleet["public"], 10_000),  # the page after the public one
    ]
    with _api(database_url) as api:
        for args in calls:
            rows = api.execute(
                "SELECT sensor_id, metric, value FROM iot_published_latest("
                "%s, %s, %s, %s::bigint[], %s, %s)",
                args,
            ).fetchall()
            assert {row[0] for row in rows} <= {fleet["public"]}, args
            assert all(value is None or value < PRIVATE_VALUE for _, _, value in rows), args
        everything = api.execute(
            "SELECT sensor_id, metric FROM iot_published_latest(NULL, NULL, NULL, NULL, 0, 10)"
        ).fetchall()
        assert everything == [(fleet["public"], "co2_ppm")]


def test_an_error_raising_condition_cannot_probe_private_values(
    database_url: str, fleet: dict
) -> None:
    """Casting a value's text to an integer fails with the value in the message, for any
    row the cast sees: the view's filter must have removed private rows before.

    ``sensor_id + 0`` keeps the planner from deriving the sensor's id for the view's own
    lookup of sensors, and without nested loops and merge joins (settings anyone may
    change) readings are scanned whole for a hash join: without the security barrier the
    cast runs on the private rows and its error shows "1234.25" (seen with the same view
    defined without it, on both backends)."""
    probe = (
        "SELECT count(*) FROM published_readings "
        "WHERE sensor_id + 0 = %s AND (value::text)::integer = 0"
    )
    with _api(database_url) as api:
        api.execute("SET enable_nestloop = off")
        api.execute("SET enable_mergejoin = off")
        assert api.execute(probe, (fleet["private"],)).fetchone() == (0,)
        with pytest.raises(psycopg.errors.InvalidTextRepresentation):
            # The same condition on published rows does run ("500.5" is no integer).
            api.execute(probe, (fleet["public"],))


def test_the_api_serves_readings_and_exports_as_its_role(database_url: str, fleet: dict) -> None:
    settings = Settings(database_url=role_url(database_url, API))
    span = {"from": fleet["start"].isoformat(), "to": fleet["end"].isoformat()}
    with TestClient(create_app(settings)) as client:
        for bucket, expected in (("raw", 144), ("5min", 144), ("hour", 24), ("day", None)):
            response = client.get(
                "/api/v1/readings",
                params={"sensor_id": fleet["public"], "metric": "co2_ppm", "bucket": bucket,
                        **span},
            )  # fmt: skip
            assert response.status_code == 200, (bucket, response.text)
            items = response.json()["items"]
            assert items and {item["sensor_id"] for item in items} == {fleet["public"]}
            if expected is not None:
                assert len(items) == expected, bucket
        # Paging (two branches of the keyset query) through every raw row exactly once.
        seen, cursor = [], None
        while True:
            params = {"sensor_id": fleet["public"], "metric": "co2_ppm", "limit": 50, **span}
            body = client.get("/api/v1/readings", params={**params, "cursor": cursor}
                              if cursor else params).json()  # fmt: skip
            seen += [item["time"] for item in body["items"]]
            cursor = body["next_cursor"]
            if cursor is None:
                break
        assert len(seen) == len(set(seen)) == 144
        private = client.get(
            "/api/v1/readings", params={"sensor_id": fleet["private"], "metric": "co2_ppm"}
        )
        assert private.status_code == 404
        export = client.get("/api/v1/export/syddjurs/readings.csv", params=span)
        assert export.status_code == 200, export.text
        lines = export.text.splitlines()
        assert len(lines) == 1 + 144
        assert all(line.split(",")[1] == str(fleet["public"]) for line in lines[1:])
        assert str(PRIVATE_VALUE) not in export.text
        latest = client.get("/api/v1/latest", params={"limit": 10_000})
        assert latest.status_code == 200, latest.text
        assert [item["sensor_id"] for item in latest.json()["items"]] == [fleet["public"]]
        assert latest.json()["items"][0]["values"]["co2_ppm"]["value"] < PRIVATE_VALUE
        private_latest = client.get("/api/v1/latest", params={"sensor_id": fleet["private"]})
        assert private_latest.json() == {"items": [], "next_cursor": None}
        catalog = client.get("/api/v1/catalog.jsonld")
        assert catalog.status_code in (200, 404), catalog.text


OBSERVATIONS = (
    "SELECT * FROM iot_published_observations(%s, %s::smallint, %s::smallint, %s, %s, %s, %s)"
)


@pytest.mark.parametrize("descending", [False, True])
@pytest.mark.parametrize("res", [0, 1, 2])
def test_the_observations_function_lets_out_published_sensors_only(
    database_url: str, fleet: dict, res: int, descending: bool
) -> None:
    """SensorThings and NGSI-LD pages of one Datastream (migration 0025), asked for by a
    private or retired sensor's id, raw and rolled up, in either direction, with and
    without time bounds, and with a condition that would raise on any value it saw."""
    with _api(database_url) as api:
        for bounds in ((None, None), (fleet["start"] - timedelta(days=1), fleet["end"])):
            args = (fleet["metric"], res, *bounds, descending, 10_000)
            public = api.execute(OBSERVATIONS, (fleet["public"], *args)).fetchall()
            assert public and {row[0] for row in public} == {fleet["public"]}
            for hidden in (fleet["private"], fleet["retired"]):
                assert api.execute(OBSERVATIONS, (hidden, *args)).fetchall() == []
                probe = f"SELECT count(*) FROM ({OBSERVATIONS}) o WHERE (o.result::text)::int = 0"
                assert api.execute(probe, (hidden, *args)).fetchone() == (0,)


def test_sensorthings_and_ngsi_ld_serve_no_private_observations(
    database_url: str, fleet: dict
) -> None:
    """Through the API as its role: a private or retired sensor's Datastreams are 404 and
    no filter naming them returns a row or counts one."""
    settings = Settings(database_url=role_url(database_url, API))
    with TestClient(create_app(settings)) as client:
        for hidden in (fleet["private"], fleet["retired"]):
            for res in (0, 1, 2):
                stream = hidden * 100_000 + fleet["metric"] * 10 + res
                path = f"/sta/v1.1/Datastreams({stream})/Observations"
                assert client.get(path).status_code == 404
                for query in (
                    {"$filter": f"Datastream/id eq {stream}"},
                    {"$filter": f"Datastream/id eq {stream} and result gt 0", "$count": "true"},
                    {"$filter": f"Datastream/id eq {stream}", "$orderby": "result desc"},
                ):
                    body = client.get("/sta/v1.1/Observations", params=query).json()
                    assert body["value"] == [] and body.get("@iot.count", 0) == 0, body
        public = fleet["public"] * 100_000 + fleet["metric"] * 10
        page = client.get(f"/sta/v1.1/Datastreams({public})/Observations").json()
        assert page["value"] and str(PRIVATE_VALUE)[:4] not in str(page)
