"""Which tables record their changes in the audit trail, and attaching the trigger.

Each table named in ``AUDITED_TABLES`` gets the ``iot_audit_row`` trigger (migration 0018)
after every migration (migrations/env.py): every row a staff request inserts, changes or
deletes becomes an ``audit_events`` row in the same transaction, with the request's actor,
client address, method, path and action (api/audit.py puts them in the session setting
``iot.audit``), and the row's values before and after. The listed columns are left out of
the record (secrets, bookkeeping); a change of only those is no event.

A table the staff role may write must be listed here or in ``NOT_AUDITED`` with the reason
(tests/staff/test_audit.py fails otherwise).
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from models.db_roles import STAFF

AUDITED_TABLES: dict[str, tuple[str, ...]] = {
    "sensors": (),
    "sites": (),
    "zones": (),
    "device_models": (),
    # The source, examples and check report (up to 256 KiB of script) stay in the
    # device_codecs row the event names by id, model and version: the staff role can only
    # add versions, never change or delete one, so the row is the record of what was run.
    "device_codecs": ("script", "examples", "report"),
    "network_applications": (),
    "alerts": (),
    "dead_letters": ("payload",),  # a replay marks the letter; its bytes stay in dead_letters
    "api_keys": ("secret_hash", "last_used_at"),
    "staff_sessions": ("token_hash", "csrf_hash", "idle_expires_at"),  # sign-in, sign-out
    # Where notices and data go. The signing secrets are left out; the URL is kept, since
    # where data goes is what the trail must show (a Teams/Slack URL or an MQTT URL's
    # password is thereby in the trail: rotate it at the receiver when a channel is replaced).
    "notification_channels": ("secret",),
    "notification_rules": (),
    "data_targets": ("secret",),
    # Staff write deliveries by a test, a retry or resolving an alert; the worker's and
    # ingest's writes carry no audit context and are not recorded. The payload (readings,
    # the notice) stays in deliveries; rule_id and digest_id are bookkeeping the database
    # clears when a rule or digest goes (not one event per notice of a deleted rule).
    "deliveries": ("payload", "rule_id", "digest_id"),
    "school_hours": (),  # the calendar behind occupied hours (api/routes/reports.py)
    "school_holidays": (),
}

# The operations recorded, where not every one is. Deleting a channel or data target takes
# its delivery log with it (a data target's is a month of ingest batches, millions of rows):
# the recorded decision is the deletion of the channel or target, not each row of its log.
AUDITED_OPERATIONS: dict[str, str] = {"deliveries": "INSERT OR UPDATE"}
_ALL_OPERATIONS = "INSERT OR UPDATE OR DELETE"

# Tables the staff role writes without it being a staff decision, and why.
NOT_AUDITED: dict[str, str] = {
    "readings": "written by a dead-letter replay, which is audited on dead_letters",
    "latest_readings": "follows readings",
    "latest_pending": "follows readings",
    "rollup_dirty_hours": "bookkeeping of the rollups",
    "metrics": "the fixed metric vocabulary, upserted by a replay's ingest pipeline",
    "dead_letter_repeats": "counted by a replay's ingest pipeline",
    "uplink_identities": "deduplication bookkeeping of a replay's ingest pipeline",
    "audit_events": "the trail itself",
    "login_states": "sign-ins under way; the session they create is audited",
}

TRIGGER = "iot_audit"


def staff_writable_tables(grants: dict[str, dict[str, str]]) -> set[str]:
    """Tables the staff role may INSERT into, UPDATE or DELETE from, per `grants`."""
    return {
        table
        for table, by_role in grants.items()
        if any(p in by_role.get(STAFF, "") for p in ("INSERT", "UPDATE", "DELETE"))
    }


def apply_audit_triggers(conn: psycopg.Connection) -> None:
    """Attach (or refresh) the audit trigger on every table of `AUDITED_TABLES` that exists;
    a no-op before migration 0018 created the trigger function."""
    exists = conn.execute("SELECT to_regproc('public.iot_audit_row') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return
    for table, left_out in AUDITED_TABLES.items():
        present = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f"public.{table}",))
        if not present.fetchone()[0]:
            continue  # a table of a later migration, or one dropped
        conn.execute(
            sql.SQL(
                "CREATE OR REPLACE TRIGGER {} AFTER {} ON {} "
                "FOR EACH ROW EXECUTE FUNCTION iot_audit_row({})"
            ).format(
                sql.Identifier(TRIGGER),
                sql.SQL(AUDITED_OPERATIONS.get(table, _ALL_OPERATIONS)),
                sql.Identifier(table),
                sql.SQL(", ").join(sql.Literal(c) for c in left_out),
            )
        )
