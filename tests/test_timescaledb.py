"""The TimescaleDB storage path: hypertable, compression, policies, continuous aggregates.

Needs a PostgreSQL server with TimescaleDB installed *and* preloaded, reached with a
superuser URL in IOT_TEST_TIMESCALE_ADMIN_URL (default ``127.0.0.1:5433``). Without one,
every test here is skipped with the reason, and with CI set that skip is a failure
(tests/conftest.py). Behaviour both backends share is tested once, on both, by the tests
marked ``storage``; this module holds what only TimescaleDB has.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from cli.db import maintain_once
from ingest.normalise import Row
from ingest.writer import BatchWriter
from models.db import (
    downgrade,
    migrate,
    storage_backend,
)
from models.settings import Settings, get_settings
from tests.conftest import migrated_database, throwaway_database

pytestmark = pytest.mark.timescaledb

# The statement the API's rollup queries boil down to, for one sensor and metric.
ROLLUP_QUERY = (
    "SELECT bucket, count, sum, avg, min, max FROM {table} "
    "WHERE sensor_id = %s AND metric_id = %s ORDER BY bucket"
)

SENSORS = (101, 102)
METRICS = (1, 2)


@pytest.fixture
def timescale_url(timescale_admin_url: str) -> Iterator[str]:
    """A database migrated to head on TimescaleDB, dropped after the test."""
    with migrated_database("on", "iot_tsdb_test", timescale_admin_url) as url:
        yield url


@pytest.fixture
def tsdb(timescale_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(timescale_url, autocommit=True) as conn:
        yield conn


@pytest.fixture
def retention_days(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[int], None]]:
    """Call with a number of days to set IOT_RETENTION_DAYS for the migrations of this test."""

    def set_days(days: int) -> None:
        monkeypatch.setenv("IOT_RETENTION_DAYS", str(days))
        get_settings.cache_clear()

    yield set_days
    get_settings.cache_clear()


def _register_sensors(conn: psycopg.Connection) -> None:
    """The sensors of SENSORS, so the ingest writer's latest_readings upsert has its keys."""
    municipality_id = conn.execute(
        "INSERT INTO municipalities (slug, name) VALUES ('tsdb-test', 'TimescaleDB test') "
        "RETURNING id"
    ).fetchone()[0]
    conn.cursor().executemany(
        "INSERT INTO sensors (id, municipality_id, external_id, kind) VALUES (%s, %s, %s, 'other')",
        [(sensor_id, municipality_id, f"tsdb-{sensor_id}") for sensor_id in SENSORS],
    )
    known = {
        r[0] for r in conn.execute("SELECT id FROM metrics WHERE id = ANY(%s)", (list(METRICS),))
    }
    assert known == set(METRICS)


def _sample_rows(first_day: datetime, days: int) -> list[Row]:
    """10-minute readings of every sensor and metric, on a 0.25 grid so sums are exact."""
    rows = []
    for sensor_id in SENSORS:
        for metric_id in METRICS:
            for step in range(days * 24 * 6):
                value = ((step * 7 + sensor_id * 3 + metric_id) % 97) * 0.25 - 5.0
                rows.append((first_day + timedelta(minutes=10 * step), sensor_id, metric_id, value))
    return rows


def _rollups(conn: psycopg.Connection) -> dict[tuple[str, int, int], list[tuple]]:
    return {
        (table, sensor_id, metric_id): conn.execute(
            ROLLUP_QUERY.format(table=table), (sensor_id, metric_id)
        ).fetchall()
        for table in ("readings_hourly", "readings_daily")
        for sensor_id in SENSORS
        for metric_id in METRICS
    }


def _refresh_continuous_aggregates(conn: psycopg.Connection) -> None:
    # The daily aggregate reads the hourly one, so the hourly one goes first.
    for view in ("readings_hourly", "readings_daily"):
        conn.execute(f"CALL refresh_continuous_aggregate('{view}', NULL, NULL)")


def _jobs(conn: psycopg.Connection) -> dict[str, dict]:
    return dict(
        conn.execute(
            "SELECT proc_name, config FROM timescaledb_information.jobs "
            "WHERE hypertable_name = 'readings'"
        ).fetchall()
    )


def test_migrations_on_timescaledb_record_the_backend(tsdb: psycopg.Connection) -> None:
    assert storage_backend(tsdb) == "timescaledb"
    assert (
        tsdb.execute("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'").fetchone()
        is not None
    )


def test_readings_is_a_hypertable_with_daily_chunks_and_compression(
    tsdb: psycopg.Connection,
) -> None:
    assert tsdb.execute(
        "SELECT compression_enabled FROM timescaledb_information.hypertables "
        "WHERE hypertable_name = 'readings'"
    ).fetchall() == [(True,)]
    assert tsdb.execute(
        "SELECT column_name, time_interval FROM timescaledb_information.dimensions "
        "WHERE hypertable_name = 'readings'"
    ).fetchall() == [("time", timedelta(days=1))]
    assert tsdb.execute(
        "SELECT segmentby, orderby FROM timescaledb_information.hypertable_compression_settings "
        "WHERE hypertable = 'readings'::regclass"
    ).fetchone() == ("sensor_id,metric_id", '"time" DESC')
    jobs = _jobs(tsdb)
    assert jobs["policy_compression"]["compress_after"] == "7 days"
    assert "policy_retention" not in jobs


def test_retention_policy_is_added_when_configured(
    retention_days: Callable[[int], None], timescale_admin_url: str
) -> None:
    retention_days(30)
    with throwaway_database("iot_tsdb_test", timescale_admin_url) as url:
        migrate(url, timescaledb="on")
        with psycopg.connect(url) as conn:
            assert _jobs(conn)["policy_retention"]["drop_after"] == "30 days"


def test_retention_shorter_than_the_aggregate_refresh_window_is_refused(
    retention_days: Callable[[int], None], timescale_admin_url: str
) -> None:
    retention_days(3)
    with throwaway_database("iot_tsdb_test", timescale_admin_url) as url:
        with pytest.raises(RuntimeError, match="IOT_RETENTION_DAYS=3"):
            migrate(url, timescaledb="on")
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT to_regclass('readings')").fetchone() == (None,)


def test_rollups_are_hierarchical_continuous_aggregates_with_real_time_rows(
    tsdb: psycopg.Connection,
) -> None:
    aggregates = dict(
        tsdb.execute(
            "SELECT view_name, materialized_only FROM timescaledb_information.continuous_aggregates"
        ).fetchall()
    )
    assert aggregates == {"readings_hourly": False, "readings_daily": False}
    # readings_daily is computed from readings_hourly's materialization, not from readings.
    assert tsdb.execute(
        "SELECT h.view_name FROM timescaledb_information.continuous_aggregates d "
        "JOIN timescaledb_information.continuous_aggregates h "
        "  ON h.materialization_hypertable_name = d.hypertable_name "
        "WHERE d.view_name = 'readings_daily'"
    ).fetchone() == ("readings_hourly",)
    refreshed = {
        r[0]
        for r in tsdb.execute(
            "SELECT hypertable_name FROM timescaledb_information.jobs "
            "WHERE proc_name = 'policy_refresh_continuous_aggregate'"
        )
    }
    assert len(refreshed) == 2


def test_rollups_match_plain_postgresql_for_the_same_readings(
    db: psycopg.Connection, tsdb: psycopg.Connection
) -> None:
    first_day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(
        days=3
    )
    rows = _sample_rows(first_day, days=2)
    partitions = [f"readings_p{first_day + timedelta(days=d):%Y%m%d}" for d in range(2)]
    try:
        for conn in (db, tsdb):
            _register_sensors(conn)
            BatchWriter().write(conn, rows, [])
        db.execute("SELECT iot_refresh_rollups()")
        plain = _rollups(db)
        assert plain[("readings_daily", 101, 1)][0][1] == 144  # two full days, 144 a day

        # Real-time aggregation: correct before anything is materialised...
        assert _rollups(tsdb) == plain
        # ...after materialising...
        _refresh_continuous_aggregates(tsdb)
        assert _rollups(tsdb) == plain
        # ...and with the raw chunks compressed.
        tsdb.execute("SELECT compress_chunk(c) FROM show_chunks('readings') c")
        assert _rollups(tsdb) == plain
    finally:
        for partition in partitions:
            db.execute(f"DROP TABLE IF EXISTS {partition}")


def test_reinserting_readings_is_a_no_op_also_into_compressed_chunks(
    tsdb: psycopg.Connection,
) -> None:
    first_day = datetime(2026, 1, 10, tzinfo=UTC)
    rows = _sample_rows(first_day, days=1)
    _register_sensors(tsdb)
    writer = BatchWriter()
    assert writer.write(tsdb, rows, []).inserted == len(rows)
    assert writer.write(tsdb, rows, []).duplicates == len(rows)

    compressed = tsdb.execute("SELECT count(compress_chunk(c)) FROM show_chunks('readings') c")
    assert compressed.fetchone() == (1,)
    late = (first_day + timedelta(hours=5, minutes=5), 101, 1, 42.0)
    result = writer.write(tsdb, [*rows[:50], late], [])
    assert (result.inserted, result.duplicates) == (1, 50)
    assert tsdb.execute("SELECT count(*) FROM readings").fetchone() == (len(rows) + 1,)
    assert tsdb.execute(
        "SELECT count(*) FROM timescaledb_information.chunks "
        "WHERE hypertable_name = 'readings' AND is_compressed"
    ).fetchone() == (1,)


def test_partition_and_rollup_functions_are_harmless_no_ops(tsdb: psycopg.Connection) -> None:
    today = datetime.now(UTC).date()
    done = maintain_once(tsdb, days_ahead=7, retention_days=30)
    # The maintenance pass runs the three policies itself (compression, two refreshes).
    assert done == {
        "audit_events_deleted": 0,
        "dead_letters_deleted": 0,
        "uplink_identities_deleted": 0,
        "partitions_created": 0,
        "hours_refreshed": 0,
        "partitions_dropped": 0,
        "latest_markers_repaired": 0,
        "policy_jobs_run": 3,
        "policy_jobs_failed": 0,
    }
    assert tsdb.execute("SELECT iot_ensure_partitions(%s, %s)", (today, today)).fetchone() == (0,)
    assert tsdb.execute("SELECT iot_refresh_rollups()").fetchone() == (0,)
    # TimescaleDB makes chunks as rows arrive; nothing was created ahead.
    assert tsdb.execute("SELECT count(*) FROM show_chunks('readings')").fetchone() == (0,)


def test_downgrade_to_base_leaves_nothing_and_upgrade_works_again(
    timescale_url: str,
) -> None:
    downgrade(timescale_url, "base")
    with psycopg.connect(timescale_url) as conn:
        left = conn.execute(
            "SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm') "
            "AND relname <> 'alembic_version'"
        ).fetchall()
        functions = conn.execute("SELECT proname FROM pg_proc WHERE proname LIKE 'iot\\_%'")
        assert left == []
        assert functions.fetchall() == []
        assert conn.execute(
            "SELECT count(*) FROM timescaledb_information.hypertables"
        ).fetchone() == (0,)
        assert conn.execute(
            "SELECT count(*) FROM timescaledb_information.jobs WHERE job_id >= 1000"
        ).fetchone() == (0,)
    migrate(timescale_url, timescaledb="on")
    with psycopg.connect(timescale_url) as conn:
        assert storage_backend(conn) == "timescaledb"


def test_fresh_readings_go_straight_into_the_hypertable_and_repeats_are_absorbed(
    tsdb: psycopg.Connection,
) -> None:
    """The writer's direct COPY path on a hypertable: a repeat raises the unique violation
    that sends the batch through staging, and nothing is stored twice."""
    now = datetime.now(UTC).replace(microsecond=0)
    rows = [(now - timedelta(minutes=m), 101, 1, float(m)) for m in range(30)]
    _register_sensors(tsdb)
    writer = BatchWriter()
    assert writer.write(tsdb, rows, []).inserted == len(rows)
    assert (writer.direct_writes, writer.staging_writes) == (1, 0)
    newer = (now + timedelta(seconds=1), 101, 1, -1.0)
    result = writer.write(tsdb, [*rows[:10], newer], [])
    assert (result.inserted, result.duplicates) == (1, 10)
    assert (writer.direct_writes, writer.staging_writes) == (1, 1)
    assert tsdb.execute("SELECT count(*) FROM readings").fetchone() == (len(rows) + 1,)
    assert tsdb.execute(
        "SELECT time, value FROM latest_readings WHERE sensor_id = 101 AND metric_id = 1"
    ).fetchone() == (newer[0], -1.0)


def test_database_roles_hold_on_timescaledb(tsdb: psycopg.Connection, timescale_url: str) -> None:
    """models/db_roles.py on a hypertable and continuous aggregates: the owner owns them,
    the public API role reads no keys, private sensors or their readings, ingest writes readings."""
    from models.db_roles import API, INGEST, OWNER, enable_logins, role_url

    enable_logins(tsdb, {})
    owners = dict(
        tsdb.execute(
            "SELECT relname, pg_get_userbyid(relowner) FROM pg_class "
            "WHERE relname IN ('readings', 'readings_hourly', 'readings_daily', 'sensors')"
        ).fetchall()
    )
    assert set(owners.values()) == {OWNER}, owners
    _register_sensors(tsdb)
    tsdb.execute("UPDATE sensors SET is_public = (id = 101)")
    now = datetime.now(UTC).replace(microsecond=0)
    with psycopg.connect(role_url(timescale_url, INGEST), autocommit=True) as ingest:
        rows = [(now - timedelta(days=d), 102, 1, 1.0) for d in range(3)]
        assert BatchWriter().write(ingest, rows, []).inserted == 3
    with psycopg.connect(role_url(timescale_url, API), autocommit=True) as api:
        assert api.execute("SELECT id FROM sensors").fetchall() == [(101,)]
        # 102 is private: its rows stay in, through every way the role has to readings.
        assert api.execute(
            "SELECT count(*) FROM iot_published_buckets('hour', ARRAY[102], 1::smallint, "
            "now() - interval '4 days', now(), 10)"
        ).fetchone() == (0,)
        assert api.execute(
            "SELECT count(*) FROM published_readings WHERE sensor_id = 102"
        ).fetchone() == (0,)
        for statement in (
            "SELECT * FROM readings WHERE sensor_id = 102",
            "SELECT * FROM readings_hourly WHERE sensor_id = 102",
            "SELECT * FROM api_keys",
            "INSERT INTO readings VALUES (now(), 101, 1, 1.0)",
            "SELECT iot_refresh_rollups()",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                api.execute(statement)


def _wait_for(predicate: Callable[[], bool], timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s} s")
        time.sleep(0.5)


def test_failing_background_jobs_show_in_health_and_metrics(timescale_url: str) -> None:
    """A job whose scheduled runs fail is listed by /health (with TimescaleDB's error) and
    counted by /metrics; the scheduler, not a test double, runs and fails it."""
    with psycopg.connect(timescale_url, autocommit=True) as conn:
        conn.execute(
            "CREATE PROCEDURE broken_on_purpose(job_id int, config jsonb) LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'broken on purpose'; END $$"
        )
        job_id = conn.execute(
            "SELECT add_job('broken_on_purpose', interval '1 hour', initial_start => now())"
        ).fetchone()[0]

        def failed() -> bool:
            return conn.execute(
                "SELECT last_run_status = 'Failed' FROM timescaledb_information.job_stats "
                "WHERE job_id = %s",
                (job_id,),
            ).fetchone() == (True,)

        _wait_for(failed)

    with TestClient(create_app(Settings(database_url=timescale_url))) as client:
        body = client.get("/health").json()
        metrics = client.get("/metrics").text
    failing = {job["job_id"]: job for job in body["failing_jobs"]}
    assert failing[job_id]["proc_name"] == "broken_on_purpose"
    assert "broken on purpose" in failing[job_id]["last_error"]
    assert failing[job_id]["total_failures"] >= 1
    assert f'iot_timescaledb_job_failing{{job_id="{job_id}",proc_name="broken_on_purpose"' in (
        metrics
    )
    count = next(
        line for line in metrics.splitlines() if line.startswith("iot_timescaledb_jobs_failing ")
    )
    assert float(count.split()[1]) == len(failing)


def test_maintenance_keeps_rollups_compression_and_retention_current_without_the_scheduler(
    retention_days: Callable[[int], None], timescale_admin_url: str
) -> None:
    """No scheduled run does any work (the jobs are paused: stricter than runs that fail);
    the maintenance pass alone drops, compresses and materialises, late data included."""
    retention_days(30)
    with (
        migrated_database("on", "iot_tsdb_test", timescale_admin_url) as url,
        psycopg.connect(url, autocommit=True) as conn,
    ):
        conn.execute(
            "SELECT alter_job(job_id, scheduled => false) FROM timescaledb_information.jobs "
            "WHERE hypertable_schema = 'public'"
        )
        # Only what has been materialised is visible: the rollups must be current.
        for view in ("readings_hourly", "readings_daily"):
            conn.execute(
                f"ALTER MATERIALIZED VIEW {view} SET (timescaledb.materialized_only = true)"
            )
        _register_sensors(conn)
        midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        expired = _sample_rows(midnight - timedelta(days=40), days=1)
        week_old = _sample_rows(midnight - timedelta(days=10), days=1)
        writer = BatchWriter()
        writer.write(conn, expired + week_old, [])
        done = maintain_once(conn, days_ahead=7, retention_days=30)
        assert (done["policy_jobs_run"], done["policy_jobs_failed"]) == (4, 0)

        assert conn.execute(
            "SELECT count(*) FROM readings WHERE time < now() - interval '30 days'"
        ).fetchone() == (0,)
        assert conn.execute(
            "SELECT bool_and(is_compressed), count(*) FROM timescaledb_information.chunks "
            "WHERE hypertable_name = 'readings'"
        ).fetchone() == (True, 1)
        daily = "SELECT count, sum FROM readings_daily WHERE sensor_id = 101 AND metric_id = 1"
        assert conn.execute(daily).fetchall() == [(144, _sum(week_old, 101, 1))]

        # A late batch into the compressed chunk, half of it repeats.
        late = [(t + timedelta(minutes=5), s, m, v + 1.0) for t, s, m, v in week_old[:144]]
        result = writer.write(conn, week_old[:144] + late, [])
        assert (result.inserted, result.duplicates) == (144, 144)
        maintain_once(conn, days_ahead=7, retention_days=30)
        assert conn.execute(daily).fetchall() == [
            (288, _sum(week_old, 101, 1) + _sum(late, 101, 1))
        ]
        assert conn.execute("SELECT count(*) FROM readings").fetchone() == (
            len(week_old) + len(late),
        )
        assert conn.execute(
            "SELECT bool_and(is_compressed) FROM timescaledb_information.chunks "
            "WHERE hypertable_name = 'readings'"
        ).fetchone() == (True,)


def _sum(rows: list[Row], sensor_id: int, metric_id: int) -> float:
    return sum(v for _, s, m, v in rows if (s, m) == (sensor_id, metric_id))


def test_readings_has_only_its_primary_key_and_rollups_have_covering_indexes(
    tsdb: psycopg.Connection,
) -> None:
    """Migration 0009: no time index to maintain on ingest; a sensor's year of hourly
    values is an index-only scan."""
    assert tsdb.execute(
        "SELECT indexname FROM pg_indexes WHERE tablename = 'readings'"
    ).fetchall() == [("pk_readings",)]
    covering = {
        r[0]: r[1]
        for r in tsdb.execute(
            "SELECT c.view_name, i.indexdef FROM timescaledb_information.continuous_aggregates c "
            "JOIN pg_indexes i ON i.schemaname = c.materialization_hypertable_schema "
            "AND i.tablename = c.materialization_hypertable_name "
            "WHERE i.indexname LIKE 'ix_%_series'"
        )
    }
    assert set(covering) == {"readings_hourly", "readings_daily"}
    for indexdef in covering.values():
        assert "(sensor_id, metric_id, bucket) INCLUDE (count, sum, avg, min, max)" in indexdef
