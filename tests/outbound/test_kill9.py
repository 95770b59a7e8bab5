"""kill -9 of the delivery worker, a real `python -m cli deliver` process connected as the
maintenance role, again and again while it sends e-mail (a real SMTP server with STARTTLS
and AUTH) and webhooks.

Kills are aimed at every phase of an SMTP session: while the server holds the answer to
RCPT (before DATA), to the DATA command (the message not complete: no final dot), and to
the final dot (the message taken, the 250 not yet sent); and at random moments, which
can fall between the worker's commit of the point of no return and its writing of the dot.

Exact accounting afterwards, for e-mail (at most once past the final dot):
* no e-mail arrived twice (no Message-ID twice);
* every e-mail that did not arrive is `unconfirmed`; an `unconfirmed` one may or may not
  have arrived (both are counted); every other one is `delivered`;
* each unconfirmed one's final dot was committed during the life of a worker that was
  killed, at most one per thread of that worker (so unconfirmed ≤ kills × threads);
* each e-mail has exactly one attempt past the final dot; every other attempt of it was
  cut short before the dot and says so.
For webhooks (at least once): every notice arrived, and every repeat is matched by an
attempt the worker recorded before sending and never finished.
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
from outbound.worker import INTERRUPTED_REASON
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
THREADS = 3
# Where each kill is aimed: at an SMTP session waiting in that phase, or (None) at a
# random moment after the worker's first delivery arrived.
AIMS = ("rcpt", "data", "dot", None)


def worker_env(database_url: str, smtp_server) -> dict[str, str]:
    return {
        **os.environ,
        "IOT_DATABASE_URL": role_url(database_url, MAINTENANCE),
        "IOT_DELIVER_CONCURRENCY": str(THREADS),
        "IOT_DELIVER_POLL_INTERVAL_S": "0.05",
        "IOT_DELIVER_BACKOFF_BASE_S": "0.05",
        "IOT_DELIVER_BACKOFF_MAX_S": "0.2",
        "IOT_SMTP_HOST": smtp_server.host,
        "IOT_SMTP_PORT": str(smtp_server.port),
        "IOT_SMTP_USERNAME": SMTP_USER,
        "IOT_SMTP_PASSWORD": SMTP_PASSWORD,
        "IOT_SMTP_CA_FILE": smtp_server.ca_file,
        "IOT_LOG_LEVEL": "WARNING",
    }


def _worker(database_url: str, smtp_server) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "cli", "deliver"],
        env=worker_env(database_url, smtp_server),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _now(db) -> datetime:
    return db.execute("SELECT clock_timestamp()").fetchone()[0]


def wait_until_settled(db, timeout_s: float = 120) -> None:
    """Until nothing is left to send or to mark: every delivery delivered or unconfirmed
    (a `confirming` one of a killed worker is marked by the next worker's housekeeping)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        left = db.execute(
            "SELECT count(*) FROM deliveries WHERE status NOT IN ('delivered', 'unconfirmed')"
        )
        if left.fetchone()[0] == 0:
            return
        time.sleep(0.1)


@pytest.mark.slow
def test_kill_9_of_the_worker_sends_no_email_twice_and_accounts_for_every_one(
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
    # Slow receivers, so that kills land during sends, in the phase they are aimed at.
    smtp_server.rcpt_delay_s = 0.04
    smtp_server.data_delay_s = 0.04
    smtp_server.delay_s = 0.03
    http_receiver.delay_s = 0.03
    kinds = dict(
        db.execute(
            "SELECT d.idempotency_key, c.kind FROM deliveries d "
            "JOIN notification_channels c ON c.id = d.channel_id"
        ).fetchall()
    )
    emails = {key for key, kind in kinds.items() if kind == "email"}
    hooks = set(kinds) - emails
    assert len(emails) == len(hooks) == TRANSITIONS

    rng = random.Random(20261203)
    lifetimes = []  # (started, killed) of each killed worker, on the database's clock
    hit = collections.Counter()

    def arrived() -> int:
        return len(smtp_server.messages) + len(http_receiver.requests)

    for kill in range(KILLS):
        aim = AIMS[kill % len(AIMS)]
        started = _now(db)
        worker = _worker(database_url, smtp_server)
        deadline = time.monotonic() + 30
        if aim is None:
            before = arrived()
            while arrived() == before and time.monotonic() < deadline:
                time.sleep(0.002)
            time.sleep(rng.uniform(0, 0.12))
        else:
            while not smtp_server.in_phase(aim) and time.monotonic() < deadline:
                time.sleep(0.001)
        seen = aim is None or smtp_server.in_phase(aim)
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        hit[aim] += seen
        lifetimes.append((started, _now(db)))
    worker = _worker(database_url, smtp_server)
    wait_until_settled(db)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0

    # The kills landed in every phase of an SMTP session.
    for aim in ("rcpt", "data", "dot"):
        assert hit[aim] > 0, f"no kill landed in phase {aim}: {hit}"
    lost_in = smtp_server.lost_in
    assert lost_in["mail"] + lost_in["rcpt"] > 0 and lost_in["data"] > 0 and lost_in["dot"] > 0

    statuses = dict(db.execute("SELECT idempotency_key, status FROM deliveries").fetchall())
    left = {k: s for k, s in statuses.items() if s not in ("delivered", "unconfirmed")}
    assert left == {}, "deliveries left undecided"
    assert {statuses[k] for k in hooks} == {"delivered"}

    # E-mail: at most once, and every one that is missing is unconfirmed.
    by_message_id = collections.Counter(m["Message-ID"] for m in smtp_server.messages)
    twice = {mid: n for mid, n in by_message_id.items() if n > 1}
    assert twice == {}, f"e-mails arrived more than once: {twice}"
    received = {m["X-Kommune-IoT-Idempotency-Key"] for m in smtp_server.messages}
    assert received <= emails
    unconfirmed = {k for k in emails if statuses[k] == "unconfirmed"}
    missing = emails - received
    assert missing <= unconfirmed, f"e-mails lost: {sorted(missing - unconfirmed)}"
    # A kill leaves at most one per thread that was past its final-dot commit: with one
    # thread that is at most one per kill; with THREADS, two e-mails can be in that window
    # at once (seen: 14 unconfirmed after 12 kills), so the bound is per killed worker.
    assert len(unconfirmed) <= KILLS * THREADS

    attempts = db.execute(
        """
        SELECT d.idempotency_key, d.status, a.final_dot_at, a.finished_at, a.ok, a.response
        FROM deliveries d JOIN delivery_attempts a ON a.delivery_id = d.id
        JOIN notification_channels c ON c.id = d.channel_id
        WHERE c.kind = 'email' ORDER BY a.id
        """
    ).fetchall()
    past_dot = collections.defaultdict(list)
    for key, status, final_dot_at, finished_at, ok, response in attempts:
        assert finished_at is not None, f"{key}: an attempt left unfinished"
        if final_dot_at is None:
            assert (ok, response) == (False, INTERRUPTED_REASON)
        else:
            past_dot[key].append(final_dot_at)
            assert ok is (True if status == "delivered" else None), (key, status, ok, response)
    assert {k: len(v) for k, v in past_dot.items()} == dict.fromkeys(emails, 1)
    per_worker = collections.Counter()
    for key in unconfirmed:
        (final_dot_at,) = past_dot[key]
        killed_by = [i for i, (start, end) in enumerate(lifetimes) if start <= final_dot_at <= end]
        assert killed_by, f"{key}: unconfirmed, but no killed worker wrote its final dot"
        per_worker[killed_by[0]] += 1
    assert all(n <= THREADS for n in per_worker.values()), per_worker

    # Webhooks: at least once, every repeat matched by an attempt in doubt.
    hook_received = collections.Counter(r.json()["idempotency_key"] for r in http_receiver.requests)
    assert set(hook_received) == hooks, "a webhook notice never arrived, or one never due"
    in_doubt = dict(
        db.execute(
            """
            SELECT d.idempotency_key, count(*) FILTER (WHERE a.finished_at IS NULL)
            FROM deliveries d JOIN delivery_attempts a ON a.delivery_id = d.id
            JOIN notification_channels c ON c.id = d.channel_id
            WHERE c.kind = 'webhook' GROUP BY d.idempotency_key
            """
        ).fetchall()
    )
    unexplained = [k for k in hooks if not 1 <= hook_received[k] <= 1 + in_doubt[k]]
    assert unexplained == []

    print(
        f"\n{KILLS} kills (aimed {dict(hit)}; SMTP connections lost in phase "
        f"{dict(lost_in)}): {len(emails)} e-mails, {len(received)} received, "
        f"{len(unconfirmed)} unconfirmed ({len(unconfirmed & received)} of them arrived, "
        f"{len(unconfirmed - received)} did not); {len(hooks)} webhooks, "
        f"{sum(hook_received.values()) - len(hooks)} repeats, "
        f"{sum(in_doubt.values())} attempts in doubt"
    )
