"""deploy/caddy/Caddyfile run by a real Caddy in front of a small upstream HTTP server.

Only the site address (plain HTTP on a free port instead of automatic HTTPS for a domain),
the upstream address and the admin endpoint are changed; every directive is the committed one.
"""

from __future__ import annotations

import gzip
import http.client
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

CADDYFILE = Path(__file__).parents[2] / "deploy/caddy/Caddyfile"
CADDY = shutil.which("caddy")
pytestmark = pytest.mark.skipif(CADDY is None, reason="caddy not installed")

PAGE = ("<p>" + "open data " * 2000 + "</p>").encode()


class _Upstream(BaseHTTPRequestHandler):
    paths: ClassVar[list[str]] = []
    body_bytes: ClassVar[dict[str, int]] = {}

    exports_now: ClassVar[int] = 0
    exports_most: ClassVar[int] = 0
    lock: ClassVar[threading.Lock] = threading.Lock()

    def do_GET(self) -> None:
        self.paths.append(self.path)
        if self.path.startswith("/api/v1/export/"):
            self._slow_export()
            return
        body = b"ok" if self.path == "/health" else PAGE
        self.send_response(200)
        if self.path == "/api/v1/docs":
            self.send_header("Content-Security-Policy", "default-src 'self' cdn.example")
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _slow_export(self) -> None:
        """A client reading slowly: the connection stays busy for a while."""
        with self.lock:
            _Upstream.exports_now += 1
            _Upstream.exports_most = max(_Upstream.exports_most, _Upstream.exports_now)
        time.sleep(1.0)
        # Counted out before the answer: once Caddy has it, it may open the next connection.
        with self.lock:
            _Upstream.exports_now -= 1
        body = b"time,value\n" + b"2026-03-01T00:00:00Z,1\n" * 10
        self.send_response(200)
        self.send_header("Content-Type", "text/csv")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        self.paths.append(self.path)
        length = int(self.headers.get("Content-Length", 0))
        # A cut-off body reads short: count what actually arrived.
        self.body_bytes[self.path] = len(self.rfile.read(length))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, list[str]]]:
    assert CADDY is not None
    tmp = tmp_path_factory.mktemp("caddy")
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    _Upstream.paths = []
    _Upstream.body_bytes = {}
    threading.Thread(target=upstream.serve_forever, daemon=True).start()

    text = CADDYFILE.read_text()
    for old, new in (
        ("api:8000", f"127.0.0.1:{upstream.server_port}"),
        ("{\n\temail", "{\n\tadmin off\n\temail"),
    ):
        assert old in text, f"{old!r} no longer in {CADDYFILE}"
        text = text.replace(old, new)
    config = tmp / "Caddyfile"
    config.write_text(text)
    port = _free_port()
    env = {
        **os.environ,
        "IOT_DOMAIN": f"http://127.0.0.1:{port}",
        "ACME_EMAIL": "it@example.dk",
        "HOME": str(tmp),
        "XDG_DATA_HOME": str(tmp / "data"),
        "XDG_CONFIG_HOME": str(tmp / "config"),
    }
    log = tmp / "caddy.log"
    with log.open("w") as handle:
        process = subprocess.Popen(
            [CADDY, "run", "--config", str(config), "--adapter", "caddyfile"],
            env=env,
            stdout=handle,
            stderr=handle,
        )
    try:
        deadline = time.monotonic() + 15
        while True:
            if process.poll() is not None:
                pytest.fail(f"caddy exited: {log.read_text()}")
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if time.monotonic() > deadline:
                pytest.fail(f"caddy did not listen: {log.read_text()}")
            time.sleep(0.1)
        yield port, _Upstream
    finally:
        process.terminate()
        process.wait(timeout=10)
        upstream.shutdown()


def _request(
    port: int, method: str, path: str, headers: dict | None = None, body: bytes | None = None
) -> tuple[http.client.HTTPResponse, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response, data


def test_proxy_adds_security_headers_and_hides_its_server(proxy):
    port, _ = proxy
    response, body = _request(port, "GET", "/")

    assert response.status == 200 and body == PAGE
    assert response.getheader("X-Content-Type-Options") == "nosniff"
    assert response.getheader("X-Frame-Options") == "DENY"
    assert "frame-ancestors 'none'" in response.getheader("Content-Security-Policy")
    assert "tile.openstreetmap.org" in response.getheader("Content-Security-Policy")
    assert response.getheader("Referrer-Policy") == "strict-origin-when-cross-origin"
    assert response.getheader("Server") is None


def test_proxy_keeps_a_content_security_policy_the_api_chose(proxy):
    port, _ = proxy
    response, _ = _request(port, "GET", "/api/v1/docs")
    assert response.getheader("Content-Security-Policy") == "default-src 'self' cdn.example"
    assert response.getheader("X-Frame-Options") == "DENY"


def test_proxy_compresses_for_clients_that_accept_gzip(proxy):
    port, _ = proxy
    response, body = _request(port, "GET", "/", {"Accept-Encoding": "gzip"})

    assert response.getheader("Content-Encoding") == "gzip"
    assert gzip.decompress(body) == PAGE
    assert len(body) < len(PAGE) / 10


def test_metrics_are_not_served_to_the_public(proxy):
    port, upstream = proxy
    response, _ = _request(port, "GET", "/metrics")

    assert response.status == 404
    assert "/metrics" not in upstream.paths


def test_request_bodies_over_the_limit_never_reach_the_api_whole(proxy):
    port, upstream = proxy
    small, _ = _request(port, "POST", "/api/import", body=b"x" * 1000)
    large, _ = _request(port, "POST", "/api/too-large", body=b"x" * (10 * 1024 * 1024 + 1))

    assert small.status == 204 and upstream.body_bytes["/api/import"] == 1000
    # Caddy streams the body and cuts it at max_size (10 MB = 10**7 bytes): 413 since
    # Caddy 2.7, 502 on older releases such as Debian's 2.6 (caddyserver/caddy#5652).
    assert large.status in (413, 502)
    assert upstream.body_bytes.get("/api/too-large", 0) <= 10**7


def test_at_most_four_exports_reach_the_api_at_once_and_other_routes_are_not_held(proxy):
    """Debian's caddy has no rate-limit module: the proxy caps concurrent exports instead."""
    port, upstream = proxy
    upstream.exports_most = 0
    results: list[int] = []

    def export(n: int) -> None:
        response, _ = _request(port, "GET", f"/api/v1/export/aarhus/readings.csv?n={n}")
        results.append(response.status)

    threads = [threading.Thread(target=export, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    time.sleep(0.3)
    started = time.monotonic()
    health, _ = _request(port, "GET", "/health")
    health_s = time.monotonic() - started
    for thread in threads:
        thread.join(30)
    assert results == [200] * 8
    assert upstream.exports_most == 4
    assert health.status == 200 and health_s < 0.5
