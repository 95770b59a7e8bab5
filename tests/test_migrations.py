"""The migrations build the schema the models describe, and undo it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine

from cli.db import maintain_once
from ingest.writer import BatchWriter
from models.db import downgrade, migrate, to_sqlalchemy_url
from models.tables import Base
from tests.conftest import throwaway_database

# Relations the migrations create outside the ORM metadata (storage backend specific).
BACKEND_RELATIONS = {"readings_hourly", "readings_daily", "alembic_version"}


def _include(obj, name, type_, reflected, compare_to):
    backend_specific = name in BACKEND_RELATIONS or (name or "").startswith("readings_p")
    return not (type_ == "table" and backend_specific)


@pytest.mark.storage
def test_models_and_migrations_describe_the_same_schema(database_url: str) -> None:
    engine = create_engine(to_sqlalchemy_url(database_url))
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"include_object": _include, "compare_server_default": False}
        )
        differences = compare_metadata(context, Base.metadata)
    engine.dispose()
    assert differences == []


def test_migrations_go_down_to_nothing_and_up_again() -> None:
    with throwaway_database() as url:
        migrate(url, timescaledb="off")
        downgrade(url, "base")
        with psycopg.connect(url) as conn:
            left = conn.execute(
                "SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm') "
                "AND relname <> 'alembic_version'"
            ).fetchall()
            functions = conn.execute(
                "SELECT proname FROM pg_proc WHERE proname LIKE 'iot\\_%'"
            ).fetchall()
        assert left == []
        assert functions == []
        migrate(url, timescaledb="off")


def test_plain_postgres_backend_is_recorded_and_partitions_exist_ahead(db) -> None:
    assert db.execute("SELECT value FROM system_info WHERE key='backend'").fetchone() == (
        "postgresql",
    )
    partitions = {
        r[0]
        for r in db.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'readings'::regclass"
        )
    }
    # Today and the next 7 days as of the migration. The session database may have been
    # migrated before midnight UTC, so from "today" at least the next 6 are certain.
    today = datetime.now(UTC).date()
    for offset in range(0, 7):
        assert f"readings_p{(today + timedelta(days=offset)):%Y%m%d}" in partitions


@pytest.mark.storage
def test_reinserting_a_reading_is_a_no_op(db) -> None:
    now = datetime.now(UTC)
    for _ in range(2):
        db.execute("INSERT INTO readings VALUES (%s, 1, 1, 21.5) ON CONFLICT DO NOTHING", (now,))
    assert db.execute("SELECT count(*) FROM readings").fetchone() == (1,)


def test_partition_for_an_old_day_is_created_on_demand_and_dropped_by_retention(db) -> None:
    old = datetime(2020, 3, 1, 12, tzinfo=UTC)
    with pytest.raises(psycopg.errors.CheckViolation):
        db.execute("INSERT INTO readings VALUES (%s, 1, 1, 1.0)", (old,))
    assert db.execute("SELECT iot_ensure_partitions('2020-03-01', '2020-03-01')").fetchone() == (1,)
    db.execute("INSERT INTO readings VALUES (%s, 1, 1, 1.0)", (old,))
    assert db.execute("SELECT iot_drop_partitions_before('2020-03-02')").fetchone() == (1,)
    assert db.execute("SELECT to_regclass('readings_p20200301')").fetchone() == (None,)


def test_rollups_follow_new_and_late_readings(db) -> None:
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    rows = [(hour + timedelta(minutes=m), 7, 3, float(v)) for m, v in ((0, 400), (10, 800))]
    with db.cursor().copy("COPY readings (time, sensor_id, metric_id, value) FROM STDIN") as cp:
        for row in rows:
            cp.write_row(row)
    assert db.execute("SELECT iot_refresh_rollups()").fetchone() == (1,)
    assert db.execute(
        "SELECT count, avg, min, max FROM readings_hourly WHERE sensor_id = 7"
    ).fetchone() == (2, 600.0, 400.0, 800.0)

    # A late sample in the same hour marks it dirty again and is folded in.
    db.execute("INSERT INTO readings VALUES (%s, 7, 3, 1200.0)", (hour + timedelta(minutes=20),))
    assert db.execute("SELECT iot_refresh_rollups()").fetchone() == (1,)
    assert db.execute(
        "SELECT count, avg, max FROM readings_hourly WHERE sensor_id = 7"
    ).fetchone() == (3, 800.0, 1200.0)
    assert db.execute(
        "SELECT count, sum, min, max FROM readings_daily WHERE sensor_id = 7"
    ).fetchone() == (3, 2400.0, 400.0, 1200.0)
    assert db.execute("SELECT iot_refresh_rollups()").fetchone() == (0,)


def test_latest_readings_leave_room_for_in_place_updates(db) -> None:
    """Migration 0004: ingest's per-batch updates of latest values can be HOT."""
    options = db.execute(
        "SELECT reloptions FROM pg_class WHERE oid = 'latest_readings'::regclass"
    ).fetchone()[0]
    assert options == ["fillfactor=50"]


@pytest.mark.storage
def test_rollups_take_in_readings_older_than_any_refresh_window(db) -> None:
    """A reading 10 days late reaches the hourly and daily rollups on either backend once
    the maintenance job has run, also after the hour was rolled up (and, on TimescaleDB,
    materialised and compressed) without it."""
    db.execute(
        "INSERT INTO municipalities (id, slug, name) VALUES (1, 'late', 'Late');"
        "INSERT INTO sensors (id, municipality_id, external_id, kind) VALUES (7, 1, 'l', 'other')"
    )
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=10)
    writer = BatchWriter()
    writer.write(db, [(hour + timedelta(minutes=m), 7, 3, v) for m, v in ((0, 400), (10, 800))], [])
    maintain_once(db, days_ahead=1, retention_days=0)
    hourly = "SELECT count, avg, max FROM readings_hourly WHERE sensor_id = 7"
    assert db.execute(hourly).fetchall() == [(2, 600.0, 800.0)]

    writer.write(db, [(hour + timedelta(minutes=20), 7, 3, 1200.0)], [])
    maintain_once(db, days_ahead=1, retention_days=0)
    assert db.execute(hourly).fetchall() == [(3, 800.0, 1200.0)]
    assert db.execute(
        "SELECT count, sum, min, max FROM readings_daily WHERE sensor_id = 7"
    ).fetchall() == [(3, 2400.0, 400.0, 1200.0)]
