"""The delivery worker (`python -m cli deliver`): takes due rows of the outbox and sends
them, each one its own unit: one claim, one send, its own commits.

One delivery at a time per thread, each in its own transaction:

1. claim: ``SELECT … FOR NO KEY UPDATE SKIP LOCKED`` one due `pending` row; other workers
   (and threads) skip it while this transaction holds it (NO KEY: the attempt row written
   on the second connection may still reference it);
2. record before: a `delivery_attempts` row is committed on a second connection;
3. send to the receiver;
4. record after: the attempt is finished with the receiver's answer and the delivery
   marked `delivered`, or `pending` again after a backoff, or `dead` past the maximum
   age; then that transaction commits.

Webhooks, Teams, Slack and data targets are delivered at least once: a worker killed
anywhere before step 4 commits leaves the row `pending` (its lock dies with its
connection) and another worker sends it again; killed after the receiver accepted and
before that commit, the receiver gets it a second time with the same idempotency key, and
its attempt stays unfinished (`finished_at` NULL), so every such repeat is accounted for.

E-mail is sent at most once past SMTP's point of no return, the final dot
(docs/notifications.md). Step 3 sends MAIL, RCPT, DATA and the message, then, just before
writing the terminating ``<CRLF>.<CRLF>``, commits the claiming transaction with the
attempt's `final_dot_at` and the delivery `confirming`, holding a session advisory lock on
the delivery (``_CONFIRMING``) that lives as long as the worker's connection; then
writes the dot; step 4 commits the server's answer in a new transaction and releases the
lock. Killed before that commit, the connection closes without the dot, the server
discards the message, and the row is still `pending`: sent again, once. Killed after it,
the row is `confirming` and nobody claims it; housekeeping finds its lock free (its
worker is gone) and marks it `unconfirmed`: the server may or may not have it, it is not
sent again, and staff decide (POST /api/v1/staff/deliveries/{id}/resend).

Backoff: after the n-th failure the next try waits a random time between half and all of
min(base · 2^(n-1), max) (jitter, so that a receiver back from an outage is not hit by
every worker in the same second). A delivery that would still be failing past
IOT_DELIVER_MAX_AGE_S after it was written becomes `dead`: listed to staff, retried only
by hand (POST /api/v1/staff/deliveries/{id}/retry).

Every HOUSEKEEPING_INTERVAL_S (and when it starts) the worker also marks e-mails left
`confirming` by a dead worker `unconfirmed`, writes escalation notices
(models/outbox.py), folds notices held during quiet hours into one digest per channel,
and deletes finished deliveries older than IOT_DELIVER_LOG_RETENTION_DAYS.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
from psycopg.rows import dict_row

from models.logging import log
from models.outbox import enqueue_escalations, readings_rows
from models.settings import Settings
from outbound import channels, ngsi
from outbound.channels import Destination, SendResult
from outbound.templates import render

# The due delivery and its destination in one round trip.
_CLAIM = """
SELECT d.id, d.municipality_id, d.channel_id, d.target_id, d.event, d.idempotency_key,
       d.payload, d.attempts, d.created_at, m.slug,
       coalesce(c.kind, t.kind) AS kind, coalesce(c.name, t.name) AS name,
       coalesce(c.url, t.url) AS url, c.recipients, coalesce(c.secret, t.secret) AS secret,
       c.language, t.topic, coalesce(c.enabled, t.enabled) AS enabled
FROM deliveries d
JOIN municipalities m ON m.id = d.municipality_id
LEFT JOIN notification_channels c ON c.id = d.channel_id
LEFT JOIN data_targets t ON t.id = d.target_id
WHERE d.status = 'pending' AND d.next_attempt_at <= now()
ORDER BY d.next_attempt_at
LIMIT 1
FOR NO KEY UPDATE OF d SKIP LOCKED
"""

# Held notices whose quiet hours are over become one digest delivery per channel, in one
# transaction (the digest's key names the newest notice it holds).
_DIGEST = """
WITH due AS (
    SELECT id, municipality_id, channel_id, event, idempotency_key, payload
    FROM deliveries
    WHERE status = 'held' AND next_attempt_at <= now()
    FOR UPDATE SKIP LOCKED
), digests AS (
    INSERT INTO deliveries (municipality_id, channel_id, event, idempotency_key, payload)
    SELECT municipality_id, channel_id, 'digest', 'digest:' || channel_id || ':' || max(id),
           jsonb_build_object('items', jsonb_agg(jsonb_build_object(
               'event', event, 'key', idempotency_key, 'payload', payload) ORDER BY id))
    FROM due GROUP BY municipality_id, channel_id
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING id, channel_id
)
UPDATE deliveries d SET status = 'digested', digest_id = g.id
FROM due JOIN digests g ON g.channel_id = due.channel_id
WHERE d.id = due.id
"""

# The session advisory lock a worker holds on a `confirming` e-mail, from just before its
# final dot until its outcome is committed (two-key form: it cannot meet the one-key
# locks of the migrations). A connection that ends releases it, however its process died.
# Its keys: hashtext('iot_delivery_confirming') and the delivery id's low 31 bits.

# Just before the final dot, in the claiming transaction, which then commits.
_CONFIRMING = """
WITH attempt AS (
    UPDATE delivery_attempts SET final_dot_at = now() WHERE id = %(attempt)s
), delivery AS (
    UPDATE deliveries SET status = 'confirming' WHERE id = %(id)s
)
SELECT pg_advisory_lock(hashtext('iot_delivery_confirming'), (%(id)s::bigint & 2147483647)::int)
"""
_RELEASE = """
SELECT pg_advisory_unlock(hashtext('iot_delivery_confirming'), (%(id)s::bigint & 2147483647)::int)
"""

# `confirming` e-mails whose worker is gone (their lock is free) become `unconfirmed`.
# MATERIALIZED: the lock is tried on `confirming` rows only; a worker that finished in the
# meantime has committed another status, which the UPDATE's condition then skips.
_UNCONFIRMED = """
WITH confirming AS MATERIALIZED (
    SELECT id FROM deliveries WHERE status = 'confirming'
), lost AS (
    SELECT id FROM confirming
    WHERE pg_try_advisory_xact_lock(hashtext('iot_delivery_confirming'), (id & 2147483647)::int)
), attempts AS (
    UPDATE delivery_attempts a SET finished_at = now(), response = %(why)s
    FROM lost
    WHERE a.delivery_id = lost.id AND a.final_dot_at IS NOT NULL AND a.finished_at IS NULL
)
UPDATE deliveries d SET status = 'unconfirmed', attempts = d.attempts + 1, last_error = %(why)s
FROM lost WHERE d.id = lost.id AND d.status = 'confirming'
"""
UNCONFIRMED_REASON = (
    "unconfirmed: the worker stopped after writing the final dot and before the SMTP "
    "server's answer; the message may have been delivered, and is not sent again"
)
# An e-mail attempt cut short before its final dot: the server discarded the message.
INTERRUPTED_REASON = (
    "interrupted before the final dot: the worker stopped, the SMTP server discarded the "
    "message, and it is sent again"
)

# Finished deliveries older than the retention, in slices; alert notices stay while their
# alert is unresolved (the escalation and the resolve notice look for the opening one).
_PRUNE = """
DELETE FROM deliveries WHERE id IN (
    SELECT d.id FROM deliveries d
    WHERE d.status IN ('delivered', 'digested', 'dead', 'unconfirmed')
      AND d.created_at < now() - make_interval(days => %s)
      AND NOT EXISTS (SELECT 1 FROM alerts a WHERE a.id = d.alert_id AND a.status <> 'resolved')
    LIMIT 5000)
"""
# Escalations, digests and pruning are looked at this often (and when a worker starts).
HOUSEKEEPING_INTERVAL_S = 10.0

_SENSORS = """
SELECT id, external_id, name, kind, lat, lon, site_id, dev_eui FROM sensors WHERE id = ANY(%s)
"""


@dataclass
class Totals:
    delivered: int = 0
    failed: int = 0
    dead: int = 0
    digests: int = 0
    escalations: int = 0
    unconfirmed: int = 0


def backoff_s(attempts: int, base_s: float, max_s: float, rng: random.Random) -> float:
    """Wait before the next try after `attempts` failed ones: jittered exponential."""
    ceiling = min(max_s, base_s * 2 ** max(0, attempts - 1))
    return rng.uniform(ceiling / 2, ceiling)


class DeliveryWorker:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.totals = Totals()
        self._stop = threading.Event()
        self.error: Exception | None = None
        self._rng = random.Random()
        self._lock = threading.Lock()

    # --- one delivery ---------------------------------------------------------------------

    def deliver_one(
        self, conn: psycopg.Connection, log_conn: psycopg.Connection, client: httpx.Client
    ) -> bool:
        """Claim, send and record one due delivery; False when none is due.

        `conn` is not in autocommit: the claim opens its transaction (no round trip for a
        BEGIN of its own), `_record_outcome` commits it. `log_conn` is autocommit."""
        try:
            with conn.cursor(row_factory=dict_row) as cur:
                row = cur.execute(_CLAIM).fetchone()
                if row is None:
                    conn.rollback()
                    return False
                self._deliver_claimed(cur, log_conn, client, row)
        except BaseException:
            if not conn.closed:
                conn.rollback()
            raise
        return True

    def _record_outcome(
        self,
        cur: psycopg.Cursor,
        row: dict,
        result: SendResult,
        attempt_id: int | None,
        dead: bool = False,
        release_lock: bool = False,
    ) -> None:
        """Finish the attempt and the delivery and commit, in one round trip (pipeline):
        between a receiver's acceptance and this commit a crash means a repeat (or, for an
        e-mail past its final dot, an `unconfirmed` one), so the time in between is kept
        to one round trip. `release_lock`: the e-mail's confirming lock, after the commit."""
        conn = cur.connection
        with conn.pipeline():
            self._finish(cur, row, result, attempt_id, dead)
            conn.commit()
            if release_lock:
                cur.execute(_RELEASE, {"id": row["id"]})
                conn.commit()

    def _deliver_claimed(
        self, cur: psycopg.Cursor, log_conn: psycopg.Connection, client: httpx.Client, row: dict
    ) -> None:
        if row["kind"] is None or (not row["enabled"] and row["event"] != "test"):
            reason = "the channel or target was deleted or switched off before delivery"
            self._record_outcome(cur, row, SendResult(False, None, reason), None, dead=True)
            return
        destination = Destination(
            kind=row["kind"],
            name=row["name"],
            municipality=row["slug"],
            url=row["url"],
            recipients=tuple(row["recipients"] or ()),
            secret=row["secret"],
            language=row["language"] or "da",
            topic=row["topic"],
        )
        # Recorded (committed) before the send. An e-mail's earlier attempts left
        # unfinished before their final dot are closed: their messages were discarded.
        attempt_id = log_conn.execute(
            """
            WITH interrupted AS (
                UPDATE delivery_attempts SET finished_at = now(), ok = false, response = %s
                WHERE delivery_id = %s AND finished_at IS NULL AND final_dot_at IS NULL
                  AND %s
            )
            INSERT INTO delivery_attempts (delivery_id, municipality_id)
            VALUES (%s, %s) RETURNING id
            """,
            (
                INTERRUPTED_REASON,
                row["id"],
                destination.kind == "email",
                row["id"],
                row["municipality_id"],
            ),
        ).fetchone()[0]
        past_final_dot = False

        def before_final_dot() -> None:
            """Commit the point of no return; on failure the dot is never written."""
            nonlocal past_final_dot
            conn = cur.connection
            try:
                with conn.pipeline():
                    cur.execute(_CONFIRMING, {"attempt": attempt_id, "id": row["id"]})
                    conn.commit()
            except BaseException:
                conn.close()  # and with it the advisory lock, if it was taken
                raise
            past_final_dot = True

        try:
            result = self._send(log_conn, client, destination, row, before_final_dot)
        except psycopg.Error:
            raise
        except Exception as exc:  # a bug in a sender must not stop the worker
            log.error("deliver.sender_failed", exc_info=True, delivery=row["id"])
            result = SendResult.failed(exc)
            if past_final_dot:
                result = SendResult(False, None, f"unconfirmed: {result.response}", True)
        self._record_outcome(cur, row, result, attempt_id, release_lock=past_final_dot)

    def _finish(
        self,
        cur: psycopg.Cursor,
        row: dict,
        result: SendResult,
        attempt_id: int | None,
        dead: bool = False,
    ) -> None:
        """The attempt finished with the receiver's answer and the delivery's new state, in
        one statement of the claiming transaction: an attempt left unfinished is one whose
        outcome never committed (in doubt)."""
        s = self.settings
        attempts = row["attempts"] + 1
        if result.ok:
            status, next_at, error = "delivered", None, None
        elif result.in_doubt:
            status, next_at, error = "unconfirmed", None, result.response
        else:
            wait = backoff_s(attempts, s.deliver_backoff_base_s, s.deliver_backoff_max_s, self._rng)
            next_at = datetime.now(UTC) + timedelta(seconds=wait)
            dead = dead or next_at > row["created_at"] + timedelta(seconds=s.deliver_max_age_s)
            status = "dead" if dead else "pending"
            code = f"HTTP/SMTP {result.status_code}: " if result.status_code else ""
            error = code + result.response
        cur.execute(
            """
            WITH attempt AS (
                UPDATE delivery_attempts SET finished_at = now(),
                       ok = CASE WHEN NOT %(in_doubt)s THEN %(ok)s END,
                       status_code = %(code)s, response = %(response)s
                WHERE id = %(attempt)s
            )
            UPDATE deliveries SET status = %(status)s, attempts = %(attempts)s,
                   next_attempt_at = coalesce(%(next_at)s, next_attempt_at),
                   delivered_at = CASE WHEN %(ok)s THEN now() END, last_error = %(error)s
            WHERE id = %(id)s
            """,
            {
                "ok": result.ok,
                "in_doubt": result.in_doubt,
                "code": result.status_code,
                "response": result.response,
                "attempt": attempt_id,
                "status": status,
                "attempts": attempts,
                "next_at": next_at,
                "error": error,
                "id": row["id"],
            },
        )
        with self._lock:
            if result.ok:
                self.totals.delivered += 1
            elif status == "unconfirmed":
                self.totals.unconfirmed += 1
            elif status == "dead":
                self.totals.dead += 1
            else:
                self.totals.failed += 1
        if status == "unconfirmed":
            log.warning("deliver.unconfirmed", delivery=row["id"], response=result.response[:200])
        elif not result.ok:
            log.warning(
                "deliver.failed",
                delivery=row["id"],
                attempts=attempts,
                dead=status == "dead",
                status_code=result.status_code,
                response=result.response[:200],
            )

    # --- sending --------------------------------------------------------------------------

    def _send(
        self,
        conn: psycopg.Connection,
        client: httpx.Client,
        dest: Destination,
        row: dict,
        before_final_dot: Callable[[], None],
    ) -> SendResult:
        key, event, payload = row["idempotency_key"], row["event"], row["payload"]
        if row["channel_id"] is not None:
            notice = render(event, payload, dest.language, self.settings.public_base_url)
            return channels.send_notice(
                self.settings, client, dest, key, event, payload, notice, before_final_dot
            )
        readings = readings_rows(payload)
        sensors = self._sensors(conn, readings)
        if dest.kind == "ngsi_ld":
            entities = ngsi.entities(dest.municipality, sensors, readings)
            if not entities:
                return SendResult(True, None, "nothing to send: no sensor of a Smart Data Model")
            url = (dest.url or "").rstrip("/") + ngsi.UPSERT_PATH + "?options=update"
            return channels.post_json(
                client, url, entities, key, dest.secret, content_type="application/ld+json"
            )
        document = self._readings_document(dest, key, event, sensors, readings)
        if dest.kind == "mqtt":
            return channels.publish_mqtt(self.settings, dest, document, key)
        return channels.post_json(client, dest.url or "", document, key, dest.secret)

    def _sensors(self, conn: psycopg.Connection, readings: list) -> dict[int, ngsi.SensorPlace]:
        ids = sorted({int(r[1]) for r in readings})
        if not ids:
            return {}
        rows = conn.execute(_SENSORS, (ids,)).fetchall()
        return {r[0]: ngsi.SensorPlace(*r) for r in rows}

    @staticmethod
    def _readings_document(
        dest: Destination,
        key: str,
        event: str,
        sensors: dict[int, ngsi.SensorPlace],
        readings: list,
    ) -> dict[str, Any]:
        return {
            "idempotency_key": key,
            "event": event,
            "municipality": dest.municipality,
            "target": dest.name,
            "readings": [
                {
                    "time": ngsi._iso(float(t)),
                    "sensor_id": int(sensor_id),
                    "external_id": sensors[int(sensor_id)].external_id
                    if int(sensor_id) in sensors
                    else None,
                    "metric": metric,
                    "value": value,
                }
                for t, sensor_id, metric, value in readings
            ],
        }

    # --- housekeeping ---------------------------------------------------------------------

    def housekeeping(self, conn: psycopg.Connection) -> None:
        """E-mails left `confirming` by a dead worker marked `unconfirmed`; escalation
        notices and morning digests that are due; old finished deliveries (and their
        attempts) deleted."""
        self.mark_unconfirmed(conn)
        escalated = enqueue_escalations(conn)
        with conn.transaction():
            digested = conn.execute(_DIGEST).rowcount
        retention = self.settings.deliver_log_retention_days
        if retention:
            pruned = 5000
            while pruned == 5000:
                with conn.transaction():
                    pruned = conn.execute(_PRUNE, (retention,)).rowcount
        with self._lock:
            self.totals.escalations += escalated
            self.totals.digests += digested
        if escalated or digested:
            log.info("deliver.housekeeping", escalations=escalated, digested_notices=digested)

    def mark_unconfirmed(self, conn: psycopg.Connection) -> int:
        """`confirming` e-mails whose worker died after writing (or while about to write)
        the final dot become `unconfirmed`: never sent again by the worker."""
        with conn.transaction():
            marked = conn.execute(_UNCONFIRMED, {"why": UNCONFIRMED_REASON}).rowcount
        if marked:
            with self._lock:
                self.totals.unconfirmed += marked
            log.warning("deliver.unconfirmed", deliveries=marked, reason=UNCONFIRMED_REASON)
        return marked

    # --- the loop -------------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    def _connect(self, autocommit: bool = True) -> psycopg.Connection:
        return psycopg.connect(self.settings.psycopg_url, autocommit=autocommit)

    def _thread(self, index: int, until_idle: bool) -> None:
        s = self.settings
        conn = log_conn = None
        last_housekeeping = 0.0  # at once when the worker starts
        with httpx.Client(timeout=s.deliver_timeout_s, follow_redirects=False) as client:
            while not self._stop.is_set():
                try:
                    if conn is None or conn.closed:
                        conn, log_conn = self._connect(autocommit=False), self._connect()
                    since = time.monotonic() - last_housekeeping
                    if index == 0 and (not last_housekeeping or since >= HOUSEKEEPING_INTERVAL_S):
                        self.housekeeping(conn)
                        last_housekeeping = time.monotonic()
                    if self.deliver_one(conn, log_conn, client):
                        continue
                    if until_idle:
                        return
                except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                    log.error("deliver.database_unavailable", error=str(exc).splitlines()[0])
                    for c in (conn, log_conn):
                        if c is not None:
                            c.close()
                    conn = log_conn = None
                self._stop.wait(s.deliver_poll_interval_s)
        for c in (conn, log_conn):
            if c is not None:
                c.close()

    def _guarded(self, index: int, until_idle: bool) -> None:
        """A thread that fails on anything but a lost database (a bug, a missing grant)
        stops the worker, so that it exits with an error instead of delivering with fewer
        threads unnoticed."""
        try:
            self._thread(index, until_idle)
        except Exception as exc:
            log.error("deliver.failed_thread", exc_info=True, thread=index)
            self.error = exc
            self.stop()

    def run(self, until_idle: bool = False) -> Totals:
        """Deliver until stop() (or, with `until_idle`, until nothing is due). Raises what
        stopped a thread, if anything did."""
        self.error = None
        threads = [
            threading.Thread(target=self._guarded, args=(i, until_idle), name=f"deliver-{i}")
            for i in range(self.settings.deliver_concurrency)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if self.error is not None:
            raise RuntimeError("a delivery thread failed") from self.error
        return self.totals
