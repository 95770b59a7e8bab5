"""Real-database fixtures: each test session gets its own freshly migrated database per
storage backend.

PostgreSQL must be reachable at IOT_TEST_ADMIN_URL (default: the local trust-auth server);
`make test` and `.ci/run` start it when it is installed but stopped. TimescaleDB is reached
at IOT_TEST_TIMESCALE_ADMIN_URL (default 127.0.0.1:5433, what ../shared/timescaledb/setup.sh
starts).

Backends: a test runs on plain PostgreSQL unless it is marked ``storage``; then it runs once
per backend (``[postgres]`` and ``[timescaledb]``), through the same ``backend`` →
``database_url`` → ``db``/``settings`` fixtures, so a storage-dependent test is written once.
Tests marked ``timescaledb`` need the TimescaleDB server. Outside CI such tests skip with
the reason when it is missing; in CI (``CI`` set) that skip is a failure.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

from domain.metrics import sync_metrics
from models.db import create_database, drop_database, migrate
from models.settings import Settings

ADMIN_URL = os.environ.get("IOT_TEST_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
TIMESCALE_ADMIN_URL = os.environ.get(
    "IOT_TEST_TIMESCALE_ADMIN_URL", "postgresql://postgres@127.0.0.1:5433/postgres"
)

BACKENDS = ("postgres", "timescaledb")

# Tables that hold reference data or schema facts, kept between tests; every other table of
# the public schema (and every continuous aggregate) is emptied before each test that asks
# for `db`, so a table added by a later migration needs no change here.
KEPT_TABLES = frozenset({"metrics", "system_info", "alembic_version"})


def _database_url(name: str, admin_url: str = ADMIN_URL) -> str:
    return urlunsplit(urlsplit(admin_url)._replace(path="/" + name))


def fresh_database_url(prefix: str = "iot_test", admin_url: str = ADMIN_URL) -> str:
    """A URL naming a database that does not exist yet on `admin_url`'s server."""
    return _database_url(f"{prefix}_{uuid.uuid4().hex[:12]}", admin_url)


@contextmanager
def throwaway_database(prefix: str = "iot_test", admin_url: str = ADMIN_URL) -> Iterator[str]:
    """Create an empty database for the block and drop it afterwards."""
    url = fresh_database_url(prefix, admin_url)
    create_database(url)
    try:
        yield url
    finally:
        drop_database(url)


@contextmanager
def migrated_database(
    timescaledb: str, prefix: str = "iot_test", admin_url: str = ADMIN_URL
) -> Iterator[str]:
    """A throwaway database migrated to head, with the metric vocabulary loaded."""
    with throwaway_database(prefix, admin_url) as url:
        migrate(url, timescaledb=timescaledb)
        with psycopg.connect(url, autocommit=True) as conn:
            sync_metrics(conn)
        yield url


def timescaledb_unavailable(admin_url: str = TIMESCALE_ADMIN_URL) -> str | None:
    """Why TimescaleDB cannot be used at `admin_url`, or None when it can."""
    try:
        with psycopg.connect(admin_url, connect_timeout=3) as conn:
            installed, preloaded = conn.execute(
                "SELECT EXISTS (SELECT FROM pg_available_extensions WHERE name = 'timescaledb'),"
                " current_setting('shared_preload_libraries') LIKE '%timescaledb%'"
            ).fetchone()
    except psycopg.OperationalError as exc:
        reason = str(exc).strip().splitlines()[0]
        return f"no TimescaleDB server at IOT_TEST_TIMESCALE_ADMIN_URL ({reason})"
    if not installed:
        return "the timescaledb extension is not installed on IOT_TEST_TIMESCALE_ADMIN_URL"
    if not preloaded:
        return "timescaledb is not in shared_preload_libraries on IOT_TEST_TIMESCALE_ADMIN_URL"
    return None


@pytest.fixture(scope="session")
def timescale_admin_url() -> str:
    """The admin URL of a server with TimescaleDB preloaded, or skip the test."""
    reason = timescaledb_unavailable()
    if reason:
        pytest.skip(reason)
    return TIMESCALE_ADMIN_URL


class SessionDatabases:
    """One migrated database per backend, created when a test first needs it."""

    def __init__(self, stack: ExitStack) -> None:
        self._stack = stack
        self._urls: dict[str, str] = {}

    def url(self, backend: str) -> str:
        if backend not in self._urls:
            if backend == "timescaledb":
                reason = timescaledb_unavailable()
                if reason:
                    pytest.skip(reason)
                context = migrated_database("on", "iot_tsdb_test", TIMESCALE_ADMIN_URL)
            else:
                context = migrated_database("off")
            self._urls[backend] = self._stack.enter_context(context)
        return self._urls[backend]


@pytest.fixture(scope="session")
def session_databases() -> Iterator[SessionDatabases]:
    with ExitStack() as stack:
        yield SessionDatabases(stack)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # A storage-dependent test runs once per backend; the rest on plain PostgreSQL only.
    if "backend" in metafunc.fixturenames and metafunc.definition.get_closest_marker("storage"):
        metafunc.parametrize("backend", BACKENDS, indirect=True, scope="session")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The TimescaleDB instance of a storage test needs TimescaleDB like the rest of them.
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and callspec.params.get("backend") == "timescaledb":
            item.add_marker(pytest.mark.timescaledb)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    # CI must prove the TimescaleDB path: a TimescaleDB test that skips there fails.
    if (
        os.environ.get("CI")
        and report.skipped
        and item.get_closest_marker("timescaledb") is not None
        and not hasattr(report, "wasxfail")
    ):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"TimescaleDB test skipped in CI (CI is set): {reason}"
    return report


@pytest.fixture(scope="session")
def backend(request: pytest.FixtureRequest) -> str:
    """'postgres' or 'timescaledb': the storage backend this test runs against."""
    return getattr(request, "param", "postgres")


@pytest.fixture
def database_url(session_databases: SessionDatabases, backend: str) -> str:
    """The migrated session database of this test's backend."""
    return session_databases.url(backend)


def _data_relations(conn: psycopg.Connection) -> list[str]:
    """Every table of the public schema except KEPT_TABLES (partitions go with their
    parent), and the continuous aggregates on TimescaleDB: truncating one also resets
    its watermark, so the next test's rows are aggregated in real time again."""
    names = [
        r[0]
        for r in conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition"
        )
        if r[0] not in KEPT_TABLES
    ]
    has_caggs = conn.execute(
        "SELECT to_regclass('timescaledb_information.continuous_aggregates') IS NOT NULL"
    ).fetchone()[0]
    if has_caggs:
        names += [
            r[0]
            for r in conn.execute(
                "SELECT view_name FROM timescaledb_information.continuous_aggregates "
                "WHERE view_schema = 'public'"
            )
        ]
    return sorted(names)


def empty_data_tables(conn: psycopg.Connection) -> None:
    """Empty every data table (and continuous aggregate) of the database of `conn`."""
    tables = sql.SQL(", ").join(sql.Identifier(t) for t in _data_relations(conn))
    conn.execute(sql.SQL("TRUNCATE {} RESTART IDENTITY CASCADE").format(tables))


def _readings_partitions(conn: psycopg.Connection) -> set[str]:
    """The daily partitions of readings (plain PostgreSQL; none on TimescaleDB)."""
    return {
        r[0]
        for r in conn.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'readings'::regclass AND c.relname ~ '^readings_p[0-9]{8}$'"
        )
    }


@pytest.fixture
def db(database_url: str) -> Iterator[psycopg.Connection]:
    """An autocommit connection to the session database, with the data tables empty.

    Daily partitions a test made (real datasets from 2016-2023, historic imports) are
    dropped after it: left behind, every later test's rollup refresh and retention would
    plan over hundreds of empty partitions (10 s per refresh with 626 of them)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        empty_data_tables(conn)
        before = _readings_partitions(conn)
        yield conn
        if conn.closed:
            return
        conn.execute("SET lock_timeout = '5s'")
        for name in sorted(_readings_partitions(conn) - before):
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name)))


@pytest.fixture
def settings(database_url: str, backend: str) -> Settings:
    """Settings pointing at the session database, with topics unique to this test."""
    run = uuid.uuid4().hex[:8]
    return Settings(
        database_url=database_url,
        mqtt_client_id=f"test-ingest-{run}",
        mqtt_share_group=f"test{run}",
        mqtt_topics=[
            f"test/{run}/application/+/device/+/event/up",
            f"test/{run}/v3/+/devices/+/up",
            f"test/{run}/municipality/+/sensors/+/readings",
            f"test/{run}/application/+/device/+/rx",
            f"test/{run}/application/+/device/+/status",
        ],
        ingest_metrics_port=0,
        timescaledb="on" if backend == "timescaledb" else "off",
    )
