"""Plain PostgreSQL rollups: a refresh that runs while an ingest transaction is still open
must not lose that transaction's rows once it commits (docs/storage.md, "Rollups")."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import psycopg

SENSOR, METRIC = 7, 3


def _hour() -> datetime:
    return datetime.now(UTC).replace(minute=0, second=0, microsecond=0)


def _hourly(db: psycopg.Connection, bucket: datetime) -> tuple[int, float] | None:
    return db.execute(
        "SELECT count, sum FROM readings_hourly WHERE sensor_id = %s AND metric_id = %s "
        "AND bucket = %s",
        (SENSOR, METRIC, bucket),
    ).fetchone()


def _daily(db: psycopg.Connection, bucket: datetime) -> tuple[int, float] | None:
    day = bucket.replace(hour=0)
    return db.execute(
        "SELECT count, sum FROM readings_daily WHERE sensor_id = %s AND metric_id = %s "
        "AND bucket = %s",
        (SENSOR, METRIC, day),
    ).fetchone()


def test_a_refresh_during_an_uncommitted_batch_does_not_lose_that_batch(db, database_url) -> None:
    """The hour is dirty already (an earlier batch), a second batch for the same hour is
    open on another connection, the refresh recomputes the hour without it, then the
    batch commits: the next refresh must fold it in."""
    hour = _hour()
    db.execute("INSERT INTO readings VALUES (%s, %s, %s, 100.0)", (hour, SENSOR, METRIC))
    with psycopg.connect(database_url) as ingest:  # a transaction, as the writer's batch
        ingest.execute(
            "INSERT INTO readings VALUES (%s, %s, %s, 200.0)",
            (hour + timedelta(minutes=5), SENSOR, METRIC),
        )
        assert db.execute("SELECT iot_refresh_rollups()").fetchone() == (1,)
        assert _hourly(db, hour) == (1, 100.0)  # the open batch is not visible yet
        ingest.commit()
    db.execute("SELECT iot_refresh_rollups()")
    assert _hourly(db, hour) == (2, 300.0)
    assert _daily(db, hour) == (2, 300.0)
    assert db.execute("SELECT iot_refresh_rollups()").fetchone() == (0,)


def test_a_batch_committing_while_a_refresh_is_open_neither_waits_nor_is_lost(
    db, database_url
) -> None:
    """The other order: the refresh is the open transaction (holding what it took) while a
    batch for the same hour commits. The batch must not wait for the refresh (ingest never
    waits for maintenance), and must still be refreshed later."""
    hour = _hour()
    db.execute("INSERT INTO readings VALUES (%s, %s, %s, 100.0)", (hour, SENSOR, METRIC))
    batch_done = threading.Event()

    def batch() -> None:
        with psycopg.connect(database_url, autocommit=True) as ingest:
            ingest.execute(
                "INSERT INTO readings VALUES (%s, %s, %s, 200.0)",
                (hour + timedelta(minutes=5), SENSOR, METRIC),
            )
        batch_done.set()

    with psycopg.connect(database_url) as refresher:
        assert refresher.execute("SELECT iot_refresh_rollups()").fetchone() == (1,)
        writer = threading.Thread(target=batch)
        writer.start()
        committed_while_refresh_open = batch_done.wait(3)
        refresher.commit()
        writer.join(10)
    assert committed_while_refresh_open, "the batch waited for the rollup refresh"
    db.execute("SELECT iot_refresh_rollups()")
    assert _hourly(db, hour) == (2, 300.0)


def test_concurrent_refreshes_of_the_same_hour_neither_fail_nor_lose_rows(db, database_url) -> None:
    """Two maintenance jobs at once, each with something of the same hour to do, while
    batches keep committing: no error, and the rollup ends equal to the raw rows."""
    hour = _hour()
    errors: list[BaseException] = []
    stop = threading.Event()

    def refresh_loop() -> None:
        try:
            with psycopg.connect(database_url, autocommit=True) as conn:
                while not stop.is_set():
                    conn.execute("SELECT iot_refresh_rollups()")
        except BaseException as exc:  # reported below
            errors.append(exc)

    jobs = [threading.Thread(target=refresh_loop) for _ in range(2)]
    for job in jobs:
        job.start()
    try:
        with psycopg.connect(database_url, autocommit=True) as ingest:
            for i in range(300):
                ingest.execute(
                    "INSERT INTO readings VALUES (%s, %s, %s, 1.0)",
                    (hour + timedelta(seconds=i), SENSOR, METRIC),
                )
    finally:
        stop.set()
        for job in jobs:
            job.join(30)
    assert errors == []
    db.execute("SELECT iot_refresh_rollups()")
    assert _hourly(db, hour) == (300, 300.0)
