"""TimescaleDB indexes: readings keeps only its primary key; the rollups get covering
indexes, as on plain PostgreSQL (0003).

* ``create_hypertable`` adds an index on ``time DESC`` by default. No query of this
  project reads readings by time alone (every one names the sensor and metric, which the
  primary key leads with), chunk exclusion already narrows by time, and the extra B-tree
  cost every ingested row a second index insertion. Dropping it makes the two backends'
  raw schemas equal (tests/test_migrations.py compares both with the models).
* The continuous aggregates' own indexes are (sensor_id, bucket) and (metric_id, bucket),
  so a year of one sensor's hourly values was a bitmap heap scan of ~5,000 scattered pages
  (325 ms at 50M readings); with (sensor_id, metric_id, bucket) and the aggregates in the
  index it is an index-only scan (7 ms; BENCHMARKS.md).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03
"""

from __future__ import annotations

import time

from alembic import op
from psycopg import errors
from sqlalchemy import exc, text

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

ROLLUPS = ("readings_hourly", "readings_daily")


def _timescaledb() -> bool:
    backend = op.get_bind().scalar(text("SELECT value FROM system_info WHERE key = 'backend'"))
    return backend == "timescaledb"


def _execute_alone(statement: str, attempts: int = 5) -> None:
    """Run `statement` in a transaction of its own, again after a deadlock.

    TimescaleDB's refresh jobs lock the aggregates' materialization hypertables and then
    readings, in their own order (on a new database they run right after 0002); a
    migration transaction holding a lock on one while waiting for the other deadlocks
    with them. One statement per transaction holds nothing while it waits."""
    for attempt in range(attempts):
        try:
            with op.get_context().autocommit_block():
                op.execute(statement)
            return
        except exc.OperationalError as error:
            if not isinstance(error.orig, errors.DeadlockDetected) or attempt == attempts - 1:
                raise
            time.sleep(0.5 * (attempt + 1))


def upgrade() -> None:
    if not _timescaledb():
        return
    for view in ROLLUPS:
        _execute_alone(
            f"CREATE INDEX IF NOT EXISTS ix_{view}_series ON {view} "
            "(sensor_id, metric_id, bucket) INCLUDE (count, sum, avg, min, max)"
        )
    # Dropping it on the hypertable drops it on every chunk.
    _execute_alone("DROP INDEX IF EXISTS readings_time_idx")


def downgrade() -> None:
    if not _timescaledb():
        return
    for view in ROLLUPS:
        # The index lives on the aggregate's materialization hypertable.
        op.execute(f"DROP INDEX IF EXISTS {_materialization_schema(view)}.ix_{view}_series")
    op.execute("CREATE INDEX IF NOT EXISTS readings_time_idx ON readings (time DESC)")


def _materialization_schema(view: str) -> str:
    return op.get_bind().scalar(
        text(
            "SELECT materialization_hypertable_schema FROM "
            "timescaledb_information.continuous_aggregates WHERE view_name = :view"
        ),
        {"view": view},
    )
