"""The audit trail: every staff write is recorded with who, when, from where, what, before
and after, in the write's own transaction; nobody edits it; each municipality reads and
exports only its own; old events age out.

The API runs with the production database roles (iot_api, iot_staff), as in deployment:
the staff role is the one that must not be able to write unrecorded or edit the trail.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from api.app import create_app
from api.audit import audit_action
from cli.db import maintain_once
from domain.registry import sync_device_models
from models.audit import AUDITED_TABLES, NOT_AUDITED, TRIGGER, staff_writable_tables
from models.db_roles import API, GRANTS, MAINTENANCE, STAFF, enable_logins, role_url
from models.settings import Settings
from tests.ingest.test_historic import _drop_partitions_made_here  # noqa: F401 (autouse)
from tests.staff.test_codecs_api import teneo_upload
from tests.staff.test_historic_api import CSV as HISTORIC_CSV
from tests.staff.test_historic_api import MAPPING as HISTORIC_MAPPING
from tests.staff.test_staff_api import Tenant, _tenant, auth

DENIED = psycopg.errors.InsufficientPrivilege
WRITE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


@pytest.fixture
def role_client(database_url: str, db: psycopg.Connection) -> Iterator[TestClient]:
    """The app as deployed: public routes as iot_api, staff routes as iot_staff."""
    enable_logins(db, {})
    settings = Settings(
        database_url=role_url(database_url, API),
        staff_database_url=role_url(database_url, STAFF),
    )
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.fixture
def tenants(db: psycopg.Connection) -> tuple[Tenant, Tenant]:
    """Aarhus and Odder, as tests/staff/test_staff_api.py seeds them."""
    sync_device_models(db)
    return _tenant(db, "aarhus", "a81758fffe0a0001", 1), _tenant(db, "odder", "a81758fffe0b0001", 2)


def outbound_rows(db: psycopg.Connection, municipality_id: int) -> dict[str, int]:
    """A notification channel (a webhook with a signing secret), a rule, a data target and a
    dead and an unconfirmed delivery of `municipality_id`, as the outbound routes' path ids."""
    m = municipality_id
    channel = db.execute(
        "INSERT INTO notification_channels (municipality_id, name, kind, url, secret) "
        "VALUES (%s, 'hook', 'webhook', 'https://drift.example.dk/iot', 'channel-secret') "
        "RETURNING id",
        (m,),
    ).fetchone()[0]
    rule = db.execute(
        "INSERT INTO notification_rules (municipality_id, channel_id) VALUES (%s, %s) RETURNING id",
        (m, channel),
    ).fetchone()[0]
    target = db.execute(
        "INSERT INTO data_targets (municipality_id, name, kind, url, secret) "
        "VALUES (%s, 'bi', 'http', 'https://bi.example.dk/in', 'target-secret') RETURNING id",
        (m,),
    ).fetchone()[0]
    delivery = db.execute(
        "INSERT INTO deliveries (municipality_id, channel_id, event, idempotency_key, payload, "
        "status, attempts, last_error) VALUES (%s, %s, 'test', %s, '{\"test\": true}', 'dead', "
        "8, 'HTTP 500') RETURNING id",
        (m, channel, f"test:dead:{m}"),
    ).fetchone()[0]
    unconfirmed = db.execute(
        "INSERT INTO deliveries (municipality_id, channel_id, event, idempotency_key, payload, "
        "status, attempts, last_error) VALUES (%s, %s, 'test', %s, '{\"test\": true}', "
        "'unconfirmed', 1, 'unconfirmed') RETURNING id",
        (m, channel, f"test:unconfirmed:{m}"),
    ).fetchone()[0]
    return {
        "channel_id": channel,
        "rule_id": rule,
        "target_id": target,
        "delivery_id": delivery,
        "unconfirmed_delivery_id": unconfirmed,
    }


def _connect(database_url: str, role: str) -> psycopg.Connection:
    return psycopg.connect(role_url(database_url, role), autocommit=True)


def _events(db: psycopg.Connection, municipality_id: int | None = None) -> list[dict]:
    cur = db.cursor(row_factory=psycopg.rows.dict_row)
    cur.execute(
        "SELECT * FROM audit_events WHERE %s::int IS NULL OR municipality_id = %s ORDER BY id",
        (municipality_id, municipality_id),
    )
    return cur.fetchall()


# --- every write route is audited -----------------------------------------------------------


def _api_routes(routes) -> Iterator[APIRoute]:
    """Every APIRoute of the app, also inside included routers (FastAPI wraps them)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        elif hasattr(route, "effective_candidates"):
            for candidate in route.effective_candidates():
                yield from _api_routes([getattr(candidate, "original_route", candidate)])


def _write_routes(app) -> dict[tuple[str, str], str | None]:
    """(method, path) -> audit action of every staff write route (None: not audited)."""
    found = {}
    for route in _api_routes(app.routes):
        path = route.path
        if not path.startswith(("/api/v1/staff", "/auth/")):
            continue
        for method in getattr(route, "methods", set()) & WRITE_METHODS:
            actions = [audit_action(d.call) for d in route.dependant.dependencies]
            found[(method, path)] = next((a for a in actions if a), None)
    return found


def test_every_staff_write_route_is_audited() -> None:
    """Fails when a write route under the staff API has no `audited(...)` dependency:
    add ``dependencies=[audited("thing.verb")]`` to its decorator (api/audit.py)."""
    routes = _write_routes(create_app(Settings()))
    assert routes, "no staff write routes found"
    unaudited = sorted(route for route, action in routes.items() if action is None)
    assert unaudited == [], f"staff write routes without audited(...): {unaudited}"


def test_every_table_the_staff_role_writes_records_its_changes(db: psycopg.Connection) -> None:
    writable = staff_writable_tables(GRANTS)
    undecided = writable - AUDITED_TABLES.keys() - NOT_AUDITED.keys()
    assert undecided == set(), f"list these in models/audit.py: {sorted(undecided)}"
    triggered = {
        r[0]
        for r in db.execute(
            "SELECT c.relname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
            "WHERE t.tgname = %s AND NOT t.tgisinternal",
            (TRIGGER,),
        )
    }
    assert set(AUDITED_TABLES) <= triggered


# For each write route: a call by A's admin on A's own things that changes something, and the
# table whose change it records. A write route missing here fails the test below.
WRITES: dict[tuple[str, str], dict] = {
    ("POST", "/api/v1/staff/sensors"): {
        "json": {"external_id": "new-bin", "kind": "bin", "bin_depth_mm": 900},
        "table": "sensors",
    },
    ("PATCH", "/api/v1/staff/sensors/{sensor_id}"): {
        "json": {"is_public": True},
        "table": "sensors",
    },
    ("POST", "/api/v1/staff/sensor-imports"): {
        "content": "external_id,kind\nimported-1,climate\n",
        "headers": {"Content-Type": "text/csv"},
        "table": "sensors",
    },
    ("PUT", "/api/v1/staff/applications/{network}/{application_id}"): {
        "ids": {"network": "chirpstack", "application_id": "new-app"},
        "table": "network_applications",
    },
    ("DELETE", "/api/v1/staff/applications/{network}/{application_id}"): {
        "ids": {"network": "chirpstack", "application_id": "aarhus-app"},
        "table": "network_applications",
    },
    ("POST", "/api/v1/staff/sites"): {"json": {"name": "new school"}, "table": "sites"},
    ("PATCH", "/api/v1/staff/sites/{site_id}"): {"json": {"name": "renamed"}, "table": "sites"},
    ("POST", "/api/v1/staff/zones"): {
        "json": {"site_id": "A.site", "name": "r2"},
        "table": "zones",
    },
    ("POST", "/api/v1/staff/alerts/{alert_id}/acknowledge"): {"table": "alerts"},
    ("POST", "/api/v1/staff/alerts/{alert_id}/resolve"): {"table": "alerts"},
    ("POST", "/api/v1/staff/dead-letters/{dead_letter_id}/replay"): {"table": "dead_letters"},
    ("POST", "/api/v1/staff/keys"): {
        "json": {"scopes": ["read-private"], "owner": "SCADA integration"},
        "table": "api_keys",
    },
    ("DELETE", "/api/v1/staff/keys/{key_id}"): {"table": "api_keys"},
    # Outbound deliveries (docs/notifications.md); "A.channel" is A's seeded channel.
    ("POST", "/api/v1/staff/notification-channels"): {
        "json": {"name": "drift", "kind": "webhook", "url": "https://drift.example.dk/new"},
        "table": "notification_channels",
    },
    ("PATCH", "/api/v1/staff/notification-channels/{channel_id}"): {
        "json": {"url": "https://attacker.example.net/collect"},
        "table": "notification_channels",
    },
    ("DELETE", "/api/v1/staff/notification-channels/{channel_id}"): {
        "table": "notification_channels",
    },
    ("POST", "/api/v1/staff/notification-channels/{channel_id}/test"): {"table": "deliveries"},
    ("POST", "/api/v1/staff/notification-rules"): {
        "json": {"channel_id": "A.channel", "min_severity": "critical"},
        "table": "notification_rules",
    },
    ("DELETE", "/api/v1/staff/notification-rules/{rule_id}"): {"table": "notification_rules"},
    ("POST", "/api/v1/staff/data-targets"): {
        "json": {"name": "open data", "kind": "http", "url": "https://data.example.dk/in"},
        "table": "data_targets",
    },
    ("PATCH", "/api/v1/staff/data-targets/{target_id}"): {
        "json": {"enabled": True},
        "table": "data_targets",
    },
    ("DELETE", "/api/v1/staff/data-targets/{target_id}"): {"table": "data_targets"},
    ("POST", "/api/v1/staff/data-targets/{target_id}/test"): {"table": "deliveries"},
    ("POST", "/api/v1/staff/deliveries/{delivery_id}/retry"): {"table": "deliveries"},
    ("POST", "/api/v1/staff/deliveries/{delivery_id}/resend"): {
        "ids": {"delivery_id": "unconfirmed_delivery_id"},
        "table": "deliveries",
    },
    # A codec upload creates the model on its first version; both rows are recorded.
    ("POST", "/api/v1/staff/device-models/codecs"): {
        "json": teneo_upload(),
        "table": "device_codecs",
    },
    # Runs the codec on its examples and stores nothing: audited, with nothing to record.
    ("POST", "/api/v1/staff/device-models/codecs/check"): {"json": teneo_upload(), "table": None},
    # Readings are not recorded row by row: one event for the stored import.
    ("POST", "/api/v1/staff/historic-imports"): {
        "params": {"dry_run": "false"},
        "files": {"file": ("klima.csv", HISTORIC_CSV, "text/csv")},
        "data": {"mapping": HISTORIC_MAPPING},
        "table": "readings",
    },
    ("PUT", "/api/v1/staff/school-calendar"): {
        "content": "type,weekday,opens,closes,first_day,last_day,name\nhours,1,08:00,15:00,,,\n",
        "headers": {"Content-Type": "text/csv"},
        "table": "school_hours",
    },
    # Sign-in and sign-out are exercised with real identity providers in tests/identity.
    ("POST", "/auth/logout"): {"session": True, "table": "staff_sessions"},
    ("POST", "/auth/saml/acs"): {"session": True, "table": "staff_sessions"},
}


def test_every_write_route_has_an_audit_case() -> None:
    assert set(_write_routes(create_app(Settings()))) == set(WRITES)


KEY_WRITES = sorted(route for route, case in WRITES.items() if not case.get("session"))


@pytest.mark.parametrize(("method", "path"), KEY_WRITES)
def test_a_write_is_recorded_with_who_when_where_what_before_and_after(
    role_client, tenants, db, method, path
) -> None:
    a, b = tenants
    case = WRITES[(method, path)]
    outbound_rows(db, b.id)  # B's rows must stay untouched and unrecorded
    ids = {
        "sensor_id": a.sensor,
        "site_id": a.site,
        "alert_id": a.alert,
        "dead_letter_id": a.dead_letter,
        "key_id": a.key,
        **outbound_rows(db, a.id),
        **case.get("ids", {}),
    }
    ids = {k: ids.get(v, v) if isinstance(v, str) else v for k, v in ids.items()}
    url = path.format(**{k: v for k, v in ids.items() if "{" + k + "}" in path})
    placeholders = {"A.site": a.site, "A.channel": ids["channel_id"]}
    body = case.get("json")
    if body:
        body = {k: placeholders.get(v, v) if isinstance(v, str) else v for k, v in body.items()}
    started = db.execute("SELECT now()").fetchone()[0]
    response = role_client.request(
        method,
        url,
        headers={**auth(a.admin), **case.get("headers", {})},
        json=body,
        content=case.get("content"),
        params=case.get("params"),
        files=case.get("files"),
        data=case.get("data"),
    )
    assert response.status_code < 300, response.text
    if case["table"] is None:
        assert _events(db) == []
        return
    events = _events(db)
    assert events, "the write left no audit event"
    admin_key = db.execute(
        "SELECT id, owner FROM api_keys WHERE prefix = %s", (a.admin.split("_")[1],)
    ).fetchone()
    action = _write_routes(role_client.app)[(method, path)]
    for event in events:
        assert event["municipality_id"] == a.id
        assert (event["actor_kind"], event["actor_id"], event["actor_name"]) == (
            "key",
            str(admin_key[0]),
            admin_key[1],
        )
        assert event["client_address"] == "testclient"
        assert (event["request_method"], event["request_path"]) == (method, url)
        assert event["action"] == action
        assert event["occurred_at"] >= started
    changed = [e for e in events if e["target_table"] == case["table"]]
    assert changed, f"no event for {case['table']}: {events}"
    for event in changed:
        assert event["before"] is not None or event["after"] is not None
        for side in (event["before"], event["after"]):
            assert side is None or not {"secret_hash", "payload", "secret"} & side.keys()
            assert "-secret" not in json.dumps(side)  # the seeded signing secrets
    assert _events(db, b.id) == []


def test_deleting_a_target_or_rule_records_it_not_each_row_of_its_delivery_log(
    role_client, tenants, db
) -> None:
    """A data target's log is a month of ingest batches: its deletion is one decision, one
    event, not one per log row (which would also hold the staff request for minutes)."""
    a, _ = tenants
    ids = outbound_rows(db, a.id)
    for column, value in (("target_id", ids["target_id"]), ("channel_id", ids["channel_id"])):
        db.execute(
            f"INSERT INTO deliveries (municipality_id, {column}, rule_id, event, idempotency_key, "
            "payload, status) SELECT %s, %s, %s, 'readings', %s || i, '{}', 'delivered' "
            "FROM generate_series(1, 2000) i",
            (a.id, value, ids["rule_id"] if column == "channel_id" else None, f"log:{column}:"),
        )
    headers = auth(a.admin)
    for path in (f"data-targets/{ids['target_id']}", f"notification-rules/{ids['rule_id']}"):
        response = role_client.delete(f"/api/v1/staff/{path}", headers=headers)
        assert response.status_code == 204, response.text
    events = [(e["action"], e["target_table"], e["operation"]) for e in _events(db)]
    assert events == [
        ("data_target.delete", "data_targets", "delete"),
        ("notification_rule.delete", "notification_rules", "delete"),
    ]
    left = db.execute(
        "SELECT count(*) FILTER (WHERE target_id IS NOT NULL), count(rule_id) FROM deliveries"
    ).fetchone()
    assert left == (0, 0)


def test_a_historic_import_is_one_event_with_what_it_stored(role_client, tenants, db) -> None:
    """As the staff role: a dry run records nothing; a stored import records the file and
    its counts (the readings are not recorded one by one); a sensor it creates is recorded
    as a row change under the same action."""
    a, b = tenants

    def post(dry_run: str, mapping: str = HISTORIC_MAPPING):
        return role_client.post(
            "/api/v1/staff/historic-imports",
            headers=auth(a.admin),
            params={"dry_run": dry_run},
            files={"file": ("klima.csv", HISTORIC_CSV, "text/csv")},
            data={"mapping": mapping},
        )

    assert post("true").status_code == 200
    assert _events(db) == []
    stored = post("false").json()
    assert stored["stored"] > 0
    (event,) = _events(db)
    assert (event["action"], event["target_table"], event["operation"]) == (
        "readings.import",
        "readings",
        "insert",
    )
    assert event["municipality_id"] == a.id and event["actor_kind"] == "key"
    assert event["after"]["file"] == "klima.csv"
    assert event["after"]["stored"] == stored["stored"]
    assert event["after"]["by_metric"] == stored["by_metric"]
    db.execute("TRUNCATE audit_events")
    creating = json.loads(HISTORIC_MAPPING) | {"create_sensors": "climate"}
    assert post("false", json.dumps(creating)).status_code == 200
    events = _events(db)
    assert {(e["action"], e["target_table"]) for e in events} == {
        ("readings.import", "readings"),
        ("readings.import", "sensors"),
    }
    assert _events(db, b.id) == []


def test_sensor_visibility_change_shows_before_and_after(role_client, tenants, db) -> None:
    a, _ = tenants
    response = role_client.patch(
        f"/api/v1/staff/sensors/{a.sensor}", headers=auth(a.admin), json={"is_public": True}
    )
    assert response.status_code == 200
    (event,) = _events(db)
    assert (event["target_table"], event["target_id"], event["operation"]) == (
        "sensors",
        str(a.sensor),
        "update",
    )
    assert event["before"]["is_public"] is False and event["after"]["is_public"] is True
    assert event["before"]["name"] == event["after"]["name"] == "aarhus secret room"


def test_a_codec_upload_is_recorded_by_model_and_version(role_client, tenants, db) -> None:
    """The staff role uploads under the audit trigger; the event names the model and the
    version, whose source stays in device_codecs (never changed there) instead of the trail."""
    a, b = tenants
    url = "/api/v1/staff/device-models/codecs"
    first = role_client.post(url, headers=auth(a.admin), json=teneo_upload())
    assert first.status_code == 201, first.text
    second = role_client.post(url, headers=auth(a.admin), json=teneo_upload())
    assert second.status_code == 201 and second.json()["version"] == 2
    model_id = first.json()["device_model_id"]
    events = [(e["target_table"], e["operation"], e["action"], e["after"]) for e in _events(db)]
    assert [(t, op, action) for t, op, action, _ in events] == [
        ("device_models", "insert", "codec.add"),
        ("device_codecs", "insert", "codec.add"),
        ("device_codecs", "insert", "codec.add"),
    ]
    assert events[0][3]["model"] == "Filling Degree Sensor (JS)"
    assert events[0][3]["municipality_id"] == a.id
    codecs = [after for table, _, _, after in events if table == "device_codecs"]
    assert [(c["device_model_id"], c["version"]) for c in codecs] == [(model_id, 1), (model_id, 2)]
    assert codecs[0]["mapping"]["fields"]["battery"]["metric"] == "battery_v"
    left_out = set(AUDITED_TABLES["device_codecs"])
    assert left_out == {"script", "examples", "report"}
    assert all(left_out.isdisjoint(c) for c in codecs)
    stored = db.execute(
        "SELECT script FROM device_codecs WHERE device_model_id = %s ORDER BY version", (model_id,)
    ).fetchall()
    assert [s[0] for s in stored] == [teneo_upload()["script"]] * 2
    # A refused upload (a built-in model's name) stores nothing and records nothing.
    refused = role_client.post(
        url, headers=auth(a.admin), json=teneo_upload(vendor="Elsys", model="ERS CO2")
    )
    assert refused.status_code == 422 and "built-in" in refused.json()["detail"]
    assert len(_events(db)) == 3 and _events(db, b.id) == []


def test_a_refused_or_empty_write_records_nothing(role_client, tenants, db) -> None:
    a, b = tenants
    assert (
        role_client.patch(
            f"/api/v1/staff/sensors/{b.sensor}", headers=auth(a.admin), json={"is_public": True}
        ).status_code
        == 404
    )
    assert (
        role_client.patch(
            f"/api/v1/staff/sensors/{a.sensor}", headers=auth(a.reader), json={"is_public": True}
        ).status_code
        == 403
    )
    assert (
        role_client.patch(
            f"/api/v1/staff/sensors/{a.sensor}", headers=auth(a.admin), json={}
        ).status_code
        == 200
    )
    assert _events(db) == []


CALENDAR = (
    "type,weekday,opens,closes,first_day,last_day,name\n"
    "hours,1,08:00,15:00,,,\n"
    "hours,2,08:00,15:00,,,\n"
    "holiday,,,,2026-10-12,2026-10-16,Efterårsferie\n"
)


def test_a_calendar_import_records_only_what_it_changes(role_client, tenants, db) -> None:
    a, b = tenants
    url = "/api/v1/staff/school-calendar"
    headers = {**auth(a.admin), "Content-Type": "text/csv"}
    assert role_client.put(url, headers=headers, content=CALENDAR).status_code == 200
    first = _events(db)
    assert sorted((e["target_table"], e["operation"]) for e in first) == [
        ("school_holidays", "insert"),
        ("school_hours", "insert"),
        ("school_hours", "insert"),
    ]
    assert {e["action"] for e in first} == {"school_calendar.replace"}

    # The same file again changes nothing and records nothing.
    assert role_client.put(url, headers=headers, content=CALENDAR).status_code == 200
    assert len(_events(db)) == len(first)

    # Tuesday closes later, Monday goes, the holiday is renamed: three events, each with
    # the values before and after.
    changed = (
        CALENDAR.replace("hours,1,08:00,15:00,,,\n", "")
        .replace("2,08:00,15:00", "2,08:00,16:00")
        .replace("Efterårsferie", "Uge 42")
    )
    assert role_client.put(url, headers=headers, content=changed).status_code == 200
    later = _events(db)[len(first) :]
    by_change = {(e["target_table"], e["operation"]): e for e in later}
    assert set(by_change) == {
        ("school_hours", "delete"),
        ("school_hours", "update"),
        ("school_holidays", "update"),
    }
    assert by_change[("school_hours", "update")]["before"]["closes"] == "15:00:00"
    assert by_change[("school_hours", "update")]["after"]["closes"] == "16:00:00"
    assert by_change[("school_holidays", "update")]["after"]["name"] == "Uge 42"
    assert role_client.get(url, headers=auth(a.admin)).json()["hours"] == [
        {"weekday": 2, "opens": "08:00", "closes": "16:00"}
    ]
    assert _events(db, b.id) == []


def test_reads_and_key_bookkeeping_need_no_audit_context(role_client, tenants, db) -> None:
    """A key's last_used_at is bookkeeping, not a staff write: reads keep working."""
    a, _ = tenants
    db.execute("UPDATE api_keys SET last_used_at = NULL")
    assert role_client.get("/api/v1/staff/sensors", headers=auth(a.reader)).status_code == 200
    assert _events(db) == []


# --- in the write's transaction, and no staff write without it -------------------------------


def test_the_staff_role_cannot_write_an_audited_table_without_an_audit_context(
    database_url, tenants, db
) -> None:
    a, _ = tenants
    enable_logins(db, {})
    with (
        _connect(database_url, STAFF) as staff,
        pytest.raises(DENIED, match="without an audit context"),
    ):
        staff.execute("UPDATE sensors SET is_public = true WHERE id = %s", (a.sensor,))
    assert db.execute("SELECT is_public FROM sensors WHERE id = %s", (a.sensor,)).fetchone() == (
        False,
    )


def test_a_write_whose_audit_event_cannot_be_stored_is_undone(database_url, tenants, db) -> None:
    """The event is inserted in the write's transaction: when it fails, so does the write."""
    a, _ = tenants
    enable_logins(db, {})
    context = {"municipality_id": 999999, "actor_kind": "key", "actor_id": "1",
               "actor_name": "x", "action": "sensor.update"}  # fmt: skip
    with _connect(database_url, STAFF) as staff:
        staff.execute("SELECT set_config('iot.audit', %s, false)", (json.dumps(context),))
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            staff.execute("UPDATE sensors SET is_public = true WHERE id = %s", (a.sensor,))
    assert db.execute("SELECT is_public FROM sensors WHERE id = %s", (a.sensor,)).fetchone() == (
        False,
    )
    assert _events(db) == []


def test_a_pooled_connection_forgets_the_actor_after_its_request(role_client, tenants, db) -> None:
    """The next request on the same pooled connection must not write as the previous actor."""
    a, _ = tenants
    for _ in range(3):
        assert (
            role_client.patch(
                f"/api/v1/staff/sensors/{a.sensor}", headers=auth(a.admin), json={"name": "x"}
            ).status_code
            == 200
        )
    rows = db.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND usename = %s",
        (STAFF,),
    ).fetchone()[0]
    assert rows >= 1
    with role_client.app.state.staff_write_pool.connection() as conn:
        assert conn.execute("SELECT current_setting('iot.audit', true)").fetchone()[0] in ("", None)


# --- append-only -----------------------------------------------------------------------------


def test_nobody_edits_the_trail(role_client, database_url, tenants, db) -> None:
    a, _ = tenants
    role_client.patch(
        f"/api/v1/staff/sensors/{a.sensor}", headers=auth(a.admin), json={"is_public": True}
    )
    assert len(_events(db)) == 1
    with _connect(database_url, STAFF) as staff:
        with pytest.raises(DENIED):
            staff.execute("UPDATE audit_events SET actor_name = 'someone else'")
        with pytest.raises(DENIED):
            staff.execute("DELETE FROM audit_events")
        with pytest.raises(DENIED):
            staff.execute("TRUNCATE audit_events")
    with _connect(database_url, API) as public, pytest.raises(DENIED):
        public.execute("SELECT * FROM audit_events")
    with pytest.raises(DENIED, match="append-only"):
        db.execute("UPDATE audit_events SET actor_name = 'the superuser'")  # even the owner
    assert _events(db)[0]["actor_name"] != "someone else"
    # The API offers no way to change it either.
    for method in ("PUT", "PATCH", "DELETE", "POST"):
        response = role_client.request(method, "/api/v1/staff/audit", headers=auth(a.admin))
        assert response.status_code == 405


# --- reading and exporting one's own trail ---------------------------------------------------


def test_each_municipality_reads_and_exports_only_its_own_trail(role_client, tenants, db) -> None:
    a, b = tenants
    for tenant in (a, b):
        response = role_client.patch(
            f"/api/v1/staff/sensors/{tenant.sensor}",
            headers=auth(tenant.admin),
            json={"name": f"{tenant.slug} renamed"},
        )
        assert response.status_code == 200
    listed = role_client.get("/api/v1/staff/audit", headers=auth(a.admin))
    assert listed.status_code == 200
    items = listed.json()["items"]
    assert [e["after"]["name"] for e in items] == ["aarhus renamed"]
    assert "odder" not in listed.text
    jsonl = role_client.get("/api/v1/staff/audit/export", headers=auth(a.admin))
    assert jsonl.status_code == 200 and "odder" not in jsonl.text
    lines = [json.loads(line) for line in jsonl.text.splitlines()]
    assert [e["action"] for e in lines] == ["sensor.update"]
    as_csv = role_client.get(
        "/api/v1/staff/audit/export", params={"format": "csv"}, headers=auth(a.admin)
    )
    rows = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert len(rows) == 2 and rows[0]["action"] == "sensor.update"  # the JSONL export, then
    assert json.loads(rows[0]["after"])["name"] == "aarhus renamed"
    assert rows[1]["action"] == "audit.export"  # exporting the trail is itself recorded
    # The reader key is not an admin: the trail is the admins' and the DPO's.
    assert role_client.get("/api/v1/staff/audit", headers=auth(a.reader)).status_code == 403
    filtered = role_client.get(
        "/api/v1/staff/audit", params={"action": "key.create"}, headers=auth(a.admin)
    )
    assert filtered.json()["items"] == []
    naive = role_client.get(
        "/api/v1/staff/audit", params={"since": "2026-01-01T00:00:00"}, headers=auth(a.admin)
    )
    assert naive.status_code == 400 and "since" in naive.json()["detail"]


# --- retention -------------------------------------------------------------------------------


def test_the_maintenance_job_deletes_events_older_than_the_retention(
    database_url, tenants, db
) -> None:
    a, _ = tenants
    enable_logins(db, {})
    now = datetime.now(UTC)
    for age_days in (400, 10):
        db.execute(
            "INSERT INTO audit_events (municipality_id, occurred_at, actor_kind, actor_id, "
            "actor_name, action) VALUES (%s, %s, 'key', '1', 'x', 'sensor.update')",
            (a.id, now - timedelta(days=age_days)),
        )
    with _connect(database_url, MAINTENANCE) as maintenance:
        kept = maintain_once(maintenance, 1, 0, audit_retention_days=0)
        assert kept["audit_events_deleted"] == 0
        done = maintain_once(maintenance, 1, 0, audit_retention_days=365)
    assert done["audit_events_deleted"] == 1
    ages = [now - e["occurred_at"] for e in _events(db)]
    assert len(ages) == 1 and ages[0] < timedelta(days=11)


# --- keys are for machines, and someone answers for each --------------------------------------


def test_keys_are_tied_to_a_named_owner(role_client, tenants, db) -> None:
    a, _ = tenants
    db.execute("UPDATE api_keys SET owner = 'Mette Jensen, IT' WHERE municipality_id = %s", (a.id,))
    headers = auth(a.admin)
    for blank in ("", "   "):
        refused = role_client.post(
            "/api/v1/staff/keys", headers=headers, json={"scopes": ["admin"], "owner": blank}
        )
        assert refused.status_code == 422 and "owner" in refused.json()["detail"]
    named = role_client.post(
        "/api/v1/staff/keys",
        headers=headers,
        json={"scopes": ["read-private"], "owner": "SCADA integration", "name": "heating"},
    )
    assert named.status_code == 201 and named.json()["owner"] == "SCADA integration"
    # Without an owner, whoever issues the key answers for it.
    unnamed = role_client.post("/api/v1/staff/keys", headers=headers, json={"scopes": ["admin"]})
    assert unnamed.json()["owner"] == "Mette Jensen, IT"
    owners = {
        k["id"]: k["owner"] for k in role_client.get("/api/v1/staff/keys", headers=headers).json()
    }
    assert owners[named.json()["id"]] == "SCADA integration"
    # A request with the new key is recorded as its owner's.
    new_key = named.json()["token"]
    assert role_client.get("/api/v1/staff/me", headers=auth(new_key)).status_code == 200
    created = [e for e in _events(db) if e["action"] == "key.create"]
    assert [e["after"]["owner"] for e in created] == ["SCADA integration", "Mette Jensen, IT"]
    assert {e["actor_name"] for e in created} == {"Mette Jensen, IT"}
