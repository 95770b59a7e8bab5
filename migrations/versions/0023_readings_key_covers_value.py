"""The primary key of readings carries ``value``: reading a sensor's series is an
index-only scan.

The evaluation job (analytics/evaluation.py) reads each sensor's last hours of a metric
through the primary key (sensor_id, metric_id, time). Live ingest writes readings in time
order, every sensor's uplink as it arrives, so one sensor's 144 readings of a 12-hour
window sit on 144 different heap pages: the scan fetched one heap page per reading. With
``INCLUDE (value)`` the key's leaf pages hold the whole row the job reads, in sensor
order, and pages that VACUUM has marked all-visible are never visited (the server's rows/s
for 12 hours of CO2 of every room doubled; BENCHMARKS.md "Analytics end to end").

It stays one index (no second B-tree to maintain on ingest); each entry grows by the
8 bytes of the value. Uniqueness and ``ON CONFLICT (sensor_id, metric_id, time)`` are
unchanged (INCLUDE columns are not part of the key).

The upgrade rebuilds the key of every partition (plain PostgreSQL) or uncompressed chunk
(TimescaleDB; compressed chunks keep their own per-segment storage) under an exclusive
lock: ingest waits for it (its MQTT session keeps the messages meanwhile), for as long as
CREATE INDEX over the uncompressed rows takes.

Revision ID: 0023
Revises: 0021
Create Date: 2026-12-03
"""

from __future__ import annotations

from alembic import op

revision = "0023"
down_revision = "0021"
branch_labels = None
depends_on = None


def _replace_key(include: str) -> None:
    # One statement: the table is never without its key. On a partitioned table the new
    # key is built on every partition; on a hypertable, on every chunk.
    op.execute(
        "ALTER TABLE readings DROP CONSTRAINT pk_readings, "
        f"ADD CONSTRAINT pk_readings PRIMARY KEY (sensor_id, metric_id, time){include}"
    )


def upgrade() -> None:
    _replace_key(" INCLUDE (value)")


def downgrade() -> None:
    _replace_key("")
