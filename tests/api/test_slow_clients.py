"""Slow and stalled export clients against a real uvicorn server and a million readings.

Each export holds a database connection for as long as its client reads. Clients here
are raw sockets with a small receive buffer that read a few KB per second (or nothing
at all), the way a slow link or an attacker would, while other clients use the API.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg
import pytest

from api.auth import create_key
from tests.conftest import migrated_database
from tests.processes import free_port, wait_for_port

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SENSORS = 100
READINGS_PER_SENSOR = 10_000  # 1,000,000 readings, every 86.4 s over the last 10 days
EXPORT_PATH = "/api/v1/export/aarhus/readings.csv"


class Fixture:
    def __init__(self, url: str, token: str, start: datetime, end: datetime) -> None:
        self.url, self.token, self.start, self.end = url, token, start, end


@pytest.fixture(scope="module")
def million() -> Iterator[Fixture]:
    """A database of its own with 1,000,000 readings of 100 public sensors of aarhus."""
    end = datetime.now(UTC).replace(microsecond=0)
    start = end - timedelta(days=10)
    with migrated_database("off", prefix="iot_test_slow") as url:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO municipalities (slug, name) VALUES ('aarhus', 'Aarhus Kommune')"
            )
            conn.execute(
                "INSERT INTO sensors (municipality_id, external_id, name, kind, lat, lon, "
                "is_public, status) SELECT 1, 'c' || g, 'climate ' || g, 'climate', "
                "56.1 + g / 1000.0, 10.2, true, 'active' FROM generate_series(1, %s) g",
                (SENSORS,),
            )
            conn.execute(
                "SELECT iot_ensure_partitions(%s, %s)", (start.date(), end.date() + timedelta(1))
            )
            step = (end - start) / READINGS_PER_SENSOR
            conn.execute(
                "INSERT INTO readings (time, sensor_id, metric_id, value) "
                "SELECT %(start)s + i * %(step)s, s, m.id, 400 + (i %% 1000) "
                "FROM generate_series(0, %(n)s - 1) i, generate_series(1, %(sensors)s) s, "
                "metrics m WHERE m.name = 'co2_ppm'",
                {"start": start, "step": step, "n": READINGS_PER_SENSOR, "sensors": SENSORS},
            )
            conn.execute(
                "INSERT INTO latest_readings (sensor_id, metric_id, time, value) "
                "SELECT s, m.id, %s, 500 FROM generate_series(1, %s) s, metrics m "
                "WHERE m.name = 'co2_ppm'",
                (end, SENSORS),
            )
            count = conn.execute("SELECT count(*) FROM readings").fetchone()
            assert count is not None and count[0] == SENSORS * READINGS_PER_SENSOR
            conn.execute("VACUUM ANALYZE readings")
            token = create_key(conn, 1, ["read-private"], "slow-client test").token
        yield Fixture(url, token, start, end)


@pytest.fixture
def serve(million: Fixture, tmp_path: Path) -> Iterator[Callable[..., str]]:
    """Start ``python -m cli api`` (uvicorn) with extra IOT_ settings; returns its URL."""
    processes: list[subprocess.Popen] = []

    def start(**settings: object) -> str:
        port = free_port()
        env = {
            **os.environ,
            "IOT_DATABASE_URL": million.url,
            "IOT_LOG_LEVEL": "WARNING",
            **{f"IOT_{k.upper()}": str(v) for k, v in settings.items()},
        }
        log = (tmp_path / f"api-{port}.log").open("wb")
        processes.append(
            subprocess.Popen(
                [sys.executable, "-m", "cli", "api", "--host", "127.0.0.1", "--port", str(port)],
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
        wait_for_port(port, timeout=30)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while httpx.get(base + "/health").status_code != 200:
            assert time.monotonic() < deadline, "the API never became healthy"
            time.sleep(0.2)
        return base

    yield start
    for process in processes:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:  # graceful shutdown waits for open exports
            process.kill()
            process.wait(5)


class SlowReader(threading.Thread):
    """An HTTP/1.1 client on a raw socket that reads `rate` bytes per second (0: never)."""

    def __init__(self, base: str, path: str, rate: int) -> None:
        super().__init__(daemon=True)
        host, port = base.removeprefix("http://").split(":")
        self.address = (host, int(port))
        self.path = path
        self.rate = rate
        self.stop = threading.Event()
        self.head = b""
        self.received = 0
        self.closed_by_server = False
        self.tail = b""
        self.ready = threading.Event()
        self.draining = False

    @property
    def status(self) -> int:
        return int(self.head.split(b" ", 2)[1]) if self.head else 0

    def header(self, name: str) -> str | None:
        for line in self.head.split(b"\r\n")[1:]:
            key, _, value = line.partition(b":")
            if key.strip().lower() == name.lower().encode():
                return value.strip().decode()
        return None

    def run(self) -> None:
        sock = socket.socket()
        # A small receive window, so the server meets the slow reader at once instead of
        # filling megabytes of kernel buffer first.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(self.address)
        sock.sendall(
            f"GET {self.path} HTTP/1.1\r\nHost: test\r\nAccept-Encoding: identity\r\n\r\n".encode()
        )
        data = b""
        while b"\r\n\r\n" not in data:
            piece = sock.recv(1024)
            if not piece:
                break
            data += piece
        self.head, _, rest = data.partition(b"\r\n\r\n")
        self.received = len(rest)
        self.ready.set()
        sock.settimeout(0.5)
        try:
            while not self.stop.is_set():
                if self.rate == 0:
                    self.stop.wait(0.2)
                    continue
                try:
                    piece = sock.recv(max(1, self.rate // 10))
                except TimeoutError:
                    continue
                if not piece:
                    self.closed_by_server = True
                    break
                self.received += len(piece)
                self.tail = (self.tail + piece)[-16:]
                if not self.draining:
                    self.stop.wait(0.1)
        except OSError:
            self.closed_by_server = True
        finally:
            sock.close()

    def drain(self, timeout: float) -> None:
        """Read everything left until the server closes (or `timeout`); for stalled ones."""
        self.draining = True
        self.rate = 1 << 16
        self.join(timeout)


def _export_path(million: Fixture) -> str:
    return (
        f"{EXPORT_PATH}?from={million.start.isoformat().replace('+00:00', 'Z')}"
        f"&to={million.end.isoformat().replace('+00:00', 'Z')}"
    )


def _p95(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]


def test_twenty_slow_exports_leave_health_latest_and_staff_routes_fast(
    million: Fixture, serve: Callable[..., str]
) -> None:
    base = serve(export_max_concurrent=4, db_pool_max=10)
    readers = [SlowReader(base, _export_path(million), rate=4096) for _ in range(20)]
    for reader in readers:
        reader.start()
    for reader in readers:
        assert reader.ready.wait(15), "an export got no response head"
    time.sleep(1.0)

    latencies: dict[str, list[float]] = {"health": [], "latest": [], "staff": []}
    statuses: list[tuple[str, int]] = []
    requests = {
        "health": ("/health", {}),
        "latest": ("/api/v1/latest?municipality=aarhus", {}),
        "staff": ("/api/v1/staff/me", {"Authorization": f"Bearer {million.token}"}),
    }
    with httpx.Client(base_url=base, timeout=10) as client:
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            for name, (path, headers) in requests.items():
                began = time.perf_counter()
                response = client.get(path, headers=headers)
                latencies[name].append(time.perf_counter() - began)
                statuses.append((name, response.status_code))
            time.sleep(0.02)

    served = [r for r in readers if r.status == 200]
    refused = [r for r in readers if r.status != 200]
    still_streaming = [r.is_alive() and r.received > 0 for r in served]
    for reader in readers:
        reader.stop.set()
    for reader in readers:
        reader.join(5)

    assert {s for _, s in statuses} == {200}, sorted(set(statuses))
    for name, samples in latencies.items():
        assert len(samples) >= 20, name
        assert _p95(samples) < 0.100, f"{name}: p95 {_p95(samples) * 1000:.0f} ms"
    assert len(served) == 4 and all(still_streaming)
    assert {r.status for r in refused} == {429}
    assert all(r.header("retry-after") for r in refused)


def test_a_streaming_export_holds_no_connection_of_the_request_pool(
    million: Fixture, serve: Callable[..., str]
) -> None:
    # One request connection: if an export kept its route's connection while streaming,
    # every other route would wait for it and answer 503.
    base = serve(db_pool_max=1, export_max_concurrent=2)
    readers = [SlowReader(base, _export_path(million), rate=4096) for _ in range(2)]
    for reader in readers:
        reader.start()
    try:
        assert all(r.ready.wait(15) for r in readers)
        assert [r.status for r in readers] == [200, 200]
        with httpx.Client(base_url=base, timeout=10) as client:
            for path, headers in (
                ("/health", {}),
                ("/api/v1/latest?municipality=aarhus", {}),
                ("/api/v1/staff/me", {"Authorization": f"Bearer {million.token}"}),
            ):
                began = time.perf_counter()
                assert client.get(path, headers=headers).status_code == 200, path
                assert time.perf_counter() - began < 1.0, path
        assert all(r.is_alive() and not r.closed_by_server for r in readers)
    finally:
        for reader in readers:
            reader.stop.set()


def test_a_client_that_stops_reading_is_cut_off_and_frees_its_slot(
    million: Fixture, serve: Callable[..., str]
) -> None:
    base = serve(export_max_concurrent=1, export_send_timeout_s=1)
    stalled = SlowReader(base, _export_path(million), rate=0)
    stalled.start()
    assert stalled.ready.wait(15) and stalled.status == 200
    assert httpx.get(base + _export_path(million)).status_code == 429

    deadline = time.monotonic() + 20
    while True:
        with httpx.stream("GET", base + _export_path(million)) as response:
            if response.status_code == 200:
                break
        assert time.monotonic() < deadline, "the stalled export kept its slot"
        time.sleep(0.5)
    stalled.drain(30)
    assert stalled.closed_by_server
    # Cut off, never a complete-looking chunked body.
    assert not stalled.tail.endswith(b"0\r\n\r\n")


def test_an_export_longer_than_its_limit_is_cut_off_and_frees_its_slot(
    million: Fixture, serve: Callable[..., str]
) -> None:
    base = serve(export_max_concurrent=1, export_max_duration_s=2)
    slow = SlowReader(base, _export_path(million), rate=8192)
    slow.start()
    assert slow.ready.wait(15) and slow.status == 200
    began = time.monotonic()
    while True:
        with httpx.stream("GET", base + _export_path(million)) as response:
            if response.status_code == 200:
                break
        assert time.monotonic() - began < 10, "the long export kept its slot"
        time.sleep(0.5)
    assert slow.is_alive() and not slow.closed_by_server, "the reader finished by itself"
    with psycopg.connect(million.url, autocommit=True) as conn:
        deadline = time.monotonic() + 10
        while conn.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND query LIKE '%%COPY (%%' AND state = 'active'"
        ).fetchone() != (0,):
            assert time.monotonic() < deadline, "the export's COPY still runs"
            time.sleep(0.2)
    # What the server had buffered still arrives; then the body ends cut off.
    slow.drain(30)
    assert slow.closed_by_server and not slow.tail.endswith(b"0\r\n\r\n")
