"""Plain PostgreSQL partitions under hostile senders and long exports: only days that hold
rows are created, creating one never queues an exclusive lock on ``readings`` behind an
export, DDL gives up after IOT_PARTITION_LOCK_TIMEOUT_MS and is retried, and how old a
reading may be is capped (docs/storage.md, docs/ingest.md)."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import orjson
import psycopg
import pytest

from domain.metrics import sync_metrics
from ingest.pipeline import Pipeline
from ingest.writer import BatchWriter
from tests.ingest.conftest import count, wait_for


def _partitions(db: psycopg.Connection) -> set[str]:
    return {
        name
        for (name,) in db.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'readings'::regclass"
        )
    }


def _drop_partition_of(db: psycopg.Connection, day: datetime) -> str:
    """Make sure `day` has no partition (the session database is shared by tests)."""
    name = f"readings_p{day:%Y%m%d}"
    db.execute(f"DROP TABLE IF EXISTS {name}")
    return name


def _native(readings: dict, at: datetime) -> bytes:
    return orjson.dumps({"time": at.isoformat(), "readings": readings})


def test_a_message_spanning_a_year_creates_only_the_days_it_holds(db, fleet, settings) -> None:
    """The issue's sender: one message with samples now and 399 days ago, accepted because
    the cap is raised to 400 days, creates one partition (today's exists), not 398."""
    settings.max_past_age_days = 400
    now = datetime.now(UTC).replace(microsecond=0)
    old = now - timedelta(days=399)
    old_partition = _drop_partition_of(db, old)
    pipeline = Pipeline(settings, sync_metrics(db))
    metric = db.execute("SELECT id FROM metrics WHERE name = 'co2_ppm'").fetchone()[0]
    rows = [(now, fleet.native_sensor, metric, 500.0), (old, fleet.native_sensor, metric, 510.0)]
    assert pipeline.max_age >= timedelta(days=399)
    before = _partitions(db)
    with psycopg.connect(settings.psycopg_url, autocommit=True) as conn:
        result = BatchWriter().write(conn, rows, [])
    assert result.inserted == 2
    assert _partitions(db) - before == {old_partition}


def test_readings_older_than_the_cap_are_dead_letters_and_create_nothing(
    db, fleet, ingest, publisher, settings
) -> None:
    """With the default cap, the year-old sample makes the message a `too_old` dead letter
    (the cap is its own setting: retention is off here)."""
    assert settings.retention_days == 0
    now = datetime.now(UTC).replace(microsecond=0)
    old = now - timedelta(days=settings.max_past_age_days + 1)
    _drop_partition_of(db, old)
    before = _partitions(db)
    topic = fleet.native_topic("aarhus", "gw-co2-1")
    publisher.publish(topic, _native({"co2_ppm": 500}, old))
    wait_for(lambda: count(db, "SELECT count(*) FROM dead_letters") == 1, 10, "dead letter")
    assert db.execute("SELECT reason FROM dead_letters").fetchone() == ("too_old",)
    assert count(db, "SELECT count(*) FROM readings") == 0
    assert _partitions(db) == before


def test_the_issues_message_is_refused_by_default_and_creates_nothing(
    db, fleet, ingest, publisher
) -> None:
    """The issue's message, samples now and 399 days ago, sent with the default settings:
    a `too_old` dead letter, no reading, no partition (it made 398 before)."""
    now = datetime.now(UTC).replace(microsecond=0)
    old = now - timedelta(days=399)
    _drop_partition_of(db, old)
    before = _partitions(db)
    body = orjson.dumps(
        {
            "samples": [
                {"time": now.isoformat(), "readings": {"co2_ppm": 500}},
                {"time": old.isoformat(), "readings": {"co2_ppm": 510}},
            ]
        }
    )
    publisher.publish(fleet.native_topic("aarhus", "gw-co2-1"), body)
    wait_for(lambda: count(db, "SELECT count(*) FROM dead_letters") == 1, 10, "dead letter")
    assert db.execute("SELECT reason FROM dead_letters").fetchone() == ("too_old",)
    assert count(db, "SELECT count(*) FROM readings") == 0
    assert _partitions(db) == before


class StalledExport:
    """What a streaming export holds (api/export.py runs one `COPY (SELECT ... FROM
    readings ...) TO STDOUT` for as long as the client reads): ACCESS SHARE locks on
    `readings` and on the partitions it reads, until the statement ends. A cursor half
    read in an open transaction holds exactly those, for as long as the test wants."""

    def __init__(self, url: str, first: datetime, end: datetime) -> None:
        self.conn = psycopg.connect(url)
        self.conn.execute(
            "DECLARE export NO SCROLL CURSOR FOR SELECT time, sensor_id, metric_id, value "
            "FROM readings WHERE time >= %s AND time < %s",
            (first, end),
        )
        assert self.conn.execute("FETCH 100 FROM export").fetchall()

    def holds_readings_lock(self, db: psycopg.Connection) -> bool:
        return bool(
            db.execute(
                "SELECT count(*) FROM pg_locks WHERE pid = %s AND granted "
                "AND relation = 'readings'::regclass AND mode = 'AccessShareLock'",
                (self.conn.info.backend_pid,),
            ).fetchone()[0]
        )

    def close(self) -> None:
        self.conn.rollback()
        self.conn.close()


def _fill_for_export(db: psycopg.Connection, day_start: datetime) -> None:
    """Rows for the export to read, on sensor ids no test uses."""
    db.execute(
        "INSERT INTO readings SELECT %s + make_interval(secs => g), 900000 + g %% 50, 1, g "
        "FROM generate_series(1, 2000) g",
        (day_start,),
    )


def test_an_export_streaming_for_minutes_does_not_stall_ingest(
    db, fleet, ingest, publisher, settings
) -> None:
    """While an export holds its locks, ingest stores readings for today and for a day
    that has no partition yet (late data), each within the DDL lock timeout."""
    now = datetime.now(UTC).replace(microsecond=0)
    today = now.replace(hour=0, minute=0, second=0)
    late = now - timedelta(days=5)
    _drop_partition_of(db, late)
    _fill_for_export(db, today)
    export = StalledExport(settings.psycopg_url, today, today + timedelta(days=1))
    try:
        assert export.holds_readings_lock(db)
        topic = fleet.native_topic("aarhus", "gw-co2-1")
        limit = settings.partition_lock_timeout_ms / 1000 + 2.0
        for at in (now, late):
            started = time.monotonic()
            publisher.publish(topic, _native({"co2_ppm": 600}, at))
            wait_for(
                lambda at=at: (
                    count(
                        db,
                        "SELECT count(*) FROM readings WHERE sensor_id = %s AND time = %s",
                        (fleet.native_sensor, at),
                    )
                    == 1
                ),
                limit,
                f"the reading of {at:%Y-%m-%d} stored while the export streams",
            )
            assert time.monotonic() - started < limit
        assert export.holds_readings_lock(db), "the export ended early; the test tested nothing"
    finally:
        export.close()


def test_partition_ddl_gives_up_after_the_lock_timeout_and_succeeds_once_free(
    db, fleet, settings
) -> None:
    """A session holding a lock that partition DDL needs (a manual ANALYZE readings or
    index build holds this one): the writer waits at most its lock timeout per attempt,
    never indefinitely, and creates the partition once the lock is gone."""
    day = datetime.now(UTC).replace(microsecond=0) - timedelta(days=6)
    _drop_partition_of(db, day)
    rows = [(day, fleet.native_sensor, 1, 1.0)]
    writer = BatchWriter(partition_lock_timeout_ms=200)
    outcome: list[object] = []

    def write() -> None:
        with psycopg.connect(settings.psycopg_url, autocommit=True) as conn:
            try:
                outcome.append(writer.write(conn, rows, []))
            except psycopg.Error as exc:
                outcome.append(exc)

    with psycopg.connect(settings.psycopg_url) as holder:
        holder.execute("LOCK TABLE readings IN SHARE UPDATE EXCLUSIVE MODE")
        attempt = threading.Thread(target=write)
        started = time.monotonic()
        attempt.start()
        attempt.join(15)
        waited = time.monotonic() - started
        assert not attempt.is_alive(), "partition DDL waited for the lock without a timeout"
        holder.rollback()
    assert isinstance(outcome[0], psycopg.errors.LockNotAvailable)
    assert waited < 5
    assert BatchWriter(partition_lock_timeout_ms=200).write(db, rows, []).inserted == 1


@pytest.mark.parametrize("holder_mode", ["ACCESS SHARE", "ROW EXCLUSIVE"])
def test_creating_a_partition_does_not_wait_for_readers_or_writers(
    db, fleet, settings, holder_mode: str
) -> None:
    """A long reader (an export) or writer (another ingest's open batch) on `readings`
    does not hold partition creation up at all."""
    day = datetime.now(UTC).replace(microsecond=0) - timedelta(days=7)
    _drop_partition_of(db, day)
    with psycopg.connect(settings.psycopg_url) as holder:
        holder.execute(f"LOCK TABLE readings IN {holder_mode} MODE")
        started = time.monotonic()
        with psycopg.connect(settings.psycopg_url, autocommit=True) as conn:
            conn.execute("SET lock_timeout = '5s'")
            assert BatchWriter().write(conn, [(day, fleet.native_sensor, 1, 1.0)], []).inserted == 1
        assert time.monotonic() - started < 1.0
        holder.rollback()


def test_retention_during_an_export_does_not_stall_ingest(db, fleet, settings) -> None:
    """The maintenance job drops an old day while an export reads today: ingest's writes
    go on, and the day is gone once the export has ended."""
    from cli.db import maintain_once

    old = datetime(2020, 3, 1, 12, tzinfo=UTC)
    with psycopg.connect(settings.psycopg_url, autocommit=True) as conn:
        BatchWriter().write(conn, [(old, fleet.native_sensor, 1, 1.0)], [])
    now = datetime.now(UTC).replace(microsecond=0)
    today = now.replace(hour=0, minute=0, second=0)
    _fill_for_export(db, today)
    retention_days = (now.date() - old.date()).days - 1  # the cutoff is 2020-03-02
    export = StalledExport(settings.psycopg_url, today, today + timedelta(days=1))
    maintenance_done = threading.Event()

    def maintain() -> None:
        with psycopg.connect(settings.psycopg_url, autocommit=True) as conn:
            maintain_once(conn, 7, retention_days)
        maintenance_done.set()

    job = threading.Thread(target=maintain, daemon=True)
    try:
        job.start()
        time.sleep(0.5)  # the job is waiting for the export now
        limit = settings.partition_lock_timeout_ms / 1000 + 1.0
        with psycopg.connect(settings.psycopg_url, autocommit=True) as conn:
            started = time.monotonic()
            BatchWriter().write(conn, [(now, fleet.native_sensor, 1, 2.0)], [])
            assert time.monotonic() - started < limit, "ingest waited for retention"
        assert maintenance_done.wait(limit * 3), "retention waited for the export"
        assert export.holds_readings_lock(db)
    finally:
        export.close()
        job.join(30)
    with psycopg.connect(settings.psycopg_url, autocommit=True) as conn:
        maintain_once(conn, 7, retention_days)
    assert db.execute("SELECT to_regclass('readings_p20200301')").fetchone() == (None,)
