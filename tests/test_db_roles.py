"""Least privilege in the database: each service's role can do its job and nothing more.

The roles log in for real (their per-database settings apply only at login), against the
session database on plain PostgreSQL and a TimescaleDB database when one is available.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.auth import create_key
from cli.db import maintain_once
from cli.evaluate import evaluate_all
from domain.registry import sync_device_models
from ingest.writer import BatchWriter
from models.db import migrate
from models.db_roles import (
    API,
    GRANTS,
    INGEST,
    MAINTENANCE,
    OWNER,
    SERVICE_ROLES,
    STAFF,
    _relations,
    enable_logins,
    role_url,
)
from models.settings import Settings
from tests.conftest import throwaway_database
from tests.processes import child_env

DENIED = psycopg.errors.InsufficientPrivilege


@pytest.fixture
def logins(db: psycopg.Connection) -> None:
    enable_logins(db, {})


@pytest.fixture
def seeded(db: psycopg.Connection, logins: None) -> dict[str, int]:
    """One municipality: a public sensor, a private one and a retired one, each with a
    latest value; an API key; an alert; a dead letter."""
    m = db.execute(
        "INSERT INTO municipalities (slug, name) VALUES ('norddjurs', 'Norddjurs') RETURNING id"
    ).fetchone()[0]
    ids = {}
    for external_id, public, status in (
        ("public", True, "active"),
        ("private", False, "active"),
        ("retired", True, "retired"),
    ):
        ids[external_id] = db.execute(
            "INSERT INTO sensors (municipality_id, external_id, name, kind, is_public, status) "
            "VALUES (%s, %s, %s, 'climate', %s, %s) RETURNING id",
            (m, external_id, f"{external_id} room", public, status),
        ).fetchone()[0]
        db.execute("INSERT INTO latest_readings VALUES (%s, 1, now(), 1.0)", (ids[external_id],))
    create_key(db, m, ["admin"])
    db.execute(
        "INSERT INTO alerts (municipality_id, rule, subject, started_at) "
        "VALUES (%s, 'r', 's', now())",
        (m,),
    )
    db.execute(
        "INSERT INTO dead_letters (topic, payload, reason) VALUES ('t', 'x', 'decode_error')"
    )
    ids["municipality"] = m
    return ids


def _connect(database_url: str, role: str) -> psycopg.Connection:
    return psycopg.connect(role_url(database_url, role), autocommit=True)


def test_every_table_has_a_grant_decision_for_every_role(db: psycopg.Connection) -> None:
    """A table a migration adds must say, in models/db_roles.py, what each role may do."""
    tables = set(_relations(db))
    assert tables - set(GRANTS) == set(), "tables without a line in models/db_roles.GRANTS"
    assert set(GRANTS) - tables == set(), "GRANTS names tables the schema does not have"
    for table, by_role in GRANTS.items():
        assert set(by_role) == set(SERVICE_ROLES), table


def test_the_owner_role_owns_every_table_and_function(db: psycopg.Connection) -> None:
    owners = db.execute(
        "SELECT DISTINCT pg_get_userbyid(c.relowner) FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' "
        "AND c.relkind IN ('r', 'p', 'v', 'm') AND c.relname <> 'alembic_version'"
    ).fetchall()
    functions = db.execute(
        "SELECT DISTINCT pg_get_userbyid(proowner) FROM pg_proc WHERE proname LIKE 'iot\\_%'"
    ).fetchall()
    assert owners == [(OWNER,)] and functions == [(OWNER,)]


def test_the_public_api_role_cannot_read_keys_or_private_sensors_and_cannot_write(
    database_url: str, seeded: dict[str, int]
) -> None:
    with _connect(database_url, API) as api:
        for table in ("api_keys", "alerts", "dead_letters", "sites", "zones", "latest_pending"):
            with pytest.raises(DENIED):
                api.execute(f"SELECT count(*) FROM {table}")
        # Only published sensors exist for the public role, whatever the query asks.
        assert api.execute("SELECT external_id FROM sensors ORDER BY id").fetchall() == [
            ("public",)
        ]
        assert api.execute(
            "SELECT count(*) FROM sensors WHERE id = %s", (seeded["private"],)
        ).fetchone() == (0,)
        assert api.execute("SELECT sensor_id FROM latest_readings").fetchall() == [
            (seeded["public"],)
        ]
        for statement in (
            "INSERT INTO sensors (municipality_id, external_id, kind) VALUES (1, 'x', 'other')",
            "UPDATE sensors SET is_public = true",
            "DELETE FROM sensors",
            "INSERT INTO readings VALUES (now(), 1, 1, 1.0)",
            "DELETE FROM readings",
            "UPDATE latest_readings SET value = 0",
            "INSERT INTO municipalities (slug, name) VALUES ('x', 'x')",
            "TRUNCATE readings",
            "SELECT iot_drop_partitions_before('2999-01-01')",
            "SELECT iot_refresh_rollups()",
            "CREATE TABLE mine (x int)",
        ):
            with pytest.raises(DENIED):
                api.execute(statement)
        assert api.execute("SHOW statement_timeout").fetchone() == ("30s",)


def test_the_staff_role_has_a_statement_timeout_and_no_schema_rights(
    database_url: str, logins: None
) -> None:
    with _connect(database_url, STAFF) as staff:
        assert staff.execute("SHOW statement_timeout").fetchone() == ("1min",)
        with pytest.raises(psycopg.errors.QueryCanceled):
            staff.execute("SET statement_timeout = '50ms'")
            staff.execute("SELECT pg_sleep(1)")
        for statement in ("DROP TABLE alerts", "ALTER TABLE sensors ADD COLUMN x int"):
            with pytest.raises(DENIED):
                staff.execute(statement)


def test_ingest_stores_readings_and_creates_partitions_as_its_role(
    database_url: str, seeded: dict[str, int]
) -> None:
    old_day = datetime(2021, 6, 1, 12, tzinfo=UTC)
    rows = [(old_day + timedelta(minutes=m), seeded["public"], 1, 1.0) for m in range(3)]
    with _connect(database_url, INGEST) as ingest:
        assert BatchWriter().write(ingest, rows, []).inserted == 3
        for statement in (
            "SELECT * FROM api_keys",
            "DELETE FROM readings",
            "UPDATE sensors SET name = 'x'",
        ):
            with pytest.raises(DENIED):
                ingest.execute(statement)
    with _connect(database_url, MAINTENANCE) as maintenance:
        done = maintain_once(maintenance, days_ahead=2, retention_days=365 * 3)
        assert done["hours_refreshed"] >= 1
        # Retention detaches and drops the 2021 partition, which only the owner may do.
        assert done["partitions_dropped"] == 1
        assert evaluate_all(maintenance, None) == 0  # alert rules: reads, writes alerts
        with pytest.raises(DENIED):
            maintenance.execute("SELECT * FROM api_keys")


def test_the_api_works_with_its_roles(database_url: str, seeded: dict[str, int], db) -> None:
    """Public and staff routes, reads and writes, with the two API roles of production."""
    sync_device_models(db)
    token = create_key(db, seeded["municipality"], ["admin"]).token
    settings = Settings(
        database_url=role_url(database_url, API),
        staff_database_url=role_url(database_url, STAFF),
    )
    auth = {"Authorization": f"Bearer {token}"}
    with TestClient(create_app(settings)) as client:
        public = client.get("/api/v1/sensors", params={"municipality": "norddjurs"})
        assert [s["id"] for s in public.json()["items"]] == [seeded["public"]]
        assert client.get("/api/v1/latest").status_code == 200
        assert client.get("/health").status_code == 200
        assert client.get("/api/v1/staff/sensors", headers=auth).json()["items"]
        created = client.post(
            "/api/v1/staff/sensors", headers=auth, json={"external_id": "new", "kind": "bin",
                                                          "bin_depth_mm": 900},
        )  # fmt: skip
        assert created.status_code == 201, created.text
        imported = client.post(
            "/api/v1/staff/sensor-imports",
            headers={**auth, "Content-Type": "text/csv"},
            content="external_id,name\nprivate,Renamed\n",
        )
        assert imported.status_code == 200, imported.text
        assert (
            client.post("/api/v1/staff/sites", headers=auth, json={"name": "S"}).status_code == 201
        )
        key = client.post("/api/v1/staff/keys", headers=auth, json={"scopes": ["read-private"]})
        assert key.status_code == 201
        alert = client.get("/api/v1/staff/alerts", headers=auth).json()[0]["id"]
        acknowledged = client.post(f"/api/v1/staff/alerts/{alert}/acknowledge", headers=auth)
        assert acknowledged.status_code == 200


@pytest.fixture
def two_fresh_databases() -> Iterator[tuple[str, str]]:
    with throwaway_database() as first, throwaway_database() as second:
        yield first, second


def test_databases_of_one_server_migrate_at_once_without_fighting_over_roles(
    two_fresh_databases: tuple[str, str],
) -> None:
    # Separate processes: Alembic's migration context is process-wide.
    script = (
        "import sys, psycopg; from models.db import migrate; "
        "from models.db_roles import enable_logins; migrate(sys.argv[1], timescaledb='off'); "
        "enable_logins(psycopg.connect(sys.argv[1], autocommit=True), {})"
    )
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", script, url], env=child_env(), stderr=subprocess.PIPE
        )
        for url in two_fresh_databases
    ]
    failures = [p.stderr.read().decode() for p in processes if p.wait(180) != 0]
    assert failures == []
    for url in two_fresh_databases:
        with _connect(url, API) as api, pytest.raises(DENIED):
            api.execute("SELECT * FROM api_keys")


def test_make_up_runs_each_component_as_its_role(db: psycopg.Connection) -> None:
    from cli.up import COMPONENTS, component_env

    url = "postgresql://postgres@127.0.0.1:5432/kommune_iot"

    def user(name: str) -> str:
        env = component_env(name, url, {})
        return psycopg.conninfo.conninfo_to_dict(env.get("IOT_DATABASE_URL", url))["user"]

    assert {name: user(name) for name, _argv in COMPONENTS} == {
        "ingest": INGEST,
        "api": API,
        "maintenance": MAINTENANCE,
        "evaluate": MAINTENANCE,
        "deliver": MAINTENANCE,  # the outbox worker (outbound/worker.py)
        "simulator": "postgres",  # a development tool that creates municipalities
    }
    staff = component_env("api", url, {API: "s3cret"})["IOT_STAFF_DATABASE_URL"]
    assert staff == "postgresql://iot_staff@127.0.0.1:5432/kommune_iot"
    assert component_env("api", url, {API: "s3cret"})["IOT_DATABASE_URL"] == (
        "postgresql://iot_api:s3cret@127.0.0.1:5432/kommune_iot"
    )
    assert db.execute(
        "SELECT bool_or(rolsuper OR rolcreaterole OR rolcreatedb OR rolbypassrls) "
        "FROM pg_roles WHERE rolname = ANY(%s)",
        (list(SERVICE_ROLES),),
    ).fetchone() == (False,)


def test_later_migrations_can_run_as_the_owner_role(database_url: str, logins: None) -> None:
    """After the superuser's first migration, the owner role can migrate (and re-grant)."""
    migrate(role_url(database_url, OWNER), timescaledb="off")
    with _connect(database_url, API) as api, pytest.raises(DENIED):
        api.execute("SELECT * FROM api_keys")
