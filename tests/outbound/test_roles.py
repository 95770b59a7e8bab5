"""Outbound deliveries work with the least-privilege roles of production: ingest enqueues
data-target batches as iot_ingest, the evaluation enqueues notices and the worker delivers
as iot_maintenance, the staff API manages everything as iot_staff."""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg
import pytest
from fastapi.testclient import TestClient

from analytics.alerts import sync_alerts
from api.app import create_app
from api.auth import create_key
from models.db_roles import API, INGEST, MAINTENANCE, STAFF, enable_logins, role_url
from models.settings import Settings
from outbound.worker import DeliveryWorker
from tests.outbound.conftest import co2_condition, make_place, outbound_settings
from tests.outbound.test_targets import write_batch


def test_each_service_does_its_part_as_its_own_role(db, database_url, http_receiver) -> None:
    enable_logins(db, {})
    place = make_place(db)
    token = create_key(db, place.municipality, ["admin"]).token
    settings = Settings(
        database_url=role_url(database_url, API),
        staff_database_url=role_url(database_url, STAFF),
    )
    auth = {"Authorization": f"Bearer {token}"}
    with TestClient(create_app(settings)) as client:
        channel = client.post(
            "/api/v1/staff/notification-channels",
            headers=auth,
            json={"name": "hook", "kind": "webhook", "url": http_receiver.url},
        )
        assert channel.status_code == 201, channel.text
        rule = client.post(
            "/api/v1/staff/notification-rules",
            headers=auth,
            json={"channel_id": channel.json()["id"], "zone_id": place.zone},
        )
        assert rule.status_code == 201, rule.text
        target = client.post(
            "/api/v1/staff/data-targets",
            headers=auth,
            json={"name": "bi", "kind": "http", "url": http_receiver.url},
        ).json()
        assert (
            client.patch(
                f"/api/v1/staff/data-targets/{target['id']}", headers=auth, json={"enabled": True}
            ).status_code
            == 200
        )
        assert (
            client.post(f"/api/v1/staff/data-targets/{target['id']}/test", headers=auth).status_code
            == 202
        )

        with psycopg.connect(role_url(database_url, MAINTENANCE), autocommit=True) as evaluate:
            sync_alerts(evaluate, place.municipality, ["climate.co2_limit"],
                        [co2_condition(place)], datetime.now(UTC))  # fmt: skip
        with psycopg.connect(role_url(database_url, INGEST), autocommit=True) as ingest:
            write_batch(ingest, place)
        alert = client.get("/api/v1/staff/alerts", headers=auth).json()[0]["id"]
        resolved = client.post(f"/api/v1/staff/alerts/{alert}/resolve", headers=auth)
        assert resolved.status_code == 200, resolved.text
        # The resolve notice is written by the staff role in the alert.resolve request: the
        # audit trigger on deliveries records it under that action instead of refusing it.
        recorded = db.execute(
            "SELECT target_table, operation, after->>'event' FROM audit_events "
            "WHERE action = 'alert.resolve' ORDER BY id"
        ).fetchall()
        assert recorded == [("alerts", "update", None), ("deliveries", "insert", "alert.resolved")]

        maintenance = outbound_settings(role_url(database_url, MAINTENANCE))
        assert DeliveryWorker(maintenance).run(until_idle=True).delivered == 4
        events = sorted(r.json()["event"] for r in http_receiver.requests)
        assert events == ["alert.opened", "alert.resolved", "readings", "test"]
        log = client.get("/api/v1/staff/deliveries", headers=auth).json()
        assert {d["status"] for d in log} == {"delivered"}
        one = client.get(f"/api/v1/staff/deliveries/{log[0]['id']}", headers=auth)
        assert one.json()["attempts_log"][0]["ok"] is True


def test_a_worker_without_its_grants_stops_with_an_error_instead_of_idling(db, database_url):
    enable_logins(db, {})
    worker = DeliveryWorker(outbound_settings(role_url(database_url, API), deliver_concurrency=2))
    with pytest.raises(RuntimeError, match="a delivery thread failed") as raised:
        worker.run()  # not until_idle: without the error it would run forever
    assert isinstance(raised.value.__cause__, psycopg.errors.InsufficientPrivilege)
