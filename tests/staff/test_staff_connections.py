"""Staff writes reach the database through the API's pools like every other route.

They once opened a new, unpooled connection per request (no limit on how many, none of
the pools' session settings). PostgreSQL counts the sessions established to a database
(pg_stat_database.sessions), which is what a connection per request shows up in.
"""

from __future__ import annotations

import time

import psycopg
from fastapi.testclient import TestClient

from api.app import create_app
from models.settings import Settings
from tests.staff.test_staff_api import Tenant, auth, tenants  # noqa: F401 (fixture)

WRITES = 15


def _sessions(db: psycopg.Connection) -> int:
    time.sleep(1.0)  # backends report their session when they flush statistics (at exit)
    db.execute("SELECT pg_stat_clear_snapshot()")
    row = db.execute(
        "SELECT sessions FROM pg_stat_database WHERE datname = current_database()"
    ).fetchone()
    assert row is not None
    return int(row[0])


def _staff_writes(client: TestClient, tenant: Tenant, n: int) -> None:
    """`n` rounds of the staff writes that use the blocking service code."""
    headers = auth(tenant.admin)
    for i in range(n):
        issued = client.post("/api/v1/staff/keys", headers=headers, json={"scopes": ["admin"]})
        assert issued.status_code == 201, issued.text
        revoked = client.delete(f"/api/v1/staff/keys/{issued.json()['id']}", headers=headers)
        assert revoked.status_code == 204
        ack = client.post(f"/api/v1/staff/alerts/{tenant.alert}/acknowledge", headers=headers)
        assert ack.status_code in (200, 404), ack.text
        imported = client.post(
            "/api/v1/staff/sensor-imports",
            headers={**headers, "Content-Type": "text/csv"},
            content=f"external_id,kind\nroom-{i},climate\n",
        )
        assert imported.status_code == 200, imported.text
        replayed = client.post(
            f"/api/v1/staff/dead-letters/{tenant.dead_letter}/replay", headers=headers
        )
        assert replayed.status_code in (200, 409), replayed.text


def test_staff_writes_reuse_pooled_connections(
    database_url: str,
    tenants: tuple[Tenant, Tenant],  # noqa: F811
    db: psycopg.Connection,
) -> None:
    settings = Settings(database_url=database_url, db_staff_write_pool_max=2)
    with TestClient(create_app(settings)) as client:
        _staff_writes(client, tenants[0], 1)  # the pools open their connections
        before = _sessions(db)
        _staff_writes(client, tenants[0], WRITES)
        after = _sessions(db)
    # 5 * WRITES requests through the blocking service code: a handful of new sessions at
    # most (a pool replacing a connection), not one per request.
    assert after - before <= 3, f"{after - before} sessions for {5 * WRITES} staff writes"


def test_reports_queue_among_themselves_not_in_front_of_staff_writes(
    database_url: str,
    tenants: tuple[Tenant, Tenant],  # noqa: F811
) -> None:
    """Every report connection busy (large reports running): a staff write still goes
    through at once, and another report waits for a report connection (503 after the
    pool's timeout), not for a write's."""
    settings = Settings(
        database_url=database_url, db_staff_write_pool_max=1, db_staff_report_pool_max=1
    )
    headers = auth(tenants[0].admin)
    with TestClient(create_app(settings)) as client:
        with client.app.state.staff_report_pool.connection():
            issued = client.post("/api/v1/staff/keys", headers=headers, json={"scopes": ["admin"]})
            assert issued.status_code == 201, issued.text
            report = client.get("/api/v1/staff/reports/rooms?month=2026-01", headers=headers)
            assert report.status_code == 503, report.text
        report = client.get("/api/v1/staff/reports/rooms?month=2026-01", headers=headers)
        assert report.status_code == 200, report.text
        # and a write holding the write pool's only connection does not stop a report
        with client.app.state.staff_write_pool.connection():
            report = client.get("/api/v1/staff/reports/rooms?month=2026-01", headers=headers)
            assert report.status_code == 200, report.text
