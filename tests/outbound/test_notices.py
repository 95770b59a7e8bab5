"""Alert notices: written with the transition that causes them, delivered to real receivers
(an HTTP server, an SMTP server with STARTTLS and AUTH), retried with backoff, given up as
dead, held in quiet hours for a digest, escalated when nobody acknowledges."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from analytics.alerts import acknowledge, resolve, sync_alerts
from outbound.channels import KEY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, sign, verify
from outbound.worker import DeliveryWorker, backoff_s
from tests.outbound.conftest import (
    add_channel,
    add_rule,
    co2_condition,
    make_place,
    outbound_settings,
)

RULES = ("climate.co2_limit", "climate.co2_critical")


def deliver(database_url: str, mailbox=None, **extra):
    return DeliveryWorker(outbound_settings(database_url, mailbox, **extra)).run(until_idle=True)


def deliveries(db: psycopg.Connection) -> list[tuple]:
    return db.execute(
        "SELECT event, status, channel_id, alert_id, idempotency_key FROM deliveries ORDER BY id"
    ).fetchall()


@pytest.mark.storage
def test_an_alert_opening_writes_its_notice_in_the_same_transaction(db) -> None:
    place = make_place(db)
    channel = add_channel(db, place, "webhook", url="http://127.0.0.1:9/hook", secret="k")
    add_rule(db, place, channel, alert_rule="climate.")
    now = datetime.now(UTC)
    # A transition that rolls back leaves no notice behind.
    with pytest.raises(RuntimeError), db.transaction():
        sync_alerts(db, place.municipality, RULES, [co2_condition(place)], now)
        assert len(deliveries(db)) == 1  # visible inside the transaction
        raise RuntimeError("the evaluation fails after the alert was written")
    assert deliveries(db) == []
    assert db.execute("SELECT count(*) FROM alerts").fetchone()[0] == 0

    sync_alerts(db, place.municipality, RULES, [co2_condition(place)], now)
    sync_alerts(db, place.municipality, RULES, [co2_condition(place)], now)  # still active
    [(event, status, chan, alert_id, key)] = deliveries(db)
    assert (event, status, chan) == ("alert.opened", "pending", channel)
    rule = db.execute("SELECT id FROM notification_rules").fetchone()[0]
    assert key == f"alert:{alert_id}:alert.opened:{rule}"

    sync_alerts(db, place.municipality, RULES, [], now)  # the condition cleared
    assert [d[0] for d in deliveries(db)] == ["alert.opened", "alert.resolved"]


def test_rules_choose_by_kind_place_and_severity(db) -> None:
    place = make_place(db)
    other_site = db.execute(
        "INSERT INTO sites (municipality_id, name) VALUES (%s, 'Andet sted') RETURNING id",
        (place.municipality,),
    ).fetchone()[0]
    hook = add_channel(db, place, "webhook", url="http://127.0.0.1:9/")
    matching = [
        add_rule(db, place, hook, alert_rule="climate.co2_limit"),
        add_rule(db, place, hook, alert_rule="climate."),
        add_rule(db, place, hook, site_id=place.site),
        add_rule(db, place, hook, zone_id=place.zone, min_severity="info"),
    ]
    for columns in (
        {"alert_rule": "bin."},
        {"alert_rule": "climate.co2"},  # neither the rule nor a family ending in a dot
        {"site_id": other_site},
        {"min_severity": "critical"},
        {"enabled": False},
    ):
        add_rule(db, place, hook, **columns)
    sync_alerts(db, place.municipality, RULES, [co2_condition(place)], datetime.now(UTC))
    rules = [r[0] for r in db.execute("SELECT rule_id FROM deliveries ORDER BY rule_id")]
    assert rules == matching


def test_webhook_is_signed_with_a_timestamp_and_carries_the_idempotency_key(
    db, database_url, http_receiver
) -> None:
    place = make_place(db)
    channel = add_channel(db, place, "webhook", url=http_receiver.url + "/hook", secret="topsecret")
    add_rule(db, place, channel)
    sync_alerts(db, place.municipality, RULES, [co2_condition(place)], datetime.now(UTC))
    totals = deliver(database_url)
    assert totals.delivered == 1
    [request] = http_receiver.requests
    headers = {k.lower(): v for k, v in request.headers.items()}
    timestamp, signature = headers[TIMESTAMP_HEADER.lower()], headers[SIGNATURE_HEADER.lower()]
    assert verify("topsecret", timestamp, request.body, signature)
    assert not verify("another-secret", timestamp, request.body, signature)
    assert not verify("topsecret", timestamp, request.body + b" ", signature)  # tampered
    stale = str(int(timestamp) - 3600)
    assert not verify("topsecret", stale, request.body, sign("topsecret", stale, request.body))
    body = request.json()
    key = db.execute("SELECT idempotency_key FROM deliveries").fetchone()[0]
    assert headers[KEY_HEADER.lower()] == body["idempotency_key"] == key
    assert body["event"] == "alert.opened"
    assert body["link"] == f"https://iot.example.dk/#alert-{body['data']['alert']['id']}"
    assert "CO₂ over grænsen" in body["subject"] and "Lokale 12" in body["text"]


def test_teams_and_slack_get_their_incoming_webhook_formats_in_english(
    db, database_url, http_receiver
) -> None:
    place = make_place(db)
    for kind in ("teams", "slack"):
        channel = add_channel(db, place, kind, url=f"{http_receiver.url}/{kind}", language="en")
        add_rule(db, place, channel)
    sync_alerts(db, place.municipality, RULES, [co2_condition(place)], datetime.now(UTC))
    deliver(database_url)
    by_path = {r.path: r.json() for r in http_receiver.requests}
    card = by_path["/teams"]["attachments"][0]
    assert card["contentType"] == "application/vnd.microsoft.card.adaptive"
    assert card["content"]["type"] == "AdaptiveCard"
    assert card["content"]["body"][0]["text"].startswith("Alert (warning): CO₂ above the limit")
    assert card["content"]["actions"][0]["url"].startswith("https://iot.example.dk/#alert-")
    slack = by_path["/slack"]
    assert slack["text"].startswith(":warning: Alert (warning): CO₂ above the limit")
    assert slack["blocks"][1]["text"]["type"] == "mrkdwn"


def test_email_goes_over_starttls_with_authentication_in_danish_and_english(
    db, database_url, smtp_server
) -> None:
    place = make_place(db)
    for language, to in (("da", "pedel@aarhus.example"), ("en", "caretaker@aarhus.example")):
        channel = add_channel(db, place, "email", recipients=[to], language=language)
        add_rule(db, place, channel)
    sync_alerts(db, place.municipality, RULES, [co2_condition(place)], datetime.now(UTC))
    totals = deliver(database_url, smtp_server)
    assert totals.delivered == 2
    assert smtp_server.logins == ["kommune", "kommune"]
    assert smtp_server.tls_sessions == 2
    by_to = {m["To"]: m for m in smtp_server.messages}
    da, en = by_to["pedel@aarhus.example"], by_to["caretaker@aarhus.example"]
    assert da["Subject"].startswith("Alarm (advarsel): CO₂ over grænsen")
    assert en["Subject"].startswith("Alert (warning): CO₂ above the limit")
    assert (
        "Åbn i dashboardet: https://iot.example.dk/#alert-" in da.get_payload(decode=True).decode()
    )
    keys = {r[0] for r in db.execute("SELECT idempotency_key FROM deliveries")}
    assert {m["X-Kommune-IoT-Idempotency-Key"] for m in smtp_server.messages} == keys
    assert len({m["Message-ID"] for m in smtp_server.messages}) == 2


def test_smtp_refusing_the_login_is_retried_with_the_servers_answer_logged(
    db, database_url, smtp_server
) -> None:
    place = make_place(db)
    channel = add_channel(db, place, "email", recipients=["pedel@aarhus.example"])
    add_rule(db, place, channel)
    sync_alerts(db, place.municipality, RULES, [co2_condition(place)], datetime.now(UTC))
    deliver(database_url, smtp_server, smtp_password="wrong")
    status, attempts, error = db.execute(
        "SELECT status, attempts, last_error FROM deliveries"
    ).fetchone()
    assert (status, attempts) == ("pending", 1)
    assert "535" in error
    ok, code = db.execute("SELECT ok, status_code FROM delivery_attempts").fetchone()
    assert (ok, code) == (False, 535)
    assert smtp_server.messages == []


def test_failures_back_off_with_jitter_and_end_dead_past_the_maximum_age(
    db, database_url, http_receiver
) -> None:
    place = make_place(db)
    channel = add_channel(db, place, "webhook", url=http_receiver.url)
    add_rule(db, place, channel)
    sync_alerts(db, place.municipality, RULES, [co2_condition(place)], datetime.now(UTC))
    http_receiver.status = 503
    settings = {"deliver_backoff_base_s": 10.0, "deliver_backoff_max_s": 40.0}
    waits = []
    for attempt in range(1, 5):
        before = datetime.now(UTC)
        deliver(database_url, **settings)
        status, attempts, next_at = db.execute(
            "SELECT status, attempts, next_attempt_at FROM deliveries"
        ).fetchone()
        assert (status, attempts) == ("pending", attempt)
        waits.append((next_at - before).total_seconds())
        db.execute("UPDATE deliveries SET next_attempt_at = now()")  # the wait is over
    ceilings = [10, 20, 40, 40]
    for wait, ceiling in zip(waits, ceilings, strict=True):
        assert ceiling / 2 - 1 <= wait <= ceiling + 1
    # Past the maximum age: dead, visible with the receiver's last answer, not retried.
    db.execute("UPDATE deliveries SET created_at = now() - interval '2 days'")
    deliver(database_url, **settings)
    status, error = db.execute("SELECT status, last_error FROM deliveries").fetchone()
    assert status == "dead" and "503" in error
    requests = len(http_receiver.requests)
    db.execute("UPDATE deliveries SET next_attempt_at = now()")
    deliver(database_url, **settings)
    assert len(http_receiver.requests) == requests == 5


def test_backoff_is_exponential_capped_and_jittered() -> None:
    rng = random.Random(7)
    samples = [backoff_s(n, 10, 300, rng) for n in range(1, 12) for _ in range(50)]
    assert all(5 <= s <= 300 for s in samples)
    firsts = [backoff_s(1, 10, 300, rng) for _ in range(200)]
    assert min(firsts) >= 5 and max(firsts) <= 10 and len(set(firsts)) > 100


def _quiet_around_now(db) -> tuple[str, str]:
    local = db.execute("SELECT (now() AT TIME ZONE 'Europe/Copenhagen')::time").fetchone()[0]
    start = (datetime.combine(datetime.now(UTC).date(), local) - timedelta(hours=1)).time()
    end = (datetime.combine(datetime.now(UTC).date(), local) + timedelta(hours=1)).time()
    return start.isoformat(), end.isoformat()


def test_quiet_hours_hold_notices_for_a_morning_digest_but_not_critical_ones(
    db, database_url, http_receiver
) -> None:
    place = make_place(db)
    channel = add_channel(db, place, "webhook", url=http_receiver.url)
    quiet_from, quiet_until = _quiet_around_now(db)
    add_rule(db, place, channel, quiet_from=quiet_from, quiet_until=quiet_until,
             min_severity="info")  # fmt: skip
    now = datetime.now(UTC)
    warnings = [co2_condition(place, subject_suffix=f"/{i}") for i in range(3)]
    critical = co2_condition(place, "critical")
    sync_alerts(db, place.municipality, RULES, [*warnings, critical], now)
    statuses = db.execute(
        "SELECT a.severity, d.status, d.next_attempt_at - now() FROM deliveries d "
        "JOIN alerts a ON a.id = d.alert_id ORDER BY a.severity = 'critical', d.id"
    ).fetchall()
    assert [(s, st) for s, st, _ in statuses] == [("warning", "held")] * 3 + [
        ("critical", "pending")
    ]
    for _, _, until_end in statuses[:3]:
        assert timedelta(minutes=55) < until_end <= timedelta(hours=1)  # held until the end
    deliver(database_url)
    assert len(http_receiver.requests) == 1  # only the critical one, now
    # The quiet hours end: one digest with the three held notices.
    db.execute("UPDATE deliveries SET next_attempt_at = now() WHERE status = 'held'")
    deliver(database_url)
    assert len(http_receiver.requests) == 2
    digest = http_receiver.requests[1].json()
    assert digest["event"] == "digest"
    assert len(digest["data"]["items"]) == 3
    assert digest["subject"] == "kommune-iot: Samlet overblik (3)"
    assert (
        db.execute(
            "SELECT count(*) FROM deliveries WHERE status = 'digested' AND digest_id IS NOT NULL"
        ).fetchone()[0]
        == 3
    )
    deliver(database_url)  # nothing more
    assert len(http_receiver.requests) == 2


def test_unacknowledged_alerts_escalate_once_and_acknowledged_ones_do_not(
    db, database_url, http_receiver
) -> None:
    place = make_place(db)
    first = add_channel(db, place, "webhook", url=http_receiver.url + "/first", name="first")
    boss = add_channel(db, place, "webhook", url=http_receiver.url + "/boss", name="boss")
    add_rule(db, place, first, escalate_after_min=30, escalate_channel_id=boss)
    now = datetime.now(UTC)
    conditions = [
        co2_condition(place, subject_suffix="/a"),
        co2_condition(place, subject_suffix="/b"),
    ]
    sync_alerts(db, place.municipality, RULES, conditions, now)
    deliver(database_url)
    assert [r.path for r in http_receiver.requests] == ["/first", "/first"]
    deliver(database_url)  # not yet 30 minutes
    assert len(http_receiver.requests) == 2
    a, b = (r[0] for r in db.execute("SELECT id FROM alerts ORDER BY id"))
    acknowledge(db, b, place.municipality, "key:1")
    db.execute("UPDATE deliveries SET created_at = now() - interval '31 minutes'")
    deliver(database_url)
    deliver(database_url)
    escalated = [r for r in http_receiver.requests if r.path == "/boss"]
    assert len(escalated) == 1
    assert escalated[0].json()["event"] == "alert.escalated"
    assert escalated[0].json()["data"]["alert"]["id"] == a
    assert "Ikke kvitteret" in escalated[0].json()["subject"]


def test_a_resolve_by_hand_sends_a_resolve_notice_where_the_opening_was_sent(
    db, database_url, http_receiver
) -> None:
    place = make_place(db)
    channel = add_channel(db, place, "webhook", url=http_receiver.url)
    add_rule(db, place, channel)
    silent = add_channel(db, place, "webhook", url=http_receiver.url + "/silent", name="s")
    add_rule(db, place, silent, notify_resolved=False)
    sync_alerts(db, place.municipality, RULES, [co2_condition(place)], datetime.now(UTC))
    alert = db.execute("SELECT id FROM alerts").fetchone()[0]
    resolve(db, alert, place.municipality, "key:1")
    resolve(db, alert, place.municipality, "key:1")  # again: nothing new
    deliver(database_url)
    events = sorted((r.path, r.json()["event"]) for r in http_receiver.requests)
    assert events == [("/", "alert.opened"), ("/", "alert.resolved"), ("/silent", "alert.opened")]
    resolved = next(
        r.json() for r in http_receiver.requests if r.json()["event"] == "alert.resolved"
    )
    assert resolved["subject"].startswith("Afsluttet")


def test_two_workers_never_send_one_delivery_twice(db, database_url, http_receiver) -> None:
    place = make_place(db)
    channel = add_channel(db, place, "webhook", url=http_receiver.url)
    add_rule(db, place, channel)
    conditions = [co2_condition(place, subject_suffix=f"/{i}") for i in range(60)]
    sync_alerts(db, place.municipality, RULES, conditions, datetime.now(UTC))
    http_receiver.delay_s = 0.005
    import threading

    workers = [
        DeliveryWorker(outbound_settings(database_url, deliver_concurrency=3)) for _ in range(2)
    ]
    threads = [threading.Thread(target=w.run, kwargs={"until_idle": True}) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    keys = [r.json()["idempotency_key"] for r in http_receiver.requests]
    assert len(keys) == len(set(keys)) == 60
    assert sum(w.totals.delivered for w in workers) == 60


def test_old_finished_deliveries_are_pruned_but_not_those_of_unresolved_alerts(
    db, database_url, http_receiver
) -> None:
    place = make_place(db)
    channel = add_channel(db, place, "webhook", url=http_receiver.url)
    add_rule(db, place, channel)
    conditions = [co2_condition(place, subject_suffix=s) for s in ("/open", "/gone")]
    sync_alerts(db, place.municipality, RULES, conditions, datetime.now(UTC))
    sync_alerts(db, place.municipality, RULES, conditions[:1], datetime.now(UTC))
    deliver(database_url)
    assert (
        db.execute("SELECT count(*) FROM deliveries WHERE status = 'delivered'").fetchone()[0] == 3
    )  # two openings, one resolve notice
    db.execute("UPDATE deliveries SET created_at = now() - interval '31 days'")
    deliver(database_url)
    left = db.execute(
        "SELECT a.subject, d.event FROM deliveries d JOIN alerts a ON a.id = d.alert_id"
    ).fetchall()
    assert left == [(f"sensor:{place.climate}/open", "alert.opened")]
    assert db.execute("SELECT count(*) FROM delivery_attempts").fetchone()[0] == 1


def test_a_sender_that_raises_fails_that_delivery_and_the_worker_goes_on(
    db, database_url, http_receiver
) -> None:
    place = make_place(db)
    broken = add_channel(db, place, "webhook", url="http://[::1/broken", name="broken")
    working = add_channel(db, place, "webhook", url=http_receiver.url, name="working")
    add_rule(db, place, broken)
    add_rule(db, place, working)
    sync_alerts(db, place.municipality, RULES, [co2_condition(place)], datetime.now(UTC))
    totals = deliver(database_url)
    assert (totals.delivered, totals.failed) == (1, 1)
    status, error = db.execute(
        "SELECT status, last_error FROM deliveries WHERE channel_id = %s", (broken,)
    ).fetchone()
    assert status == "pending" and "URL" in error


def test_no_password_goes_to_an_smtp_server_whose_certificate_is_not_trusted(
    db, database_url, smtp_server
) -> None:
    place = make_place(db)
    channel = add_channel(db, place, "email", recipients=["pedel@aarhus.example"])
    add_rule(db, place, channel)
    sync_alerts(db, place.municipality, RULES, [co2_condition(place)], datetime.now(UTC))
    # The test CA is not among the system's: the server cannot prove who it is.
    deliver(database_url, smtp_server, smtp_ca_file=None)
    status, error = db.execute("SELECT status, last_error FROM deliveries").fetchone()
    assert status == "pending" and "CERTIFICATE_VERIFY_FAILED" in error
    assert smtp_server.logins == [] and smtp_server.messages == []
