"""Real receivers for the outbound tests: an HTTP server (webhooks, Teams/Slack, HTTP and
NGSI-LD targets) and an SMTP server with STARTTLS and AUTH (aiosmtpd), both in this
process on ephemeral ports, recording what they were sent."""

from __future__ import annotations

import asyncio
import collections
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psycopg
import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

from models.settings import Settings
from tests.e2e.test_dashboard import running_api  # noqa: F401 (the dashboard test's API process)

SMTP_USER = "kommune"
SMTP_PASSWORD = "s3cret-smtp"


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self):
        return json.loads(self.body)


@dataclass
class HttpReceiver:
    """Answers `status` (or the next of `statuses`), records every request."""

    url: str
    requests: list[Received] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    status: int = 204
    delay_s: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def wait_for(self, n: int, timeout: float = 20.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.requests) >= n:
                    return list(self.requests)
            time.sleep(0.02)
        raise AssertionError(f"{len(self.requests)} requests arrived, {n} expected")


@pytest.fixture
def http_receiver() -> Iterator[HttpReceiver]:
    receiver: HttpReceiver

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if receiver.delay_s:
                time.sleep(receiver.delay_s)
            with receiver.lock:
                receiver.requests.append(Received(self.path, dict(self.headers), body))
                status = receiver.statuses.pop(0) if receiver.statuses else receiver.status
            answer = b"" if status == 204 else json.dumps({"status": status}).encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    receiver = HttpReceiver(f"http://127.0.0.1:{server.server_address[1]}")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield receiver
    server.shutdown()
    server.server_close()


# Where an SMTP session is: before MAIL (greeting, STARTTLS, AUTH), after MAIL or RCPT,
# after the DATA command (the message's lines coming in, no final dot yet), after the final
# dot (the message taken, the reply not yet sent), answered.
PHASES = ("connected", "mail", "rcpt", "data", "dot", "answered")


@dataclass
class Mailbox:
    """What the SMTP server accepted, who logged in, and in which phase each session is
    or was when its connection was lost.

    Slow phases (seconds) make a client wait there: `rcpt_delay_s` before answering RCPT,
    `data_delay_s` before the 354 to DATA, `delay_s` before the reply to the final dot
    (the message is taken before that wait, as an MTA queues it before answering).
    `dot_reply` is that reply; `hang_up_after_dot` closes the connection instead."""

    host: str
    port: int
    ca_file: str
    messages: list[Message] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)
    tls_sessions: int = 0
    delay_s: float = 0.0
    rcpt_delay_s: float = 0.0
    data_delay_s: float = 0.0
    dot_reply: str = "250 Message accepted for delivery"
    hang_up_after_dot: bool = False
    live: set = field(default_factory=set)  # sessions still connected
    lost_in: collections.Counter = field(default_factory=collections.Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def message_ids(self) -> list[str]:
        with self.lock:
            return [m["Message-ID"] for m in self.messages]

    def in_phase(self, phase: str) -> bool:
        with self.lock:
            return any(getattr(s, "phase", "connected") == phase for s in self.live)


class _Handler:
    def __init__(self, box: Mailbox) -> None:
        self.box = box

    async def handle_DATA(self, server, session, envelope) -> str:
        session.phase = "dot"
        if self.box.dot_reply.startswith("250"):  # taken (a refusal takes nothing)
            with self.box.lock:
                message = message_from_bytes(envelope.content, policy=policy.default)
                self.box.messages.append(message)
                self.box.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
                if session.ssl is not None:
                    self.box.tls_sessions += 1
        if self.box.hang_up_after_dot:
            server.transport.close()
        if self.box.delay_s:
            await asyncio.sleep(self.box.delay_s)  # a slow server: the reply comes late
        session.phase = "answered"
        return self.box.dot_reply


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def tls_ca(tmp_path_factory) -> tuple[trustme.CA, Path]:
    ca = trustme.CA()
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return ca, path


@pytest.fixture
def smtp_server(tls_ca) -> Iterator[Mailbox]:
    """SMTP on 127.0.0.1 that requires STARTTLS before anything and AUTH before mail."""
    ca, ca_path = tls_ca
    import ssl

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    box = Mailbox("127.0.0.1", _free_port(), str(ca_path))

    def authenticate(server, session, envelope, mechanism, data) -> AuthResult:
        ok = (
            isinstance(data, LoginPassword)
            and data.login.decode() == SMTP_USER
            and data.password.decode() == SMTP_PASSWORD
        )
        if ok:
            with box.lock:
                box.logins.append(SMTP_USER)
        # handled=False: aiosmtpd answers 535 itself (True would leave the client waiting).
        return AuthResult(success=ok, handled=False)

    class _SMTP(SMTP):
        """Records each session's phase (Mailbox) and waits where the box says."""

        def connection_made(self, transport) -> None:
            before = self.session  # STARTTLS makes a new session on the same connection
            super().connection_made(transport)
            with box.lock:
                box.live.discard(before)
                box.live.add(self.session)

        def connection_lost(self, error) -> None:
            with box.lock:
                box.live.discard(self.session)
                box.lost_in[getattr(self.session, "phase", "connected")] += 1
            super().connection_lost(error)

        async def smtp_MAIL(self, arg) -> None:
            self.session.phase = "mail"
            await super().smtp_MAIL(arg)

        async def smtp_RCPT(self, arg) -> None:
            self.session.phase = "rcpt"
            if box.rcpt_delay_s:
                await asyncio.sleep(box.rcpt_delay_s)
            await super().smtp_RCPT(arg)

        async def smtp_DATA(self, arg) -> None:
            self.session.phase = "data"
            if box.data_delay_s:
                await asyncio.sleep(box.data_delay_s)
            await super().smtp_DATA(arg)

    class _Controller(Controller):
        def factory(self):
            return _SMTP(
                self.handler,
                hostname="127.0.0.1",
                tls_context=context,
                require_starttls=True,
                auth_required=True,
                auth_require_tls=True,
                authenticator=authenticate,
            )

    controller = _Controller(_Handler(box), hostname="127.0.0.1", port=box.port)
    controller.start()
    yield box
    controller.stop()


def outbound_settings(database_url: str, mailbox: Mailbox | None = None, **extra) -> Settings:
    smtp = {}
    if mailbox is not None:
        smtp = {
            "smtp_host": mailbox.host,
            "smtp_port": mailbox.port,
            "smtp_username": SMTP_USER,
            "smtp_password": SMTP_PASSWORD,
            "smtp_ca_file": mailbox.ca_file,
            "smtp_from": "alarm@aarhus.example",
        }
    values = {
        "database_url": database_url,
        "deliver_concurrency": 1,
        "deliver_poll_interval_s": 0.05,
        "deliver_timeout_s": 5.0,
        "public_base_url": "https://iot.example.dk",
        **smtp,
        **extra,
    }
    return Settings(**values)


@dataclass
class Place:
    municipality: int
    slug: str
    site: int
    zone: int
    climate: int
    bin: int
    parking: int


def make_place(db: psycopg.Connection, slug: str = "aarhus", n: int = 1) -> Place:
    m = db.execute(
        "INSERT INTO municipalities (slug, name) VALUES (%s, %s) RETURNING id",
        (slug, f"{slug.title()} Kommune"),
    ).fetchone()[0]
    site = db.execute(
        "INSERT INTO sites (municipality_id, name, kind, lat, lon) "
        "VALUES (%s, %s, 'school', 56.15, 10.2) RETURNING id",
        (m, f"{slug.title()} Skole"),
    ).fetchone()[0]
    zone = db.execute(
        "INSERT INTO zones (municipality_id, site_id, name) VALUES (%s, %s, 'Lokale 12') "
        "RETURNING id",
        (m, site),
    ).fetchone()[0]
    ids = []
    for i, kind in enumerate(("climate", "bin", "parking")):
        ids.append(
            db.execute(
                "INSERT INTO sensors (municipality_id, dev_eui, external_id, name, kind, "
                "site_id, zone_id, lat, lon, bin_depth_mm) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, 56.15, 10.2, 1000) RETURNING id",
                (
                    m,
                    f"a81758fffe{n:02x}{i:04x}",
                    f"{slug}-{kind}-1",
                    f"{slug} {kind} 1",
                    kind,
                    site,
                    zone if kind == "climate" else None,
                ),
            ).fetchone()[0]
        )
    return Place(m, slug, site, zone, *ids)


def add_channel(
    db: psycopg.Connection, place: Place, kind: str, *, url=None, recipients=(), secret=None,
    language="da", name=None,
) -> int:  # fmt: skip
    return db.execute(
        "INSERT INTO notification_channels (municipality_id, name, kind, url, recipients, "
        "secret, language) VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
        (place.municipality, name or f"{kind}-{language}", kind, url, list(recipients), secret,
         language),
    ).fetchone()[0]  # fmt: skip


def add_rule(db: psycopg.Connection, place: Place, channel: int, **columns) -> int:
    columns = {"municipality_id": place.municipality, "channel_id": channel, **columns}
    names = ", ".join(columns)
    marks = ", ".join(["%s"] * len(columns))
    return db.execute(
        f"INSERT INTO notification_rules ({names}) VALUES ({marks}) RETURNING id",
        list(columns.values()),
    ).fetchone()[0]


def co2_condition(place: Place, severity: str = "warning", subject_suffix: str = ""):
    from analytics.alerts import ActiveCondition

    return ActiveCondition(
        rule="climate.co2_critical" if severity == "critical" else "climate.co2_limit",
        subject=f"sensor:{place.climate}{subject_suffix}",
        sensor_id=place.climate,
        started_at=datetime.now(UTC) - timedelta(minutes=20),
        last_value=1460.0,
        message="CO2 at or above 1000 ppm",
        severity=severity,
    )
