"""Real-database fixtures: each test session gets its own freshly migrated database.

PostgreSQL must be reachable at IOT_TEST_ADMIN_URL (default: the local trust-auth server);
`make test` and `.ci/run` start it when it is installed but stopped.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from models.db import create_database, drop_database, migrate, sync_metrics
from models.settings import Settings

ADMIN_URL = os.environ.get("IOT_TEST_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")

# Tables emptied before each test that asks for `db`; metrics (reference data) survive.
DATA_TABLES = (
    "readings, readings_hourly, readings_daily, rollup_dirty_hours, latest_readings, "
    "dead_letters, dead_letter_repeats, uplink_identities, alerts, api_keys, sensors, "
    "device_models, zones, sites, municipalities"
)


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


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A migrated database on plain PostgreSQL (native partitions), dropped afterwards."""
    with migrated_database("off") as url:
        yield url


@pytest.fixture
def db(database_url: str) -> Iterator[psycopg.Connection]:
    """An autocommit connection to the session database, with the data tables empty."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {DATA_TABLES} RESTART IDENTITY CASCADE")
        yield conn


@pytest.fixture
def settings(database_url: str) -> Settings:
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
        ],
        ingest_metrics_port=0,
        timescaledb="off",
    )
