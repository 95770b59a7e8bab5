"""SQL for the staff side of outbound deliveries: one municipality's notification
channels and rules, data targets, and the delivery log.

Every statement is bounded by the caller's municipality; a row of another municipality is
"not found". Each write is one function; its route records it in the audit trail.
"""

from __future__ import annotations

import secrets
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row

_CHANNEL_COLUMNS = (
    "id, name, kind, url, recipients, language, enabled, created_at, secret IS NOT NULL AS signed"
)
_RULE_COLUMNS = (
    "id, channel_id, alert_rule, site_id, zone_id, min_severity, quiet_from, quiet_until, "
    "escalate_after_min, escalate_channel_id, notify_resolved, enabled"
)
_TARGET_COLUMNS = (
    "id, name, kind, url, topic, sensor_kinds, sensor_ids, metrics, enabled, created_at, "
    "secret IS NOT NULL AS signed"
)
_DELIVERY_COLUMNS = (
    "id, channel_id, target_id, rule_id, alert_id, digest_id, event, idempotency_key, status, "
    "attempts, created_at, next_attempt_at, delivered_at, last_error"
)


async def _one(conn: AsyncConnection, query: str, params: dict) -> dict[str, Any] | None:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(query, params)
    return await cur.fetchone()


async def _all(conn: AsyncConnection, query: str, params: dict) -> list[dict[str, Any]]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(query, params)
    return await cur.fetchall()


# --- channels ---------------------------------------------------------------------------


async def list_channels(conn: AsyncConnection, m: int) -> list[dict[str, Any]]:
    return await _all(
        conn,
        f"SELECT {_CHANNEL_COLUMNS} FROM notification_channels WHERE municipality_id = %(m)s "
        "ORDER BY id",
        {"m": m},
    )


async def create_channel(conn: AsyncConnection, m: int, channel: dict[str, Any]) -> dict[str, Any]:
    """A new channel; a webhook gets a signing secret, returned this once."""
    secret = secrets.token_urlsafe(32) if channel["kind"] == "webhook" else None
    row = await _one(
        conn,
        "INSERT INTO notification_channels (municipality_id, name, kind, url, recipients, "
        "secret, language, enabled) VALUES (%(m)s, %(name)s, %(kind)s, %(url)s, "
        f"%(recipients)s, %(secret)s, %(language)s, %(enabled)s) RETURNING {_CHANNEL_COLUMNS}",
        {"m": m, **channel, "secret": secret},
    )
    assert row is not None
    return {**row, "secret": secret} if secret else row


async def update_channel(
    conn: AsyncConnection, m: int, channel_id: int, changes: dict[str, Any]
) -> dict[str, Any] | None:
    allowed = ("name", "url", "recipients", "language", "enabled")
    sets = [f"{k} = %({k})s" for k in allowed if k in changes]
    if not sets:
        return await _one(
            conn,
            f"SELECT {_CHANNEL_COLUMNS} FROM notification_channels "
            "WHERE id = %(id)s AND municipality_id = %(m)s",
            {"id": channel_id, "m": m},
        )
    return await _one(
        conn,
        f"UPDATE notification_channels SET {', '.join(sets)} "
        f"WHERE id = %(id)s AND municipality_id = %(m)s RETURNING {_CHANNEL_COLUMNS}",
        {**changes, "id": channel_id, "m": m},
    )


async def delete_channel(conn: AsyncConnection, m: int, channel_id: int) -> bool:
    cur = await conn.execute(
        "DELETE FROM notification_channels WHERE id = %s AND municipality_id = %s",
        (channel_id, m),
    )
    return cur.rowcount == 1


async def enqueue_channel_test(
    conn: AsyncConnection, m: int, channel_id: int
) -> dict[str, Any] | None:
    """A test notice to the channel (even a switched-off one); None when not the
    municipality's."""
    return await _one(
        conn,
        "INSERT INTO deliveries (municipality_id, channel_id, event, idempotency_key, payload) "
        "SELECT municipality_id, id, 'test', 'test:channel:' || id || ':' || gen_random_uuid(), "
        "jsonb_build_object('test', true) FROM notification_channels "
        f"WHERE id = %(id)s AND municipality_id = %(m)s RETURNING {_DELIVERY_COLUMNS}",
        {"id": channel_id, "m": m},
    )


# --- rules ------------------------------------------------------------------------------


async def list_rules(conn: AsyncConnection, m: int) -> list[dict[str, Any]]:
    return await _all(
        conn,
        f"SELECT {_RULE_COLUMNS} FROM notification_rules WHERE municipality_id = %(m)s ORDER BY id",
        {"m": m},
    )


async def create_rule(conn: AsyncConnection, m: int, rule: dict[str, Any]) -> dict[str, Any] | None:
    """A new rule; None when a channel, site or zone it names is not the municipality's."""
    return await _one(
        conn,
        """
        INSERT INTO notification_rules (municipality_id, channel_id, alert_rule, site_id,
            zone_id, min_severity, quiet_from, quiet_until, escalate_after_min,
            escalate_channel_id, notify_resolved, enabled)
        SELECT %(m)s, %(channel_id)s, %(alert_rule)s, %(site_id)s, %(zone_id)s,
               %(min_severity)s, %(quiet_from)s, %(quiet_until)s, %(escalate_after_min)s,
               %(escalate_channel_id)s, %(notify_resolved)s, %(enabled)s
        WHERE EXISTS (SELECT 1 FROM notification_channels
                      WHERE id = %(channel_id)s AND municipality_id = %(m)s)
          AND (%(escalate_channel_id)s::bigint IS NULL OR EXISTS (
                SELECT 1 FROM notification_channels
                WHERE id = %(escalate_channel_id)s AND municipality_id = %(m)s))
          AND (%(site_id)s::int IS NULL OR EXISTS (
                SELECT 1 FROM sites WHERE id = %(site_id)s AND municipality_id = %(m)s))
          AND (%(zone_id)s::int IS NULL OR EXISTS (
                SELECT 1 FROM zones WHERE id = %(zone_id)s AND municipality_id = %(m)s))
        RETURNING """
        + _RULE_COLUMNS,
        {"m": m, **rule},
    )


async def delete_rule(conn: AsyncConnection, m: int, rule_id: int) -> bool:
    cur = await conn.execute(
        "DELETE FROM notification_rules WHERE id = %s AND municipality_id = %s", (rule_id, m)
    )
    return cur.rowcount == 1


# --- data targets -----------------------------------------------------------------------


async def list_targets(conn: AsyncConnection, m: int) -> list[dict[str, Any]]:
    return await _all(
        conn,
        f"SELECT {_TARGET_COLUMNS} FROM data_targets WHERE municipality_id = %(m)s ORDER BY id",
        {"m": m},
    )


async def create_target(conn: AsyncConnection, m: int, target: dict[str, Any]) -> dict[str, Any]:
    """A new data target, switched off until staff switch it on; HTTP and NGSI-LD targets
    get a signing secret, returned this once."""
    secret = secrets.token_urlsafe(32) if target["kind"] != "mqtt" else None
    row = await _one(
        conn,
        "INSERT INTO data_targets (municipality_id, name, kind, url, topic, secret, "
        "sensor_kinds, sensor_ids, metrics, enabled) VALUES (%(m)s, %(name)s, %(kind)s, "
        "%(url)s, %(topic)s, %(secret)s, %(sensor_kinds)s, %(sensor_ids)s, %(metrics)s, false) "
        f"RETURNING {_TARGET_COLUMNS}",
        {"m": m, **target, "secret": secret},
    )
    assert row is not None
    return {**row, "secret": secret} if secret else row


async def update_target(
    conn: AsyncConnection, m: int, target_id: int, changes: dict[str, Any]
) -> dict[str, Any] | None:
    allowed = ("name", "url", "topic", "sensor_kinds", "sensor_ids", "metrics", "enabled")
    sets = [f"{k} = %({k})s" for k in allowed if k in changes] or ["name = name"]
    return await _one(
        conn,
        f"UPDATE data_targets SET {', '.join(sets)} "
        f"WHERE id = %(id)s AND municipality_id = %(m)s RETURNING {_TARGET_COLUMNS}",
        {**changes, "id": target_id, "m": m},
    )


async def delete_target(conn: AsyncConnection, m: int, target_id: int) -> bool:
    cur = await conn.execute(
        "DELETE FROM data_targets WHERE id = %s AND municipality_id = %s", (target_id, m)
    )
    return cur.rowcount == 1


async def enqueue_target_test(
    conn: AsyncConnection, m: int, target_id: int, limit: int = 200
) -> dict[str, Any] | None:
    """A test delivery to the target (even a switched-off one): the latest values its
    filter passes, as a live batch would carry them. None when not the municipality's."""
    return await _one(
        conn,
        """
        INSERT INTO deliveries (municipality_id, target_id, event, idempotency_key, payload)
        SELECT t.municipality_id, t.id, 'test', 'test:target:' || t.id || ':' || gen_random_uuid(),
               (SELECT jsonb_build_object(
                           'time', coalesce(array_agg(date_part('epoch', x.time)), '{}'),
                           'sensor_id', coalesce(array_agg(x.sensor_id), '{}'),
                           'metric', coalesce(array_agg(x.metric), '{}'),
                           'value', coalesce(array_agg(x.value), '{}'))
                FROM (SELECT l.time, l.sensor_id, mt.name AS metric, l.value
                      FROM latest_readings l
                      JOIN sensors s ON s.id = l.sensor_id
                      JOIN metrics mt ON mt.id = l.metric_id
                      WHERE s.municipality_id = t.municipality_id
                        AND (t.sensor_kinds IS NULL OR s.kind = ANY(t.sensor_kinds))
                        AND (t.sensor_ids IS NULL OR s.id = ANY(t.sensor_ids))
                        AND (t.metrics IS NULL OR mt.name = ANY(t.metrics))
                      ORDER BY l.time DESC LIMIT %(limit)s) x)
        FROM data_targets t WHERE t.id = %(id)s AND t.municipality_id = %(m)s
        RETURNING """
        + _DELIVERY_COLUMNS,
        {"id": target_id, "m": m, "limit": limit},
    )


# --- the delivery log -------------------------------------------------------------------


async def list_deliveries(
    conn: AsyncConnection,
    m: int,
    status: str | None,
    channel_id: int | None,
    target_id: int | None,
    before_id: int | None,
    limit: int,
) -> list[dict[str, Any]]:
    """Newest first, with the latest attempt's answer."""
    return await _all(
        conn,
        f"""
        SELECT {_DELIVERY_COLUMNS}, (
            SELECT jsonb_build_object('started_at', a.started_at, 'final_dot_at', a.final_dot_at,
                                      'finished_at', a.finished_at, 'ok', a.ok,
                                      'status_code', a.status_code, 'response', a.response)
            FROM delivery_attempts a WHERE a.delivery_id = d.id ORDER BY a.id DESC LIMIT 1
        ) AS last_attempt
        FROM deliveries d
        WHERE municipality_id = %(m)s
          AND (%(status)s::text IS NULL OR status = %(status)s)
          AND (%(channel)s::bigint IS NULL OR channel_id = %(channel)s)
          AND (%(target)s::bigint IS NULL OR target_id = %(target)s)
          AND (%(before)s::bigint IS NULL OR id < %(before)s)
        ORDER BY id DESC LIMIT %(limit)s
        """,
        {
            "m": m,
            "status": status,
            "channel": channel_id,
            "target": target_id,
            "before": before_id,
            "limit": limit,
        },
    )


async def get_delivery(conn: AsyncConnection, m: int, delivery_id: int) -> dict[str, Any] | None:
    row = await _one(
        conn,
        f"SELECT {_DELIVERY_COLUMNS}, payload FROM deliveries "
        "WHERE id = %(id)s AND municipality_id = %(m)s",
        {"id": delivery_id, "m": m},
    )
    if row is not None:
        row["attempts_log"] = await _all(
            conn,
            "SELECT id, started_at, final_dot_at, finished_at, ok, status_code, response "
            "FROM delivery_attempts WHERE delivery_id = %(id)s ORDER BY id",
            {"id": delivery_id},
        )
    return row


async def retry_delivery(conn: AsyncConnection, m: int, delivery_id: int) -> dict[str, Any] | None:
    """Send a dead delivery again, now, with a fresh maximum age. None when it is not the
    municipality's; a delivery that is not dead is returned unchanged."""
    row = await _one(
        conn,
        "UPDATE deliveries SET status = 'pending', next_attempt_at = now(), created_at = now() "
        "WHERE id = %(id)s AND municipality_id = %(m)s AND status = 'dead' "
        f"RETURNING {_DELIVERY_COLUMNS}",
        {"id": delivery_id, "m": m},
    )
    if row is None:
        row = await _one(
            conn,
            f"SELECT {_DELIVERY_COLUMNS} FROM deliveries "
            "WHERE id = %(id)s AND municipality_id = %(m)s",
            {"id": delivery_id, "m": m},
        )
    return row


async def resend_delivery(conn: AsyncConnection, m: int, delivery_id: int) -> dict[str, Any] | None:
    """Send an unconfirmed e-mail again, on purpose: the recipient may have it already
    (docs/notifications.md). It goes as if new (a fresh maximum age), with the same
    Message-ID. None when it is not the municipality's; a delivery that is not
    unconfirmed is returned unchanged."""
    row = await _one(
        conn,
        "UPDATE deliveries SET status = 'pending', next_attempt_at = now(), created_at = now() "
        "WHERE id = %(id)s AND municipality_id = %(m)s AND status = 'unconfirmed' "
        f"RETURNING {_DELIVERY_COLUMNS}",
        {"id": delivery_id, "m": m},
    )
    if row is None:
        row = await _one(
            conn,
            f"SELECT {_DELIVERY_COLUMNS} FROM deliveries "
            "WHERE id = %(id)s AND municipality_id = %(m)s",
            {"id": delivery_id, "m": m},
        )
    return row


async def unconfirmed_counts(conn: AsyncConnection) -> list[tuple[str, int]]:
    """E-mails sent and not confirmed by the SMTP server, per municipality (slug)."""
    cur = await conn.execute(
        "SELECT m.slug, count(*) FROM deliveries d "
        "JOIN municipalities m ON m.id = d.municipality_id "
        "WHERE d.status = 'unconfirmed' GROUP BY m.slug"
    )
    return [(slug, n) for slug, n in await cur.fetchall()]
