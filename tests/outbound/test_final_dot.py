"""E-mail's point of no return, SMTP's final dot, one case at a time: a real worker
process killed (SIGKILL) at an exact point of one send, a real SMTP server (STARTTLS,
AUTH), and what the next worker does about it. tests/outbound/test_kill9.py does the same
at random moments, many times over."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime

import psycopg
import pytest

from analytics.alerts import sync_alerts
from models.db_roles import MAINTENANCE, enable_logins, role_url
from outbound import channels
from outbound.channels import Destination, data_without_final_dot
from outbound.templates import Notice
from outbound.worker import INTERRUPTED_REASON, UNCONFIRMED_REASON, DeliveryWorker
from tests.outbound.conftest import add_channel, add_rule, co2_condition, make_place
from tests.outbound.conftest import outbound_settings as settings_for
from tests.outbound.test_kill9 import worker_env

# A `python -m cli deliver` that kills itself with SIGKILL inside one e-mail send: just
# before the worker commits the point of no return (the message sent, not its final dot),
# or just after that commit (the dot not yet written).
KILLING_WORKER = """
import os, signal, sys
from outbound import channels
original, where = channels.send_email, os.environ["KILL_AT"]
def send_email(settings, destination, notice, key, before_final_dot=None):
    def commit_point_of_no_return():
        if where == "before-commit":
            os.kill(os.getpid(), signal.SIGKILL)
        before_final_dot()
        if where == "after-commit":
            os.kill(os.getpid(), signal.SIGKILL)
    return original(settings, destination, notice, key, commit_point_of_no_return)
channels.send_email = send_email
from cli.__main__ import main
sys.exit(main(["deliver"]))
"""


@pytest.fixture
def one_email(db, database_url) -> int:
    """One alert opening, notified to one e-mail channel: its delivery's id."""
    enable_logins(db, {})
    place = make_place(db)
    add_rule(db, place, add_channel(db, place, "email", recipients=["pedel@aarhus.example"]))
    sync_alerts(db, place.municipality, ("climate.co2_limit",), [co2_condition(place)],
                datetime.now(UTC))  # fmt: skip
    return db.execute("SELECT id FROM deliveries").fetchone()[0]


def _state(db, delivery: int) -> tuple[str, list[tuple]]:
    status = db.execute("SELECT status FROM deliveries WHERE id = %s", (delivery,)).fetchone()[0]
    attempts = db.execute(
        "SELECT final_dot_at IS NOT NULL, finished_at IS NOT NULL, ok, response "
        "FROM delivery_attempts WHERE delivery_id = %s ORDER BY id",
        (delivery,),
    ).fetchall()
    return status, attempts


def _next_worker(database_url: str, smtp_server) -> None:
    """A worker after the crash, as the maintenance role, until nothing is due."""
    maintenance = role_url(database_url, MAINTENANCE)
    DeliveryWorker(settings_for(maintenance, smtp_server)).run(until_idle=True)


def _run_killing_worker(database_url: str, smtp_server, where: str) -> None:
    env = {**worker_env(database_url, smtp_server), "KILL_AT": where}
    process = subprocess.run([sys.executable, "-c", KILLING_WORKER], env=env, timeout=60)
    assert process.returncode == -signal.SIGKILL


def _wait_lost(smtp_server, n: int = 1) -> None:
    deadline = time.monotonic() + 10
    while sum(smtp_server.lost_in.values()) < n and time.monotonic() < deadline:
        time.sleep(0.01)


def test_killed_before_the_point_of_no_return_the_server_discards_it_and_it_goes_once(
    db, database_url, smtp_server, one_email
) -> None:
    _run_killing_worker(database_url, smtp_server, "before-commit")
    _wait_lost(smtp_server)
    # The whole message was sent, without its final dot: the server took nothing.
    assert smtp_server.messages == [] and smtp_server.lost_in["data"] == 1
    assert _state(db, one_email) == ("pending", [(False, False, None, None)])

    _next_worker(database_url, smtp_server)
    assert len(smtp_server.messages) == 1
    assert _state(db, one_email) == (
        "delivered",
        [(False, True, False, INTERRUPTED_REASON), (True, True, True, "accepted")],
    )


def test_killed_after_the_point_of_no_return_it_is_unconfirmed_and_never_sent_again(
    db, database_url, smtp_server, one_email
) -> None:
    _run_killing_worker(database_url, smtp_server, "after-commit")
    _wait_lost(smtp_server)
    # Here the dot was not written yet, so the server has nothing; it cannot be known.
    assert smtp_server.messages == [] and smtp_server.lost_in["data"] == 1
    assert _state(db, one_email) == ("confirming", [(True, False, None, None)])

    _next_worker(database_url, smtp_server)
    _next_worker(database_url, smtp_server)
    assert smtp_server.messages == []
    assert _state(db, one_email) == ("unconfirmed", [(True, True, None, UNCONFIRMED_REASON)])
    last_error = db.execute("SELECT last_error FROM deliveries").fetchone()[0]
    assert last_error == UNCONFIRMED_REASON


def test_killed_while_the_server_holds_its_answer_to_the_dot_it_arrived_once(
    db, database_url, smtp_server, one_email
) -> None:
    smtp_server.delay_s = 30
    env = worker_env(database_url, smtp_server)
    worker = subprocess.Popen([sys.executable, "-m", "cli", "deliver"], env=env)
    deadline = time.monotonic() + 30
    while not smtp_server.in_phase("dot") and time.monotonic() < deadline:
        time.sleep(0.005)
    worker.send_signal(signal.SIGKILL)
    worker.wait(10)
    _wait_lost(smtp_server)
    assert smtp_server.lost_in["dot"] == 1 and len(smtp_server.messages) == 1

    _next_worker(database_url, smtp_server)
    _next_worker(database_url, smtp_server)
    assert len(smtp_server.messages) == 1
    assert _state(db, one_email) == ("unconfirmed", [(True, True, None, UNCONFIRMED_REASON)])


def test_a_worker_still_waiting_for_the_answer_is_not_marked_unconfirmed(
    db, database_url, smtp_server, one_email
) -> None:
    """Housekeeping tells a dead worker from a slow server by the worker's lock."""
    smtp_server.delay_s = 2.0
    maintenance = settings_for(role_url(database_url, MAINTENANCE), smtp_server)
    sender = threading.Thread(target=DeliveryWorker(maintenance).run, args=(True,))
    sender.start()
    deadline = time.monotonic() + 30
    while not smtp_server.in_phase("dot") and time.monotonic() < deadline:
        time.sleep(0.005)
    with psycopg.connect(maintenance.psycopg_url) as conn:
        assert DeliveryWorker(maintenance).mark_unconfirmed(conn) == 0
    assert _state(db, one_email)[0] == "confirming"
    sender.join(30)
    assert _state(db, one_email) == ("delivered", [(True, True, True, "accepted")])
    assert len(smtp_server.messages) == 1


def test_no_answer_to_the_dot_is_unconfirmed_and_not_sent_again(
    db, database_url, smtp_server, one_email
) -> None:
    smtp_server.hang_up_after_dot = True
    _next_worker(database_url, smtp_server)
    status, [(past_dot, finished, ok, response)] = _state(db, one_email)
    assert (status, past_dot, finished, ok) == ("unconfirmed", True, True, None)
    assert response.startswith("unconfirmed: the final dot was written and the SMTP server")
    smtp_server.hang_up_after_dot = False
    _next_worker(database_url, smtp_server)
    assert len(smtp_server.messages) == 1


def test_a_refusal_of_the_message_after_the_dot_is_retried(
    db, database_url, smtp_server, one_email
) -> None:
    """A reply to the dot other than 250 says the server did not take it: not in doubt."""
    smtp_server.dot_reply = "451 4.3.0 try again later"
    _next_worker(database_url, smtp_server)
    status, [(past_dot, finished, ok, response)] = _state(db, one_email)
    assert (status, past_dot, finished, ok) == ("pending", True, True, False)
    assert response == "the final dot: 451 4.3.0 try again later"
    smtp_server.dot_reply = "250 OK"
    db.execute("UPDATE deliveries SET next_attempt_at = now()")
    _next_worker(database_url, smtp_server)
    assert _state(db, one_email)[0] == "delivered" and len(smtp_server.messages) == 1


def test_lines_starting_with_a_dot_arrive_as_written(smtp_server, database_url) -> None:
    text = ".\n..two dots\n.one dot\nnot at the start .\n."
    notice = Notice(subject="Prikker", text=text, link="https://iot.example.dk/", severity="info")
    destination = Destination("email", "mail", "aarhus", recipients=("pedel@aarhus.example",))
    result = channels.send_email(settings_for(database_url, smtp_server), destination, notice, "k")
    assert result.ok, result.response
    [message] = smtp_server.messages
    assert message.get_content().replace("\r\n", "\n").rstrip("\n") == text
    assert smtp_server.tls_sessions == 1 and smtp_server.logins == ["kommune"]


def test_data_without_final_dot_stuffs_dots_and_ends_the_last_line() -> None:
    assert data_without_final_dot(b"a\r\n.b\r\n.") == b"a\r\n..b\r\n..\r\n"
    assert data_without_final_dot(b"a\r\n") == b"a\r\n"
