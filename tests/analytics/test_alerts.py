"""Alert lifecycle against the real alerts table."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from analytics.alerts import ActiveCondition, acknowledge, resolve, sync_alerts

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def _municipalities(db):
    db.execute(
        "INSERT INTO municipalities (slug, name) VALUES ('aarhus', 'Aarhus'), ('odense', 'Odense')"
    )


def _condition(subject="sensor:1", value=1200.0):
    return ActiveCondition("climate.co2_limit", subject, NOW - timedelta(minutes=20), value)


def test_sync_twice_keeps_one_open_alert_with_the_latest_value(db):
    _municipalities(db)
    sync_alerts(db, 1, ["climate.co2_limit"], [_condition(value=1200.0)], NOW)
    sync_alerts(db, 1, ["climate.co2_limit"], [_condition(value=1300.0)], NOW)
    rows = db.execute("SELECT status, last_value, started_at FROM alerts").fetchall()
    assert rows == [("open", 1300.0, NOW - timedelta(minutes=20))]


def test_only_evaluated_rules_of_the_same_municipality_are_resolved(db):
    _municipalities(db)
    sync_alerts(db, 1, ["climate.co2_limit"], [_condition("sensor:1")], NOW)
    sync_alerts(db, 2, ["climate.co2_limit"], [_condition("sensor:2")], NOW)
    result = sync_alerts(db, 1, ["bin.full"], [], NOW)
    assert result.resolved == 0
    result = sync_alerts(db, 1, ["climate.co2_limit"], [], NOW)
    assert result.resolved == 1
    rows = db.execute("SELECT subject, status FROM alerts ORDER BY subject").fetchall()
    assert rows == [("sensor:1", "resolved"), ("sensor:2", "open")]


def test_staff_acknowledge_and_resolve_only_their_own_alerts(db):
    _municipalities(db)
    sync_alerts(db, 1, ["climate.co2_limit"], [_condition()], NOW)
    alert_id = db.execute("SELECT id FROM alerts").fetchone()[0]
    assert acknowledge(db, alert_id, 2, "someone@odense.dk") is None
    assert resolve(db, alert_id, 2, "someone@odense.dk") is None
    assert acknowledge(db, 9999, 1, "x") is None
    acked = acknowledge(db, alert_id, 1, "jens@aarhus.dk")
    assert (acked["status"], acked["acknowledged_by"]) == ("acknowledged", "jens@aarhus.dk")
    done = resolve(db, alert_id, 1, "jens@aarhus.dk")
    assert done["status"] == "resolved" and done["resolved_at"] is not None
    assert done["details"]["resolved_by"] == "jens@aarhus.dk"
    # Acknowledging a resolved alert changes nothing.
    assert acknowledge(db, alert_id, 1, "late@aarhus.dk")["status"] == "resolved"
    # The condition still holds at the next evaluation: a new alert opens.
    sync_alerts(db, 1, ["climate.co2_limit"], [_condition()], NOW)
    assert db.execute("SELECT status FROM alerts ORDER BY id").fetchall() == [
        ("resolved",),
        ("open",),
    ]
