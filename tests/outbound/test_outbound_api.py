"""Staff routes of outbound deliveries, against the real database and a real receiver: what
they do, what they refuse, and that one municipality's key neither sees nor changes
another's channels, rules, targets or deliveries."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.auth import create_key
from models.db_roles import API, STAFF, enable_logins, role_url
from models.settings import Settings
from outbound.worker import UNCONFIRMED_REASON, DeliveryWorker
from tests.outbound.conftest import Place, add_channel, add_rule, make_place, outbound_settings


@dataclass
class Tenant:
    place: Place
    admin: str
    reader: str
    channel: int
    rule: int
    target: int
    delivery: int
    unconfirmed: int


def _tenant(db: psycopg.Connection, slug: str, n: int) -> Tenant:
    place = make_place(db, slug, n)
    channel = add_channel(db, place, "webhook", url=f"https://{slug}.example/hook",
                          name=f"{slug} secret channel")  # fmt: skip
    rule = add_rule(db, place, channel)
    target = db.execute(
        "INSERT INTO data_targets (municipality_id, name, kind, url) "
        "VALUES (%s, %s, 'http', %s) RETURNING id",
        (place.municipality, f"{slug} secret target", f"https://{slug}.example/data"),
    ).fetchone()[0]
    delivery = db.execute(
        "INSERT INTO deliveries (municipality_id, channel_id, event, idempotency_key, payload, "
        "status, last_error) VALUES (%s, %s, 'test', %s, '{}', 'dead', %s) RETURNING id",
        (place.municipality, channel, f"{slug}-key", f"{slug} receiver said no"),
    ).fetchone()[0]
    db.execute(
        "INSERT INTO delivery_attempts (delivery_id, municipality_id, ok, status_code, response, "
        "finished_at) VALUES (%s, %s, false, 500, %s, now())",
        (delivery, place.municipality, f"{slug} receiver said no"),
    )
    mail = add_channel(db, place, "email", recipients=[f"pedel@{slug}.example"])
    unconfirmed = db.execute(
        "INSERT INTO deliveries (municipality_id, channel_id, event, idempotency_key, payload, "
        "status, attempts, last_error) VALUES (%s, %s, 'test', %s, '{}', 'unconfirmed', 1, %s) "
        "RETURNING id",
        (place.municipality, mail, f"{slug}-mail-key", UNCONFIRMED_REASON),
    ).fetchone()[0]
    db.execute(
        "INSERT INTO delivery_attempts (delivery_id, municipality_id, final_dot_at, finished_at, "
        "response) VALUES (%s, %s, now(), now(), %s)",
        (unconfirmed, place.municipality, UNCONFIRMED_REASON),
    )
    admin = create_key(db, place.municipality, ["admin"]).token
    reader = create_key(db, place.municipality, ["read-private"]).token
    return Tenant(place, admin, reader, channel, rule, target, delivery, unconfirmed)


@pytest.fixture
def tenants(db) -> tuple[Tenant, Tenant]:
    return _tenant(db, "aarhus", 1), _tenant(db, "odder", 2)


@pytest.fixture
def client(database_url: str, db: psycopg.Connection) -> Iterator[TestClient]:
    """The app as deployed: staff routes as iot_staff, whose writes the audit trigger
    refuses without the request's audit context (api/audit.py)."""
    enable_logins(db, {})
    settings = Settings(
        database_url=role_url(database_url, API),
        staff_database_url=role_url(database_url, STAFF),
    )
    with TestClient(create_app(settings)) as c:
        yield c


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_channels_rules_and_a_test_notice_through_to_the_receiver(
    client, tenants, db, database_url, http_receiver
) -> None:
    a, _ = tenants
    h = auth(a.admin)
    created = client.post(
        "/api/v1/staff/notification-channels",
        headers=h,
        json={"name": "Pedel", "kind": "webhook", "url": http_receiver.url + "/hook"},
    )
    assert created.status_code == 201, created.text
    channel = created.json()
    assert len(channel["secret"]) >= 40 and channel["signed"] is True
    listed = client.get("/api/v1/staff/notification-channels", headers=auth(a.reader)).json()
    assert "secret" not in listed[-1] and listed[-1]["name"] == "Pedel"

    rule = client.post(
        "/api/v1/staff/notification-rules",
        headers=h,
        json={"channel_id": channel["id"], "alert_rule": "climate.", "site_id": a.place.site,
              "quiet_from": "22:00", "quiet_until": "07:00", "escalate_after_min": 30},
    )  # fmt: skip
    assert rule.status_code == 201, rule.text
    assert rule.json()["quiet_from"] == "22:00:00"

    test = client.post(f"/api/v1/staff/notification-channels/{channel['id']}/test", headers=h)
    assert test.status_code == 202 and test.json()["status"] == "pending"
    DeliveryWorker(outbound_settings(database_url)).run(until_idle=True)
    assert http_receiver.requests[-1].json()["event"] == "test"
    log = client.get(
        "/api/v1/staff/deliveries", headers=auth(a.reader), params={"channel_id": channel["id"]}
    ).json()
    assert log[0]["status"] == "delivered"
    assert log[0]["last_attempt"]["ok"] is True and log[0]["last_attempt"]["status_code"] == 204

    # A reader may look, not change.
    assert (
        client.post(
            "/api/v1/staff/notification-rules", headers=auth(a.reader), json={"channel_id": 1}
        ).status_code
        == 403
    )


@pytest.mark.parametrize(
    ("path", "body", "names"),
    [
        ("notification-channels", {"name": "x", "kind": "email"}, "recipients"),
        ("notification-channels", {"name": "x", "kind": "email", "recipients": ["nope"]},
         "recipients"),
        ("notification-channels", {"name": "x", "kind": "webhook"}, "url"),
        ("notification-channels", {"name": "x", "kind": "slack", "url": "ftp://x.dk/"}, "url"),
        ("notification-rules", {"channel_id": 1, "quiet_from": "22:00"}, "quiet_until"),
        ("notification-rules", {"channel_id": 1, "min_severity": "loud"}, "min_severity"),
        ("notification-rules", {"channel_id": 1, "alert_rule": "DROP TABLE"}, "alert_rule"),
        ("data-targets", {"name": "x", "kind": "mqtt", "url": "mqtt://b.dk"}, "topic"),
        ("data-targets", {"name": "x", "kind": "mqtt", "url": "mqtt://b.dk", "topic": "a/#"},
         "topic"),
        ("data-targets", {"name": "x", "kind": "http", "url": "mqtt://b.dk"}, "url"),
        ("data-targets", {"name": "x", "kind": "http", "url": "https://b.dk",
                          "metrics": ["co2 ppm"]}, "metrics"),
    ],
)  # fmt: skip
def test_bad_input_is_refused_naming_the_parameter(client, tenants, path, body, names) -> None:
    a, _ = tenants
    response = client.post(f"/api/v1/staff/{path}", headers=auth(a.admin), json=body)
    assert response.status_code == 422, response.text
    assert names in response.text


def test_a_data_target_starts_switched_off_and_its_test_carries_latest_values(
    client, tenants, db, database_url, http_receiver
) -> None:
    a, _ = tenants
    h = auth(a.admin)
    m = dict(db.execute("SELECT name, id FROM metrics").fetchall())
    now = datetime.now(UTC) - timedelta(minutes=2)
    db.execute(
        "INSERT INTO latest_readings VALUES (%s, %s, %s, 950), (%s, %s, %s, 70)",
        (a.place.climate, m["co2_ppm"], now, a.place.bin, m["fill_pct"], now),
    )
    created = client.post(
        "/api/v1/staff/data-targets",
        headers=h,
        json={"name": "BI", "kind": "http", "url": http_receiver.url, "metrics": ["co2_ppm"]},
    )
    assert created.status_code == 201, created.text
    target = created.json()
    assert target["enabled"] is False and target["secret"]
    assert (
        client.post(
            "/api/v1/staff/data-targets", headers=auth(a.reader), json={"name": "y"}
        ).status_code
        == 403
    )
    test = client.post(f"/api/v1/staff/data-targets/{target['id']}/test", headers=h)
    assert test.status_code == 202
    DeliveryWorker(outbound_settings(database_url)).run(until_idle=True)
    body = http_receiver.requests[-1].json()
    assert body["event"] == "test"
    assert [(r["metric"], r["value"]) for r in body["readings"]] == [("co2_ppm", 950.0)]
    switched = client.patch(
        f"/api/v1/staff/data-targets/{target['id']}", headers=h, json={"enabled": True}
    )
    assert switched.json()["enabled"] is True


def test_a_dead_delivery_is_listed_with_the_receivers_answer_and_can_be_retried(
    client, tenants, db
) -> None:
    a, _ = tenants
    dead = client.get(
        "/api/v1/staff/deliveries", headers=auth(a.reader), params={"status": "dead"}
    ).json()
    assert [d["id"] for d in dead] == [a.delivery]
    assert dead[0]["last_attempt"]["response"] == "aarhus receiver said no"
    one = client.get(f"/api/v1/staff/deliveries/{a.delivery}", headers=auth(a.reader)).json()
    assert one["attempts_log"][0]["status_code"] == 500
    retried = client.post(f"/api/v1/staff/deliveries/{a.delivery}/retry", headers=auth(a.admin))
    assert retried.json()["status"] == "pending"


def test_an_unconfirmed_email_is_listed_and_resent_only_on_purpose(client, tenants, db) -> None:
    a, _ = tenants
    listed = client.get(
        "/api/v1/staff/deliveries", headers=auth(a.reader), params={"status": "unconfirmed"}
    ).json()
    assert [d["id"] for d in listed] == [a.unconfirmed]
    assert listed[0]["last_error"] == UNCONFIRMED_REASON
    assert listed[0]["last_attempt"]["final_dot_at"] is not None
    assert listed[0]["last_attempt"]["ok"] is None
    one = client.get(f"/api/v1/staff/deliveries/{a.unconfirmed}", headers=auth(a.reader)).json()
    assert one["attempts_log"][0]["final_dot_at"] is not None

    path = f"/api/v1/staff/deliveries/{a.unconfirmed}/resend"
    assert client.post(path, headers=auth(a.reader)).status_code == 403  # a reader may look
    # Retry is for dead deliveries: it leaves an unconfirmed one as it is, and resend a dead one.
    retry = client.post(f"/api/v1/staff/deliveries/{a.unconfirmed}/retry", headers=auth(a.admin))
    assert retry.json()["status"] == "unconfirmed"
    dead = client.post(f"/api/v1/staff/deliveries/{a.delivery}/resend", headers=auth(a.admin))
    assert dead.json()["status"] == "dead"
    resent = client.post(path, headers=auth(a.admin))
    assert resent.status_code == 200, resent.text
    assert resent.json()["status"] == "pending"
    action = db.execute("SELECT action FROM audit_events WHERE target_table = 'deliveries'")
    assert action.fetchall() == [("delivery.resend",)]


# --- isolation: every route, A's admin key aimed at B's things --------------------------

OUTBOUND_ISOLATION: dict[tuple[str, str], dict] = {
    ("GET", "/api/v1/staff/notification-channels"): {"list": True},
    ("POST", "/api/v1/staff/notification-channels"): {
        "json": {"name": "odder secret channel", "kind": "webhook", "url": "https://a.dk/"},
        "status": 201,
    },
    ("PATCH", "/api/v1/staff/notification-channels/{channel_id}"): {"json": {"enabled": False}},
    ("DELETE", "/api/v1/staff/notification-channels/{channel_id}"): {},
    ("POST", "/api/v1/staff/notification-channels/{channel_id}/test"): {},
    ("GET", "/api/v1/staff/notification-rules"): {"list": True},
    ("POST", "/api/v1/staff/notification-rules"): {"json": {"channel_id": "B.channel"}},
    ("DELETE", "/api/v1/staff/notification-rules/{rule_id}"): {},
    ("GET", "/api/v1/staff/data-targets"): {"list": True},
    ("POST", "/api/v1/staff/data-targets"): {
        "json": {"name": "odder secret target", "kind": "http", "url": "https://a.dk/"},
        "status": 201,
    },
    ("PATCH", "/api/v1/staff/data-targets/{target_id}"): {"json": {"enabled": True}},
    ("DELETE", "/api/v1/staff/data-targets/{target_id}"): {},
    ("POST", "/api/v1/staff/data-targets/{target_id}/test"): {},
    ("GET", "/api/v1/staff/deliveries"): {"list": True},
    ("GET", "/api/v1/staff/deliveries/{delivery_id}"): {},
    ("POST", "/api/v1/staff/deliveries/{delivery_id}/retry"): {},
    ("POST", "/api/v1/staff/deliveries/{delivery_id}/resend"): {"delivery": "unconfirmed"},
}


def _snapshot(db: psycopg.Connection, b: Tenant) -> tuple:
    m = b.place.municipality
    return tuple(
        db.execute(f"SELECT * FROM {table} WHERE municipality_id = %s ORDER BY id", (m,)).fetchall()
        for table in (
            "notification_channels",
            "notification_rules",
            "data_targets",
            "deliveries",
            "delivery_attempts",
        )
    )


@pytest.mark.parametrize(("method", "path"), sorted(OUTBOUND_ISOLATION))
def test_a_key_of_one_municipality_cannot_touch_anothers_outbound(
    client, tenants, db, method, path
) -> None:
    a, b = tenants
    case = OUTBOUND_ISOLATION[(method, path)]
    ids = {
        "channel_id": b.channel,
        "rule_id": b.rule,
        "target_id": b.target,
        "delivery_id": b.unconfirmed if case.get("delivery") == "unconfirmed" else b.delivery,
    }
    url = path.format(**{k: v for k, v in ids.items() if "{" + k + "}" in path})
    body = case.get("json")
    if body:
        body = {k: (b.channel if v == "B.channel" else v) for k, v in body.items()}
    before = _snapshot(db, b)
    response = client.request(method, url, headers=auth(a.admin), json=body)
    assert _snapshot(db, b) == before, "B's outbound rows changed"
    if case.get("list"):
        assert response.status_code == 200, response.text
        for secret in ("odder secret channel", "odder secret target", "odder receiver said no",
                       "odder.example", "odder-key"):  # fmt: skip
            assert secret not in response.text
    else:
        assert response.status_code == case.get("status", 404), response.text
        if response.status_code == 404:
            assert "your municipality" in response.json()["detail"]


SECRET_URL = "https://hooks.slack.example:8443/services/T0/B0/sEcReTpart?token=also-secret"


def test_a_reader_sees_where_a_channel_or_target_points_but_not_the_credential_in_its_url(
    client, tenants, db
) -> None:
    """An incoming-webhook URL (Teams, Slack) is itself the credential: whoever holds it can
    post into the municipality's channel. A read-only key sees the host, not the rest."""
    mine = tenants[0]
    db.execute(
        "UPDATE notification_channels SET url = %s WHERE id = %s", (SECRET_URL, mine.channel)
    )
    db.execute(
        "UPDATE data_targets SET url = %s WHERE id = %s",
        ("https://user:password@bi.example/ingest/key123", mine.target),
    )
    manager = create_key(db, mine.place.municipality, ["manage-alerts", "read-private"]).token
    for token, path, item_id in (
        (mine.reader, "/api/v1/staff/notification-channels", mine.channel),
        (mine.reader, "/api/v1/staff/data-targets", mine.target),
        (manager, "/api/v1/staff/data-targets", mine.target),  # targets are the admin's
    ):
        response = client.get(path, headers=auth(token))
        assert response.status_code == 200, response.text
        (item,) = [i for i in response.json() if i["id"] == item_id]
        assert "sEcReTpart" not in response.text and "also-secret" not in response.text
        assert "password" not in response.text and "key123" not in response.text
        assert item["url"] in ("https://hooks.slack.example:8443/…", "https://bi.example/…")
    shown = client.get("/api/v1/staff/notification-channels", headers=auth(manager)).json()
    assert [c["url"] for c in shown if c["id"] == mine.channel] == [SECRET_URL]
    shown = client.get("/api/v1/staff/data-targets", headers=auth(mine.admin)).json()
    assert [t["url"] for t in shown if t["id"] == mine.target] == [
        "https://user:password@bi.example/ingest/key123"
    ]


def test_metrics_count_the_unconfirmed_emails_of_each_municipality(client, tenants, db) -> None:
    a, _ = tenants
    text = client.get("/metrics").text
    assert 'iot_emails_unconfirmed{municipality="aarhus"} 1.0' in text
    assert 'iot_emails_unconfirmed{municipality="odder"} 1.0' in text
    client.post(f"/api/v1/staff/deliveries/{a.unconfirmed}/resend", headers=auth(a.admin))
    text = client.get("/metrics").text
    assert 'iot_emails_unconfirmed{municipality="aarhus"}' not in text
    assert 'iot_emails_unconfirmed{municipality="odder"} 1.0' in text
