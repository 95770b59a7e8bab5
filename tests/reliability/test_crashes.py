"""Real crashes under load, each followed by exact accounting: every message published is
either stored or a dead letter, none twice.

The database is a PostgreSQL server of the test's own (tests/processes.py PrivatePostgres:
initdb in a temporary directory, a free port), killed with SIGKILL, restarted with
`pg_ctl restart -m fast`, or given a tablespace that fills up; the shared server is never
touched. The broker crash uses a Mosquitto of the test's own with persistence on."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import orjson
import psycopg
import pytest
from prometheus_client import REGISTRY

from ingest.subscriber import IngestService
from models.db import migrate, sync_metrics
from models.settings import Settings
from tests.conftest import migrated_database
from tests.ingest.conftest import Fleet, register_fleet, wait_for
from tests.ingest.test_resilience import START, StreamPublisher, sample
from tests.processes import PrivatePostgres

TOTAL = 600
DISRUPT_AT = 200
INVALID_EVERY = 7  # every 7th message carries only an unknown metric: a dead letter


def message(i: int) -> bytes:
    if i % INVALID_EVERY == 0:
        return orjson.dumps(
            {"time": f"{START.isoformat()}", "readings": {"radon_bq_m3": i}, "n": i}
        )
    return sample(i)


def index_of_dead_letter(payload: bytes) -> int:
    return orjson.loads(payload)["n"]


@pytest.fixture(scope="module")
def private_postgres() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres()
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.destroy()


def _retries() -> float:
    return REGISTRY.get_sample_value("iot_ingest_db_retries_total") or 0


class Accounting:
    """What became of each published message, read from the database."""

    def __init__(self, conn: psycopg.Connection, fleet: Fleet) -> None:
        readings = conn.execute(
            "SELECT r.time FROM readings r JOIN metrics m ON m.id = r.metric_id "
            "WHERE m.name = 'co2_ppm' AND r.sensor_id = %s",
            (fleet.native_sensor,),
        ).fetchall()
        self.stored = [int((t - START).total_seconds()) for (t,) in readings]
        self.dead = [
            index_of_dead_letter(bytes(p))
            for (p,) in conn.execute("SELECT payload FROM dead_letters").fetchall()
        ]
        self.reasons = {r for (r,) in conn.execute("SELECT DISTINCT reason FROM dead_letters")}

    @property
    def settled(self) -> int:
        return len(self.stored) + len(self.dead)

    def assert_exact(self, total: int) -> None:
        assert len(self.stored) == len(set(self.stored)), "a reading stored twice"
        assert len(self.dead) == len(set(self.dead)), "a dead letter stored twice"
        assert set(self.dead) == {i for i in range(total) if i % INVALID_EVERY == 0}
        assert set(self.stored) == {i for i in range(total) if i % INVALID_EVERY != 0}
        assert self.reasons <= {"unknown_metric"}


def run_under_load(
    url: str, settings: Settings, disrupt: Callable[[], None], broker_port: int = 1883
) -> float:
    """Ingest into the database at `url` while messages stream in; `disrupt()` runs in
    the middle of the stream; then every message must be accounted for exactly. Returns
    how often ingest retried a database operation meanwhile."""
    with psycopg.connect(url, autocommit=True) as conn:
        prefix = settings.mqtt_topics[0].split("/application/")[0]
        fleet = register_fleet(conn, prefix)
    settings = settings.model_copy(
        update={"database_url": url, "mqtt_port": broker_port, "batch_max_rows": 50}
    )
    service = IngestService(settings)
    service.start()
    publisher = StreamPublisher(broker_port)
    retries_before = _retries()
    try:
        assert service.wait_connected(10)
        time.sleep(0.3)
        topic = fleet.native_topic("aarhus", "gw-co2-1")
        for i in range(TOTAL):
            publisher.publish(topic, message(i))
            if i == DISRUPT_AT:
                wait_for(lambda: service.totals.committed_messages > 50, 20, "ingest under way")
                disrupt()
            time.sleep(0.003)
        publisher.wait_all_acknowledged(90)

        def settled() -> bool:
            with psycopg.connect(url) as conn:
                return Accounting(conn, fleet).settled >= TOTAL

        wait_for(settled, 90, "every message stored or dead-lettered")
        time.sleep(0.5)  # anything extra would show up now
        with psycopg.connect(url) as conn:
            Accounting(conn, fleet).assert_exact(TOTAL)
    finally:
        publisher.close()
        service.stop()
    return _retries() - retries_before


def test_postgres_killed_with_sigkill_under_load_then_restarted(
    private_postgres: PrivatePostgres, settings: Settings
) -> None:
    def crash() -> None:
        private_postgres.kill9()
        time.sleep(1.0)  # down: ingest retries and acknowledges nothing meanwhile
        private_postgres.start()

    with migrated_database("off", admin_url=private_postgres.url()) as url:
        retries = run_under_load(url, settings, crash)
    assert retries > 0, "ingest never saw the crash; the test tested nothing"
    assert "database system was not properly shut down" in private_postgres.log_tail(200)


def test_postgres_fast_restart_under_load(
    private_postgres: PrivatePostgres, settings: Settings
) -> None:
    with migrated_database("off", admin_url=private_postgres.url()) as url:
        retries = run_under_load(url, settings, private_postgres.restart_fast)
    assert retries > 0, "ingest never saw the restart; the test tested nothing"


class FullDisk:
    """Fills the small tablespace with a table of its own until the server says the disk
    is full, and frees it again by dropping that table (as an operator would delete
    something to make room)."""

    def __init__(self, url: str) -> None:
        self.url = url

    def fill(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS disk_filler (pad text)")
            conn.execute("ALTER TABLE disk_filler ALTER pad SET STORAGE PLAIN")
            while True:
                try:
                    conn.execute(
                        "INSERT INTO disk_filler SELECT repeat('x', 2000) "
                        "FROM generate_series(1, 200)"
                    )
                except psycopg.errors.DiskFull:
                    return

    def free(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute("DROP TABLE disk_filler")


@pytest.fixture
def postgres_with_small_disk() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres(small_tablespace_mb=48)
    try:
        server.init()
        try:
            server.start()
        except RuntimeError as exc:
            pytest.skip(f"cannot mount a private tmpfs here (needs root and unshare): {exc}")
        yield server
    finally:
        server.destroy()


def test_a_full_disk_under_load_stops_ingest_until_there_is_room(
    postgres_with_small_disk: PrivatePostgres, settings: Settings
) -> None:
    """Every relation of the database lives in a tablespace on a 48 MB tmpfs (the WAL
    stays on the data directory's disk, as on a server whose data volume fills). While it
    is full, writes fail with `disk full`; ingest retries and acknowledges nothing, and
    once room is made every message is accounted for exactly."""
    server = postgres_with_small_disk
    with psycopg.connect(server.url(), autocommit=True) as admin:
        admin.execute(f"CREATE TABLESPACE small LOCATION '{server.tablespace_dir}'")
        admin.execute("CREATE DATABASE iot_full_disk TABLESPACE small")
    url = server.url("iot_full_disk")
    migrate(url, timescaledb="off")
    with psycopg.connect(url, autocommit=True) as conn:
        sync_metrics(conn)
    disk = FullDisk(url)
    refused: list[bool] = []

    def fill_then_free() -> None:
        disk.fill()
        before = _retries()
        wait_for(lambda: _retries() > before, 20, "ingest refused by the full disk")
        time.sleep(2.0)  # still full: nothing may be acknowledged meanwhile
        refused.append("No space left on device" in server.log_tail(400))
        disk.free()

    retries = run_under_load(url, settings, fill_then_free)
    assert retries > 0
    assert refused == [True], "the server never ran out of space; the test tested nothing"
