"""Real crashes under load, each followed by exact accounting: every message published is
either stored or a dead letter, none twice.

The database is a PostgreSQL server of the test's own (tests/processes.py PrivatePostgres:
initdb in a temporary directory, a free port), killed with SIGKILL, restarted with
`pg_ctl restart -m fast`, or given a tablespace that fills up; the shared server is never
touched. The broker crash uses a Mosquitto of the test's own with persistence on."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator

import psycopg
import pytest
from prometheus_client import REGISTRY

from domain.metrics import sync_metrics
from ingest.subscriber import IngestService
from models.db import migrate
from models.settings import Settings
from tests.conftest import migrated_database
from tests.ingest.conftest import Fleet, register_fleet, wait_for
from tests.ingest.test_resilience import START, StreamPublisher, sample
from tests.processes import PrivateBroker, PrivatePostgres

TOTAL = 600
DISRUPT_AT = 200
# Every 7th message is for a sensor nobody registered: a dead letter. Each for a device of
# its own, so that no sampling of repeated (device, reason) letters applies.
INVALID_EVERY = 7


def message(fleet: Fleet, i: int) -> tuple[str, bytes]:
    """Message i: a CO2 reading at a time unique to i, or a dead letter naming i."""
    if i % INVALID_EVERY == 0:
        return fleet.native_topic("aarhus", f"ghost-{i}"), sample(i)
    return fleet.native_topic("aarhus", "gw-co2-1"), sample(i)


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
        self.retries = 0.0
        readings = conn.execute(
            "SELECT r.time FROM readings r JOIN metrics m ON m.id = r.metric_id "
            "WHERE m.name = 'co2_ppm' AND r.sensor_id = %s",
            (fleet.native_sensor,),
        ).fetchall()
        self.stored = [int((t - START).total_seconds()) for (t,) in readings]
        self.dead = [
            int(topic.split("/ghost-", 1)[1].split("/", 1)[0])
            for (topic,) in conn.execute("SELECT topic FROM dead_letters").fetchall()
        ]

    @property
    def settled(self) -> int:
        return len(self.stored) + len(self.dead)

    def assert_exact(self, total: int, dead_letters_once: bool = True) -> None:
        assert len(self.stored) == len(set(self.stored)), "a reading stored twice"
        if dead_letters_once:
            assert len(self.dead) == len(set(self.dead)), "a dead letter stored twice"
        assert set(self.dead) == {i for i in range(total) if i % INVALID_EVERY == 0}
        assert set(self.stored) == {i for i in range(total) if i % INVALID_EVERY != 0}


def run_under_load(
    url: str,
    settings: Settings,
    disrupt: Callable[[], None] | dict[int, Callable[[], None]],
    broker_port: int = 1883,
    dead_letters_once: bool = True,
) -> Accounting:
    """Ingest into the database at `url` while messages stream in; `disrupt()` runs in
    the middle of the stream (or each of {message index: step} after that message); then
    every message must be accounted for exactly. Returns how often ingest retried a
    database operation meanwhile (in `Accounting.retries`)."""
    steps = disrupt if isinstance(disrupt, dict) else {DISRUPT_AT: disrupt}
    with psycopg.connect(url, autocommit=True) as conn:
        prefix = settings.mqtt_topics[0].split("/application/")[0]
        fleet = register_fleet(conn, prefix)
    settings = settings.model_copy(
        update={"database_url": url, "mqtt_port": broker_port, "batch_max_rows": 50}
    )
    if broker_port != 1883:
        # Mosquitto 2.0 persists plain subscriptions, not shared ones (docs/ingest.md).
        settings.mqtt_share_group = ""
    service = IngestService(settings)
    service.start()
    publisher = StreamPublisher(broker_port)
    retries_before = _retries()
    try:
        assert service.wait_connected(10)
        time.sleep(0.3)
        for i in range(TOTAL):
            publisher.publish(*message(fleet, i))
            if i in steps:
                wait_for(lambda: service.totals.committed_messages > 50, 20, "ingest under way")
                steps[i]()
            time.sleep(0.003)
        publisher.wait_all_acknowledged(90)

        def settled() -> bool:
            with psycopg.connect(url) as conn:
                return Accounting(conn, fleet).settled >= TOTAL

        wait_for(settled, 90, "every message stored or dead-lettered")
        time.sleep(0.5)  # anything extra would show up now
        with psycopg.connect(url) as conn:
            accounting = Accounting(conn, fleet)
        accounting.assert_exact(TOTAL, dead_letters_once)
    finally:
        publisher.close()
        service.stop()
    accounting.retries = _retries() - retries_before
    return accounting


def test_postgres_killed_with_sigkill_under_load_then_restarted(
    private_postgres: PrivatePostgres, settings: Settings
) -> None:
    def crash() -> None:
        private_postgres.kill9()
        time.sleep(1.0)  # down: ingest retries and acknowledges nothing meanwhile
        private_postgres.start()

    with migrated_database("off", admin_url=private_postgres.url()) as url:
        retries = run_under_load(url, settings, crash).retries
    assert retries > 0, "ingest never saw the crash; the test tested nothing"
    assert "database system was not properly shut down" in private_postgres.log_tail(200)


def test_postgres_fast_restart_under_load(
    private_postgres: PrivatePostgres, settings: Settings
) -> None:
    with migrated_database("off", admin_url=private_postgres.url()) as url:
        retries = run_under_load(url, settings, private_postgres.restart_fast).retries
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

    retries = run_under_load(url, settings, fill_then_free).retries
    assert retries > 0
    assert refused == [True], "the server never ran out of space; the test tested nothing"


@pytest.fixture(scope="module")
def broker_killed_while_ingest_holds_messages(
    tmp_path_factory: pytest.TempPathFactory,
) -> Accounting:
    """The broker (persistence on, a snapshot every second) is killed while ingest holds
    messages it cannot commit yet and the broker holds more queued for it. Ingest then
    commits what it holds (its acknowledgements die with the connection), the broker
    comes back from its snapshot and delivers everything unacknowledged again, and the
    publisher goes on. Messages the broker had acknowledged but not yet written to a
    snapshot are not in this test: Mosquitto 2.0 loses those on kill -9 (docs/ingest.md)."""
    broker = PrivateBroker(tmp_path_factory.mktemp("broker"), autosave_interval_s=1)
    broker.start()
    held: list[psycopg.Connection] = []
    run = uuid.uuid4().hex[:8]
    settings = Settings(
        mqtt_client_id=f"test-crash-{run}",
        mqtt_topics=[
            f"test/{run}/application/+/device/+/event/up",
            f"test/{run}/municipality/+/sensors/+/readings",
        ],
        ingest_metrics_port=0,
        timescaledb="off",
    )

    def hold_commits() -> None:
        locker = psycopg.connect(url)
        locker.execute("LOCK TABLE readings IN SHARE MODE")  # every COPY into it waits
        held.append(locker)

    def kill_and_restart() -> None:
        time.sleep(2.5)  # at least one snapshot holds everything published so far
        broker.kill9()
        held[0].rollback()  # ingest commits what it holds; its acknowledgements are lost
        time.sleep(1.0)
        broker.start()

    try:
        with migrated_database("off") as url:
            return run_under_load(
                url,
                settings,
                {150: hold_commits, 300: kill_and_restart},
                broker.port,
                dead_letters_once=False,
            )
    finally:
        for locker in held:
            locker.close()
        broker.stop()


def test_mosquitto_killed_with_sigkill_then_restarted_stores_every_reading_once(
    broker_killed_while_ingest_holds_messages: Accounting,
) -> None:
    """Readings: exactly once (run_under_load asserted it); every dead letter is there."""
    accounting = broker_killed_while_ingest_holds_messages
    assert len(accounting.stored) == len(set(accounting.stored))
    assert len(accounting.dead) >= TOTAL // INVALID_EVERY


def test_mosquitto_killed_with_sigkill_then_restarted_stores_no_dead_letter_twice(
    broker_killed_while_ingest_holds_messages: Accounting,
) -> None:
    accounting = broker_killed_while_ingest_holds_messages
    assert len(accounting.dead) == len(set(accounting.dead))
