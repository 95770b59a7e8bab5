"""Covering indexes on the rollup tables (plain PostgreSQL).

An hourly series of one sensor over a year read ~5,000 scattered heap pages through the
primary key; with the aggregates in the index it is an index-only scan of ~160 pages
(bench/bench_api.py, BENCHMARKS.md). TimescaleDB's continuous aggregates keep their own
indexes, so nothing changes there.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import text

from migrations.sql import run_script

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

UPGRADE = """
CREATE INDEX ix_readings_hourly_series ON readings_hourly (sensor_id, metric_id, bucket)
    INCLUDE (count, sum, avg, min, max);
CREATE INDEX ix_readings_daily_series ON readings_daily (sensor_id, metric_id, bucket)
    INCLUDE (count, sum, avg, min, max);
"""

DOWNGRADE = """
DROP INDEX ix_readings_daily_series;
DROP INDEX ix_readings_hourly_series;
"""


def _plain_postgres() -> bool:
    backend = op.get_bind().scalar(text("SELECT value FROM system_info WHERE key = 'backend'"))
    return backend == "postgresql"


def upgrade() -> None:
    if _plain_postgres():
        run_script(UPGRADE)


def downgrade() -> None:
    if _plain_postgres():
        run_script(DOWNGRADE)
