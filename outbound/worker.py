"""The delivery worker (`python -m cli deliver`): takes due rows of the outbox and sends
them, at least once.

One delivery at a time per thread, each in its own transaction:

1. claim: ``SELECT … FOR NO KEY UPDATE SKIP LOCKED`` one due `pending` row; other workers
   (and threads) skip it while this transaction holds it (NO KEY: the attempt row written
   on the second connection may still reference it);
2. record before: a `delivery_attempts` row is committed on a second connection;
3. send to the receiver;
4. record after: in the claiming transaction, the attempt is finished with the
   receiver's answer and the delivery marked `delivered`, or `pending` again after a
   backoff, or `dead` past the maximum age; then that transaction commits.

A worker killed anywhere before step 4 commits leaves the row `pending` (its lock dies
with its connection) and another worker sends it again: nothing is lost. A worker killed
after the receiver accepted and before that commit makes the receiver get the delivery a
second time, with the same idempotency key; its attempt stays unfinished (`finished_at`
NULL), so every such repeat is accounted for. This is at-least-once delivery, the most
any sender can promise to a receiver that cannot tell it what it has
(docs/notifications.md).

Backoff: after the n-th failure the next try waits a random time between half and all of
min(base · 2^(n-1), max) (jitter, so that a receiver back from an outage is not hit by
every worker in the same second). A delivery that would still be failing past
IOT_DELIVER_MAX_AGE_S after it was written becomes `dead`: listed to staff, retried only
by hand (POST /api/v1/staff/deliveries/{id}/retry).

Every HOUSEKEEPING_INTERVAL_S (and when it starts) the worker also writes escalation
notices (models/outbox.py), folds notices held during quiet hours into one digest per
channel, and deletes finished deliveries older than IOT_DELIVER_LOG_RETENTION_DAYS.
"""

from __future__ import annotations

import random
import threading
import time
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

# Finished deliveries older than the retention, in slices; alert notices stay while their
# alert is unresolved (the escalation and the resolve notice look for the opening one).
_PRUNE = """
DELETE FROM deliveries WHERE id IN (
    SELECT d.id FROM deliveries d
    WHERE d.status IN ('delivered', 'digested', 'dead')
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
    ) -> None:
        """Finish the attempt and the delivery and commit, in one round trip (pipeline):
        between a receiver's acceptance and this commit a crash means a repeat, so the
        time in between is kept to one round trip."""
        conn = cur.connection
        with conn.pipeline():
            self._finish(cur, row, result, attempt_id, dead)
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
        # Recorded (committed) before the send.
        attempt_id = log_conn.execute(
            "INSERT INTO delivery_attempts (delivery_id, municipality_id) "
            "VALUES (%s, %s) RETURNING id",
            (row["id"], row["municipality_id"]),
        ).fetchone()[0]
        try:
            result = self._send(log_conn, client, destination, row)
        except Exception as exc:  # a bug in a sender must not stop the worker
            log.error("deliver.sender_failed", exc_info=True, delivery=row["id"])
            result = SendResult.failed(exc)
        self._record_outcome(cur, row, result, attempt_id)

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
                UPDATE delivery_attempts SET finished_at = now(), ok = %(ok)s,
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
            elif status == "dead":
                self.totals.dead += 1
            else:
                self.totals.failed += 1
        if not result.ok:
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
        self, conn: psycopg.Connection, client: httpx.Client, dest: Destination, row: dict
    ) -> SendResult:
        key, event, payload = row["idempotency_key"], row["event"], row["payload"]
        if row["channel_id"] is not None:
            notice = render(event, payload, dest.language, self.settings.public_base_url)
            return channels.send_notice(self.settings, client, dest, key, event, payload, notice)
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
        """Escalation notices and morning digests that are due; old finished deliveries
        (and their attempts) deleted."""
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
