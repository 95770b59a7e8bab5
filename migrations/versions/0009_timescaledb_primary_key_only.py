"""TimescaleDB: readings keeps only its primary key, as on plain PostgreSQL.

``create_hypertable`` adds an index on ``time DESC`` by default. No query of this project
reads readings by time alone (every one names the sensor and metric, which the primary key
leads with), chunk exclusion already narrows by time, and the extra B-tree cost every
ingested row a second index insertion. Dropping it makes the two backends' schemas equal
(tests/test_migrations.py compares both with the models).

Revision ID: 0009
Revises: 0005
Create Date: 2026-12-03
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import text

revision = "0009"
down_revision = "0005"
branch_labels = None
depends_on = None


def _timescaledb() -> bool:
    backend = op.get_bind().scalar(text("SELECT value FROM system_info WHERE key = 'backend'"))
    return backend == "timescaledb"


def upgrade() -> None:
    if _timescaledb():
        # Dropping it on the hypertable drops it on every chunk.
        op.execute("DROP INDEX IF EXISTS readings_time_idx")


def downgrade() -> None:
    if _timescaledb():
        op.execute("CREATE INDEX IF NOT EXISTS readings_time_idx ON readings (time DESC)")
