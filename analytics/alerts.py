"""Alert lifecycle in the `alerts` table: open → acknowledged → resolved.

At most one unresolved alert exists per (rule, subject) (partial unique index
uq_alerts_unresolved_rule_subject), so re-running an evaluation over the same data updates
the open alert instead of adding another. An alert whose condition cleared is resolved;
if it fires again later, a new row opens.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from models.outbox import enqueue_alert_opened, enqueue_alert_resolved


@dataclass(frozen=True)
class ActiveCondition:
    """A rule that currently holds for a subject, as found by one evaluation."""

    rule: str
    subject: str
    started_at: datetime
    last_value: float | None = None
    message: str = ""
    severity: str = "warning"
    sensor_id: int | None = None
    zone_id: int | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SyncResult:
    upserted: int
    resolved: int


# All of one evaluation's active conditions in one statement (arrays, one element per
# condition): one round trip instead of one per alert, which at thousands of open alerts
# was a good part of a cycle.
_UPSERT = """
INSERT INTO alerts (municipality_id, sensor_id, zone_id, rule, severity, status, subject,
                    started_at, last_value, message, details, updated_at)
SELECT %(municipality_id)s, a.sensor_id, a.zone_id, a.rule, a.severity, 'open', a.subject,
       a.started_at, a.last_value, a.message, a.details, now()
FROM unnest(%(sensor_id)s::bigint[], %(zone_id)s::integer[], %(rule)s::text[],
            %(severity)s::text[], %(subject)s::text[], %(started_at)s::timestamptz[],
            %(last_value)s::float8[], %(message)s::text[], %(details)s::jsonb[])
     WITH ORDINALITY AS a(sensor_id, zone_id, rule, severity, subject, started_at,
                          last_value, message, details, position)
ORDER BY a.position
ON CONFLICT (rule, subject) WHERE status <> 'resolved' DO UPDATE SET
    last_value = EXCLUDED.last_value,
    severity = EXCLUDED.severity,
    message = EXCLUDED.message,
    details = EXCLUDED.details,
    updated_at = now()
RETURNING id, (xmax = 0) AS inserted
"""

# Resolve this municipality's unresolved alerts of the evaluated rules that did not fire.
_RESOLVE_CLEARED = """
UPDATE alerts SET status = 'resolved', resolved_at = %(now)s, ended_at = %(now)s,
                  updated_at = now()
WHERE municipality_id = %(municipality_id)s
  AND status <> 'resolved'
  AND (rule = ANY(%(rules)s)
       OR (rule = ANY(%(partial_rules)s) AND subject = ANY(%(partial_subjects)s)))
  AND (rule, subject) NOT IN (
      SELECT r, s FROM unnest(%(active_rules)s::text[], %(active_subjects)s::text[]) AS a(r, s)
  )
RETURNING id
"""


def sync_alerts(
    conn: psycopg.Connection,
    municipality_id: int,
    evaluated_rules: Iterable[str],
    active: Sequence[ActiveCondition],
    now: datetime,
    partial_rules: Iterable[str] = (),
    partial_subjects: Iterable[str] = (),
) -> SyncResult:
    """Make the alerts table match one evaluation, in one transaction.

    Active conditions are upserted (an acknowledged alert stays acknowledged); unresolved
    alerts of `evaluated_rules` that are no longer active are resolved. The notices of
    alerts that opened or resolved are written to the outbox in the same transaction. Rules not
    evaluated this time (e.g. no data loaded for them) are left as they are.
    `partial_rules` were evaluated for `partial_subjects` only (an incremental cycle over
    the sensors with new data): their alerts of other subjects are left as they are.
    """
    # One row per (rule, subject): a later condition for the same alert updates what an
    # upsert would update (value, severity, message, details) and keeps the first start.
    merged: dict[tuple[str, str], ActiveCondition] = {}
    for c in active:
        first = merged.get((c.rule, c.subject))
        merged[(c.rule, c.subject)] = (
            c if first is None else replace(c, started_at=first.started_at)
        )
    rows = list(merged.values())
    opened: list[int] = []
    with conn.transaction(), conn.cursor() as cur:
        if rows:
            cur.execute(
                _UPSERT,
                {
                    "municipality_id": municipality_id,
                    "sensor_id": [c.sensor_id for c in rows],
                    "zone_id": [c.zone_id for c in rows],
                    "rule": [c.rule for c in rows],
                    "severity": [c.severity for c in rows],
                    "subject": [c.subject for c in rows],
                    "started_at": [c.started_at for c in rows],
                    "last_value": [c.last_value for c in rows],
                    "message": [c.message for c in rows],
                    "details": [Jsonb(c.details) for c in rows],
                },
            )
            opened = [alert_id for alert_id, inserted in cur.fetchall() if inserted]
        cur.execute(
            _RESOLVE_CLEARED,
            {
                "now": now,
                "municipality_id": municipality_id,
                "rules": sorted(set(evaluated_rules)),
                "partial_rules": sorted(set(partial_rules)),
                "partial_subjects": list(partial_subjects),
                "active_rules": [c.rule for c in active],
                "active_subjects": [c.subject for c in active],
            },
        )
        resolved_ids = [r[0] for r in cur.fetchall()]
        # The notices of these transitions commit with them, or not at all (models/outbox.py).
        enqueue_alert_opened(cur, opened)
        enqueue_alert_resolved(cur, resolved_ids)
        resolved = len(resolved_ids)
    return SyncResult(upserted=len(active), resolved=resolved)


def acknowledge(
    conn: psycopg.Connection, alert_id: int, municipality_id: int, by: str
) -> dict[str, Any] | None:
    """Mark an open alert acknowledged by `by`; returns the alert row.

    None when the alert does not exist or belongs to another municipality. Acknowledging
    an acknowledged or resolved alert changes nothing and returns it as it is.
    """
    return _transition(
        conn,
        """
        UPDATE alerts SET status = 'acknowledged', acknowledged_at = now(),
                          acknowledged_by = %s, updated_at = now()
        WHERE id = %s AND municipality_id = %s AND status = 'open'
        RETURNING *
        """,
        alert_id,
        municipality_id,
        by,
    )


def resolve(
    conn: psycopg.Connection, alert_id: int, municipality_id: int, by: str
) -> dict[str, Any] | None:
    """Resolve an alert by hand; None when it is not that municipality's or does not exist.

    If the condition still holds, the next evaluation opens a new alert.
    """
    return _transition(
        conn,
        """
        UPDATE alerts SET status = 'resolved', resolved_at = now(),
                          ended_at = coalesce(ended_at, now()), updated_at = now(),
                          details = details || jsonb_build_object('resolved_by', %s::text)
        WHERE id = %s AND municipality_id = %s AND status <> 'resolved'
        RETURNING *
        """,
        alert_id,
        municipality_id,
        by,
    )


def _transition(
    conn: psycopg.Connection, update: str, alert_id: int, municipality_id: int, by: str
) -> dict[str, Any] | None:
    """Run `update` (parameters: by, id, municipality) on the alert; when it changes
    nothing (already in that state), the alert as it is; None when it is not that
    municipality's or does not exist."""
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        cur.execute(update, (by, alert_id, municipality_id))
        row = cur.fetchone()
        if row is not None and row["status"] == "resolved":
            enqueue_alert_resolved(cur, [row["id"]])
        if row is None:
            cur.execute(
                "SELECT * FROM alerts WHERE id = %s AND municipality_id = %s",
                (alert_id, municipality_id),
            )
            row = cur.fetchone()
    return row
