"""kill -9 of the delivery worker, a real `python -m cli deliver` process connected as the
maintenance role, again and again while it sends e-mail and webhooks to real servers.

Exact accounting afterwards:
* nothing lost: every notice of every transition reached its receiver;
* every delivery is `delivered` with exactly one successful, finished attempt;
* a receiver got a notice more than once only where the worker died between the
  receiver's acceptance and the commit, and every such repeat is an attempt the worker
  recorded before sending and never finished: copies received = finished successful
  attempts + (a subset of) unfinished ones, per notice. No repeat is unexplained.
"""

from __future__ import annotations

import collections
import os
import random
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime

import pytest

from analytics.alerts import sync_alerts
from models.db_roles import MAINTENANCE, enable_logins, role_url
from tests.outbound.conftest import (
    SMTP_PASSWORD,
    SMTP_USER,
    add_channel,
    add_rule,
    co2_condition,
    make_place,
)

TRANSITIONS = 60
KILLS = 12


def _worker(database_url: str, smtp_server, ca_file: str) -> subprocess.Popen:
    env = {
        **os.environ,
        "IOT_DATABASE_URL": role_url(database_url, MAINTENANCE),
        "IOT_DELIVER_CONCURRENCY": "3",
        "IOT_DELIVER_POLL_INTERVAL_S": "0.05",
        "IOT_DELIVER_BACKOFF_BASE_S": "0.05",
        "IOT_DELIVER_BACKOFF_MAX_S": "0.2",
        "IOT_SMTP_HOST": smtp_server.host,
        "IOT_SMTP_PORT": str(smtp_server.port),
        "IOT_SMTP_USERNAME": SMTP_USER,
        "IOT_SMTP_PASSWORD": SMTP_PASSWORD,
        "IOT_SMTP_CA_FILE": ca_file,
        "IOT_LOG_LEVEL": "WARNING",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "cli", "deliver"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@pytest.mark.slow
def test_kill_9_of_the_worker_loses_nothing_and_every_repeat_is_accounted_for(
    db, database_url, smtp_server, http_receiver
) -> None:
    enable_logins(db, {})
    place = make_place(db)
    mail = add_channel(db, place, "email", recipients=["pedel@aarhus.example"])
    hook = add_channel(db, place, "webhook", url=http_receiver.url, secret="s")
    add_rule(db, place, mail)
    add_rule(db, place, hook)
    conditions = [co2_condition(place, subject_suffix=f"/{i}") for i in range(TRANSITIONS)]
    sync_alerts(db, place.municipality, ("climate.co2_limit",), conditions, datetime.now(UTC))
    # Slow receivers, so that kills land during sends, the moment that matters.
    smtp_server.delay_s = 0.03
    http_receiver.delay_s = 0.03
    keys = {r[0] for r in db.execute("SELECT idempotency_key FROM deliveries")}
    assert len(keys) == 2 * TRANSITIONS

    rng = random.Random(20261203)
    kills = 0

    def arrived() -> int:
        return len(smtp_server.messages) + len(http_receiver.requests)

    while kills < KILLS:
        worker = _worker(database_url, smtp_server, smtp_server.ca_file)
        # Kill once this worker is sending (its first notice arrived), at a random moment.
        before = arrived()
        deadline = time.monotonic() + 30
        while arrived() == before and time.monotonic() < deadline:
            time.sleep(0.002)
        time.sleep(rng.uniform(0, 0.12))
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        kills += 1
    worker = _worker(database_url, smtp_server, smtp_server.ca_file)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        left = db.execute("SELECT count(*) FROM deliveries WHERE status <> 'delivered'")
        if left.fetchone()[0] == 0:
            break
        time.sleep(0.1)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0

    assert (
        db.execute("SELECT count(*) FROM deliveries WHERE status <> 'delivered'").fetchone()[0] == 0
    ), "a delivery was lost"
    received = collections.Counter(
        m["X-Kommune-IoT-Idempotency-Key"] for m in smtp_server.messages
    ) + collections.Counter(r.json()["idempotency_key"] for r in http_receiver.requests)
    assert set(received) == keys, "a notice never arrived, or one arrived that was never due"

    attempts = db.execute(
        """
        SELECT d.idempotency_key,
               count(*) FILTER (WHERE a.ok AND a.finished_at IS NOT NULL),
               count(*) FILTER (WHERE a.finished_at IS NULL)
        FROM deliveries d JOIN delivery_attempts a ON a.delivery_id = d.id
        GROUP BY d.idempotency_key
        """
    ).fetchall()
    unexplained = []
    in_doubt_total = 0
    for key, succeeded, in_doubt in attempts:
        assert succeeded == 1, f"{key}: {succeeded} successful finished attempts"
        in_doubt_total += in_doubt
        if not 1 <= received[key] <= 1 + in_doubt:
            unexplained.append((key, received[key], in_doubt))
    assert unexplained == []
    repeats = sum(received.values()) - len(keys)
    print(
        f"\n{KILLS} kills: {2 * TRANSITIONS} notices, {sum(received.values())} received, "
        f"{repeats} repeats, {in_doubt_total} attempts in doubt"
    )
    # The kills did hit sends in progress (else the test proved nothing about them).
    assert in_doubt_total > 0
