"""Plain PostgreSQL only: a hypertable's chunks are always time ranges, while a partitioned
`readings` could be given a partition that is not one."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from tenancy.export import ExportError, export_municipality
from tests.tenancy.test_export_readings import _seed


def test_readings_outside_daily_partitions_refuse_the_export(
    db: psycopg.Connection, tmp_path: Path
) -> None:
    """A DEFAULT partition (this schema never makes one) may hold any day: the export
    cannot read it in time order, and must not leave its readings out silently."""
    ours = _seed(db)
    db.execute("CREATE TABLE readings_other PARTITION OF readings DEFAULT")
    try:  # the session database outlives the test: the partition must not
        db.execute(
            "INSERT INTO readings (time, sensor_id, metric_id, value) "
            "VALUES ('2020-01-01', %s, 1, 1)",
            (ours[0],),
        )
        with pytest.raises(ExportError, match="readings_other"):
            export_municipality(db, "ours", tmp_path / "ours.zip")
        assert not list(tmp_path.iterdir())
    finally:
        db.execute("DROP TABLE readings_other")
