"""Writing the outbox (`deliveries`) in the caller's transaction.

What causes a delivery writes it in its own transaction: an alert opening or resolving
(analytics/alerts.py), an escalation found by the deliver worker, a batch of readings
committed by ingest (ingest/writer.py). So a transition or a batch that commits always has
its deliveries, and one that rolls back has none. Delivering them is outbound/worker.py's.

Every row has an idempotency key, unique in the table: writing the same transition twice
(an evaluation repeated, a resolve retried) adds nothing, and receivers get the key to
drop repeats of a delivery (docs/notifications.md).

Quiet hours are judged here, when the row is written: a notice that falls in a rule's
quiet hours (Europe/Copenhagen local time) and is not critical is written `held` until
the quiet hours end, when the worker folds the held notices of a channel into one digest.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import psycopg

ALERT_OPENED = "alert.opened"
ALERT_ESCALATED = "alert.escalated"
ALERT_RESOLVED = "alert.resolved"
LOCAL_TIME_ZONE = "Europe/Copenhagen"

# The alert, its sensor and its place as the notice will tell them; rendered by the worker
# (outbound/templates.py). Columns of `a` (alerts), `s` (sensors), `z` (zones), `si` (sites).
_ALERT_PAYLOAD = """
jsonb_build_object(
    'alert', jsonb_build_object(
        'id', a.id, 'rule', a.rule, 'severity', a.severity, 'status', a.status,
        'subject', a.subject, 'started_at', a.started_at, 'ended_at', a.ended_at,
        'last_value', a.last_value, 'message', a.message, 'sensor_id', a.sensor_id,
        'zone_id', a.zone_id),
    'municipality', (SELECT slug FROM municipalities m WHERE m.id = a.municipality_id),
    'sensor', CASE WHEN s.id IS NULL THEN NULL ELSE
        jsonb_build_object('id', s.id, 'external_id', s.external_id, 'name', s.name,
                           'kind', s.kind) END,
    'zone', z.name,
    'site', si.name
)
"""

# Whether local time `now` falls in [quiet_from, quiet_until) (wrapping midnight), and the
# instant the quiet hours end.
_LOCAL = f"(now() AT TIME ZONE '{LOCAL_TIME_ZONE}')"
_IN_QUIET = f"""
(r.quiet_from IS NOT NULL AND a.severity <> 'critical' AND CASE
    WHEN r.quiet_from <= r.quiet_until
        THEN {_LOCAL}::time >= r.quiet_from AND {_LOCAL}::time < r.quiet_until
    ELSE {_LOCAL}::time >= r.quiet_from OR {_LOCAL}::time < r.quiet_until END)
"""
_QUIET_END = f"""
((CASE WHEN {_LOCAL}::time < r.quiet_until THEN {_LOCAL}::date
       ELSE {_LOCAL}::date + 1 END + r.quiet_until) AT TIME ZONE '{LOCAL_TIME_ZONE}')
"""

_SEVERITY_RANK = "array_position(ARRAY['info', 'warning', 'critical']::text[], {})"  # 1, 2, 3

_MATCHING_RULES = f"""
FROM alerts a
JOIN notification_rules r ON r.municipality_id = a.municipality_id AND r.enabled
LEFT JOIN sensors s ON s.id = a.sensor_id
LEFT JOIN zones z ON z.id = coalesce(a.zone_id, s.zone_id)
LEFT JOIN sites si ON si.id = coalesce(s.site_id, z.site_id)
WHERE a.id = ANY(%(alert_ids)s)
  AND (r.alert_rule IS NULL OR a.rule = r.alert_rule
       OR (right(r.alert_rule, 1) = '.' AND starts_with(a.rule, r.alert_rule)))
  AND (r.site_id IS NULL OR r.site_id = coalesce(s.site_id, z.site_id))
  AND (r.zone_id IS NULL OR r.zone_id = coalesce(a.zone_id, s.zone_id))
  AND {_SEVERITY_RANK.format("a.severity")} >= {_SEVERITY_RANK.format("r.min_severity")}
"""


def _insert_notices(channel: str, event: str, extra_condition: str = "") -> str:
    # Assembled from this module's constants only, never from input.
    return f"""
INSERT INTO deliveries (municipality_id, channel_id, rule_id, alert_id, event,
                        idempotency_key, payload, status, next_attempt_at)
SELECT a.municipality_id, {channel}, r.id, a.id, '{event}',
       'alert:' || a.id || ':{event}:' || r.id,
       {_ALERT_PAYLOAD},
       CASE WHEN {_IN_QUIET} THEN 'held' ELSE 'pending' END,
       CASE WHEN {_IN_QUIET} THEN {_QUIET_END} ELSE now() END
{_MATCHING_RULES}
  AND EXISTS (SELECT 1 FROM notification_channels c WHERE c.id = {channel} AND c.enabled)
  {extra_condition}
ON CONFLICT (idempotency_key) DO NOTHING
"""


_OPENED = _insert_notices("r.channel_id", ALERT_OPENED)
# A resolve notice only where the opening was announced, and only if the rule asks for it.
_RESOLVED = _insert_notices(
    "r.channel_id",
    ALERT_RESOLVED,
    f"""AND r.notify_resolved AND EXISTS (
        SELECT 1 FROM deliveries d
        WHERE d.alert_id = a.id AND d.rule_id = r.id AND d.event = '{ALERT_OPENED}')""",
)
# Unacknowledged (still open) alerts whose opening notice is older than the rule's
# escalation time; to the escalation channel, or the rule's own.
_ESCALATED = _insert_notices(
    "coalesce(r.escalate_channel_id, r.channel_id)",
    ALERT_ESCALATED,
    f"""AND a.status = 'open' AND r.escalate_after_min IS NOT NULL AND EXISTS (
        SELECT 1 FROM deliveries d
        WHERE d.alert_id = a.id AND d.rule_id = r.id AND d.event = '{ALERT_OPENED}'
          AND d.created_at <= now() - make_interval(mins => r.escalate_after_min))""",
)
_ESCALATION_CANDIDATES = f"""
SELECT DISTINCT d.alert_id FROM deliveries d
JOIN alerts a ON a.id = d.alert_id AND a.status = 'open'
JOIN notification_rules r ON r.id = d.rule_id AND r.escalate_after_min IS NOT NULL
WHERE d.event = '{ALERT_OPENED}'
  AND d.created_at <= now() - make_interval(mins => r.escalate_after_min)
  AND NOT EXISTS (SELECT 1 FROM deliveries e
                  WHERE e.alert_id = d.alert_id AND e.rule_id = r.id
                    AND e.event = '{ALERT_ESCALATED}')
"""


def enqueue_alert_opened(cur: psycopg.Cursor, alert_ids: Sequence[int]) -> int:
    """Write the opening notices of `alert_ids` in the cursor's transaction; returns how many."""
    return _run(cur, _OPENED, alert_ids)


def enqueue_alert_resolved(cur: psycopg.Cursor, alert_ids: Sequence[int]) -> int:
    """Write the resolve notices of `alert_ids` (where an opening was announced)."""
    return _run(cur, _RESOLVED, alert_ids)


def enqueue_escalations(conn: psycopg.Connection) -> int:
    """Write an escalation notice for every open alert whose rule's escalation time has
    passed since its opening notice; each once (its key is unique). Own transaction."""
    with conn.transaction(), conn.cursor() as cur:
        ids = [r[0] for r in cur.execute(_ESCALATION_CANDIDATES).fetchall()]
        return _run(cur, _ESCALATED, ids) if ids else 0


def _run(cur: psycopg.Cursor, statement: str, alert_ids: Sequence[int]) -> int:
    if not alert_ids:
        return 0
    cur.execute(statement, {"alert_ids": list(alert_ids)})
    return cur.rowcount


# --- readings for data targets ---------------------------------------------------------

# One delivery per enabled target that any row of the batch passes, in the batch's
# transaction. The payload holds the rows column by column (time as epoch seconds, sensor
# id, metric name, value), in batch order: arrays cost the database a fraction of what a
# JSON object per row would (BENCHMARKS.md, outbound).
_ENQUEUE_READINGS = """
INSERT INTO deliveries (municipality_id, target_id, event, idempotency_key, payload)
SELECT t.municipality_id, t.id, 'readings',
       'readings:' || t.id || ':' || txid_current() || ':' || %(part)s,
       jsonb_build_object(
           'time', array_agg(date_part('epoch', o.time) ORDER BY o.time, o.sensor_id, m.id),
           'sensor_id', array_agg(o.sensor_id ORDER BY o.time, o.sensor_id, m.id),
           'metric', array_agg(m.name ORDER BY o.time, o.sensor_id, m.id),
           'value', array_agg(o.value ORDER BY o.time, o.sensor_id, m.id))
FROM {table} o
JOIN sensors s ON s.id = o.sensor_id
JOIN metrics m ON m.id = o.metric_id
JOIN data_targets t ON t.municipality_id = s.municipality_id AND t.enabled
WHERE (t.sensor_kinds IS NULL OR s.kind = ANY(t.sensor_kinds))
  AND (t.sensor_ids IS NULL OR s.id = ANY(t.sensor_ids))
  AND (t.metrics IS NULL OR m.name = ANY(t.metrics))
GROUP BY t.municipality_id, t.id
"""


def readings_rows(payload: dict) -> list[tuple[float, int, str, float]]:
    """A readings payload as rows (epoch seconds, sensor id, metric, value)."""
    columns = (payload.get(k) or [] for k in ("time", "sensor_id", "metric", "value"))
    return list(zip(*columns, strict=True))


# How long ingest trusts its answer to "is any data target enabled?".
TARGETS_RECHECK_S = 5.0


class ReadingsOutbox:
    """Ingest's side of data targets: remembers (for TARGETS_RECHECK_S) whether any target
    is enabled, so that batches pay nothing while none is, and writes a batch's deliveries
    from a table holding the batch's rows (time, sensor_id, metric_id, value)."""

    def __init__(self, recheck_s: float = TARGETS_RECHECK_S) -> None:
        self.recheck_s = recheck_s
        self._active = False
        self._checked_at = float("-inf")
        self._part = 0

    def active(self, conn: psycopg.Connection) -> bool:
        now = time.monotonic()
        if now - self._checked_at >= self.recheck_s:
            row = conn.execute("SELECT EXISTS (SELECT 1 FROM data_targets WHERE enabled)")
            self._active = bool(row.fetchone()[0])
            self._checked_at = now
        return self._active

    def enqueue(self, cur: psycopg.Cursor, table: str) -> int:
        """Write the deliveries of the rows in `table` (a name this module's caller owns)."""
        self._part += 1  # two writes in one transaction (bisecting) get distinct keys
        cur.execute(_ENQUEUE_READINGS.format(table=table), {"part": self._part})
        return cur.rowcount
