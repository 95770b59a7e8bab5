"""The public API role reads hourly and daily rollups of published sensors through views.

Migration 0019 took ``iot_api``'s grant on ``readings_hourly`` and ``readings_daily`` and
gave it ``published_readings`` (raw readings) and the ``iot_published_*`` functions, which
serve fixed-shape series. The SensorThings API filters and orders a Datastream's
Observations by any property and pages by key, so it needs a relation, not a function:
``published_readings_hourly`` and ``published_readings_daily`` are security-barrier views
like ``published_readings``, with the rollup's columns of published sensors (public and
active, as in api/queries/public.PUBLIC_SENSOR). The barrier applies the view's filter
before any condition of the caller's that is not leakproof; leakproof ones (equalities on
the ids, time ranges, comparisons of values) still reach the index scans.

On TimescaleDB the rollups are continuous aggregates; a view over one is planned like a
query on it.

Revision ID: 0021
Revises: 0014
Create Date: 2026-12-03
"""

from __future__ import annotations

from migrations.sql import run_script

revision = "0021"
down_revision = "0014"
branch_labels = None
depends_on = None

_VIEW = """
CREATE VIEW published_{table} WITH (security_barrier) AS
SELECT b.sensor_id, b.metric_id, b.bucket, b.avg, b.min, b.max, b.count
FROM {table} b
JOIN sensors s ON s.id = b.sensor_id
WHERE s.is_public AND s.status = 'active';
"""

UPGRADE = _VIEW.format(table="readings_hourly") + _VIEW.format(table="readings_daily")

DOWNGRADE = """
DROP VIEW published_readings_daily;
DROP VIEW published_readings_hourly;
"""


def upgrade() -> None:
    run_script(UPGRADE)


def downgrade() -> None:
    run_script(DOWNGRADE)
